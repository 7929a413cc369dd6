//! Arbitrary bytes as a CBOR (and SenML CBOR) message: a nack, never a panic;
//! accepted points encode to one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsingest_proto::decode::{Decoder, DecoderConfig, Format, Message};

fuzz_target!(|data: &[u8]| {
    let d = Decoder::new(DecoderConfig::default());
    for format in [Format::Cbor, Format::SenmlCbor] {
        if let Ok(Message::Points { points, .. }) = d.decode(data, format, "dev", &wsingest_proto::clock::ServerClock::frozen_at(0)) {
            for p in &points {
                let mut out = Vec::new();
                wsingest_proto::lineproto::encode_point(p, &mut out);
                assert_eq!(out.last(), Some(&b'\n'));
            }
        }
    }
});
