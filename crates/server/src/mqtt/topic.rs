//! MQTT topic templates: `telemetry/{device}/{measurement}` rendered per
//! point, and `devices/{device}/commands` turned into a subscription filter
//! (`devices/+/commands`) and matched back to a device id.
//!
//! A rendered value must stay inside its topic level and must not be a
//! wildcard, so `/`, `+`, `#` and NUL in a value become `_` (device ids
//! cannot contain them; measurements can). Templates are checked once, at
//! startup.

use std::fmt;

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Device,
    Measurement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed topic template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Parse `source`, allowing only the placeholders in `allowed`.
    pub fn parse(source: &str, allowed: &[Var]) -> Result<Template, String> {
        if source.is_empty() {
            return Err("is empty".into());
        }
        if source.contains(['+', '#', '\0']) {
            return Err(format!(
                "{source:?} contains an MQTT wildcard (+ or #) or NUL"
            ));
        }
        if source.len() > 1024 {
            return Err("is longer than 1024 bytes".into());
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{source:?} has an unclosed {{"));
            };
            let name = &rest[open + 1..open + close];
            let var = match name {
                "device" => Var::Device,
                "measurement" => Var::Measurement,
                other => {
                    return Err(format!(
                        "{source:?} uses {{{other}}}; known placeholders: {}",
                        names(allowed)
                    ));
                }
            };
            if !allowed.contains(&var) {
                return Err(format!(
                    "{source:?} cannot use {{{name}}} here; known placeholders: {}",
                    names(allowed)
                ));
            }
            parts.push(Part::Var(var));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{source:?} has a }} without {{"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// The topic for these values.
    pub fn render(&self, device: &str, measurement: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + device.len() + measurement.len());
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(Var::Device) => push_level_safe(&mut out, device),
                Part::Var(Var::Measurement) => push_level_safe(&mut out, measurement),
            }
        }
        out
    }

    /// The subscription filter: each placeholder becomes `+`. Only valid for
    /// templates whose placeholders fill whole levels (checked by
    /// [`Template::check_whole_levels`]).
    pub fn filter(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Var(_) => "+",
            })
            .collect()
    }

    /// A template used for subscribing must have each placeholder alone in
    /// its level (`devices/{device}/commands`, not `devices/d-{device}`).
    pub fn check_whole_levels(&self) -> Result<(), String> {
        for level in self.source.split('/') {
            if level.contains('{')
                && !(level.starts_with('{')
                    && level.ends_with('}')
                    && level.matches('{').count() == 1)
            {
                return Err(format!(
                    "{:?}: a placeholder must fill a whole topic level to be subscribed to",
                    self.source
                ));
            }
        }
        Ok(())
    }

    /// The device id of `topic` if it matches this template (placeholders
    /// matching one level each).
    pub fn match_device<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let pattern: Vec<&str> = self.source.split('/').collect();
        let levels: Vec<&str> = topic.split('/').collect();
        if pattern.len() != levels.len() {
            return None;
        }
        let mut device = None;
        for (p, l) in pattern.iter().zip(&levels) {
            match *p {
                "{device}" => device = Some(*l),
                "{measurement}" => {}
                literal if literal == *l => {}
                _ => return None,
            }
        }
        device.filter(|d| !d.is_empty())
    }
}

fn names(allowed: &[Var]) -> String {
    allowed
        .iter()
        .map(|v| match v {
            Var::Device => "{device}",
            Var::Measurement => "{measurement}",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_level_safe(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for c in value.chars() {
        out.push(if matches!(c, '/' | '+' | '#' | '\0') {
            '_'
        } else {
            c
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Var] = &[Var::Device, Var::Measurement];

    #[test]
    fn renders_and_keeps_values_in_their_level() {
        let t = Template::parse("telemetry/{device}/{measurement}", BOTH).unwrap();
        assert_eq!(t.render("dev-1", "weather"), "telemetry/dev-1/weather");
        assert_eq!(t.render("d", "a/b+#c"), "telemetry/d/a_b__c");
        assert_eq!(t.render("d", ""), "telemetry/d/_");
        let t = Template::parse("site1/{measurement}-{device}", BOTH).unwrap();
        assert_eq!(t.render("x", "m"), "site1/m-x");
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in [
            "",
            "a/+/b",
            "a/#",
            "a/{dev}",
            "a/{device",
            "a/}",
            "a/{measurement}",
        ] {
            assert!(Template::parse(bad, &[Var::Device]).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_and_match() {
        let t = Template::parse("devices/{device}/commands", &[Var::Device]).unwrap();
        t.check_whole_levels().unwrap();
        assert_eq!(t.filter(), "devices/+/commands");
        assert_eq!(t.match_device("devices/dev-1/commands"), Some("dev-1"));
        assert_eq!(t.match_device("devices/dev-1/commands/result"), None);
        assert_eq!(t.match_device("devices//commands"), None);
        assert_eq!(t.match_device("other/dev-1/commands"), None);
        let partial = Template::parse("devices/d-{device}/commands", &[Var::Device]).unwrap();
        assert!(partial.check_whole_levels().is_err());
    }
}
