//! The test driver of the Rust client (tests/clients_rust.rs runs it), with
//! the same arguments and output as tests/clients/driver.py; also a handy
//! example of the API.
//!
//! Sends points i = first .. first+count-1 of measurement "clients": fields
//! n = i, v = i * 0.25, s = "p-<i>-" padded; ts = ts0 + i ms (or stamped by
//! the client with --auto-ts). Prints JSON lines: {"progress": k} every 10
//! sends, {"held": k} once everything is taken (mode hold), and finally
//! {"result": ..., "stats": {...}, "failures": [...]}.
//!
//! ```text
//! cargo run -p wsingest-device --example driver -- --url ws://127.0.0.1:8765 \
//!     --device dev-1 --token "$TOKEN" --count 100 --rate 10
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsingest_device::{Buffer, Client, ClientConfig, Encoding, Error, Point};

fn out(v: Value) {
    println!("{v}");
}

struct Args {
    url: String,
    device: String,
    token: Option<String>,
    encoding: Encoding,
    first: i64,
    count: i64,
    rate: f64,
    ts0: i64,
    auto_ts: bool,
    pad: usize,
    window: usize,
    buffer_dir: Option<String>,
    backoff_max: f64,
    flush_timeout: f64,
    mode: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        device: String::new(),
        token: None,
        encoding: Encoding::Json,
        first: 0,
        count: 100,
        rate: 0.0,
        ts0: 1_700_000_000_000,
        auto_ts: false,
        pad: 0,
        window: 64,
        buffer_dir: None,
        backoff_max: 2.0,
        flush_timeout: 90.0,
        mode: "normal".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--auto-ts" {
            a.auto_ts = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => a.url = v,
            "--device" => a.device = v,
            "--token" => a.token = Some(v),
            "--encoding" => a.encoding = v.parse()?,
            "--first" => a.first = num(&v)? as i64,
            "--count" => a.count = num(&v)? as i64,
            "--rate" => a.rate = num(&v)?,
            "--ts0" => a.ts0 = num(&v)? as i64,
            "--pad" => a.pad = num(&v)? as usize,
            "--window" => a.window = num(&v)? as usize,
            "--buffer-dir" => a.buffer_dir = Some(v),
            "--backoff-max" => a.backoff_max = num(&v)?,
            "--flush-timeout" => a.flush_timeout = num(&v)?,
            "--mode" if ["normal", "nacks", "hold", "forever"].contains(&v.as_str()) => a.mode = v,
            other => return Err(format!("unknown argument {other} {v}")),
        }
    }
    if a.url.is_empty() || a.device.is_empty() {
        return Err("--url and --device are required".into());
    }
    Ok(a)
}

fn point(a: &Args, i: i64) -> Point {
    let mut p = Point::new("clients").tag("client", "rust");
    let mut v = json!(i as f64 * 0.25);
    let mut s = format!("p-{i:06}-{}", "x".repeat(a.pad));
    if a.mode == "nacks" && i == a.first + 3 {
        p = p.tag("device", "someone-else"); // reserved_tag
    }
    if a.mode == "nacks" && i == a.first + 5 {
        v = json!("five"); // field type conflict: rejected_by_database
    }
    if a.mode == "nacks" && i == a.first + 7 {
        s = "x".repeat(5000); // over the server's 4096 bytes: close 1009
    }
    p = p.field("n", i).field("s", s);
    p = match v {
        Value::String(t) => p.field("v", t),
        n => p.field("v", n.as_f64().unwrap_or_default()),
    };
    if !a.auto_ts {
        p = p.ts(a.ts0 + i);
    }
    p
}

async fn drive(a: &Args, c: &Client) -> Result<(), Error> {
    let start = Instant::now();
    let mut i = a.first;
    let mut sent = 0u64;
    while a.mode == "forever" || i < a.first + a.count {
        if a.rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / a.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        c.send(point(a, i)).await?;
        i += 1;
        sent += 1;
        if sent.is_multiple_of(10) {
            out(json!({"progress": sent}));
        }
    }
    if a.mode == "hold" {
        out(json!({"held": sent, "stats": c.stats()}));
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    c.flush(Duration::from_secs_f64(a.flush_timeout)).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("driver: {e}");
            std::process::exit(2);
        }
    };
    let mut config = ClientConfig::new(&a.device);
    config.token = a.token.clone();
    config.encoding = a.encoding;
    config.window = a.window;
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs_f64(a.backoff_max);
    config.ack_timeout = Duration::from_secs(20);
    if let Some(dir) = &a.buffer_dir {
        config.buffer = Buffer::Disk(dir.into());
    }
    let c = match Client::connect(&a.url, config).await {
        Ok(c) => c,
        Err(e) => {
            out(json!({"result": "error", "error": e.to_string()}));
            std::process::exit(1);
        }
    };
    c.on_command(|cmd| match cmd.name.as_str() {
        "ping" => Ok(()),
        other => Err(format!("unknown command {other}")),
    });
    let mut result = match drive(&a, &c).await {
        Ok(()) => json!({"result": "ok"}),
        Err(Error::Auth(e)) => json!({"result": "auth_error", "error": e.to_string(),
            "status": e.status, "close_code": e.close_code}),
        Err(Error::DeliveryFailed(f)) => {
            json!({"result": "failed", "error": Error::DeliveryFailed(f.clone()).to_string(), "failures": f})
        }
        Err(e @ Error::Timeout { .. }) => json!({"result": "timeout", "error": e.to_string()}),
        Err(e) => json!({"result": "error", "error": e.to_string()}),
    };
    result["stats"] = serde_json::to_value(c.stats()).unwrap_or_default();
    c.close().await;
    out(result);
}
