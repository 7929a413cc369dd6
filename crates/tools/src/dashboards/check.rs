//! Resolve each dashboard's variables, run every panel target against
//! InfluxDB, and report per target: series, rows, values, first error.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::expand::{self, Interval, Scope, Selection, TimeRange};
use super::model::{self, Dashboard, Panel, TargetQuery, Variable, VariableKind};
use super::query::{self, Answer, Client};
use super::{DashboardError, ExpandError, Options, builder};

#[derive(Debug, Clone)]
pub struct TargetResult {
    pub ref_id: String,
    /// The InfluxQL sent (or the text that could not be expanded).
    pub query: String,
    pub alias: Option<String>,
    pub result_format: String,
    pub answer: Answer,
}

#[derive(Debug, Clone)]
pub struct PanelResult {
    pub panel: Panel,
    /// The title with variables filled in.
    pub title: String,
    /// The time range its queries ran over.
    pub range: TimeRange,
    pub interval: Interval,
    pub targets: Vec<TargetResult>,
}

impl PanelResult {
    pub fn error(&self) -> Option<&str> {
        self.targets.iter().find_map(|t| t.answer.error.as_deref())
    }

    /// Whether the panel would show something: a non-null value in any
    /// target. Panels without targets (text) count as showing something.
    pub fn has_data(&self) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t.answer.non_null() > 0)
    }
}

/// A variable as resolved: its selection, or why it has none.
#[derive(Debug, Clone)]
pub struct VariableResult {
    pub name: String,
    pub query: String,
    pub selection: Selection,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DashboardResult {
    pub dashboard: Dashboard,
    pub range: TimeRange,
    pub variables: Vec<VariableResult>,
    pub panels: Vec<PanelResult>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub dashboards: Vec<DashboardResult>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Load the dashboards of `opts.dir` and run them.
pub async fn run(opts: &Options) -> Result<Report, DashboardError> {
    let mut dashboards = model::load_dir(&opts.dir)?;
    for only in &opts.only {
        if !dashboards
            .iter()
            .any(|d| &d.uid == only || &d.stem() == only)
        {
            return Err(DashboardError::NoMatch(only.clone()));
        }
    }
    if !opts.only.is_empty() {
        dashboards.retain(|d| opts.only.iter().any(|o| *o == d.uid || *o == d.stem()));
    }
    let client = Client::new(opts.influx.clone());
    let low_limit = expand::interval_ms(&opts.min_interval)?;
    let now = now_ms();
    let mut out = Vec::new();
    for d in dashboards {
        let from = opts.from.as_deref().unwrap_or(&d.time_from);
        let to = opts.to.as_deref().unwrap_or(&d.time_to);
        let range = TimeRange::parse(from, to, now).map_err(|e| match e {
            ExpandError::Time(m) => ExpandError::Time(format!("{}: {m}", d.title)),
            other => other,
        })?;
        out.push(run_dashboard(&client, d, range, opts.width_px, low_limit).await?);
    }
    Ok(Report { dashboards: out })
}

/// One dashboard: its variables in order (each may use the ones before),
/// then every panel's targets with the panel's own `$__interval`.
pub async fn run_dashboard(
    client: &Client,
    dashboard: Dashboard,
    range: TimeRange,
    width_px: u32,
    low_limit_ms: i64,
) -> Result<DashboardResult, DashboardError> {
    let mut scope = Scope {
        interval: expand::calculate_interval(&range, width_px, low_limit_ms),
        range,
        vars: BTreeMap::new(),
        dashboard: dashboard.title.clone(),
    };
    let mut variables = Vec::new();
    for v in &dashboard.variables {
        let resolved = resolve_variable(client, v, &scope).await;
        scope
            .vars
            .insert(v.name.clone(), resolved.selection.clone());
        variables.push(resolved);
    }
    let mut panels = Vec::new();
    for p in &dashboard.panels {
        let low = match &p.interval {
            Some(i) => expand::interval_ms(i)?,
            None => low_limit_ms,
        };
        let points = p.max_data_points.unwrap_or(width_px * p.grid.w / 24).max(1);
        let panel_scope = Scope {
            interval: expand::calculate_interval(&scope.range, points, low),
            ..scope.clone()
        };
        let mut targets = Vec::new();
        for t in p.targets.iter().filter(|t| !t.hide) {
            let text = match &t.query {
                TargetQuery::Raw(q) => q.clone(),
                TargetQuery::Builder(model) => builder::render(model),
            };
            let (query, answer) = match expand::interpolate(&text, &panel_scope) {
                Ok(q) => {
                    let a = client.query(&q).await;
                    (q, a)
                }
                Err(e) => (
                    text,
                    Answer {
                        series: Vec::new(),
                        error: Some(e.to_string()),
                    },
                ),
            };
            targets.push(TargetResult {
                ref_id: t.ref_id.clone(),
                query,
                alias: t.alias.clone(),
                result_format: t.result_format.clone(),
                answer,
            });
        }
        let title = title_text(&p.title, &panel_scope);
        panels.push(PanelResult {
            panel: p.clone(),
            title,
            range: panel_scope.range.clone(),
            interval: panel_scope.interval.clone(),
            targets,
        });
    }
    Ok(DashboardResult {
        dashboard,
        range: scope.range,
        variables,
        panels,
    })
}

/// A title shows variables as text (`a + b`), not as regexes.
fn title_text(title: &str, scope: &Scope) -> String {
    let mut text_scope = scope.clone();
    for sel in text_scope.vars.values_mut() {
        *sel = Selection::single(&sel.text());
    }
    expand::interpolate(title, &text_scope).unwrap_or_else(|_| title.to_string())
}

fn options_of_list(query: &str) -> Vec<String> {
    query
        .split(',')
        .map(|o| {
            // `text : value` pairs keep the value.
            let o = o.trim();
            o.split_once(" : ").map_or(o, |(_, v)| v.trim()).to_string()
        })
        .filter(|o| !o.is_empty())
        .collect()
}

/// A variable's options and Grafana's default selection: the saved
/// `current` when it is still an option, else All (with `includeAll`) or the
/// first option.
async fn resolve_variable(client: &Client, v: &Variable, scope: &Scope) -> VariableResult {
    let mut error = None;
    let mut query_text = String::new();
    let options: Vec<String> = match &v.kind {
        VariableKind::Query { query, regex, sort } => {
            query_text = query.clone();
            match expand::interpolate(query, scope) {
                Err(e) => {
                    error = Some(e.to_string());
                    Vec::new()
                }
                Ok(q) => {
                    query_text = q.clone();
                    let answer = client.query(&q).await;
                    error = answer.error.clone();
                    let found = query::find_values(&q, &answer);
                    match filter_and_sort(found, regex, *sort) {
                        Ok(found) => found,
                        Err(e) => {
                            error.get_or_insert(e);
                            Vec::new()
                        }
                    }
                }
            }
        }
        VariableKind::Custom { query } | VariableKind::Interval { query, .. } => {
            options_of_list(query)
        }
        VariableKind::Constant { query } | VariableKind::Textbox { query } => vec![query.clone()],
        VariableKind::Other(_) => v.current.clone(),
    };
    let regex_format = v.multi || v.include_all;
    let all = |options: Vec<String>| Selection {
        values: options,
        all: true,
        regex_format,
        all_value: v.all_value.clone(),
    };
    let saved: Vec<String> = v
        .current
        .iter()
        .filter(|c| options.contains(c))
        .cloned()
        .collect();
    let selection = if v.current.iter().any(|c| c == "$__all") && v.include_all {
        all(options)
    } else if !saved.is_empty() {
        Selection {
            values: saved,
            all: false,
            regex_format,
            all_value: None,
        }
    } else if v.include_all {
        all(options)
    } else {
        Selection {
            values: options.into_iter().take(1).collect(),
            all: false,
            regex_format,
            all_value: None,
        }
    };
    if let VariableKind::Interval { auto: true, .. } = v.kind
        && v.current.iter().any(|c| c.starts_with("$__auto"))
    {
        // `auto`: an interval from the range, as for a full-width panel.
        let auto = expand::calculate_interval(&scope.range, 30, 1).text;
        return VariableResult {
            name: v.name.clone(),
            query: query_text,
            selection: Selection::single(&auto),
            error,
        };
    }
    VariableResult {
        name: v.name.clone(),
        query: query_text,
        selection,
        error,
    }
}

/// The variable's `regex` (`/pattern/`: keep matching values, or the first
/// capture group) and `sort`.
fn filter_and_sort(values: Vec<String>, regex: &str, sort: u8) -> Result<Vec<String>, String> {
    let mut values = if regex.is_empty() {
        values
    } else {
        let pattern = regex
            .strip_prefix('/')
            .and_then(|r| r.rsplit_once('/'))
            .map(|(p, flags)| {
                if flags.contains('i') {
                    format!("(?i){p}")
                } else {
                    p.to_string()
                }
            })
            .unwrap_or_else(|| regex.to_string());
        let re = regex::Regex::new(&pattern).map_err(|e| format!("variable regex {regex}: {e}"))?;
        let mut kept: Vec<String> = Vec::new();
        for v in values {
            if let Some(c) = re.captures(&v) {
                let value = c.get(1).or(c.get(0)).map(|m| m.as_str().to_string());
                if let Some(value) = value
                    && !kept.contains(&value)
                {
                    kept.push(value);
                }
            }
        }
        kept
    };
    let num = |s: &String| s.parse::<f64>().unwrap_or(f64::NAN);
    match sort {
        1 => values.sort(),
        2 => values.sort_by(|a, b| b.cmp(a)),
        3 => values.sort_by(|a, b| num(a).total_cmp(&num(b))),
        4 => values.sort_by(|a, b| num(b).total_cmp(&num(a))),
        5 => values.sort_by_key(|a| a.to_lowercase()),
        6 => values.sort_by_key(|a| std::cmp::Reverse(a.to_lowercase())),
        _ => {}
    }
    Ok(values)
}

impl Report {
    pub fn queries(&self) -> usize {
        self.dashboards
            .iter()
            .map(|d| d.variables.len() + d.panels.iter().map(|p| p.targets.len()).sum::<usize>())
            .sum()
    }

    /// Variables and targets that failed.
    pub fn errors(&self) -> usize {
        self.dashboards
            .iter()
            .map(|d| {
                d.variables.iter().filter(|v| v.error.is_some()).count()
                    + d.panels
                        .iter()
                        .flat_map(|p| &p.targets)
                        .filter(|t| t.answer.error.is_some())
                        .count()
            })
            .sum()
    }

    /// Panels without errors that returned nothing (and variables without values).
    pub fn without_data(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for d in &self.dashboards {
            for v in &d.variables {
                if v.error.is_none() && v.selection.values.is_empty() {
                    out.push((d.dashboard.title.clone(), format!("variable ${}", v.name)));
                }
            }
            for p in &d.panels {
                if p.error().is_none() && !p.has_data() {
                    out.push((d.dashboard.title.clone(), p.title.clone()));
                }
            }
        }
        out
    }

    /// Whether `check` passes: no errors, and with `require_data` every
    /// panel (and variable) has something.
    pub fn ok(&self, require_data: bool) -> bool {
        self.errors() == 0 && (!require_data || self.without_data().is_empty())
    }

    /// The table: dashboard, panel, target, series, rows, values, first error.
    pub fn table(&self, require_data: bool) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "DASHBOARD".into(),
            "PANEL".into(),
            "TARGET".into(),
            "SERIES".into(),
            "ROWS".into(),
            "VALUES".into(),
            "ERROR".into(),
        ]];
        let clip = |s: &str, n: usize| {
            if s.chars().count() > n {
                format!("{}…", s.chars().take(n - 1).collect::<String>())
            } else {
                s.to_string()
            }
        };
        for d in &self.dashboards {
            let dash = clip(&d.dashboard.title, 28);
            for v in &d.variables {
                let note = match (&v.error, v.selection.values.is_empty()) {
                    (Some(e), _) => e.clone(),
                    (None, true) if require_data => "no values".into(),
                    (None, true) => String::new(),
                    (None, false) => format!("= {}", clip(&v.selection.text(), 60)),
                };
                rows.push([
                    dash.clone(),
                    format!("${}", v.name),
                    "var".into(),
                    "".into(),
                    v.selection.values.len().to_string(),
                    "".into(),
                    note,
                ]);
            }
            for p in &d.panels {
                if p.targets.is_empty() {
                    rows.push([
                        dash.clone(),
                        clip(&p.title, 36),
                        "-".into(),
                        "".into(),
                        "".into(),
                        "".into(),
                        format!("({} panel, no queries)", p.panel.kind),
                    ]);
                }
                let no_data = require_data && p.error().is_none() && !p.has_data();
                for t in &p.targets {
                    let a = &t.answer;
                    let note = match &a.error {
                        Some(e) => e.replace('\n', " "),
                        None if no_data => "NO DATA".into(),
                        None => String::new(),
                    };
                    rows.push([
                        dash.clone(),
                        clip(&p.title, 36),
                        t.ref_id.clone(),
                        a.series.len().to_string(),
                        a.rows().to_string(),
                        a.non_null().to_string(),
                        note,
                    ]);
                }
            }
        }
        let mut widths = [0usize; 6];
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate().take(6) {
                let pad = widths[i] - cell.chars().count();
                if (3..6).contains(&i) {
                    let _ = write!(line, "{}{cell}  ", " ".repeat(pad));
                } else {
                    let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
                }
            }
            line.push_str(&r[6]);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let empty = self.without_data();
        let _ = writeln!(
            out,
            "\n{} dashboards, {} queries: {} failed, {} panels without data",
            self.dashboards.len(),
            self.queries(),
            self.errors(),
            empty.len()
        );
        out
    }

    /// The same as JSON, with the queries as sent.
    pub fn to_json(&self, require_data: bool) -> Value {
        let dashboards: Vec<Value> = self
            .dashboards
            .iter()
            .map(|d| {
                let variables: serde_json::Map<String, Value> = d
                    .variables
                    .iter()
                    .map(|v| {
                        (
                            v.name.clone(),
                            json!({"query": v.query, "values": v.selection.values,
                                   "all": v.selection.all, "error": v.error}),
                        )
                    })
                    .collect();
                let panels: Vec<Value> = d
                    .panels
                    .iter()
                    .map(|p| {
                        let targets: Vec<Value> = p
                            .targets
                            .iter()
                            .map(|t| {
                                json!({"ref_id": t.ref_id, "query": t.query,
                                       "series": t.answer.series.len(), "rows": t.answer.rows(),
                                       "values": t.answer.non_null(), "error": t.answer.error})
                            })
                            .collect();
                        json!({"id": p.panel.id, "title": p.title, "type": p.panel.kind,
                               "interval": p.interval.text, "has_data": p.has_data(),
                               "error": p.error(), "targets": targets})
                    })
                    .collect();
                json!({"file": d.dashboard.file, "uid": d.dashboard.uid, "title": d.dashboard.title,
                       "time_filter": d.range.time_filter(), "variables": variables, "panels": panels})
            })
            .collect();
        let empty: Vec<Value> = self
            .without_data()
            .into_iter()
            .map(|(d, p)| json!({"dashboard": d, "panel": p}))
            .collect();
        json!({"ok": self.ok(require_data), "queries": self.queries(), "errors": self.errors(),
               "without_data": empty, "dashboards": dashboards})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_regex_and_sort() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filter_and_sort(v(&["b-2", "a-10", "c"]), "/^([a-z])-/", 1).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            filter_and_sort(v(&["10", "9", "x"]), "", 3).unwrap(),
            ["9", "10", "x"]
        );
        assert!(filter_and_sort(v(&["a"]), "/(/", 0).is_err());
        assert_eq!(options_of_list("1m, 10m,Hour : 1h"), ["1m", "10m", "1h"]);
    }
}
