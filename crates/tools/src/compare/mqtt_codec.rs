//! The few MQTT 3.1.1 packets `wsingest compare` needs (CONNECT, CONNACK,
//! PUBLISH at QoS 0/1, PUBACK, SUBSCRIBE, SUBACK), sans-IO:
//! encode into a buffer, decode whole packets from the front of a buffer.
//! Our own rather than a client library's so the measurement owns the socket
//! (to count its bytes) and sends exactly what it says.

use bytes::{Buf, BufMut, BytesMut};

/// A packet from the broker (or, for the ingest side, any we receive).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    ConnAck {
        code: u8,
    },
    Publish {
        topic: String,
        pid: Option<u16>,
        payload: bytes::Bytes,
    },
    PubAck {
        pid: u16,
    },
    SubAck {
        pid: u16,
    },
    PingResp,
    /// Any other packet type (first byte), skipped.
    Other(u8),
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed MQTT packet: {0}")]
    Malformed(&'static str),
}

fn put_len(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

pub fn connect(out: &mut BytesMut, client_id: &str, keep_alive_secs: u16) {
    let len = 10 + 2 + client_id.len();
    out.put_u8(0x10);
    put_len(out, len);
    put_str(out, "MQTT");
    out.put_u8(4); // protocol level 3.1.1
    out.put_u8(0x02); // clean session
    out.put_u16(keep_alive_secs);
    put_str(out, client_id);
}

pub fn publish(out: &mut BytesMut, topic: &str, qos: u8, pid: u16, payload: &[u8]) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    out.put_u8(0x30 | (qos << 1));
    put_len(out, len);
    put_str(out, topic);
    if qos > 0 {
        out.put_u16(pid);
    }
    out.put_slice(payload);
}

pub fn puback(out: &mut BytesMut, pid: u16) {
    out.put_slice(&[0x40, 0x02]);
    out.put_u16(pid);
}

pub fn subscribe(out: &mut BytesMut, pid: u16, filter: &str, qos: u8) {
    out.put_u8(0x82);
    put_len(out, 2 + 2 + filter.len() + 1);
    out.put_u16(pid);
    put_str(out, filter);
    out.put_u8(qos);
}

/// Take one whole packet from the front of `buf`, or `None` until more bytes arrive.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += (b & 0x7f) as usize * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        if i > 4 {
            return Err(CodecError::Malformed("remaining length over 4 bytes"));
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(i);
    let mut body = buf.split_to(len).freeze();
    let u16_of = |b: &bytes::Bytes| -> Result<u16, CodecError> {
        b.get(..2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or(CodecError::Malformed("short packet"))
    };
    Ok(Some(match first >> 4 {
        2 => Packet::ConnAck {
            code: *body.get(1).ok_or(CodecError::Malformed("short CONNACK"))?,
        },
        3 => {
            let qos = (first >> 1) & 3;
            let tlen = u16_of(&body)? as usize;
            if body.len() < 2 + tlen {
                return Err(CodecError::Malformed("short PUBLISH topic"));
            }
            body.advance(2);
            let topic = String::from_utf8(body.split_to(tlen).to_vec())
                .map_err(|_| CodecError::Malformed("topic is not UTF-8"))?;
            let pid = if qos > 0 {
                let p = u16_of(&body)?;
                body.advance(2);
                Some(p)
            } else {
                None
            };
            Packet::Publish {
                topic,
                pid,
                payload: body,
            }
        }
        4 => Packet::PubAck {
            pid: u16_of(&body)?,
        },
        9 => Packet::SubAck {
            pid: u16_of(&body)?,
        },
        13 => Packet::PingResp,
        _ => Packet::Other(first),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_partial_input() {
        let mut out = BytesMut::new();
        publish(&mut out, "wsingest/d1/up", 1, 7, b"{\"seq\":1}");
        let whole = out.clone();
        let mut part = BytesMut::from(&whole[..5]);
        assert_eq!(decode(&mut part).unwrap(), None);
        let mut buf = whole;
        let p = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            p,
            Packet::Publish {
                topic: "wsingest/d1/up".into(),
                pid: Some(7),
                payload: bytes::Bytes::from_static(b"{\"seq\":1}")
            }
        );
        assert!(buf.is_empty());
        // A payload over 127 bytes needs a two-byte remaining length.
        let mut out = BytesMut::new();
        publish(&mut out, "t", 0, 0, &[b'x'; 300]);
        // 2 + 1 + 300 = 303 = 47 + 2 * 128.
        assert_eq!(&out[..3], &[0x30, 0x80 | 47, 0x02]);
        let Packet::Publish { payload, pid, .. } = decode(&mut out).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((payload.len(), pid), (300, None));
        let mut b = BytesMut::from(&[0x20u8, 0x02, 0x00, 0x00][..]);
        assert_eq!(decode(&mut b).unwrap(), Some(Packet::ConnAck { code: 0 }));
    }
}
