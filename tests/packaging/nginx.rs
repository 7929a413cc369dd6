//! config/nginx.conf's TLS server block in a real nginx: wss terminated, and
//! a certificate renewal with `nginx -s reload` keeps open sessions.

use super::*;

/// The shipped nginx config with its commented TLS server block enabled,
/// pointed at `upstream` and this test's ports and files.
fn nginx_tls_config(upstream: u16, http_port: u16, tls_port: u16) -> String {
    let shipped =
        std::fs::read_to_string("config/nginx.conf").expect("config/nginx.conf is shipped");
    let start = shipped
        .find("    # server {")
        .expect("config/nginx.conf has a commented TLS server block");
    let end = shipped[start..]
        .find("    # --- end TLS")
        .expect("the TLS block ends with `# --- end TLS`")
        + start;
    let enabled: String = shipped[start..end]
        .lines()
        .map(|l| match l.strip_prefix("    # ") {
            Some(rest) => format!("    {rest}\n"),
            None if l.trim() == "#" => "\n".to_string(),
            None => panic!("a line of the TLS block is not commented out: {l:?}"),
        })
        .collect();
    let mut conf = format!("{}{enabled}{}", &shipped[..start], &shipped[end..]);
    for (from, to) in [
        ("server 127.0.0.1:8765 ", format!("server 127.0.0.1:{upstream} ")),
        ("server 127.0.0.1:8766 ", format!("server 127.0.0.1:{upstream} ")),
        ("listen 8080;", format!("listen 127.0.0.1:{http_port};")),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{tls_port} ssl;")),
        ("listen [::]:443 ssl;", String::new()),
        (
            "/etc/nginx/tls/wsingest/fullchain.pem",
            "{prefix}/tls/fullchain.pem".to_string(),
        ),
        (
            "/etc/nginx/tls/wsingest/privkey.pem",
            "{prefix}/tls/privkey.pem".to_string(),
        ),
        (
            "http {",
            "http {\n    client_body_temp_path {prefix}/tmp/body;\n    proxy_temp_path {prefix}/tmp/proxy;\n    \
             fastcgi_temp_path {prefix}/tmp/fcgi;\n    uwsgi_temp_path {prefix}/tmp/uwsgi;\n    scgi_temp_path {prefix}/tmp/scgi;"
                .to_string(),
        ),
        ("worker_processes auto;", "worker_processes 1;\nuser root;".to_string()),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "config/nginx.conf (TLS block enabled) should contain {from:?} once"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Send a point with `seq` and wait for its ack.
async fn roundtrip(ws: &mut Wss, seq: u64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let msg = serde_json::json!({"seq": seq, "fields": {"v": 1.0}});
    ws.send(Message::text(msg.to_string()))
        .await
        .expect("the session is open");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("the session is open")
            .expect("no WebSocket error");
        match m {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["ack"], seq, "{v}");
                return;
            }
            Message::Close(c) => panic!("session closed: {c:?}"),
            _ => continue,
        }
    }
}

fn peer_leaf(ws: &Wss) -> Vec<u8> {
    let (_, conn) = ws.get_ref().get_ref();
    conn.peer_certificates().expect("a server certificate")[0].to_vec()
}

fn pem_leaf(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// docs/operations.md's claim, checked: with the shipped TLS server block, a
/// new certificate and `nginx -s reload` serve new connections with the new
/// certificate while an open session (on the old certificate) goes on.
#[tokio::test]
async fn nginx_tls_block_reloads_certificates_without_dropping_sessions() {
    use wsingest_harness::security::{TestCerts, connect_wss};
    wsingest_server::tls::install_crypto_provider();
    let nginx_bin = require_binary("nginx", "nginx");
    let mut config = wsingest_server::config::Config::default();
    config.auth.allow_anonymous = true;
    config.server.sink = wsingest_server::config::SinkKind::Blackhole;
    let server = wsingest_harness::TestServer::start(config).await;
    let (old_certs, new_certs) = (TestCerts::generate(), TestCerts::generate());
    let (http_port, tls_port) = (free_port(), free_port());

    let conf = nginx_tls_config(server.addr.port(), http_port, tls_port);
    let staging = tempfile::tempdir().unwrap();
    let install_certs = |prefix: &Path, certs: &TestCerts| {
        let tls = prefix.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        // Written beside and renamed, as certbot and friends do.
        for (from, name) in [
            (&certs.cert_path, "fullchain.pem"),
            (&certs.key_path, "privkey.pem"),
        ] {
            let tmp = tls.join(format!("{name}.new"));
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, tls.join(name)).unwrap();
        }
    };
    // Nginx::start makes its own prefix dir; the certificates must exist
    // before it starts, so they live in a dir of this test's.
    let conf = conf.replace(
        "{prefix}/tls/",
        &format!("{}/tls/", staging.path().display()),
    );
    install_certs(staging.path(), &old_certs);
    let nginx = wsingest_harness::Nginx::start(&conf, tls_port).await;

    let url = format!("wss://localhost:{tls_port}/v1/devices/tls-old");
    let mut old = connect_wss(&url, old_certs.client_config(), &[])
        .await
        .expect("a wss session through nginx with the first certificate");
    assert_eq!(peer_leaf(&old), pem_leaf(&old_certs.cert_path));
    roundtrip(&mut old, 1).await;

    // Renewal: new files, then a reload.
    install_certs(staging.path(), &new_certs);
    let prefix = nginx.dir.path();
    run_ok(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-g")
            .arg(format!("pid {}/nginx.pid;", prefix.display()))
            .args(["-s", "reload"]),
    );

    // New connections get the new certificate ...
    let new_url = format!("wss://localhost:{tls_port}/v1/devices/tls-new");
    let new_cfg = new_certs.client_config();
    let mut new = eventually(15, "a new session with the renewed certificate", || {
        let (url, cfg) = (new_url.clone(), new_cfg.clone());
        async move { connect_wss(&url, cfg, &[]).await.ok() }
    })
    .await;
    assert_eq!(peer_leaf(&new), pem_leaf(&new_certs.cert_path));
    roundtrip(&mut new, 1).await;
    // An old worker may take a connection or two until it has closed its
    // listening sockets (a graceful reload): soon none does.
    let old_cfg = old_certs.client_config();
    eventually(
        15,
        "new connections no longer getting the old certificate",
        || {
            let (url, cfg) = (new_url.clone(), old_cfg.clone());
            async move { connect_wss(&url, cfg, &[]).await.is_err().then_some(()) }
        },
    )
    .await;

    // ... and the session opened before the reload is still served.
    for seq in 2..=4 {
        roundtrip(&mut old, seq).await;
    }
    assert_eq!(peer_leaf(&old), pem_leaf(&old_certs.cert_path));
    drop(nginx);
    server.stop().await;
}
