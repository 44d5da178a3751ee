//! TSIG keys and the files that hold them: a BIND `key` clause (as written by
//! `tsig-keygen` or `rndc-confgen`) or the base64 secret alone.

use std::fmt;
use std::path::Path;

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::rr::Name;

use super::DnsError;

/// The time difference (seconds) allowed between signer and verifier.
pub const TSIG_FUDGE: u16 = 300;

/// Algorithms this host can sign and verify with.
pub const SUPPORTED_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// A shared TSIG key. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, as the server knows it (e.g. `ddns-key`).
    pub name: String,
    /// The algorithm, lowercase without a trailing dot (e.g. `hmac-sha256`).
    pub algorithm: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl TsigKey {
    /// A key from its parts; checks the name, the algorithm (one of
    /// [`SUPPORTED_ALGORITHMS`]) and that the secret is not empty.
    pub fn new(name: &str, algorithm: &str, secret: Vec<u8>) -> Result<Self, DnsError> {
        let key = Self {
            name: name.trim().trim_end_matches('.').to_string(),
            algorithm: normalize(algorithm),
            secret,
        };
        key.signer()?;
        Ok(key)
    }

    /// Read the key `key_name` from `path`: either a file of BIND `key`
    /// clauses (the clause named `key_name` is used; its `algorithm`, when
    /// given, must be `algorithm`) or a file holding only the base64 secret.
    /// Errors name the file.
    pub fn load(path: &Path, key_name: &str, algorithm: &str) -> Result<Self, DnsError> {
        let in_file = |source: KeyFileError| DnsError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let text =
            crate::secret_file::read_secret(path).map_err(|e| in_file(KeyFileError::Read(e)))?;
        let secret = parse_key_file(&text, key_name, algorithm)
            .map_err(|e| in_file(KeyFileError::Key(e)))?;
        Self::new(key_name, algorithm, secret).map_err(|e| match e {
            DnsError::Key { source, .. } => in_file(KeyFileError::Key(source)),
            other => other,
        })
    }

    /// The hickory signer for this key.
    pub fn signer(&self) -> Result<TSigner, DnsError> {
        let bad = |source: KeyError| DnsError::Key {
            name: self.name.clone(),
            source,
        };
        if self.secret.is_empty() {
            return Err(bad(KeyError::EmptySecret));
        }
        let algorithm = tsig_algorithm(&self.algorithm).map_err(bad)?;
        let name = Name::from_ascii(&self.name).map_err(|e| bad(KeyError::BadName(e)))?;
        TSigner::new(self.secret.clone(), algorithm, name, TSIG_FUDGE)
            .map_err(|e| bad(KeyError::Signer(e)))
    }
}

/// Why a TSIG key file does not give a usable key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// It could not be read, or others can read it.
    #[error("{0}")]
    Read(#[source] crate::secret_file::SecretFileError),
    /// Its text does not give a secret, or the key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a key, or the text of a key file, does not give a usable secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key's name is not a DNS name.
    #[error("not a valid DNS name: {0}")]
    BadName(#[source] hickory_proto::ProtoError),
    /// hickory refused the key.
    #[error("{0}")]
    Signer(#[source] hickory_proto::dnssec::DnsSecError),
    /// hickory could not sign a message with it.
    #[error("cannot sign the {subject}: {source}")]
    Sign {
        /// What was to be signed.
        subject: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The algorithm is not one of [`SUPPORTED_ALGORITHMS`].
    #[error("unsupported TSIG algorithm `{0}` (supported: {supported})", supported = SUPPORTED_ALGORITHMS.join(", "))]
    UnsupportedAlgorithm(String),
    /// The secret is empty.
    #[error("the secret is empty")]
    EmptySecret,
    /// The secret is not base64.
    #[error("the secret is not valid base64 ({0})")]
    Base64(#[source] data_encoding::DecodeError),
    /// A `/*` comment is not closed.
    #[error("unterminated /* comment")]
    UnterminatedComment,
    /// A quoted string is not closed.
    #[error("unterminated quoted string")]
    UnterminatedString,
    /// `key` with no name after it.
    #[error("`key` without a name")]
    KeyWithoutName,
    /// `key "name"` with no `{` after it.
    #[error("`key \"{0}\"` is not followed by `{{`")]
    NoOpeningBrace(String),
    /// A `key` clause is not closed.
    #[error("key \"{0}\" is not closed")]
    NotClosed(String),
    /// A statement in a clause has no value.
    #[error("`{statement}` in key \"{key}\" has no value")]
    NoValue {
        /// The statement (`algorithm`, `secret`, ...).
        statement: String,
        /// The key's name.
        key: String,
    },
    /// Neither `key` clauses nor a bare secret.
    #[error("no `key` clause and not a bare base64 secret")]
    NoClause,
    /// No clause has the wanted name.
    #[error("no key named `{wanted}` (the file has: {})", .found.join(", "))]
    NoSuchKey {
        /// The name asked for.
        wanted: String,
        /// The names the file has.
        found: Vec<String>,
    },
    /// The clause names another algorithm than the one configured.
    #[error("key `{key}` uses algorithm {found}, but {configured} was configured")]
    WrongAlgorithm {
        /// The key's name.
        key: String,
        /// The algorithm in the file.
        found: String,
        /// The algorithm configured.
        configured: String,
    },
    /// The clause has no `secret`.
    #[error("key `{0}` has no `secret`")]
    NoSecret(String),
    /// The clause's secret is unusable.
    #[error("key `{key}`: {source}")]
    BadSecret {
        /// The key's name.
        key: String,
        /// Why.
        #[source]
        source: Box<KeyError>,
    },
}

/// The hickory algorithm for a name such as `hmac-sha256`.
pub fn tsig_algorithm(name: &str) -> Result<TsigAlgorithm, KeyError> {
    match normalize(name).as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(KeyError::UnsupportedAlgorithm(other.to_string())),
    }
}

fn decode_secret(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(KeyError::EmptySecret);
    }
    data_encoding::BASE64
        .decode(compact.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(compact.as_bytes()))
        .map_err(KeyError::Base64)
}

/// A token of BIND's configuration syntax.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
}

/// Split BIND configuration text into tokens, dropping `#`, `//` and
/// `/* */` comments.
fn tokenize(text: &str) -> Result<Vec<Token>, KeyError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    prev = c;
                }
                if !closed {
                    return Err(KeyError::UnterminatedComment);
                }
            }
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    s.push(c);
                }
                if !closed {
                    return Err(KeyError::UnterminatedString);
                }
                out.push(Token::Quoted(s));
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ';' => out.push(Token::Semi),
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

/// One `key "name" { algorithm ...; secret "..."; };` clause.
#[derive(Debug, Default)]
struct Clause {
    name: String,
    algorithm: Option<String>,
    secret: Option<String>,
}

fn clauses(tokens: &[Token]) -> Result<Vec<Clause>, KeyError> {
    let mut out = Vec::new();
    let mut i = 0;
    let text = |t: Option<&Token>| match t {
        Some(Token::Word(s)) | Some(Token::Quoted(s)) => Some(s.clone()),
        _ => None,
    };
    while i < tokens.len() {
        match &tokens[i] {
            Token::Word(w) if w.eq_ignore_ascii_case("key") => {
                let name = text(tokens.get(i + 1)).ok_or(KeyError::KeyWithoutName)?;
                if tokens.get(i + 2) != Some(&Token::Open) {
                    return Err(KeyError::NoOpeningBrace(name));
                }
                i += 3;
                let mut clause = Clause {
                    name,
                    ..Clause::default()
                };
                loop {
                    match tokens.get(i) {
                        None => return Err(KeyError::NotClosed(clause.name)),
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Token::Word(w)) => {
                            let value =
                                text(tokens.get(i + 1)).ok_or_else(|| KeyError::NoValue {
                                    statement: w.clone(),
                                    key: clause.name.clone(),
                                })?;
                            if w.eq_ignore_ascii_case("algorithm") {
                                clause.algorithm = Some(value);
                            } else if w.eq_ignore_ascii_case("secret") {
                                clause.secret = Some(value);
                            }
                            i += 2;
                            if tokens.get(i) == Some(&Token::Semi) {
                                i += 1;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(clause);
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// The secret of `key_name` in the text of a key file (see [`TsigKey::load`]).
/// Errors do not name the file; the caller adds it.
fn parse_key_file(text: &str, key_name: &str, algorithm: &str) -> Result<Vec<u8>, KeyError> {
    let tokens = tokenize(text)?;
    let is_clause_file = tokens.iter().any(|t| {
        matches!(
            t,
            Token::Open | Token::Close | Token::Semi | Token::Quoted(_)
        ) || matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("key"))
    });
    if !is_clause_file {
        // The base64 secret alone (whitespace and comments allowed).
        let bare: String = tokens
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        return decode_secret(&bare);
    }
    let found = clauses(&tokens)?;
    if found.is_empty() {
        return Err(KeyError::NoClause);
    }
    let wanted = normalize(key_name);
    let Some(clause) = found.iter().find(|c| normalize(&c.name) == wanted) else {
        return Err(KeyError::NoSuchKey {
            wanted: key_name.to_string(),
            found: found.iter().map(|c| c.name.clone()).collect(),
        });
    };
    if let Some(alg) = &clause.algorithm {
        if normalize(alg) != normalize(algorithm) {
            return Err(KeyError::WrongAlgorithm {
                key: clause.name.clone(),
                found: alg.clone(),
                configured: normalize(algorithm),
            });
        }
    }
    let secret = clause
        .secret
        .as_deref()
        .ok_or_else(|| KeyError::NoSecret(clause.name.clone()))?;
    decode_secret(secret).map_err(|e| KeyError::BadSecret {
        key: clause.name.clone(),
        source: Box::new(e),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET_B64: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

    #[test]
    fn reads_tsig_keygen_output_and_bare_secrets() {
        let clause = format!(
            "key \"ddns-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET_B64}\";\n}};\n"
        );
        let want = data_encoding::BASE64.decode(SECRET_B64.as_bytes()).unwrap();
        assert_eq!(
            parse_key_file(&clause, "ddns-key", "hmac-sha256").unwrap(),
            want
        );
        // Trailing dot and case in the name, a comment, several keys.
        let several = format!(
            "# keys\nkey other {{ algorithm hmac-sha512; secret \"AAAA\"; }};\n// the one\nkey \"DDNS-key.\" {{ secret \"{SECRET_B64}\"; }};"
        );
        assert_eq!(
            parse_key_file(&several, "ddns-key.", "hmac-sha256").unwrap(),
            want
        );
        // The secret alone, with a newline.
        assert_eq!(
            parse_key_file(&format!("{SECRET_B64}\n"), "any", "hmac-sha256").unwrap(),
            want
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let clause = format!("key \"a\" {{ algorithm hmac-sha512; secret \"{SECRET_B64}\"; }};");
        let e = parse_key_file(&clause, "b", "hmac-sha256")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key named `b`") && e.contains("a"), "{e}");
        let e = parse_key_file(&clause, "a", "hmac-sha256")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hmac-sha512"), "{e}");
        let e = parse_key_file("key \"a\" { algorithm hmac-sha256; };", "a", "hmac-sha256")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `secret`"), "{e}");
        let e = parse_key_file("not base64 at all!", "a", "hmac-sha256")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
        let e = parse_key_file("key \"a\" { secret \"x", "a", "hmac-sha256")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unterminated"), "{e}");
        assert!(parse_key_file("", "a", "hmac-sha256").is_err());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let e = TsigKey::load(&path, "k", "hmac-sha256").unwrap_err();
        assert!(e.to_string().contains("k.key"), "{e}");
        std::fs::write(&path, SECRET_B64).unwrap();
        let e = TsigKey::load(&path, "k", "hmac-sha256").unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let key = TsigKey::load(&path, "k", "HMAC-SHA256.").unwrap();
        assert_eq!(key.algorithm, "hmac-sha256");
        assert!(!format!("{key:?}").contains(SECRET_B64));
        let e = TsigKey::load(&path, "k", "hmac-md5").unwrap_err();
        assert!(
            e.to_string().contains("k.key") && e.to_string().contains("unsupported"),
            "{e}"
        );
    }
}
