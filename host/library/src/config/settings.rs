//! Plugin settings: the profile's `settings` table flattened to dotted keys.

use crate::plugin::{Setting, SettingValue};

/// A plugin setting the host cannot pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct SettingError {
    /// The setting's dotted key.
    pub key: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Flatten a settings table. Errors name the (dotted) key.
pub fn flatten_settings(
    table: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Setting>, SettingError> {
    let mut out = Vec::new();
    flatten_into("", table, &mut out)?;
    Ok(out)
}

fn flatten_into(
    prefix: &str,
    table: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<Setting>,
) -> Result<(), SettingError> {
    use serde_json::Value;
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            Value::String(s) => SettingValue::Text(s.clone()),
            Value::Bool(b) => SettingValue::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SettingValue::Integer(i),
                None => SettingValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Array(items) => {
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => texts.push(s.clone()),
                        _ => {
                            return Err(SettingError {
                                key,
                                problem: "arrays in plugin settings may hold only strings",
                            })
                        }
                    }
                }
                SettingValue::Texts(texts)
            }
            Value::Object(inner) => {
                flatten_into(&key, inner, out)?;
                continue;
            }
            Value::Null => {
                return Err(SettingError {
                    key,
                    problem: "has no value",
                })
            }
        };
        out.push(Setting { key, value });
    }
    Ok(())
}
