//! Compiling a [`FormatConfig`] into a [`Mapping`]: paths parsed, globs,
//! units and time formats checked once, so a bad config fails at startup.

use chrono::FixedOffset;

use super::path::{Path, Seg, render};
use super::*;

impl Mapping {
    /// Compile `config` as format `name`.
    pub fn compile(name: &str, config: &FormatConfig) -> Result<Mapping, FormatError> {
        let path = |key: &str, s: &str| {
            let p = Path::parse(s).map_err(|source| FormatError::Path {
                format: name.to_owned(),
                key: key.to_owned(),
                source,
            })?;
            if p.has_each() {
                return Err(invalid(
                    name,
                    key,
                    format!("{s:?}: only `split` may use [*] or *"),
                ));
            }
            Ok(p)
        };
        let split = match &config.split {
            None => None,
            Some(s) => {
                let mut p = Path::parse(s).map_err(|source| FormatError::Path {
                    format: name.to_owned(),
                    key: "split".into(),
                    source,
                })?;
                let each = p.segs.iter().filter(|s| **s == Seg::Each).count();
                if each != 1 || p.segs.last() != Some(&Seg::Each) || p.member_name {
                    return Err(invalid(
                        name,
                        "split",
                        format!(
                            "{s:?} must end in [*] (array) or .* (object), once: e.g. readings[*]"
                        ),
                    ));
                }
                p.segs.pop();
                p.root = false; // shown as written; evaluated from the root
                Some(p)
            }
        };
        let seq = config.seq.as_deref().map(|s| path("seq", s)).transpose()?;
        let require = config
            .require
            .iter()
            .map(|(p, v)| Ok((path("require", p)?, v.clone())))
            .collect::<Result<Vec<_>, FormatError>>()?;
        let measurement = match &config.measurement {
            None => Measurement::Default,
            Some(MeasurementSpec::Name(n)) if n.is_empty() => {
                return Err(invalid(name, "measurement", "is empty".into()));
            }
            Some(MeasurementSpec::Name(n)) => Measurement::Name(n.clone()),
            Some(MeasurementSpec::Path(m)) => {
                Measurement::Path(path("measurement.path", &m.path)?, m.default.clone())
            }
        };
        let ts = match &config.ts {
            None => None,
            Some(t) => {
                let paths = t
                    .path
                    .list()
                    .into_iter()
                    .map(|p| path("ts.path", p))
                    .collect::<Result<Vec<_>, _>>()?;
                if paths.is_empty() {
                    return Err(invalid(name, "ts.path", "names no path".into()));
                }
                let tz = match t.tz.as_deref() {
                    None => FixedOffset::east_opt(0).expect("valid"),
                    Some(tz) => parse_offset(tz).ok_or_else(|| {
                        invalid(
                            name,
                            "ts.tz",
                            format!("{tz:?} is not UTC or an offset such as +01:00"),
                        )
                    })?,
                };
                if let Some(f) = &t.format {
                    if t.unit != TimeUnit::Auto && t.unit != TimeUnit::Rfc3339 {
                        return Err(invalid(
                            name,
                            "ts.format",
                            "is for text times: leave ts.unit out".into(),
                        ));
                    }
                    let mut items = chrono::format::StrftimeItems::new(f);
                    if items.any(|i| matches!(i, chrono::format::Item::Error)) {
                        return Err(invalid(
                            name,
                            "ts.format",
                            format!("{f:?} is not a strftime pattern"),
                        ));
                    }
                }
                Some(Ts {
                    paths,
                    unit: t.unit,
                    format: t.format.clone(),
                    tz,
                    required: t.required,
                })
            }
        };
        let tags = config
            .tags
            .iter()
            .map(|(k, p)| Ok((k.clone(), path(&format!("tags.{k}"), p)?)))
            .collect::<Result<Vec<_>, FormatError>>()?;
        let f = &config.fields;
        let from = f
            .from
            .as_deref()
            .map(|s| path("fields.from", s))
            .transpose()?;
        let extra = f
            .extra
            .iter()
            .map(|(k, p)| Ok((k.clone(), path(&format!("fields.extra.{k}"), p)?)))
            .collect::<Result<Vec<_>, FormatError>>()?;
        if f.separator.is_empty() && f.flatten {
            return Err(invalid(
                name,
                "fields.separator",
                "is empty: use e.g. \"_\"".into(),
            ));
        }
        // The values that are the time, tags, ... are not fields as well.
        let root_of_fields = from.clone().unwrap_or(Path {
            root: false,
            member_name: false,
            segs: Vec::new(),
        });
        let mut used: Vec<&Path> = tags.iter().map(|(_, p)| p).collect();
        used.extend(seq.iter());
        used.extend(require.iter().map(|(p, _)| p));
        used.extend(ts.iter().flat_map(|t| t.paths.iter()));
        if let Measurement::Path(p, _) = &measurement {
            used.push(p);
        }
        let consumed = used
            .into_iter()
            .filter_map(|p| p.strip(&root_of_fields))
            .map(|segs| {
                let mut s = String::new();
                render(segs, &mut s);
                s
            })
            .collect();
        Ok(Mapping {
            name: name.into(),
            description: config.description.clone().unwrap_or_default(),
            seq,
            require,
            split,
            measurement,
            ts,
            tags,
            from,
            flatten: f.flatten,
            separator: f.separator.clone(),
            include: f.include.clone(),
            exclude: f.exclude.clone(),
            extra,
            consumed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (a clone is a reference count, not a copy).
    pub fn shared_name(&self) -> &std::sync::Arc<str> {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether messages of this format carry a `seq` (and so get acks).
    pub fn has_seq(&self) -> bool {
        self.seq.is_some()
    }
}
