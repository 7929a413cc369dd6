//! Grafana's substitutions for the InfluxQL data source: the time range as
//! `$timeFilter`, `$__interval` / `$__interval_ms` from the range and the
//! panel's width, the built-ins (`$__from`, `$__range`...), and template
//! variables as `$var`, `${var}`, `${var:format}` and `[[var]]`, multi-value
//! and All selections as regex alternations `(a|b)` with regex characters
//! escaped, as the InfluxDB data source's `interpolateQueryExpr` does.

use std::collections::BTreeMap;

use super::ExpandError;

/// A dashboard time range: as written (`now-6h`) and as epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    pub from_raw: String,
    pub to_raw: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    /// Grafana time expressions: `now`, `now-15m`, `now-1d`, an RFC 3339
    /// time or epoch milliseconds. `now_ms` is the evaluation time.
    pub fn parse(from: &str, to: &str, now_ms: i64) -> Result<TimeRange, ExpandError> {
        let from_ms = time_ms(from, now_ms)?;
        let to_ms = time_ms(to, now_ms)?;
        if from_ms >= to_ms {
            return Err(ExpandError::Time(format!("{from} is not before {to}")));
        }
        Ok(TimeRange {
            from_raw: from.to_string(),
            to_raw: to.to_string(),
            from_ms,
            to_ms,
        })
    }

    pub fn span_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// `$timeFilter` as the InfluxDB data source writes it
    /// (`getTimeFilter`): relative times stay relative to `now()`.
    pub fn time_filter(&self) -> String {
        format!(
            "time >= {} and time <= {}",
            influx_time(&self.from_raw, self.from_ms),
            influx_time(&self.to_raw, self.to_ms)
        )
    }
}

/// `getInfluxTime`: `now`, `now-<n><d|h|m|s>` stay relative, anything else
/// becomes epoch milliseconds.
fn influx_time(raw: &str, ms: i64) -> String {
    if raw == "now" {
        return "now()".into();
    }
    if let Some(rest) = raw.strip_prefix("now-") {
        let (n, unit) = rest.split_at(rest.len().saturating_sub(1));
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && "dhms".contains(unit) {
            return format!("now() - {n}{unit}");
        }
    }
    format!("{ms}ms")
}

fn time_ms(raw: &str, now_ms: i64) -> Result<i64, ExpandError> {
    let bad = || ExpandError::Time(format!("cannot read the time {raw:?}"));
    if raw == "now" {
        return Ok(now_ms);
    }
    if let Some(rest) = raw.strip_prefix("now-") {
        return Ok(now_ms - interval_ms(rest).map_err(|_| bad())?);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map_err(|_| bad());
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

/// `10s`, `1m`, `500ms`, `>10s` (Grafana's "at least") → milliseconds.
pub fn interval_ms(text: &str) -> Result<i64, ExpandError> {
    let t = text.trim().trim_start_matches('>');
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| ExpandError::Interval(text.to_string()))?;
    let unit_ms = match unit {
        "ms" => 1.0,
        "s" | "" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "w" => 604_800_000.0,
        "M" => 2_592_000_000.0,
        "y" => 31_536_000_000.0,
        _ => return Err(ExpandError::Interval(text.to_string())),
    };
    Ok((n * unit_ms) as i64)
}

/// `$__interval` and `$__interval_ms` of a panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub ms: i64,
    pub text: String,
}

impl Interval {
    pub fn from_ms(ms: i64) -> Interval {
        Interval {
            ms,
            text: format_interval(ms),
        }
    }
}

/// Grafana's `calculateInterval`: the range over the panel's data points
/// (its width in pixels unless `maxDataPoints` says otherwise), rounded to
/// a "nice" interval, and no shorter than the low limit (the panel's
/// `interval`, else the data source's `timeInterval`).
pub fn calculate_interval(range: &TimeRange, max_data_points: u32, low_limit_ms: i64) -> Interval {
    let raw = range.span_ms() as f64 / f64::from(max_data_points.max(1));
    Interval::from_ms(round_interval(raw).max(low_limit_ms.max(1)))
}

/// Grafana's `kbn.roundInterval`.
pub fn round_interval(ms: f64) -> i64 {
    const STEPS: &[(f64, i64)] = &[
        (15.0, 10),
        (35.0, 20),
        (75.0, 50),
        (150.0, 100),
        (350.0, 200),
        (750.0, 500),
        (1_500.0, 1_000),
        (3_500.0, 2_000),
        (7_500.0, 5_000),
        (12_500.0, 10_000),
        (17_500.0, 15_000),
        (25_000.0, 20_000),
        (45_000.0, 30_000),
        (90_000.0, 60_000),
        (210_000.0, 120_000),
        (450_000.0, 300_000),
        (750_000.0, 600_000),
        (1_050_000.0, 900_000),
        (1_500_000.0, 1_200_000),
        (2_700_000.0, 1_800_000),
        (5_400_000.0, 3_600_000),
        (9_000_000.0, 7_200_000),
        (16_200_000.0, 10_800_000),
        (32_400_000.0, 21_600_000),
        (86_400_000.0, 43_200_000),
        (604_800_000.0, 86_400_000),
        (1_814_400_000.0, 604_800_000),
        (3_628_800_000.0, 2_592_000_000),
    ];
    STEPS
        .iter()
        .find(|(limit, _)| ms < *limit)
        .map(|(_, v)| *v)
        .unwrap_or(31_536_000_000)
}

/// Grafana's `secondsToHms`: the largest whole unit only (`90s` → `1m`).
pub fn format_interval(ms: i64) -> String {
    const UNITS: &[(i64, &str)] = &[
        (31_536_000_000, "y"),
        (604_800_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    for (size, name) in UNITS {
        // Weeks only when exact, as InfluxQL reads `w` but Grafana writes days.
        if *name == "w" && ms % size != 0 {
            continue;
        }
        if ms >= *size {
            return format!("{}{name}", ms / size);
        }
    }
    "1ms".into()
}

/// A variable's selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The selected values; for All, every option.
    pub values: Vec<String>,
    pub all: bool,
    /// `multi` or `includeAll`: values are regex-escaped by default.
    pub regex_format: bool,
    /// A custom All value, used as it is.
    pub all_value: Option<String>,
}

impl Selection {
    pub fn single(value: &str) -> Selection {
        Selection {
            values: vec![value.to_string()],
            all: false,
            regex_format: false,
            all_value: None,
        }
    }

    /// What the legend and titles show: `a + b`, or `All`.
    pub fn text(&self) -> String {
        if self.all {
            "All".into()
        } else {
            self.values.join(" + ")
        }
    }
}

/// Everything a query of one panel can refer to.
#[derive(Debug, Clone)]
pub struct Scope {
    pub range: TimeRange,
    pub interval: Interval,
    pub vars: BTreeMap<String, Selection>,
    pub dashboard: String,
}

/// Grafana's `regexEscape`.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$*+?.()|[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn format_selection(
    sel: &Selection,
    format: Option<&str>,
    name: &str,
) -> Result<String, ExpandError> {
    if sel.all
        && let Some(all) = &sel.all_value
        && format.is_none_or(|f| f == "regex" || f == "raw")
    {
        return Ok(all.clone());
    }
    let v = &sel.values;
    let alternation = |escape: bool| {
        let vals: Vec<String> = v
            .iter()
            .map(|s| if escape { regex_escape(s) } else { s.clone() })
            .collect();
        if vals.len() == 1 {
            vals[0].clone()
        } else {
            format!("({})", vals.join("|"))
        }
    };
    Ok(match format {
        // The InfluxDB data source's interpolateQueryExpr.
        None if !sel.regex_format => v.join(","),
        None | Some("regex") => alternation(true),
        Some("raw") | Some("csv") => v.join(","),
        Some("pipe") => v.join("|"),
        Some("text") => sel.text(),
        Some("doublequote") => v
            .iter()
            .map(|s| format!("\"{}\"", s.replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(","),
        Some("singlequote") => v
            .iter()
            .map(|s| format!("'{}'", s.replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(","),
        Some("json") => serde_json::to_string(v).unwrap_or_default(),
        Some(f) => {
            return Err(ExpandError::Format {
                variable: name.to_string(),
                format: f.to_string(),
            });
        }
    })
}

/// The value of `$name` (a built-in or a variable), or `None` when unknown.
fn lookup(name: &str, format: Option<&str>, scope: &Scope) -> Result<Option<String>, ExpandError> {
    let r = &scope.range;
    Ok(Some(match name {
        "timeFilter" | "__timeFilter" => r.time_filter(),
        "__interval" => scope.interval.text.clone(),
        "__interval_ms" => scope.interval.ms.to_string(),
        "__range" => format_interval(r.span_ms()),
        "__range_ms" => r.span_ms().to_string(),
        "__range_s" => (r.span_ms() / 1000).to_string(),
        "__from" => r.from_ms.to_string(),
        "__to" => r.to_ms.to_string(),
        "__dashboard" => scope.dashboard.clone(),
        _ => match scope.vars.get(name) {
            Some(sel) => format_selection(sel, format, name)?,
            None => return Ok(None),
        },
    }))
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Substitute every macro and variable in `text`. An unknown name is an
/// error (Grafana would leave it and InfluxDB would refuse or match nothing).
pub fn interpolate(text: &str, scope: &Scope) -> Result<String, ExpandError> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        // (name, format, length of the whole reference)
        let found: Option<(&str, Option<&str>, usize)> =
            if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
                text[i + 2..].find('}').map(|end| {
                    let inner = &text[i + 2..i + 2 + end];
                    let (name, format) = match inner.split_once(':') {
                        Some((n, f)) => (n, Some(f)),
                        None => (inner, None),
                    };
                    (name, format, end + 3)
                })
            } else if b[i] == b'$' && b.get(i + 1).copied().is_some_and(is_word) {
                let len = b[i + 1..].iter().take_while(|c| is_word(**c)).count();
                Some((&text[i + 1..i + 1 + len], None, len + 1))
            } else if b[i] == b'[' && b.get(i + 1) == Some(&b'[') {
                text[i + 2..].find("]]").map(|end| {
                    let inner = &text[i + 2..i + 2 + end];
                    let (name, format) = match inner.split_once(':') {
                        Some((n, f)) => (n, Some(f)),
                        None => (inner, None),
                    };
                    (name, format, end + 4)
                })
            } else {
                None
            };
        match found {
            Some((name, format, len)) if !name.is_empty() => {
                let value = lookup(name, format, scope)?
                    .ok_or_else(|| ExpandError::UnknownVariable(name.to_string()))?;
                out.push_str(&text[copied..i]);
                out.push_str(&value);
                i += len;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn scope(range: (&str, &str), vars: &[(&str, Selection)]) -> Scope {
        let range = TimeRange::parse(range.0, range.1, NOW).unwrap();
        Scope {
            interval: calculate_interval(&range, 960, 10_000),
            range,
            vars: vars
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            dashboard: "d".into(),
        }
    }

    fn multi(values: &[&str], all: bool) -> Selection {
        Selection {
            values: values.iter().map(|s| s.to_string()).collect(),
            all,
            regex_format: true,
            all_value: None,
        }
    }

    #[test]
    fn time_filter_is_relative_like_grafanas() {
        let s = scope(("now-6h", "now"), &[]);
        assert_eq!(
            s.range.time_filter(),
            "time >= now() - 6h and time <= now()"
        );
        assert_eq!(
            interpolate("SELECT 1 FROM m WHERE $timeFilter AND $__timeFilter", &s).unwrap(),
            "SELECT 1 FROM m WHERE time >= now() - 6h and time <= now() AND time >= now() - 6h and time <= now()"
        );
        // Weeks are not kept relative by Grafana; absolute times become ms.
        let s = scope(("now-1w", "2027-01-15T08:00:00Z"), &[]);
        assert_eq!(
            s.range.time_filter(),
            format!(
                "time >= {}ms and time <= 1800000000000ms",
                NOW - 604_800_000
            )
        );
    }

    #[test]
    fn interval_follows_the_range_width_and_the_low_limit() {
        // 6 h over 960 points = 22.5 s → 20s.
        let s = scope(("now-6h", "now"), &[]);
        assert_eq!(
            s.interval,
            Interval {
                ms: 20_000,
                text: "20s".into()
            }
        );
        assert_eq!(
            interpolate("GROUP BY time($__interval) -- $__interval_ms", &s).unwrap(),
            "GROUP BY time(20s) -- 20000"
        );
        // 1 h / 960 = 3.75 s → 5 s, under the data source's 10 s minimum.
        let s = scope(("now-1h", "now"), &[]);
        assert_eq!(s.interval.text, "10s");
        // 24 h / 960 = 90 s → 2m (Grafana rounds 90 s up).
        let r = TimeRange::parse("now-24h", "now", NOW).unwrap();
        assert_eq!(calculate_interval(&r, 960, 10_000).text, "2m");
        assert_eq!(calculate_interval(&r, 100, 10_000).text, "15m");
        assert_eq!(format_interval(500), "500ms");
        assert_eq!(interval_ms(">10s").unwrap(), 10_000);
        assert!(interval_ms("10 parsecs").is_err());
    }

    #[test]
    fn multi_value_and_all_become_escaped_alternations() {
        let s = scope(
            ("now-1h", "now"),
            &[
                ("host", multi(&["a.example", "b"], false)),
                ("all", multi(&["x", "y/z", "w"], true)),
                ("one", multi(&["v1.2"], false)),
                ("device", Selection::single("meter-0001")),
            ],
        );
        assert_eq!(
            interpolate("\"host\" =~ /^$host$/ AND \"x\" =~ /^${all}$/", &s).unwrap(),
            "\"host\" =~ /^(a\\.example|b)$/ AND \"x\" =~ /^(x|y\\/z|w)$/"
        );
        assert_eq!(interpolate("/^[[one]]$/", &s).unwrap(), "/^v1\\.2$/");
        // A single-value variable is used as it is.
        assert_eq!(
            interpolate("\"device\" = '$device'", &s).unwrap(),
            "\"device\" = 'meter-0001'"
        );
        assert_eq!(
            interpolate("${host:csv} ${host:pipe} ${all:text}", &s).unwrap(),
            "a.example,b a.example|b All"
        );
        let mut custom = multi(&["x", "y"], true);
        custom.all_value = Some(".*".into());
        let s = scope(("now-1h", "now"), &[("c", custom)]);
        assert_eq!(interpolate("/^$c$/", &s).unwrap(), "/^.*$/");
    }

    #[test]
    fn unknown_names_and_formats_are_errors_and_longest_names_win() {
        let s = scope(
            ("now-1h", "now"),
            &[
                ("device", Selection::single("d1")),
                ("device_type", Selection::single("van")),
            ],
        );
        assert_eq!(interpolate("$device_type/$device", &s).unwrap(), "van/d1");
        assert_eq!(
            interpolate("$devices", &s),
            Err(ExpandError::UnknownVariable("devices".into()))
        );
        assert!(matches!(
            interpolate("${device:percentencode}", &s),
            Err(ExpandError::Format { .. })
        ));
        // Not references: a lone $, `$/` in a regex, `$1`-free text.
        assert_eq!(interpolate("a $ b /^x$/", &s).unwrap(), "a $ b /^x$/");
    }
}
