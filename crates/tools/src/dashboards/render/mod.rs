//! One PNG per dashboard, laid out on the dashboard's own grid (24 columns,
//! `gridPos`), each panel drawn from its query answers with plotters:
//! time series as lines with the panel's unit and a legend, stat panels as
//! their value, tables as their first rows, geomaps as points on lat/lon
//! axes, anything else as a titled box saying what it is.

mod panels;
pub mod png;
pub mod units;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::DashboardError;
use super::check::{DashboardResult, Report};
use super::model::Dashboard;

/// Image width in pixels.
pub const WIDTH: u32 = 1600;
/// Height of one grid row (Grafana's is 30 px at 1920 px).
pub const ROW_HEIGHT: u32 = 26;
/// The title band above the grid (title, two lines of description).
pub const HEADER: u32 = 80;
/// Space around the grid and between panels.
pub const GAP: u32 = 6;

/// The pixel size `render` draws `d` at.
pub fn canvas_size(d: &Dashboard) -> (u32, u32) {
    (WIDTH, HEADER + d.grid_height() * ROW_HEIGHT + GAP * 2)
}

// Grafana's dark theme.
pub(crate) const BACKGROUND: RGBColor = RGBColor(0x11, 0x12, 0x17);
pub(crate) const PANEL: RGBColor = RGBColor(0x18, 0x1b, 0x1f);
pub(crate) const BORDER: RGBColor = RGBColor(0x2c, 0x32, 0x35);
pub(crate) const GRID: RGBColor = RGBColor(0x26, 0x2a, 0x2e);
pub(crate) const TEXT: RGBColor = RGBColor(0xcc, 0xcc, 0xdc);
pub(crate) const MUTED: RGBColor = RGBColor(0x8e, 0x8e, 0x9e);
pub(crate) const GREEN: RGBColor = RGBColor(0x73, 0xbf, 0x69);
pub(crate) const RED: RGBColor = RGBColor(0xf2, 0x49, 0x5c);
/// Grafana's classic palette, in order.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x73, 0xbf, 0x69),
    RGBColor(0xf2, 0xcc, 0x0c),
    RGBColor(0x8a, 0xb8, 0xff),
    RGBColor(0xff, 0x98, 0x30),
    RGBColor(0xf2, 0x49, 0x5c),
    RGBColor(0x56, 0x98, 0xc8),
    RGBColor(0xb8, 0x77, 0xd9),
    RGBColor(0x70, 0xdb, 0xed),
    RGBColor(0xfa, 0xde, 0x2a),
    RGBColor(0xca, 0x95, 0xe5),
];

pub(crate) const FONT: &str = "sans-serif";

/// DejaVu Sans (Latin, punctuation, arrows: a 20 KB subset, its licence
/// beside it in `assets/`), so drawing needs no system font library.
static REGULAR: &[u8] = include_bytes!("../../../assets/DejaVuSans-subset.ttf");
static BOLD: &[u8] = include_bytes!("../../../assets/DejaVuSans-Bold-subset.ttf");

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The fonts are compiled in and known to parse (a unit test draws text).
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, REGULAR);
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, BOLD);
    });
}

pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
pub(crate) type DrawResult = Result<(), String>;

pub(crate) fn text_style(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(&color)
}

pub(crate) fn bold_style(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FONT, size)
        .into_font()
        .style(FontStyle::Bold)
        .color(&color)
}

/// The text cut with `…` to fit `max_px` in `style`.
pub(crate) fn fit(area: &Area, text: &str, style: &TextStyle, max_px: i32) -> String {
    let width = |s: &str| {
        area.estimate_text_size(s, style)
            .map(|(w, _)| w as i32)
            .unwrap_or(0)
    };
    if width(text) <= max_px {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().collect::<String>() + "…";
        if width(&candidate) <= max_px {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        String::new()
    } else {
        chars[..lo].iter().collect::<String>() + "…"
    }
}

pub(crate) fn draw_text(
    area: &Area,
    text: &str,
    style: &TextStyle,
    (x, y): (i32, i32),
    max_px: i32,
) -> DrawResult {
    let text = fit(area, text, style, max_px);
    area.draw_text(&text, style, (x, y))
        .map_err(|e| e.to_string())
}

pub(crate) fn draw_centered(area: &Area, text: &str, style: &TextStyle) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let text = fit(area, text, style, w as i32 - 8);
    let style = style.pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(&text, &style, (w as i32 / 2, h as i32 / 2))
        .map_err(|e| e.to_string())
}

/// Time of day (UTC) for axis labels and tables.
pub(crate) fn clock(ms: i64, seconds: bool) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.format(if seconds { "%H:%M:%S" } else { "%H:%M" })
                .to_string()
        })
        .unwrap_or_default()
}

/// Draw `result` to an RGB buffer of [`canvas_size`].
pub fn draw(result: &DashboardResult) -> Result<(u32, u32, Vec<u8>), DashboardError> {
    register_fonts();
    let (w, h) = canvas_size(&result.dashboard);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw_into(&mut buf, (w, h), result).map_err(|reason| DashboardError::Draw {
        dashboard: result.dashboard.title.clone(),
        reason,
    })?;
    Ok((w, h, buf))
}

fn draw_into(buf: &mut [u8], (w, h): (u32, u32), result: &DashboardResult) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    root.fill(&BACKGROUND).map_err(|e| e.to_string())?;
    header(&root, result)?;
    let col = (WIDTH - GAP) as f64 / 24.0;
    for p in &result.panels {
        let g = p.panel.grid;
        let x = GAP as f64 + f64::from(g.x) * col;
        let y = HEADER + g.y * ROW_HEIGHT;
        let pw = (f64::from(g.w) * col) as u32 - GAP;
        let ph = g.h * ROW_HEIGHT - GAP;
        let area = root.clone().shrink((x as u32, y), (pw, ph));
        panels::panel(&area, p, result.range.to_ms)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn header(root: &Area, r: &DashboardResult) -> DrawResult {
    let d = &r.dashboard;
    draw_text(
        root,
        &d.title,
        &bold_style(20, TEXT),
        (GAP as i32 + 4, 10),
        WIDTH as i32 / 2,
    )?;
    let mut facts = vec![
        format!(
            "{} → {} UTC ({} → {})",
            clock(r.range.from_ms, false),
            clock(r.range.to_ms, false),
            r.range.from_raw,
            r.range.to_raw
        ),
        format!("uid {}", d.uid),
    ];
    for v in &r.variables {
        facts.push(format!("${} = {}", v.name, v.selection.text()));
    }
    let right = facts.join("   ·   ");
    let style = text_style(13, MUTED).pos(Pos::new(HPos::Right, VPos::Top));
    let right = fit(root, &right, &style, WIDTH as i32 / 2 - 20);
    root.draw_text(&right, &style, ((WIDTH - GAP) as i32 - 4, 16))
        .map_err(|e| e.to_string())?;
    // The description in up to two lines, cut at a word.
    let style = text_style(13, MUTED);
    let max = WIDTH as i32 - 24;
    let words: Vec<&str> = d.description.split_whitespace().collect();
    let mut first = String::new();
    let mut rest = 0;
    for (i, w) in words.iter().enumerate() {
        let candidate = if first.is_empty() {
            w.to_string()
        } else {
            format!("{first} {w}")
        };
        if fit(root, &candidate, &style, max) != candidate {
            break;
        }
        first = candidate;
        rest = i + 1;
    }
    draw_text(root, &first, &style, (GAP as i32 + 4, 38), max)?;
    draw_text(
        root,
        &words[rest..].join(" "),
        &style,
        (GAP as i32 + 4, 56),
        max,
    )
}

/// Draw every dashboard of `report` to `out/<file stem>.png`.
pub fn render_all(report: &Report, out: &Path) -> Result<Vec<PathBuf>, DashboardError> {
    std::fs::create_dir_all(out).map_err(|source| DashboardError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for d in &report.dashboards {
        let (w, h, rgb) = draw(d)?;
        let path = out.join(format!("{}.png", d.dashboard.stem()));
        png::encode_rgb(w, h, &rgb)
            .and_then(|png| std::fs::write(&path, png))
            .map_err(|source| DashboardError::Write {
                path: path.clone(),
                source,
            })?;
        written.push(path);
    }
    Ok(written)
}
