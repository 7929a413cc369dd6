//! Paths into a JSON value: `a.b`, `a.b[0]`, `readings[*]`, `params.*`,
//! quoted keys `params."switch:0".apower`, `$.x` (from the message root when
//! a `split` gives each point an element of its own) and `$key` (the member
//! name of the element a `split` over an object is at).

use std::fmt;

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
    /// `[*]` (every array element) or `*` (every member of an object).
    Each,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `$.`: from the message root, not the split element.
    pub root: bool,
    /// `$key`: the member name of the split element.
    pub member_name: bool,
    pub segs: Vec<Seg>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "path {path:?}: {detail}; write paths as a.b, a.b[0], readings[*] or params.\"switch:0\".apower"
)]
pub struct PathError {
    pub path: String,
    pub detail: String,
}

impl Path {
    pub fn parse(s: &str) -> Result<Path, PathError> {
        let err = |detail: &str| PathError {
            path: s.to_owned(),
            detail: detail.to_owned(),
        };
        if s == "$key" {
            return Ok(Path {
                root: false,
                member_name: true,
                segs: Vec::new(),
            });
        }
        let (root, rest) = match s.strip_prefix('$') {
            Some("") => (true, ""),
            Some(r) => (
                true,
                r.strip_prefix('.')
                    .ok_or_else(|| err("`$` is followed by `.` (or is `$key`)"))?,
            ),
            None => (false, s),
        };
        let b = rest.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        let mut expect_key = !rest.is_empty();
        while i < b.len() || expect_key {
            if expect_key {
                expect_key = false;
                if i >= b.len() {
                    return Err(err("a key is missing"));
                }
                if b[i] == b'"' {
                    let mut key = String::new();
                    i += 1;
                    loop {
                        match b.get(i) {
                            None => return Err(err("a quoted key is not closed")),
                            Some(b'"') => break,
                            Some(b'\\') if i + 1 < b.len() => {
                                key.push(b[i + 1] as char);
                                i += 2;
                            }
                            Some(_) => {
                                let c = rest[i..].chars().next().expect("in bounds");
                                key.push(c);
                                i += c.len_utf8();
                            }
                        }
                    }
                    i += 1;
                    segs.push(Seg::Key(key));
                } else {
                    let start = i;
                    while i < b.len() && !matches!(b[i], b'.' | b'[' | b'"') {
                        i += 1;
                    }
                    let key = &rest[start..i];
                    if key.is_empty() {
                        return Err(err("a key is empty"));
                    }
                    segs.push(if key == "*" {
                        Seg::Each
                    } else {
                        Seg::Key(key.to_owned())
                    });
                }
                continue;
            }
            match b[i] {
                b'.' => {
                    i += 1;
                    expect_key = true;
                }
                b'[' => {
                    let end = rest[i..]
                        .find(']')
                        .map(|e| i + e)
                        .ok_or_else(|| err("`[` is not closed"))?;
                    let inner = &rest[i + 1..end];
                    segs.push(if inner == "*" {
                        Seg::Each
                    } else {
                        Seg::Index(
                            inner
                                .parse()
                                .map_err(|_| err("an index is a number (e.g. [0]) or [*]"))?,
                        )
                    });
                    i = end + 1;
                }
                _ => return Err(err("a key follows `.`; quote keys with dots or brackets")),
            }
        }
        Ok(Path {
            root,
            member_name: false,
            segs,
        })
    }

    pub fn has_each(&self) -> bool {
        self.segs.contains(&Seg::Each)
    }

    /// The value at this path (no wildcards) below `v`.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut v = v;
        for s in &self.segs {
            v = match (s, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// `segs` starts with `prefix`'s segments: the rest.
    pub fn strip(&self, prefix: &Path) -> Option<&[Seg]> {
        (self.root == prefix.root && !self.member_name)
            .then(|| self.segs.strip_prefix(prefix.segs.as_slice()))
            .flatten()
    }
}

/// How a path is shown: keys joined by `.` (quoted when they hold `.`, `[`,
/// `"` or are empty), indexes as `[n]`.
pub fn render(segs: &[Seg], out: &mut String) {
    for (n, s) in segs.iter().enumerate() {
        match s {
            Seg::Key(k) => {
                if n > 0 {
                    out.push('.');
                }
                if k.is_empty() || k == "*" || k.contains(['.', '[', '"', ']']) {
                    out.push('"');
                    for c in k.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(k);
                }
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Each => out.push_str(if n == 0 { "*" } else { "[*]" }),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.member_name {
            return f.write_str("$key");
        }
        let mut s = String::new();
        if self.root {
            s.push('$');
            if !self.segs.is_empty() {
                s.push('.');
            }
        }
        render(&self.segs, &mut s);
        f.write_str(&s)
    }
}

/// `*` matches any run of characters (dots included), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
