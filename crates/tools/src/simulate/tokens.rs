//! The token file: which token each simulated device presents
//! (`Authorization: Bearer <token>`). Tokens come from the device registry
//! (`wsingest device add` prints each once); the generator only reads them.
//!
//! Format: one `device-id token` per line (a space, tab, `=` or `:` between
//! them), `#` comments and blank lines ignored; or a JSON object
//! `{"device-id": "token", ...}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {detail}")]
    Line {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("token file {path}: not a JSON object of device id to token: {detail}")]
    Json { path: PathBuf, detail: String },
}

/// Device id → token.
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, Arc<str>>);

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.into(),
            source,
        })?;
        Tokens::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokenError> {
        if text.trim_start().starts_with('{') {
            let map: HashMap<String, String> =
                serde_json::from_str(text).map_err(|e| TokenError::Json {
                    path: path.into(),
                    detail: e.to_string(),
                })?;
            return Ok(Tokens(
                map.into_iter().map(|(k, v)| (k, v.into())).collect(),
            ));
        }
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: &str| TokenError::Line {
                path: path.into(),
                line: i + 1,
                detail: detail.into(),
            };
            let Some((id, token)) =
                line.split_once(|c: char| c.is_whitespace() || c == '=' || c == ':')
            else {
                return Err(err("expected `device-id token`"));
            };
            let token = token
                .trim_start_matches(|c: char| c.is_whitespace() || c == '=' || c == ':')
                .trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(err(
                    "expected `device-id token`: one token, no spaces in it",
                ));
            }
            if map.insert(id.to_string(), Arc::from(token)).is_some() {
                return Err(err(&format!("device {id} is listed twice")));
            }
        }
        Ok(Tokens(map))
    }

    pub fn get(&self, device: &str) -> Option<Arc<str>> {
        self.0.get(device).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        let t = Tokens::parse(
            "# tokens\nweather-0001 abc\n\nmeter-0001=def\nvan-0001:  ghi  \n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("meter-0001").as_deref(), Some("def"));
        assert_eq!(t.get("van-0001").as_deref(), Some("ghi"));
        let t = Tokens::parse(r#"{"a": "x", "b": "y"}"#, Path::new("t")).unwrap();
        assert_eq!(t.get("b").as_deref(), Some("y"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Tokens::parse("a x\nlonely\n", Path::new("tok.txt"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "token file tok.txt, line 2: expected `device-id token`");
        let e = Tokens::parse("a x\na y\n", Path::new("tok.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
        assert!(Tokens::parse("{\"a\": 1}", Path::new("t")).is_err());
    }
}
