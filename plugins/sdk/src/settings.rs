//! Typed access to the settings a plugin receives from its profile table.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{Error, Setting, Value};

/// The plugin's settings, with typed getters that produce `invalid-argument`
/// errors naming the key.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    items: Vec<Setting>,
}

impl Settings {
    /// Wrap the settings the host passed to `configure`.
    pub fn new(items: Vec<Setting>) -> Self {
        Self { items }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().find(|s| s.key == key).map(|s| &s.value)
    }

    /// Keys the plugin does not know, so it can reject typos.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        self.items
            .iter()
            .filter(|s| !known.contains(&s.key.as_str()))
            .map(|s| s.key.clone())
            .collect()
    }

    /// Fail with `invalid-argument` if any key is not in `known`.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), Error> {
        let unknown = self.unknown_keys(known);
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "unknown setting(s) {}; known: {}",
                unknown.join(", "),
                known.join(", ")
            )))
        }
    }

    /// A text setting, or `default` when absent.
    pub fn text(&self, key: &str, default: &str) -> Result<String, Error> {
        match self.get(key) {
            None => Ok(String::from(default)),
            Some(Value::Text(t)) => Ok(t.clone()),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// An optional text setting.
    pub fn text_opt(&self, key: &str) -> Result<Option<String>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t.clone())),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// An integer setting within `min..=max`, or `default` when absent.
    pub fn integer(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, Error> {
        let v = match self.get(key) {
            None => default,
            Some(Value::Integer(i)) => *i,
            Some(other) => return Err(wrong_type(key, "an integer", other)),
        };
        if v < min || v > max {
            return Err(Error::InvalidArgument(format!(
                "setting `{key}` = {v} is out of range {min}..={max}"
            )));
        }
        Ok(v)
    }

    /// A boolean setting, or `default` when absent.
    pub fn boolean(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(wrong_type(key, "a boolean", other)),
        }
    }

    /// A list of strings, or empty when absent.
    pub fn texts(&self, key: &str) -> Result<Vec<String>, Error> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Texts(t)) => Ok(t.clone()),
            Some(other) => Err(wrong_type(key, "a list of strings", other)),
        }
    }
}

fn wrong_type(key: &str, wanted: &str, got: &Value) -> Error {
    let got = match got {
        Value::Text(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Number(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Texts(_) => "a list",
    };
    Error::InvalidArgument(format!("setting `{key}` must be {wanted}, not {got}"))
}
