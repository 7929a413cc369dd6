//! The parts of a Grafana dashboard JSON that checking and drawing need,
//! read tolerantly (unknown keys are ignored, as Grafana does) into types.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::DashboardError;

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: PathBuf,
    pub uid: String,
    pub title: String,
    pub description: String,
    /// The dashboard's own time range, as written (`now-6h`, `now`).
    pub time_from: String,
    pub time_to: String,
    pub variables: Vec<Variable>,
    /// Every panel, those inside rows included; rows themselves are not panels here.
    pub panels: Vec<Panel>,
}

impl Dashboard {
    /// The file name without `.json`: what `--only` matches besides the uid.
    pub fn stem(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Grid rows the panels take (the bottom of the lowest panel).
    pub fn grid_height(&self) -> u32 {
        self.panels
            .iter()
            .map(|p| p.grid.y + p.grid.h)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableKind {
    /// Values from running `query` against the data source.
    Query {
        query: String,
        regex: String,
        sort: u8,
    },
    /// Comma-separated values (`text : value` pairs allowed).
    Custom { query: String },
    /// One fixed value.
    Constant { query: String },
    /// Interval choices (`1m,10m,1h`), optionally `auto`.
    Interval {
        query: String,
        auto: bool,
        auto_count: u32,
        auto_min: String,
    },
    /// Free text; its default is `query`.
    Textbox { query: String },
    /// Data source pickers, ad hoc filters: nothing to substitute here.
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub kind: VariableKind,
    pub multi: bool,
    pub include_all: bool,
    pub all_value: Option<String>,
    /// The saved selection (`current.value`); `$__all` for All.
    pub current: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPos {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub id: i64,
    pub title: String,
    /// `timeseries`, `stat`, `table`, `geomap`, ...
    pub kind: String,
    pub grid: GridPos,
    /// `fieldConfig.defaults.unit`.
    pub unit: Option<String>,
    pub decimals: Option<usize>,
    /// Value mappings of `type: value`.
    pub mappings: Vec<Mapping>,
    /// The panel's own minimum interval (`interval`), e.g. `1m`.
    pub interval: Option<String>,
    pub max_data_points: Option<u32>,
    pub targets: Vec<Target>,
}

/// A value mapping: the raw value shown as `text`, in `color`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub value: String,
    pub text: String,
    pub color: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub ref_id: String,
    /// Hidden targets (`hide: true`) are neither run nor drawn by Grafana.
    pub hide: bool,
    pub alias: Option<String>,
    /// `time_series` (default) or `table`.
    pub result_format: String,
    pub query: TargetQuery,
}

#[derive(Debug, Clone)]
pub enum TargetQuery {
    /// `rawQuery: true`: InfluxQL as written.
    Raw(String),
    /// The query builder's model (measurement, select, tags, groupBy...).
    Builder(Value),
}

/// Every `*.json` in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Dashboard>, DashboardError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DashboardError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| DashboardError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DashboardError::Empty(dir.to_path_buf()));
    }
    files.iter().map(|p| load_file(p)).collect()
}

pub fn load_file(path: &Path) -> Result<Dashboard, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|source| DashboardError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &json)
}

/// A dashboard from its JSON (`{"dashboard": {...}}` as exported by the API too).
pub fn parse(path: &Path, json: &Value) -> Result<Dashboard, DashboardError> {
    let d = json.get("dashboard").unwrap_or(json);
    let invalid = |reason: String| DashboardError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let title = str_of(d, "title").ok_or_else(|| invalid("no title".into()))?;
    let panels_json = d["panels"]
        .as_array()
        .ok_or_else(|| invalid("no panels array".into()))?;
    let mut panels = Vec::new();
    for p in panels_json {
        if p["type"] == "row" {
            for inner in p["panels"].as_array().into_iter().flatten() {
                panels.push(panel(inner).map_err(&invalid)?);
            }
        } else {
            panels.push(panel(p).map_err(&invalid)?);
        }
    }
    let variables = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(variable)
        .collect::<Result<Vec<_>, String>>()
        .map_err(&invalid)?;
    Ok(Dashboard {
        file: path.to_path_buf(),
        uid: str_of(d, "uid").unwrap_or_default(),
        title,
        description: str_of(d, "description").unwrap_or_default(),
        time_from: d["time"]["from"].as_str().unwrap_or("now-6h").to_string(),
        time_to: d["time"]["to"].as_str().unwrap_or("now").to_string(),
        variables,
        panels,
    })
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn num(v: &Value) -> Option<u32> {
    v.as_u64().map(|n| n as u32)
}

fn panel(p: &Value) -> Result<Panel, String> {
    let title = str_of(p, "title").unwrap_or_default();
    let g = &p["gridPos"];
    let grid = match (num(&g["x"]), num(&g["y"]), num(&g["w"]), num(&g["h"])) {
        (Some(x), Some(y), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24 => {
            GridPos { x, y, w, h }
        }
        _ => {
            return Err(format!(
                "panel {title:?}: gridPos must be within 24 columns"
            ));
        }
    };
    let defaults = &p["fieldConfig"]["defaults"];
    let mut mappings = Vec::new();
    for m in defaults["mappings"].as_array().into_iter().flatten() {
        if m["type"] == "value" {
            for (k, v) in m["options"].as_object().into_iter().flatten() {
                if let Some(text) = v["text"].as_str() {
                    mappings.push(Mapping {
                        value: k.clone(),
                        text: text.to_string(),
                        color: str_of(v, "color"),
                    });
                }
            }
        }
    }
    let targets = p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| target(i, t))
        .collect();
    Ok(Panel {
        id: p["id"].as_i64().unwrap_or(0),
        title,
        kind: str_of(p, "type").unwrap_or_else(|| "unknown".into()),
        grid,
        unit: str_of(defaults, "unit").filter(|u| !u.is_empty()),
        decimals: defaults["decimals"].as_u64().map(|d| d as usize),
        mappings,
        interval: str_of(p, "interval").filter(|i| !i.is_empty()),
        max_data_points: num(&p["maxDataPoints"]),
        targets,
    })
}

fn target(index: usize, t: &Value) -> Target {
    let ref_id = str_of(t, "refId").unwrap_or_else(|| {
        // Grafana names unnamed targets A, B, C...
        char::from(b'A' + (index % 26) as u8).to_string()
    });
    let query = match (t["rawQuery"].as_bool(), t["query"].as_str()) {
        (Some(true), Some(q)) => TargetQuery::Raw(q.to_string()),
        // Builder targets: rawQuery false or absent, a measurement to read.
        _ if t.get("measurement").is_some() || t.get("select").is_some() => {
            TargetQuery::Builder(t.clone())
        }
        (_, Some(q)) => TargetQuery::Raw(q.to_string()),
        _ => TargetQuery::Builder(t.clone()),
    };
    Target {
        ref_id,
        hide: t["hide"].as_bool().unwrap_or(false),
        alias: str_of(t, "alias").filter(|a| !a.is_empty()),
        result_format: str_of(t, "resultFormat").unwrap_or_else(|| "time_series".into()),
        query,
    }
}

fn variable(v: &Value) -> Result<Variable, String> {
    let name = str_of(v, "name").ok_or("a variable without a name")?;
    // `query` is a string for InfluxQL; newer Grafana may store {query: "..."}.
    let query = v["query"]
        .as_str()
        .map(str::to_string)
        .or_else(|| v["query"]["query"].as_str().map(str::to_string))
        .unwrap_or_default();
    let kind = match v["type"].as_str().unwrap_or("query") {
        "query" => VariableKind::Query {
            query,
            regex: str_of(v, "regex").unwrap_or_default(),
            sort: v["sort"].as_u64().unwrap_or(0) as u8,
        },
        "custom" => VariableKind::Custom { query },
        "constant" => VariableKind::Constant { query },
        "interval" => VariableKind::Interval {
            query,
            auto: v["auto"].as_bool().unwrap_or(false),
            auto_count: v["auto_count"].as_u64().unwrap_or(30) as u32,
            auto_min: str_of(v, "auto_min").unwrap_or_else(|| "10s".into()),
        },
        "textbox" => VariableKind::Textbox { query },
        other => VariableKind::Other(other.to_string()),
    };
    let current = match &v["current"]["value"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Variable {
        name,
        kind,
        multi: v["multi"].as_bool().unwrap_or(false),
        include_all: v["includeAll"].as_bool().unwrap_or(false),
        all_value: str_of(v, "allValue").filter(|a| !a.is_empty()),
        current,
    })
}
