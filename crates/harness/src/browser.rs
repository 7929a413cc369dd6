//! A real headless Chromium driven over the DevTools protocol (CDP), with
//! the WebSocket client the tests already use: no WebDriver, no npm.
//!
//! Flags as this machine needs them (../shared/MACHINE-NOTES.md): no sandbox
//! as root, no GPU, and no background networking (the network is closed).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::Ws;
use super::services::require_binary;
use crate::child::Service;

pub struct Browser {
    _service: Service,
    ws: Ws,
    session: String,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium and open one page at `url`.
    pub async fn open(url: &str, width: u32, height: u32) -> Browser {
        let bin = require_binary("chromium", "chromium");
        let dir = tempfile::tempdir().unwrap();
        // Its own process group: the renderer and GPU helpers die with it.
        let child = Service::spawn(
            "chromium",
            Command::new(bin)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    "--remote-debugging-port=0",
                    "--remote-debugging-address=127.0.0.1",
                ])
                .arg(format!("--user-data-dir={}", dir.path().display()))
                .arg(format!("--window-size={width},{height}"))
                .arg("about:blank"),
            &dir.path().join("chromium.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Chromium writes its port and browser endpoint once it listens.
        let port_file = dir.path().join("DevToolsActivePort");
        let endpoint_of = |text: &str| {
            let mut lines = text.lines();
            let port = lines.next()?.trim().to_string();
            let path = lines.next()?.trim().to_string();
            Some(format!("ws://127.0.0.1:{port}{path}"))
        };
        // Generous: a first start on a loaded machine (a CI runner building
        // beside it) has taken over 30 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let endpoint = loop {
            if let Some(e) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| endpoint_of(&t))
            {
                break e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within 90 s; its log:\n{}",
                child.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("CDP connects");
        let mut b = Browser {
            _service: child,
            ws,
            session: String::new(),
            next_id: 0,
            _dir: dir,
        };
        let target = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b.page("Page.enable", json!({})).await;
        b.page("Page.navigate", json!({"url": url})).await;
        b
    }

    /// Send a command to the page.
    pub async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("CDP connection open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page; its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Poll `expression` until it is truthy; returns its value.
    pub async fn wait_for(&mut self, secs: u64, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(expression).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {secs} s waiting for {what} ({expression} = {v})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page as it is now, written to `path`.
    pub async fn screenshot(&mut self, path: &PathBuf) {
        let r = self
            .page("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// Standard base64 (CDP's screenshots), without a dependency for 20 lines.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
