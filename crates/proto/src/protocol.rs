//! The WebSocket protocol of a device session: subprotocol negotiation and the
//! downlink messages (ack, nack, command) in the session's encoding.

use serde::Serialize;

use crate::decode::Format;

/// How a session's payloads are encoded, chosen by `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `wsingest.v1.json`: every frame is JSON.
    Json,
    /// `wsingest.v1.cbor`: every frame is CBOR.
    Cbor,
    /// `senml+json`: every frame is a SenML (RFC 8428) JSON pack.
    SenmlJson,
    /// `senml+cbor`: every frame is a SenML (RFC 8428) CBOR pack.
    SenmlCbor,
    /// No subprotocol: text frames are JSON, binary frames are CBOR.
    ByFrame,
}

impl Encoding {
    /// The payload format of every frame, or `None` when the frame type decides.
    pub fn format(self) -> Option<Format> {
        match self {
            Encoding::Json => Some(Format::Json),
            Encoding::Cbor => Some(Format::Cbor),
            Encoding::SenmlJson => Some(Format::SenmlJson),
            Encoding::SenmlCbor => Some(Format::SenmlCbor),
            Encoding::ByFrame => None,
        }
    }

    /// SenML packs carry no `seq`: the session numbers them instead.
    pub fn numbers_messages(self) -> bool {
        matches!(self, Encoding::SenmlJson | Encoding::SenmlCbor)
    }
}

/// Subprotocols we speak, in our order of preference.
pub const SUBPROTOCOLS: &[(&str, Encoding)] = &[
    ("wsingest.v1.cbor", Encoding::Cbor),
    ("wsingest.v1.json", Encoding::Json),
    ("senml+cbor", Encoding::SenmlCbor),
    ("senml+json", Encoding::SenmlJson),
];

/// Pick a subprotocol from the client's `Sec-WebSocket-Protocol` values; the
/// client's order wins among those we speak. When none is ours, the session
/// runs without one (text = JSON, binary = CBOR), as RFC 6455 allows.
pub fn negotiate<'a>(offered: impl Iterator<Item = &'a str>) -> Option<(&'static str, Encoding)> {
    offered
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|name| {
            SUBPROTOCOLS
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(name))
                .copied()
        })
}

/// A message from the server to a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Downlink {
    Ack {
        ack: u64,
    },
    Nack {
        nack: Option<u64>,
        error: String,
        detail: String,
    },
    Command {
        cmd: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        args: Option<serde_json::Value>,
    },
}

impl Downlink {
    pub fn nack(seq: Option<u64>, error: &str, detail: impl Into<String>) -> Self {
        Downlink::Nack {
            nack: seq,
            error: error.to_string(),
            detail: detail.into(),
        }
    }

    /// Encode in `format`: JSON as text, CBOR as binary.
    pub fn encode(&self, format: Format) -> Frame {
        if format.is_binary() {
            Frame::Binary(self.to_cbor())
        } else {
            Frame::Text(serde_json::to_string(self).expect("downlink serializes"))
        }
    }

    /// The CBOR bytes of this message.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        ciborium::into_writer(self, &mut out).expect("downlink serializes");
        out
    }
}

/// An encoded message and the WebSocket frame type it goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON, in a text frame.
    Text(String),
    /// CBOR, in a binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// The encoded bytes, whichever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_client_order() {
        assert_eq!(
            negotiate(["wsingest.v1.json, wsingest.v1.cbor"].into_iter())
                .unwrap()
                .1,
            Encoding::Json
        );
        assert_eq!(
            negotiate(["chat", "wsingest.v1.cbor"].into_iter())
                .unwrap()
                .0,
            "wsingest.v1.cbor"
        );
        assert_eq!(negotiate(std::iter::empty()), None);
        assert_eq!(negotiate(["mqtt"].into_iter()), None);
    }

    #[test]
    fn downlink_json_shapes() {
        let t = |d: Downlink| match d.encode(Format::Json) {
            Frame::Text(t) => t,
            other => panic!("JSON goes in text frames, not {other:?}"),
        };
        assert_eq!(t(Downlink::Ack { ack: 42 }), r#"{"ack":42}"#);
        assert_eq!(
            t(Downlink::nack(
                Some(43),
                "invalid_field",
                "fields.temp_c: NaN"
            )),
            r#"{"nack":43,"error":"invalid_field","detail":"fields.temp_c: NaN"}"#
        );
    }
}
