//! The mapping's cost: the `flat` format against the native message model
//! on the same points, decoded in a loop on one thread. Run with
//! `cargo run --release -p wsingest-proto --example format_cost`.

use wsingest_proto::clock::ServerClock;
use wsingest_proto::decode::{Decoder, DecoderConfig, Format};

fn main() {
    let d = Decoder::new(DecoderConfig::default());
    let flat = d
        .config()
        .formats
        .get("flat")
        .expect("the flat preset")
        .clone();
    let native = br#"{"seq":1,"ts":1732543391000,"fields":{"temp_c":21.5,"hum":45.2,"pressure":1013.2,"ok":true,"fw":"1.2.0"}}"#;
    let own = br#"{"ts":1732543391000,"temp_c":21.5,"hum":45.2,"pressure":1013.2,"ok":true,"fw":"1.2.0"}"#;
    let clock = ServerClock::global();
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        d.decode(native, Format::Json, "dev-1", clock)
            .expect("native decodes");
    }
    let native_rate = n as f64 / t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..n {
        d.decode_mapped(own, Format::Json, &flat, "dev-1", clock)
            .expect("flat decodes");
    }
    let flat_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "native {native_rate:.0} points/s, flat {flat_rate:.0} points/s ({:.0}% of native)",
        100.0 * flat_rate / native_rate
    );
}
