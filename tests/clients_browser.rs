//! The JavaScript device client (clients/js) in headless Chromium: the page
//! loads the ES module as it is (no bundler), connects with `?token=`
//! (browsers cannot set headers), sends, flushes, and rides out a server
//! kill -9 and restart. A tiny HTTP server in this test serves the page and
//! the module from another origin, as a real site would.

#[path = "clients/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Stack, TS0, repo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsingest_harness::browser::Browser;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>wsingest client</title></head>
<body><p id="status">loading</p>
<script type="module">
import { WsingestClient } from "/src/index.js";
window.WsingestClient = WsingestClient;
window.progress = 0;
// Send points first..first+count-1 (n, v, s as the other drivers), `rate`
// messages/s (0: as fast as the window allows), then flush.
window.sendPoints = async (c, first, count, rate) => {
  const start = Date.now();
  for (let k = 0; k < count; k++) {
    if (rate > 0) {
      const due = start + (k / rate) * 1000;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    }
    const i = first + k;
    await c.send({ measurement: "clients", tags: { client: "browser" }, ts: TS0 + i,
                   fields: { n: i, v: i * 0.25, s: `p-${String(i).padStart(6, "0")}-` } });
    window.progress = k + 1;
  }
  await c.flush(60000);
  return { ...c.stats };
};
document.getElementById("status").textContent = "ready";
</script></body></html>"#;

/// Serve the page at / and clients/js/src/* at /src/*; returns the base URL.
async fn serve_page() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, ctype, body) = if path == "/" {
                    let page = PAGE.replace("TS0", &TS0.to_string());
                    ("200 OK", "text/html; charset=utf-8", page.into_bytes())
                } else if let Some(name) = path.strip_prefix("/src/")
                    && name.ends_with(".js")
                    && !name.contains("..")
                    && let Ok(b) = std::fs::read(repo().join("clients/js/src").join(name))
                {
                    ("200 OK", "text/javascript; charset=utf-8", b)
                } else {
                    ("404 Not Found", "text/plain", b"not found".to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/")
}

async fn open_page() -> Browser {
    let url = serve_page().await;
    let mut b = Browser::open(&url, 800, 600).await;
    b.wait_for(30, "the module loaded", "window.sendPoints !== undefined")
        .await;
    b
}

fn new_client(stack: &Stack, device: &str, token: &str) -> String {
    format!(
        "window.c = new WsingestClient({:?}, {{device: {device:?}, token: {token:?}, \
         backoffBaseMs: 100, backoffMaxMs: 1000}}); true",
        stack.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_client_sends_and_flushes() {
    let stack = Stack::start(|_| {}).await;
    let token = stack.add_device("browser-1").await;
    let mut b = open_page().await;
    b.eval(&new_client(&stack, "browser-1", &token)).await;
    let stats = b.eval("window.sendPoints(window.c, 0, 200, 0)").await;
    eprintln!("browser: {stats}");
    assert_eq!(stats["sent"], 200, "{stats}");
    assert_eq!(stats["acked"], 200, "{stats}");
    assert_eq!(stats["nacked"], 0, "{stats}");
    assert_eq!(stats["buffered"], 0, "{stats}");
    let all: Vec<i64> = (0..200).collect();
    stack.check_exactly("browser-1", &all, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_client_resends_after_a_server_kill() {
    let mut stack = Stack::start(|_| {}).await;
    let token = stack.add_device("browser-2").await;
    let mut b = open_page().await;
    b.eval(&new_client(&stack, "browser-2", &token)).await;
    b.eval("window.done = window.sendPoints(window.c, 0, 300, 60).then((s) => (window.result = s)); true")
        .await;
    b.wait_for(30, "100 points sent", "window.progress >= 100")
        .await;
    stack.kill_server();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.restart_server().await;
    let stats: Value = b.wait_for(90, "the flush", "window.result").await;
    eprintln!("browser: {stats}");
    assert_eq!(stats["sent"], 300, "{stats}");
    assert_eq!(stats["acked"], 300, "{stats}");
    assert_eq!(stats["buffered"], 0, "{stats}");
    assert!(stats["reconnects"].as_u64().unwrap() >= 1, "{stats}");
    let all: Vec<i64> = (0..300).collect();
    stack.check_exactly("browser-2", &all, 0, false).await;
}
