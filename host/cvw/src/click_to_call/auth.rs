//! Who is calling the click-to-call API: per-user bearer tokens, stored as SHA-256 hashes
//! in a TOML file so that the file itself grants nothing. The user comes from the token,
//! never from the request body: that is the own-line rule (CVW-15).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Tokens file: `[[tokens]] user = "sip:alice@corp.example"  sha256 = "<hex>"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    user: String,
    sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: token #{index} of {user}: sha256 must be 64 hex digits")]
    BadHash {
        path: PathBuf,
        index: usize,
        user: String,
    },
}

/// The API's users, by token hash.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], String>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|source| TokensError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let mut by_hash = HashMap::new();
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let hash = decode_hex32(&entry.sha256).ok_or_else(|| TokensError::BadHash {
                path: path.to_owned(),
                index: index + 1,
                user: entry.user.clone(),
            })?;
            by_hash.insert(hash, entry.user);
        }
        Ok(Self { by_hash })
    }

    /// A token store with one user, for tests and demos.
    pub fn single(user: &str, token: &str) -> Self {
        let mut by_hash = HashMap::new();
        by_hash.insert(hash(token), user.to_owned());
        Self { by_hash }
    }

    /// The user a bearer token belongs to. Hash lookup, so comparison time does not
    /// depend on how much of a guessed token matches.
    pub fn user_of(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&hash(token)).map(String::as_str)
    }
}

/// SHA-256 of a token, as stored in the tokens file.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex of a token's hash, for writing a tokens file.
pub fn hash_hex(token: &str) -> String {
    hash(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `Authorization: Bearer <token>` → the token.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_maps_to_its_user_and_nothing_else_does() {
        let text = format!(
            "[[tokens]]\nuser = \"sip:alice@corp.example\"\nsha256 = \"{}\"\n",
            hash_hex("alice-secret")
        );
        let tokens = Tokens::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(
            tokens.user_of("alice-secret"),
            Some("sip:alice@corp.example")
        );
        assert_eq!(tokens.user_of("alice-secre"), None);
        assert_eq!(tokens.user_of(""), None);
    }

    #[test]
    fn a_bad_hash_is_reported_with_the_user() {
        let text = "[[tokens]]\nuser = \"sip:bob@corp.example\"\nsha256 = \"abc\"\n";
        let err = Tokens::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sip:bob@corp.example"), "{err}");
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
