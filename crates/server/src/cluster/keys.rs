//! Device ids as NATS KV keys, and back.
//!
//! A device id may hold `.` and `:` (see [`crate::auth::valid_device_id`]);
//! a KV key may not hold `:`, and a `.` is a subject token separator (`a..b`
//! or a leading `.` is not a valid key). So every byte outside
//! `A-Z a-z 0-9 - _` is written `=XX` (two upper-case hex digits). `=` is
//! not in the device id alphabet, so the mapping is one to one, and the
//! common ids (`dev-17`, `sensor_3`) stay readable in `nats kv ls`.

/// The KV key of `device`.
pub fn device_key(device: &str) -> String {
    let mut key = String::with_capacity(device.len() + 8);
    for b in device.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(b as char);
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

/// The device id of a KV key written by [`device_key`]; `None` for a key
/// we did not write (it is skipped, not guessed at).
pub fn key_device(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hex = key.get(i + 1..i + 3)?;
                let b = u8::from_str_radix(hex, 16).ok()?;
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || hex != format!("{b:02X}")
                {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    let id = String::from_utf8(out).ok()?;
    crate::auth::valid_device_id(&id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_valid_keys() {
        for id in ["dev-1", "a.b", "..x", "site:3.rack_2", "A-Z_09", ".", ":"] {
            let key = device_key(id);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{key}"
            );
            assert_eq!(key_device(&key).as_deref(), Some(id), "{key}");
        }
        assert_eq!(device_key("dev-1"), "dev-1");
        assert_eq!(device_key("a.b:c"), "a=2Eb=3Ac");
    }

    #[test]
    fn foreign_keys_are_skipped() {
        for key in ["", "a=2", "a=zz", "a=41", "a=2e", "a.b", "a=2F", "x=3A=3"] {
            assert_eq!(key_device(key), None, "{key}");
        }
    }
}
