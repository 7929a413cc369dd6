//! What Grafana substitutes in a panel query before it reaches InfluxDB:
//! `$timeFilter`, `$__interval` (Grafana's own rounding) and template variables.

use super::*;

/// `now-6h` → 6 h in ms.
pub(super) fn relative_ms(from: &str) -> i64 {
    let d = from
        .strip_prefix("now-")
        .unwrap_or_else(|| panic!("relative time ranges only: {from}"));
    duration_ms(d)
}

pub(super) fn duration_ms(d: &str) -> i64 {
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: i64 = n.parse().unwrap();
    n * match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => panic!("unit {unit}"),
    }
}

/// Grafana's `$__interval`: the range over the panel's data points (about
/// its width in pixels), at least the datasource's minimum, rounded to a
/// "nice" interval like `kbn.roundInterval`.
pub(super) fn grafana_interval(range_ms: i64, min_ms: i64) -> (String, i64) {
    const NICE: &[(&str, i64)] = &[
        ("1s", 1000),
        ("2s", 2000),
        ("5s", 5000),
        ("10s", 10_000),
        ("15s", 15_000),
        ("20s", 20_000),
        ("30s", 30_000),
        ("1m", 60_000),
        ("2m", 120_000),
        ("5m", 300_000),
        ("10m", 600_000),
        ("15m", 900_000),
        ("30m", 1_800_000),
        ("1h", 3_600_000),
        ("2h", 7_200_000),
        ("6h", 21_600_000),
        ("12h", 43_200_000),
        ("1d", 86_400_000),
    ];
    let raw = (range_ms / 1000).max(min_ms);
    let (name, ms) = NICE
        .iter()
        .rev()
        .find(|(_, ms)| *ms <= raw)
        .copied()
        .unwrap_or(NICE[0]);
    (name.to_string(), ms)
}

pub(super) struct Vars {
    pub(super) time_filter: String,
    pub(super) interval: (String, i64),
    pub(super) values: BTreeMap<String, String>,
}

impl Vars {
    pub(super) fn apply(&self, q: &str) -> String {
        let mut q = q
            .replace("$timeFilter", &self.time_filter)
            .replace("$__interval_ms", &self.interval.1.to_string())
            .replace("$__interval", &self.interval.0);
        // Longest names first, so `$device_type` is not cut by `$device`.
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in names {
            q = q
                .replace(&format!("${{{n}}}"), &self.values[n])
                .replace(&format!("${n}"), &self.values[n]);
        }
        let unresolved = q.match_indices('$').any(|(i, _)| {
            q[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
        });
        assert!(!unresolved, "unsubstituted variable in {q}");
        q
    }
}

/// Values of a variable query as Grafana's InfluxDB `metricFindQuery` reads
/// them: the column after time (or the only column) of every row.
pub(super) fn find_values(answer: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for row in s["values"].as_array().unwrap() {
            let v = row.get(1).unwrap_or(&row[0]);
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Null => {}
                other => out.push(other.to_string()),
            }
        }
    }
    out
}

/// Grafana escapes regex characters of a value used inside `/.../`.
pub(super) fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut o, c| {
        if "\\^$.|?*+()[]{}/".contains(c) {
            o.push('\\');
        }
        o.push(c);
        o
    })
}
