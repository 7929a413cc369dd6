//! Subjects and message ids of queue mode, sans-IO.
//!
//! Each device's points go to `<prefix>.points.<device>`: JetStream orders a
//! stream per subject, so one device's messages stay in order whatever the
//! other devices do. A device id may hold characters a subject token cannot
//! (`.`, `*`, `>`, whitespace), so anything outside `[A-Za-z0-9_-]` is
//! written `%XX` (its UTF-8 bytes): distinct ids stay distinct subjects.
//!
//! `Nats-Msg-Id` is `<device>/<seq>/<ts>` (the device's own `seq`, the first
//! point's timestamp in ns): a resend of the same message after a lost ack
//! carries the same id, and the stream drops it within its duplicate window,
//! whichever gateway it came through. A device that restarted its counter
//! sends new timestamps, so a new id. Points sent without `ts` get the
//! receive time, which differs between copies: their message is named by its
//! bytes instead (`b<crc32>-<len>`), so a resend through another gateway is
//! still dropped. Messages without a device `seq` have no id (nothing names
//! a resend of them).

use std::fmt::Write;

use crate::entry::Stamp;

/// The subject of points without a device (the server's own stats).
pub const SERVER_TOKEN: &str = "_server";

/// Check a subject prefix: dot-separated tokens, none empty, no wildcards or
/// whitespace.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty (e.g. \"wsingest\")".into());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(format!(
                "{prefix:?}: empty token (\"..\" or a dot at an end)"
            ));
        }
        if let Some(c) = token
            .chars()
            .find(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{prefix:?}: {c:?} is not allowed in a subject (wildcards and whitespace are not)"
            ));
        }
    }
    Ok(())
}

/// The filter matching every points subject under `prefix`.
pub fn points_filter(prefix: &str) -> String {
    format!("{prefix}.points.>")
}

/// The subject of `device`'s points (`None`: the server's own points).
pub fn points_subject(prefix: &str, device: Option<&str>) -> String {
    let mut s = String::with_capacity(prefix.len() + 8 + device.map_or(8, str::len));
    s.push_str(prefix);
    s.push_str(".points.");
    match device {
        Some(d) => push_token(&mut s, d),
        None => s.push_str(SERVER_TOKEN),
    }
    s
}

/// `<device>/<seq>/<ts_ns>` (or `<device>/<seq>/b<crc>-<len>` when the
/// server stamped the times): the same message resent gets the same id.
pub fn msg_id(device: &str, seq: u64, stamp: Stamp) -> String {
    let mut s = String::with_capacity(device.len() + 32);
    push_token(&mut s, device);
    let _ = match stamp {
        Stamp::Device(ts_ns) => write!(s, "/{seq}/{ts_ns}"),
        Stamp::Bytes { crc, len } => write!(s, "/{seq}/b{crc:08x}-{len}"),
    };
    s
}

/// Append `raw` as one subject token: `[A-Za-z0-9_-]` as is, every other
/// byte as `%XX`. An empty id becomes `%` alone (no empty token).
fn push_token(out: &mut String, raw: &str) {
    if raw.is_empty() {
        out.push('%');
        return;
    }
    for &b in raw.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_become_one_safe_token() {
        assert_eq!(
            points_subject("wsingest", Some("dev-1_a")),
            "wsingest.points.dev-1_a"
        );
        assert_eq!(
            points_subject("a.b", Some("x.y *>z")),
            "a.b.points.x%2Ey%20%2A%3Ez"
        );
        assert_eq!(points_subject("p", Some("é")), "p.points.%C3%A9");
        assert_eq!(points_subject("p", Some("")), "p.points.%");
        assert_eq!(points_subject("p", None), "p.points._server");
        // Distinct ids stay distinct: '%' itself is escaped.
        assert_ne!(
            points_subject("p", Some("%2E")),
            points_subject("p", Some("."))
        );
        assert_eq!(points_filter("p"), "p.points.>");
    }

    #[test]
    fn msg_ids_are_stable_per_device_seq_and_ts() {
        let ts = Stamp::Device;
        assert_eq!(
            msg_id("d1", 42, ts(1_700_000_000_000_000_000)),
            "d1/42/1700000000000000000"
        );
        assert_eq!(msg_id("a/b", 1, ts(-5)), "a%2Fb/1/-5");
        assert_ne!(msg_id("d", 1, ts(2)), msg_id("d", 1, ts(3)));
        let bytes = Stamp::Bytes { crc: 0xab, len: 7 };
        assert_eq!(msg_id("d", 3, bytes), "d/3/b000000ab-7");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("wsingest").is_ok());
        assert!(check_prefix("acme.wsingest").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
