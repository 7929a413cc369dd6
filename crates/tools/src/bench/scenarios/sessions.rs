//! Many mostly idle sessions: memory per session (at each quarter of the
//! count, a curve), handshake rate and the server's CPU per handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::bench::procs;
use crate::bench::{BenchArgs, BenchError, Report};

use super::*;

/// Scenario 4: many mostly idle sessions.
pub async fn sessions(args: &BenchArgs) -> Result<Report, BenchError> {
    let n = args
        .sessions
        .unwrap_or(if args.smoke { 200 } else { 10_000 });
    let dir = TempDir::new("sessions")?;
    let (server, port) = procs::wsingest(&dir.0, &blackhole_args(1000)).await?;
    let rss0 = server.rss_kib();
    let cpu0 = server.cpu_secs();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut conns = Vec::with_capacity(n);
    let mut open_secs = 0.0;
    let mut curve = Vec::new();
    for quarter in 1..=4 {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n / 4 + 1);
        for i in conns.len()..n * quarter / 4 {
            let permit = sem.clone().acquire_owned().await.expect("open");
            tasks.push(tokio::spawn(async move {
                let r = open_idle_session(port, i).await;
                drop(permit);
                r
            }));
        }
        for t in tasks {
            conns.push(t.await.map_err(|e| BenchError::Load(e.to_string()))??);
        }
        open_secs += started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = server.rss_kib().saturating_sub(rss0) as f64;
        curve.push((conns.len(), rss / conns.len().max(1) as f64));
    }
    let handshake_cpu = server.cpu_secs() - cpu0;
    // Mostly idle: one message each, spread over the hold time.
    let hold = if args.smoke {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let spacing = hold / n.max(1) as u32;
    for (i, ws) in conns.iter_mut().enumerate() {
        use futures_util::SinkExt;
        ws.send(json_point(i as u64)).await?;
        if !spacing.is_zero() && i % 100 == 0 {
            tokio::time::sleep(spacing * 100).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss_kib();
    let per_session = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    drop(conns);
    let mut rep = Report::new(
        "sessions",
        "mostly idle sessions held open",
        "≤ 8 KiB RSS per idle session (100k where `ulimit -n` allows)",
    );
    rep.add("sessions", n as f64, "");
    for (count, kib) in curve {
        rep.add(
            &format!("server RSS per session at {count}, before any message"),
            kib,
            "KiB",
        );
    }
    rep.add("server RSS per session", per_session, "KiB");
    rep.add("server RSS total", rss1 as f64 / 1024.0, "MiB");
    rep.add("handshakes/s", n as f64 / open_secs, "/s");
    rep.add(
        "server CPU per thousand handshakes",
        handshake_cpu / n.max(1) as f64 * 1000.0,
        "s",
    );
    rep.summarize(
        &["sessions", "server RSS per session", "handshakes/s"],
        None,
    );
    rep.goal_met = Some(per_session <= 8.0);
    Ok(rep)
}

type ClientWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One client session from source address 127.0.0.(2 + i / 25000), so that
/// 100k sessions do not run out of one address's ephemeral ports.
async fn open_idle_session(port: u16, i: usize) -> Result<ClientWs, BenchError> {
    let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i / 25_000) as u8);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((src, 0).into())?;
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = format!("ws://127.0.0.1:{port}/v1/devices/idle-{i}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}
