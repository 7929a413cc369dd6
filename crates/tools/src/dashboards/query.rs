//! InfluxQL over the 1.x `/query` API, answers read into series.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Where the dashboards' data source points.
#[derive(Debug, Clone)]
pub struct Influx {
    pub url: String,
    pub db: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// One series of an answer: InfluxDB's `name`, `tags`, `columns`, `values`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// Non-null values outside the time column.
    pub fn non_null(&self) -> usize {
        let skip = usize::from(self.columns.first().is_some_and(|c| c == "time"));
        self.values
            .iter()
            .map(|row| row.iter().skip(skip).filter(|v| !v.is_null()).count())
            .sum()
    }
}

/// The answer to one statement.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub series: Vec<Series>,
    pub error: Option<String>,
}

impl Answer {
    pub fn rows(&self) -> usize {
        self.series.iter().map(|s| s.values.len()).sum()
    }

    pub fn non_null(&self) -> usize {
        self.series.iter().map(Series::non_null).sum()
    }
}

pub struct Client {
    http: reqwest::Client,
    influx: Influx,
}

impl Client {
    pub fn new(influx: Influx) -> Client {
        wsingest_server::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Client { http, influx }
    }

    pub fn influx(&self) -> &Influx {
        &self.influx
    }

    /// Run `q` (times as epoch milliseconds). Transport failures and
    /// InfluxDB's own errors both end up in [`Answer::error`]; with several
    /// statements, the series of all and the first error.
    pub async fn query(&self, q: &str) -> Answer {
        match self.try_query(q).await {
            Ok(a) => a,
            Err(e) => Answer {
                series: Vec::new(),
                error: Some(e),
            },
        }
    }

    async fn try_query(&self, q: &str) -> Result<Answer, String> {
        let base = format!("{}/query", self.influx.url.trim_end_matches('/'));
        let mut url = reqwest::Url::parse(&base).map_err(|e| format!("{base}: {e}"))?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs
                .append_pair("db", &self.influx.db)
                .append_pair("epoch", "ms")
                .append_pair("q", q);
            if let Some(u) = &self.influx.user {
                pairs.append_pair("u", u);
            }
            if let Some(p) = &self.influx.password {
                pairs.append_pair("p", p);
            }
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("InfluxDB at {}: {e}", self.influx.url))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("InfluxDB answer: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|_| format!("InfluxDB answered {status}: {}", body.trim()))?;
        if let Some(e) = json["error"].as_str() {
            return Err(e.to_string());
        }
        Ok(parse_answer(&json))
    }
}

pub fn parse_answer(json: &Value) -> Answer {
    let mut answer = Answer::default();
    for r in json["results"].as_array().into_iter().flatten() {
        if let Some(e) = r["error"].as_str() {
            answer.error.get_or_insert_with(|| e.to_string());
        }
        for s in r["series"].as_array().into_iter().flatten() {
            answer.series.push(Series {
                name: s["name"].as_str().unwrap_or_default().to_string(),
                tags: s["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                columns: s["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c.as_str().unwrap_or_default().to_string())
                    .collect(),
                values: s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|row| row.as_array().cloned().unwrap_or_default())
                    .collect(),
            });
        }
    }
    answer
}

/// Values of a variable query as Grafana's InfluxDB `metricFindQuery`
/// reads them: the second column (after time, or the tag key), the first
/// for `SHOW FIELD KEYS`/`SHOW RETENTION POLICIES` and one-column answers;
/// unique, in order.
pub fn find_values(query: &str, answer: &Answer) -> Vec<String> {
    let lower = query.to_lowercase();
    let value_first =
        lower.contains("show field keys") || lower.contains("show retention policies");
    let mut out: Vec<String> = Vec::new();
    for s in &answer.series {
        for row in &s.values {
            let v = if value_first {
                row.first()
            } else {
                row.get(1).or(row.first())
            };
            let text = match v {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    out
}

/// A series' display name as Grafana's InfluxDB data source builds it:
/// the target's alias with `$m`, `$col`, `$tag_x` (and `[[...]]`) filled
/// in, else `measurement.column {tag: value, ...}`.
pub fn series_name(series: &Series, column: &str, alias: Option<&str>) -> String {
    let Some(alias) = alias else {
        let mut name = format!("{}.{column}", series.name);
        if !series.tags.is_empty() {
            let tags: Vec<String> = series
                .tags
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            name.push_str(&format!(" {{{}}}", tags.join(", ")));
        }
        return name;
    };
    let value = |key: &str| -> Option<String> {
        match key {
            "m" | "measurement" => Some(series.name.clone()),
            "col" => Some(column.to_string()),
            _ => key
                .strip_prefix("tag_")
                .map(|t| series.tags.get(t).cloned().unwrap_or_default()),
        }
    };
    let mut out = String::new();
    let mut rest = alias;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("[[")
            && let Some(end) = t.find("]]")
            && let Some(v) = value(&t[..end])
        {
            out.push_str(&v);
            rest = &t[end + 2..];
            continue;
        }
        if let Some(t) = tail.strip_prefix('$') {
            let len = t
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            if let Some(v) = value(&t[..len]) {
                out.push_str(&v);
                rest = &t[len..];
                continue;
            }
        }
        out.push_str(&tail[..1]);
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_names_and_variable_values() {
        let a = parse_answer(&json!({"results": [{"statement_id": 0, "series": [
            {"name": "meter", "tags": {"device": "m1"}, "columns": ["time", "mean"], "values": [[1, 2.0], [2, null]]},
            {"name": "meter", "tags": {"device": "m2"}, "columns": ["time", "mean"], "values": [[1, 3.0]]}
        ]}]}));
        assert_eq!((a.rows(), a.non_null()), (3, 2));
        assert_eq!(
            series_name(&a.series[0], "mean", None),
            "meter.mean {device: m1}"
        );
        assert_eq!(
            series_name(&a.series[1], "mean", Some("$tag_device [[col]] $m $other")),
            "m2 mean meter $other"
        );
        let tags = parse_answer(&json!({"results": [{"series": [
            {"name": "x", "columns": ["key", "value"], "values": [["device", "b"], ["device", "a"], ["device", "b"]]}]}]}));
        assert_eq!(
            find_values("SHOW TAG VALUES WITH KEY = device", &tags),
            ["b", "a"]
        );
        let err = parse_answer(&json!({"results": [{"error": "undefined function meen()"}]}));
        assert_eq!(err.error.as_deref(), Some("undefined function meen()"));
    }
}
