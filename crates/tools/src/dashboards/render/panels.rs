//! One panel in its box: frame and title, then its kind's drawing.

use plotters::prelude::*;
use serde_json::Value;

use super::super::check::PanelResult;
use super::super::query::{Series, series_name};
use super::units;
use super::{
    Area, BORDER, DrawResult, GREEN, GRID, MUTED, PALETTE, PANEL, RED, TEXT, bold_style, clock,
    draw_centered, draw_text, fit, text_style,
};

const TITLE_BAND: u32 = 26;

pub(crate) fn panel(area: &Area, p: &PanelResult, now_ms: i64) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    area.fill(&PANEL).map_err(|e| e.to_string())?;
    area.draw(&Rectangle::new(
        [(0, 0), (w as i32 - 1, h as i32 - 1)],
        BORDER.stroke_width(1),
    ))
    .map_err(|e| e.to_string())?;
    draw_text(area, &p.title, &bold_style(14, TEXT), (8, 6), w as i32 - 16)?;
    let body = area.clone().shrink(
        (6, TITLE_BAND),
        (w.saturating_sub(12), h.saturating_sub(TITLE_BAND + 4)),
    );
    if let Some(e) = p.error() {
        return draw_centered(&body, &format!("Error: {e}"), &text_style(13, RED));
    }
    if p.targets.is_empty() {
        return draw_centered(
            &body,
            &format!("{} panel", p.panel.kind),
            &text_style(13, MUTED),
        );
    }
    if !p.has_data() {
        return draw_centered(&body, "No data", &text_style(14, MUTED));
    }
    match p.panel.kind.as_str() {
        "timeseries" | "graph" | "barchart" | "trend" => timeseries(&body, p, now_ms),
        "stat" | "gauge" | "bargauge" | "singlestat" => stat(&body, p, now_ms),
        "table" | "table-old" => table(&body, p, now_ms),
        "geomap" => geomap(&body, p),
        other => {
            let values: usize = p.targets.iter().map(|t| t.answer.non_null()).sum();
            let series: usize = p.targets.iter().map(|t| t.answer.series.len()).sum();
            draw_centered(
                &body,
                &format!("{other} panel: {series} series, {values} values (not drawn here)"),
                &text_style(13, MUTED),
            )
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Value columns of a series (all but `time`), with their indexes.
fn value_columns(s: &Series) -> impl Iterator<Item = (usize, &String)> {
    s.columns.iter().enumerate().filter(|(_, c)| *c != "time")
}

struct Line {
    name: String,
    points: Vec<(i64, f64)>,
}

fn lines(p: &PanelResult) -> Vec<Line> {
    let mut out = Vec::new();
    for t in &p.targets {
        for s in &t.answer.series {
            let Some(ti) = s.columns.iter().position(|c| c == "time") else {
                continue;
            };
            for (ci, col) in value_columns(s) {
                let points: Vec<(i64, f64)> = s
                    .values
                    .iter()
                    .filter_map(|row| Some((row.get(ti)?.as_i64()?, as_f64(row.get(ci)?)?)))
                    .collect();
                if !points.is_empty() {
                    out.push(Line {
                        name: series_name(s, col, t.alias.as_deref()),
                        points,
                    });
                }
            }
        }
    }
    out
}

/// Lines over the dashboard's time range, y in the panel's unit, the
/// legend below as Grafana puts it.
fn timeseries(area: &Area, p: &PanelResult, now_ms: i64) -> DrawResult {
    let lines = lines(p);
    if lines.is_empty() {
        return draw_centered(area, "No numeric data", &text_style(14, MUTED));
    }
    let (w, h) = area.dim_in_pixel();
    // Legend: items flow left to right, at most three rows.
    let legend_style = text_style(12, TEXT);
    let mut rows: Vec<Vec<(usize, String, i32)>> = vec![Vec::new()];
    let mut x = 0;
    let mut hidden = 0;
    for (i, l) in lines.iter().enumerate() {
        let name = fit(area, &l.name, &legend_style, w as i32 / 2);
        let width = area
            .estimate_text_size(&name, &legend_style)
            .map(|(tw, _)| tw as i32)
            .unwrap_or(60)
            + 30;
        if x + width > w as i32 && x > 0 {
            if rows.len() == 3 {
                hidden = lines.len() - i;
                break;
            }
            rows.push(Vec::new());
            x = 0;
        }
        if let Some(row) = rows.last_mut() {
            row.push((i, name, x));
        }
        x += width;
    }
    let legend_h = rows.len() as u32 * 17 + 2;
    let chart_area = area.clone().shrink((0, 0), (w, h.saturating_sub(legend_h)));
    for (r, row) in rows.iter().enumerate() {
        let y = (h - legend_h) as i32 + 4 + r as i32 * 17;
        for (i, name, x) in row {
            let color = PALETTE[i % PALETTE.len()];
            area.draw(&Rectangle::new(
                [(x + 4, y + 5), (x + 18, y + 8)],
                color.filled(),
            ))
            .map_err(|e| e.to_string())?;
            draw_text(area, name, &legend_style, (x + 24, y), w as i32 - x - 24)?;
        }
    }
    if hidden > 0 {
        let text = format!("+{hidden} more");
        let y = (h - legend_h) as i32 + 4 + (rows.len() as i32 - 1) * 17;
        draw_text(area, &text, &text_style(12, MUTED), (w as i32 - 70, y), 70)?;
    }

    let (x0, x1) = p_range(p);
    let (mut lo, mut hi) = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(_, v)| *v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if hi - lo < 1e-9 {
        // A flat line: from zero (or around it when negative) up to above it.
        if lo >= 0.0 {
            hi = if lo > 1e-9 { lo * 1.25 } else { 1.0 };
            lo = 0.0;
        } else {
            hi = lo.abs() * 0.25 + lo.max(0.0);
            lo *= 1.25;
        }
    } else {
        let pad = (hi - lo) * 0.08;
        // Keep a zero baseline when the data start at zero.
        lo = if lo >= 0.0 && lo - pad < 0.0 {
            0.0
        } else {
            lo - pad
        };
        hi += pad;
    }
    let unit = p.panel.unit.clone();
    let y_labels = ((h / 32) as usize).max(2);
    let decimals = p
        .panel
        .decimals
        .or_else(|| axis_decimals(lo, hi, y_labels, unit.as_deref(), now_ms));
    let span = x1 - x0;
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_right(8)
        .margin_top(4)
        .x_label_area_size(20)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID.stroke_width(1))
        .axis_style(BORDER.stroke_width(1))
        .label_style(text_style(11, MUTED))
        .x_labels(((w / 70) as usize).max(2))
        .y_labels(y_labels)
        .x_label_formatter(&|ms| clock(*ms, span <= 15 * 60_000))
        .y_label_formatter(&|v| units::format(*v, unit.as_deref(), decimals, now_ms))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, l) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if l.points.len() == 1 {
            chart
                .draw_series(
                    l.points
                        .iter()
                        .map(|pt| Circle::new(*pt, 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Decimals for the y axis labels: the fewest that tell the ticks plotters
/// will draw apart (49.95 Hz and 50.02 Hz are not both "50 Hz"); `None`
/// when the automatic ones do.
fn axis_decimals(lo: f64, hi: f64, n: usize, unit: Option<&str>, now_ms: i64) -> Option<usize> {
    use plotters::coord::ranged1d::Ranged;
    use plotters::coord::types::RangedCoordf64;
    let ticks = RangedCoordf64::from(lo..hi).key_points(n);
    let distinct = |d: Option<usize>| {
        let labels: Vec<String> = ticks
            .iter()
            .map(|v| units::format(*v, unit, d, now_ms))
            .collect();
        labels.windows(2).all(|w| w[0] != w[1])
    };
    if distinct(None) {
        return None;
    }
    (1..=6).find(|d| distinct(Some(*d))).or(Some(6))
}

fn p_range(p: &PanelResult) -> (i64, i64) {
    // The panel's data may lie partly outside the range (GROUP BY time
    // buckets start before it): widen to include them.
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for t in &p.targets {
        for s in &t.answer.series {
            if let Some(ti) = s.columns.iter().position(|c| c == "time") {
                for row in &s.values {
                    if let Some(ms) = row.get(ti).and_then(Value::as_i64) {
                        lo = lo.min(ms);
                        hi = hi.max(ms);
                    }
                }
            }
        }
    }
    (lo.min(p.range.from_ms), hi.max(p.range.to_ms))
}

/// The last non-null value of each series (Grafana's `lastNotNull`),
/// mapped or formatted in the panel's unit, large in the middle.
fn stat(area: &Area, p: &PanelResult, now_ms: i64) -> DrawResult {
    let mut values: Vec<(String, String, RGBColor)> = Vec::new();
    for t in &p.targets {
        for s in &t.answer.series {
            for (ci, col) in value_columns(s) {
                let Some(v) = s
                    .values
                    .iter()
                    .rev()
                    .find_map(|r| r.get(ci).filter(|v| !v.is_null()))
                else {
                    continue;
                };
                let raw = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mapped = p.panel.mappings.iter().find(|m| m.value == raw);
                let (text, color) = match (mapped, as_f64(v)) {
                    (Some(m), _) => {
                        let color = match m.color.as_deref() {
                            Some("red") => RED,
                            Some("orange") => PALETTE[3],
                            Some("yellow") => PALETTE[1],
                            Some("blue") => PALETTE[2],
                            _ => GREEN,
                        };
                        (m.text.clone(), color)
                    }
                    (None, Some(n)) => (
                        units::format(n, p.panel.unit.as_deref(), p.panel.decimals, now_ms),
                        GREEN,
                    ),
                    (None, None) => (raw, GREEN),
                };
                let name = if s.tags.is_empty() {
                    String::new()
                } else {
                    series_name(s, col, t.alias.as_deref())
                };
                values.push((name, text, color));
            }
        }
    }
    if values.is_empty() {
        return draw_centered(area, "No data", &text_style(14, MUTED));
    }
    let (w, h) = area.dim_in_pixel();
    let n = values.len().min(6) as u32;
    let cell_w = w / n;
    for (i, (name, text, color)) in values.iter().take(6).enumerate() {
        let cell = area.clone().shrink((i as u32 * cell_w, 0), (cell_w, h));
        let size = ((h as f64 * 0.55)
            .min(cell_w as f64 / (text.chars().count().max(3) as f64 * 0.62)))
        .clamp(12.0, 56.0) as u32;
        let label_h = if name.is_empty() { 0 } else { 16 };
        let value_area = cell.clone().shrink((0, 0), (cell_w, h - label_h));
        draw_centered(&value_area, text, &bold_style(size, *color))?;
        if !name.is_empty() {
            let label_area = cell.shrink((0, h - label_h), (cell_w, label_h));
            draw_centered(&label_area, name, &text_style(11, MUTED))?;
        }
    }
    Ok(())
}

fn cell_text(v: &Value, column: &str, now_ms: i64) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if column == "time" {
                clock(f as i64, true)
            } else if (1e12..1e13).contains(&f) {
                // Epoch milliseconds (`last_seen_ms` and the like).
                units::ago(f, now_ms)
            } else {
                units::number(f, None)
            }
        }
        other => other.to_string(),
    }
}

/// Tag columns, then value columns (the union over the series: `last(*)`
/// over several measurements gives each its own), a `measurement` column
/// when the series come from several; one row per series row. The time
/// column only for raw rows (no GROUP BY tags), where it tells them apart.
fn table(area: &Area, p: &PanelResult, now_ms: i64) -> DrawResult {
    let series: Vec<&Series> = p.targets.iter().flat_map(|t| &t.answer.series).collect();
    let several_names = series.windows(2).any(|w| w[0].name != w[1].name);
    let mut tag_cols: Vec<String> = Vec::new();
    let mut value_cols: Vec<String> = Vec::new();
    for s in &series {
        let with_time = s.tags.is_empty() && s.values.len() > 1;
        for k in s.tags.keys() {
            if !tag_cols.contains(k) {
                tag_cols.push(k.clone());
            }
        }
        for c in &s.columns {
            if (with_time || c != "time") && !value_cols.contains(c) {
                value_cols.push(c.clone());
            }
        }
    }
    let mut header: Vec<String> = Vec::new();
    if several_names {
        header.push("measurement".into());
    }
    header.extend(tag_cols.iter().cloned());
    header.extend(value_cols.iter().cloned());
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &series {
        for row in &s.values {
            let mut cells: Vec<String> = Vec::new();
            if several_names {
                cells.push(s.name.clone());
            }
            cells.extend(
                tag_cols
                    .iter()
                    .map(|k| s.tags.get(k).cloned().unwrap_or_default()),
            );
            cells.extend(value_cols.iter().map(|c| {
                s.columns
                    .iter()
                    .position(|x| x == c)
                    .and_then(|i| row.get(i))
                    .map(|v| cell_text(v, c, now_ms))
                    .unwrap_or_default()
            }));
            rows.push(cells);
        }
    }
    let (w, h) = area.dim_in_pixel();
    let row_h = 20;
    let n_cols = header.len().max(1);
    // Column widths by content, at least 50 px.
    let mut want: Vec<u32> = header.iter().map(|c| c.chars().count() as u32).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(wi) = want.get_mut(i) {
                *wi = (*wi).max(c.chars().count() as u32);
            }
        }
    }
    let total: u32 = want.iter().map(|c| c.clamp(&4, &40)).sum::<u32>().max(1);
    let widths: Vec<i32> = want
        .iter()
        .map(|c| ((*c).clamp(4, 40) * w / total) as i32)
        .collect();
    let mut x = 0;
    let head_style = bold_style(12, TEXT);
    for (i, name) in header.iter().enumerate() {
        draw_text(area, name, &head_style, (x + 4, 3), widths[i] - 8)?;
        x += widths[i];
    }
    area.draw(&PathElement::new(
        vec![(0, row_h - 2), (w as i32, row_h - 2)],
        BORDER,
    ))
    .map_err(|e| e.to_string())?;
    let fits = ((h as i32 - row_h) / row_h).max(0) as usize;
    let shown = if rows.len() > fits {
        fits.saturating_sub(1)
    } else {
        rows.len()
    };
    let style = text_style(12, TEXT);
    for (r, row) in rows.iter().take(shown).enumerate() {
        let y = row_h * (r as i32 + 1) + 3;
        let mut x = 0;
        for (i, cell) in row.iter().enumerate().take(n_cols) {
            draw_text(area, cell, &style, (x + 4, y), widths[i] - 8)?;
            x += widths[i];
        }
    }
    if shown < rows.len() {
        let y = row_h * (shown as i32 + 1) + 3;
        draw_text(
            area,
            &format!("… {} more rows", rows.len() - shown),
            &text_style(12, MUTED),
            (4, y),
            w as i32,
        )?;
    }
    Ok(())
}

/// Points at (lon, lat) of every row that has them, labelled with the
/// series' tags (the device), on plain degree axes.
fn geomap(area: &Area, p: &PanelResult) -> DrawResult {
    let mut points: Vec<(f64, f64, String)> = Vec::new();
    for t in &p.targets {
        for s in &t.answer.series {
            let find = |names: &[&str]| {
                s.columns
                    .iter()
                    .position(|c| names.contains(&c.to_lowercase().as_str()))
            };
            let (Some(lat), Some(lon)) = (
                find(&["lat", "latitude"]),
                find(&["lon", "lng", "longitude"]),
            ) else {
                continue;
            };
            let label = s
                .tags
                .get("device")
                .cloned()
                .unwrap_or_else(|| s.tags.values().cloned().collect::<Vec<_>>().join(" "));
            for row in &s.values {
                if let (Some(la), Some(lo)) =
                    (row.get(lat).and_then(as_f64), row.get(lon).and_then(as_f64))
                {
                    points.push((lo, la, label.clone()));
                }
            }
        }
    }
    if points.is_empty() {
        return draw_centered(area, "No lat/lon columns", &text_style(14, MUTED));
    }
    let bounds = |f: fn(&(f64, f64, String)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let pad = ((hi - lo) * 0.15).max(0.005);
        (lo - pad)..(hi + pad)
    };
    let xr = bounds(|p| p.0);
    let yr = bounds(|p| p.1);
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .x_label_area_size(36)
        .y_label_area_size(78)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID.stroke_width(1))
        .axis_style(BORDER.stroke_width(1))
        .label_style(text_style(11, MUTED))
        .x_desc("longitude")
        .y_desc("latitude")
        .axis_desc_style(text_style(11, MUTED))
        .x_label_formatter(&|v| format!("{v:.3}°"))
        .y_label_formatter(&|v| format!("{v:.3}°"))
        .draw()
        .map_err(|e| e.to_string())?;
    let label_style = text_style(11, TEXT);
    for (i, (x, y, label)) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 6, color.filled())
                    + Circle::new((0, 0), 6, BORDER.stroke_width(1))
                    + Text::new(label.clone(), (9, -6), label_style.clone()),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
