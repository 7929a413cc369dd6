//! What goes over the socket, sans-IO: the session's [`Encoding`] (offered as
//! the subprotocol), serializing a message into one [`Frame`], command
//! results, and parsing the server's acks, nacks and commands
//! ([`parse_downlink`]). Nack reasons are classified by [`is_transient`].

use serde::{Deserialize, Deserializer, Serialize};
pub use tokio_tungstenite::tungstenite::Message as Frame;

/// The payload encoding of a session, offered as its subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `wsingest.v1.json`: text frames.
    Json,
    /// `wsingest.v1.cbor`: binary frames.
    Cbor,
    /// SenML (RFC 8428) packs in JSON: one record per field and sample.
    #[cfg_attr(feature = "clap", value(name = "senml+json", alias = "senml-json"))]
    #[serde(rename = "senml+json")]
    SenmlJson,
    /// SenML packs in CBOR, with RFC 8428's integer labels.
    #[cfg_attr(feature = "clap", value(name = "senml+cbor", alias = "senml-cbor"))]
    #[serde(rename = "senml+cbor")]
    SenmlCbor,
}

impl Encoding {
    /// The `Sec-WebSocket-Protocol` value (the server's names, from
    /// `wsingest_proto::protocol::SUBPROTOCOLS`).
    pub fn subprotocol(self) -> &'static str {
        use wsingest_proto::protocol::{Encoding as Server, SUBPROTOCOLS};
        let want = match self {
            Encoding::Json => Server::Json,
            Encoding::Cbor => Server::Cbor,
            Encoding::SenmlJson => Server::SenmlJson,
            Encoding::SenmlCbor => Server::SenmlCbor,
        };
        SUBPROTOCOLS
            .iter()
            .find(|(_, e)| *e == want)
            .map(|(name, _)| *name)
            .expect("the server speaks every encoding a device does")
    }

    /// Binary frames (CBOR) rather than text (JSON).
    pub fn is_cbor(self) -> bool {
        matches!(self, Encoding::Cbor | Encoding::SenmlCbor)
    }

    /// SenML packs carry no `seq`: the server acks the n-th data frame of a
    /// session as n, and the device maps that back to its own seq.
    pub fn numbers_messages(self) -> bool {
        matches!(self, Encoding::SenmlJson | Encoding::SenmlCbor)
    }

    /// Serialize `v` into one frame: JSON as text, CBOR as binary.
    pub fn frame<T: Serialize + ?Sized>(self, v: &T) -> Result<Frame, String> {
        if self.is_cbor() {
            let mut out = Vec::with_capacity(256);
            ciborium::into_writer(v, &mut out).map_err(|e| e.to_string())?;
            Ok(Frame::binary(out))
        } else {
            serde_json::to_string(v)
                .map(Frame::text)
                .map_err(|e| e.to_string())
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Encoding, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Encoding::Json),
            "cbor" => Ok(Encoding::Cbor),
            "senml+json" | "senml-json" => Ok(Encoding::SenmlJson),
            "senml+cbor" | "senml-cbor" => Ok(Encoding::SenmlCbor),
            other => Err(format!(
                "unknown encoding {other:?}: json, cbor, senml+json or senml+cbor"
            )),
        }
    }
}

/// The size of a data frame's payload in bytes (0 for control frames).
pub fn frame_len(f: &Frame) -> usize {
    match f {
        Frame::Text(t) => t.len(),
        Frame::Binary(b) => b.len(),
        _ => 0,
    }
}

/// Nack reasons that mean "not now": the message is resent after a backoff.
/// Every other reason (unknown ones included) is permanent: the same bytes
/// would get the same answer, so the message is reported to the caller.
pub const TRANSIENT_ERRORS: &[&str] = &[
    "storage_unavailable",
    "rate_limited",
    "overloaded",
    "shutting_down",
    "bridge_unavailable",
    "too_many_series",
];

/// A nack with this `error` is worth a resend after a backoff.
pub fn is_transient(error: &str) -> bool {
    TRANSIENT_ERRORS.contains(&error)
}

/// `{"cmd_result": id, "ok": ok, "detail": ...}`; `None` on SenML sessions,
/// where every frame must be a pack (the command is applied, not answered).
pub fn command_result(
    encoding: Encoding,
    id: &str,
    ok: bool,
    detail: Option<&str>,
) -> Option<Frame> {
    if encoding.numbers_messages() {
        return None;
    }
    #[derive(Serialize)]
    struct CmdResult<'a> {
        cmd_result: &'a str,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
    }
    encoding
        .frame(&CmdResult {
            cmd_result: id,
            ok,
            detail,
        })
        .ok()
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    Ack(u64),
    /// `seq` is `None` for a message whose seq the server could not read (or
    /// that had none).
    Nack {
        seq: Option<u64>,
        error: String,
        detail: String,
    },
    Command {
        id: String,
        name: String,
        args: serde_json::Value,
    },
}

#[derive(Deserialize)]
struct Wire {
    ack: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    nack: Option<Option<u64>>,
    #[serde(default)]
    error: String,
    #[serde(default)]
    detail: String,
    cmd: Option<serde_json::Value>,
    name: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
}

/// Tells `"nack": null` (present) from no `nack` key (absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Parse a data frame from the server; `None` for control frames.
pub fn parse_downlink(frame: &Frame) -> Option<Result<Downlink, String>> {
    let wire: Result<Wire, String> = match frame {
        Frame::Text(t) => serde_json::from_str(t).map_err(|e| e.to_string()),
        Frame::Binary(b) => ciborium::from_reader(&b[..]).map_err(|e| e.to_string()),
        _ => return None,
    };
    Some(wire.and_then(|w| match (w.ack, w.nack, w.cmd) {
        (Some(seq), None, None) => Ok(Downlink::Ack(seq)),
        (None, Some(seq), None) => Ok(Downlink::Nack {
            seq,
            error: w.error,
            detail: w.detail,
        }),
        (None, None, Some(id)) => {
            let id = match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok(Downlink::Command {
                id,
                name: w.name.unwrap_or_default(),
                args: w.args,
            })
        }
        _ => Err("neither an ack, a nack nor a command".to_string()),
    }))
}

/// The WebSocket frame a server's encoded downlink arrives in (tests).
pub fn from_server(f: wsingest_proto::protocol::Frame) -> Frame {
    match f {
        wsingest_proto::protocol::Frame::Text(t) => Frame::text(t),
        wsingest_proto::protocol::Frame::Binary(b) => Frame::binary(b),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wsingest_proto::decode::{Decoder, DecoderConfig, Format, Message};
    use wsingest_proto::protocol::Downlink as Server;

    use super::*;

    #[test]
    fn subprotocols_are_the_servers() {
        assert_eq!(Encoding::Json.subprotocol(), "wsingest.v1.json");
        assert_eq!(Encoding::Cbor.subprotocol(), "wsingest.v1.cbor");
        assert_eq!(Encoding::SenmlJson.subprotocol(), "senml+json");
        assert_eq!(Encoding::SenmlCbor.subprotocol(), "senml+cbor");
        assert_eq!("CBOR".parse::<Encoding>(), Ok(Encoding::Cbor));
        assert!("xml".parse::<Encoding>().is_err());
    }

    #[test]
    fn downlinks_parse_in_both_encodings() {
        for format in [Format::Json, Format::Cbor] {
            let parse = |d: Server| parse_downlink(&from_server(d.encode(format))).unwrap();
            assert_eq!(parse(Server::Ack { ack: 5 }), Ok(Downlink::Ack(5)));
            assert_eq!(
                parse(Server::nack(None, "invalid_json", "x")),
                Ok(Downlink::Nack {
                    seq: None,
                    error: "invalid_json".into(),
                    detail: "x".into()
                })
            );
            assert_eq!(
                parse(Server::nack(Some(3), "too_large", "y")),
                Ok(Downlink::Nack {
                    seq: Some(3),
                    error: "too_large".into(),
                    detail: "y".into()
                })
            );
            let cmd = Server::Command {
                cmd: "c-17".into(),
                name: "set_interval".into(),
                args: Some(json!({"seconds": 5})),
            };
            assert_eq!(
                parse(cmd),
                Ok(Downlink::Command {
                    id: "c-17".into(),
                    name: "set_interval".into(),
                    args: json!({"seconds": 5})
                })
            );
        }
        assert!(parse_downlink(&Frame::text("{}")).unwrap().is_err());
        assert!(parse_downlink(&Frame::Ping(Default::default())).is_none());
    }

    #[test]
    fn command_results_decode_on_the_server() {
        for enc in [Encoding::Json, Encoding::Cbor] {
            let f = command_result(enc, "c-17", false, Some("unknown command")).unwrap();
            let bytes = match &f {
                Frame::Text(t) => t.as_bytes().to_vec(),
                Frame::Binary(b) => b.to_vec(),
                _ => unreachable!(),
            };
            let format = if enc.is_cbor() {
                Format::Cbor
            } else {
                Format::Json
            };
            let m = Decoder::new(DecoderConfig::default())
                .decode(
                    &bytes,
                    format,
                    "d",
                    &wsingest_proto::clock::ServerClock::frozen_at(0),
                )
                .unwrap();
            assert_eq!(
                m,
                Message::CommandResult {
                    seq: None,
                    cmd: "c-17".into(),
                    ok: false,
                    detail: Some("unknown command".into())
                }
            );
        }
        assert_eq!(command_result(Encoding::SenmlJson, "c", true, None), None);
        assert!(is_transient("rate_limited") && !is_transient("reserved_tag"));
    }
}
