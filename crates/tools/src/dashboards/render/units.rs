//! Values as Grafana shows them for a panel's unit (the units the
//! dashboards use; anything else is shown as a plain number with the unit
//! name after it).

/// `1234.5` → `1.23 K` (Grafana's `short`), `2.5`, `0.0012`.
fn short(v: f64, decimals: Option<usize>) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, " T")
    } else if a >= 1e9 {
        (v / 1e9, " B")
    } else if a >= 1e6 {
        (v / 1e6, " Mil")
    } else if a >= 1e3 {
        (v / 1e3, " K")
    } else {
        (v, "")
    };
    format!("{}{suffix}", number(scaled, decimals))
}

/// A number with up to three significant decimals, trailing zeros dropped.
pub fn number(v: f64, decimals: Option<usize>) -> String {
    if let Some(d) = decimals {
        return format!("{v:.d$}");
    }
    let a = v.abs();
    let d = if a == 0.0 || a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Small values keep two significant digits.
        ((-a.log10()).floor() as usize + 2).min(6)
    };
    let s = format!("{v:.d$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// SI prefixes for a base unit: `1500 W` → `1.5 kW`.
fn si(v: f64, unit: &str, decimals: Option<usize>) -> String {
    let a = v.abs();
    let (scaled, prefix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else if a > 0.0 && a < 1.0 {
        (v * 1e3, "m")
    } else {
        (v, "")
    };
    format!("{} {prefix}{unit}", number(scaled, decimals))
}

/// IEC sizes: `bytes` → `12.3 MiB`.
fn bytes(v: f64, decimals: Option<usize>) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v;
    let mut i = 0;
    while x.abs() >= 1024.0 && i < units.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    format!("{} {}", number(x, decimals), units[i])
}

/// How long ago epoch milliseconds `ms` was, seen from `now_ms`.
pub fn ago(ms: f64, now_ms: i64) -> String {
    let s = ((now_ms as f64 - ms) / 1000.0).max(0.0);
    if s < 60.0 {
        format!("{} s ago", s.round())
    } else if s < 3600.0 {
        format!("{} min ago", (s / 60.0).round())
    } else if s < 86_400.0 {
        format!("{} h ago", (s / 3600.0).round())
    } else {
        format!("{} days ago", (s / 86_400.0).round())
    }
}

/// `v` in the panel's `unit`.
pub fn format(v: f64, unit: Option<&str>, decimals: Option<usize>, now_ms: i64) -> String {
    let n = |v: f64| number(v, decimals);
    match unit.unwrap_or("none") {
        // Unitless: plain, but millions and up shortened (4.2 Mil, not 4200000).
        "none" | "" if v.abs() >= 1e6 => short(v, decimals),
        "none" | "" => n(v),
        "short" => short(v, decimals),
        "percent" => format!("{}%", n(v)),
        "percentunit" => format!("{}%", n(v * 100.0)),
        "humidity" => format!("{} %H", n(v)),
        "celsius" => format!("{} °C", n(v)),
        "fahrenheit" => format!("{} °F", n(v)),
        "pressurehpa" => format!("{} hPa", n(v)),
        "velocityms" => format!("{} m/s", n(v)),
        "velocitykmh" => format!("{} km/h", n(v)),
        "watt" => si(v, "W", decimals),
        "kwatt" => format!("{} kW", n(v)),
        "watth" => si(v, "Wh", decimals),
        "kwatth" => format!("{} kWh", n(v)),
        "volt" => si(v, "V", decimals),
        "amp" => si(v, "A", decimals),
        "hertz" => si(v, "Hz", decimals),
        "dBm" => format!("{} dBm", n(v)),
        "accG" => format!("{} g", n(v)),
        "bytes" | "decbytes" => bytes(v, decimals),
        "Bps" | "binBps" => format!("{}/s", bytes(v, decimals)),
        "ms" => {
            if v.abs() >= 1000.0 {
                format!("{} s", n(v / 1000.0))
            } else {
                format!("{} ms", n(v))
            }
        }
        "s" => format!("{} s", n(v)),
        "reqps" => format!("{} req/s", short(v, decimals)),
        "dateTimeFromNow" => ago(v, now_ms),
        "dateTimeAsIso" => chrono::DateTime::from_timestamp_millis(v as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| n(v)),
        other => format!("{} {other}", n(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_the_dashboards_units() {
        assert_eq!(format(1234.5, Some("short"), None, 0), "1.23 K");
        assert_eq!(format(21.456, Some("celsius"), None, 0), "21.5 °C");
        assert_eq!(format(1500.0, Some("watt"), None, 0), "1.5 kW");
        assert_eq!(
            format(3.0 * 1024.0 * 1024.0, Some("bytes"), None, 0),
            "3 MiB"
        );
        assert_eq!(format(0.0042, Some("accG"), None, 0), "0.0042 g");
        assert_eq!(format(2.0, None, Some(1), 0), "2.0");
        assert_eq!(
            format(1_000.0, Some("dateTimeFromNow"), None, 31_000),
            "30 s ago"
        );
        assert_eq!(format(-0.0001, None, None, 0), "-0.0001");
    }
}
