//! Query-builder targets (`rawQuery: false`) rendered to InfluxQL as
//! Grafana's `InfluxQueryModel.render` does: select parts, measurement and
//! retention policy, tag conditions, `$timeFilter`, group by, fill, order,
//! limits. The result still holds `$timeFilter`, `$__interval` and variables.

use serde_json::Value;

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

fn params(part: &Value) -> Vec<String> {
    part["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// One select part applied to what the previous parts rendered.
fn render_part(part: &Value, inner: &str) -> String {
    let kind = part["type"].as_str().unwrap_or("");
    let p = params(part);
    match kind {
        "field" => quote_ident(p.first().map(String::as_str).unwrap_or("value")),
        "alias" => format!(
            "{inner} AS {}",
            quote_ident(p.first().map(String::as_str).unwrap_or(""))
        ),
        "math" => format!("{inner} {}", p.first().map(String::as_str).unwrap_or("")),
        // Functions: the field (or the previous function) first, then parameters.
        _ => {
            let mut args = vec![inner.to_string()];
            args.extend(p);
            format!("{kind}({})", args.join(", "))
        }
    }
}

fn render_group_by(part: &Value) -> String {
    let p = params(part);
    let first = p.first().map(String::as_str).unwrap_or("");
    match part["type"].as_str().unwrap_or("") {
        "time" => format!(
            "time({})",
            if first.is_empty() {
                "$__interval"
            } else {
                first
            }
        ),
        "fill" => format!("fill({})", if first.is_empty() { "null" } else { first }),
        "tag" => quote_ident(first),
        other => format!("{other}({first})"),
    }
}

fn render_tag(tag: &Value, index: usize) -> String {
    let key = tag["key"].as_str().unwrap_or("");
    let value = tag["value"].as_str().unwrap_or("");
    let regex = value.starts_with('/') && value.ends_with('/') && value.len() > 1;
    let operator = tag["operator"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| if regex { "=~".into() } else { "=".into() });
    let numeric = (operator == "<" || operator == ">") && value.parse::<f64>().is_ok();
    let value = if regex || numeric {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    };
    let mut out = String::new();
    if index > 0 {
        out.push_str(tag["condition"].as_str().unwrap_or("AND"));
        out.push(' ');
    }
    out.push_str(&format!("{} {operator} {value}", quote_ident(key)));
    out
}

/// InfluxQL for a builder target.
pub fn render(t: &Value) -> String {
    let selects: Vec<String> = t["select"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|parts| {
            parts
                .as_array()
                .into_iter()
                .flatten()
                .fold(String::new(), |inner, part| render_part(part, &inner))
        })
        .collect();
    let selects = if selects.is_empty() {
        vec!["mean(\"value\")".to_string()]
    } else {
        selects
    };
    let measurement = t["measurement"].as_str().unwrap_or("measurement");
    let measurement = if measurement.starts_with('/') && measurement.ends_with('/') {
        measurement.to_string()
    } else {
        quote_ident(measurement)
    };
    let from = match t["policy"].as_str() {
        Some(p) if !p.is_empty() && p != "default" => format!("{}.{measurement}", quote_ident(p)),
        _ => measurement,
    };
    let mut q = format!("SELECT {} FROM {from} WHERE ", selects.join(", "));
    let conditions: Vec<String> = t["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, tag)| render_tag(tag, i))
        .collect();
    if !conditions.is_empty() {
        q.push_str(&format!("({}) AND ", conditions.join(" ")));
    }
    q.push_str("$timeFilter");
    let mut group_by = String::new();
    for (i, part) in t["groupBy"].as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            group_by.push_str(if part["type"] == "fill" { " " } else { ", " });
        }
        group_by.push_str(&render_group_by(part));
    }
    if !group_by.is_empty() {
        q.push_str(&format!(" GROUP BY {group_by}"));
    }
    if let Some(fill) = t["fill"].as_str() {
        q.push_str(&format!(" fill({fill})"));
    }
    if t["orderByTime"] == "DESC" {
        q.push_str(" ORDER BY time DESC");
    }
    for (key, word) in [("limit", "LIMIT"), ("slimit", "SLIMIT")] {
        match &t[key] {
            Value::String(s) if !s.is_empty() => q.push_str(&format!(" {word} {s}")),
            Value::Number(n) => q.push_str(&format!(" {word} {n}")),
            _ => {}
        }
    }
    if let Some(tz) = t["tz"].as_str().filter(|s| !s.is_empty()) {
        q.push_str(&format!(" tz('{tz}')"));
    }
    q
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_builder_target_renders_like_grafanas_model() {
        let t = json!({
            "refId": "A", "measurement": "weather", "policy": "default", "resultFormat": "time_series",
            "select": [[{"type": "field", "params": ["temp_c"]}, {"type": "mean", "params": []},
                        {"type": "math", "params": ["* 1.8 + 32"]}, {"type": "alias", "params": ["temp_f"]}],
                       [{"type": "field", "params": ["wind_ms"]}, {"type": "max", "params": []}]],
            "tags": [{"key": "site", "operator": "=", "value": "roof"},
                     {"condition": "AND", "key": "device", "operator": "=~", "value": "/^$device$/"}],
            "groupBy": [{"type": "time", "params": ["$__interval"]}, {"type": "tag", "params": ["site"]},
                        {"type": "fill", "params": ["none"]}]
        });
        assert_eq!(
            super::render(&t),
            "SELECT mean(\"temp_c\") * 1.8 + 32 AS \"temp_f\", max(\"wind_ms\") FROM \"weather\" \
             WHERE (\"site\" = 'roof' AND \"device\" =~ /^$device$/) AND $timeFilter \
             GROUP BY time($__interval), \"site\" fill(none)"
        );
    }
}
