//! A NATS cluster with JetStream on loopback ports, for queue mode's tests
//! and `wsingest bench`: `n` `nats-server` processes, each with its client,
//! cluster-route and monitoring ports and its file store under one temp
//! dir, routed to each other. Nodes can be killed (`kill -9`), stopped
//! (SIGSTOP) and restarted on the same ports and store, as a real node
//! failure and recovery would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::child::{Service, find_binary};
use crate::error::StartError;
use crate::ready::{Probe, READY_WITHIN, free_port, wait_ready};

/// One node's fixed addresses and store.
#[derive(Debug, Clone)]
pub struct NatsNode {
    pub name: String,
    /// Client port (`nats://127.0.0.1:<port>`).
    pub port: u16,
    pub cluster_port: u16,
    /// Monitoring port (`/healthz`, `/jsz`, `/varz`).
    pub http_port: u16,
    pub dir: PathBuf,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A running cluster; every node is killed on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    services: Vec<Option<Service>>,
}

/// nats-server's config for `node` of `all`: JetStream with a file store in
/// the node's dir, routes to every other node. A single node runs without
/// a cluster block (JetStream then needs no quorum).
pub fn nats_config(node: &NatsNode, all: &[NatsNode]) -> String {
    let mut conf = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
         jetstream {{\n  store_dir: \"{dir}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
        name = node.name,
        port = node.port,
        http = node.http_port,
        dir = node.dir.join("jetstream").display(),
    );
    if all.len() > 1 {
        let routes: Vec<String> = all
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        conf.push_str(&format!(
            "cluster {{\n  name: wsingest\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            node.cluster_port,
            routes.join(", ")
        ));
    }
    conf
}

impl NatsCluster {
    /// Start `n` nodes under `dir` and wait until each one's `/healthz`
    /// says JetStream is ready (in a cluster: a meta leader elected).
    pub async fn start(dir: &Path, n: usize) -> Result<NatsCluster, StartError> {
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let node_dir = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(StartError::io(format!("create {}", node_dir.display())))?;
            nodes.push(NatsNode {
                name: format!("n{i}"),
                port: free_port()?,
                cluster_port: free_port()?,
                http_port: free_port()?,
                dir: node_dir,
            });
        }
        let mut cluster = NatsCluster {
            services: (0..n).map(|_| None).collect(),
            nodes,
        };
        // All first, then wait: a node is healthy only once a quorum is up.
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (`--nats-url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn service(&self, i: usize) -> Option<&Service> {
        self.services[i].as_ref()
    }

    /// `kill -9` node `i` (its store stays for [`Self::restart`]).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut svc) = self.services[i].take() {
            svc.kill();
        }
    }

    /// Start node `i` again on its ports and store; ready when healthy.
    pub async fn restart(&mut self, i: usize) -> Result<(), StartError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(i).await
    }

    /// The index of the node that leads JetStream's meta group, from a
    /// live node's `/jsz` (None when no leader is known).
    pub async fn meta_leader(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if self.services[i].is_none() {
                continue;
            }
            let Some(body) = http_get(node.http_port, "/jsz").await else {
                continue;
            };
            let Some(leader) = json_string_after(&body, "\"leader\"") else {
                continue;
            };
            return self.nodes.iter().position(|n| n.name == leader);
        }
        None
    }

    /// The node that leads stream `stream`'s RAFT group, from `/jsz?streams=true`.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if self.services[i].is_none() {
                continue;
            }
            let Some(body) = http_get(node.http_port, "/jsz?streams=true").await else {
                continue;
            };
            let Some(leader) = stream_leader_in(&body, stream) else {
                continue;
            };
            return self.nodes.iter().position(|n| n.name == leader);
        }
        None
    }

    fn spawn(&mut self, i: usize) -> Result<(), StartError> {
        let bin = find_binary("nats-server", "nats-server")?;
        let node = &self.nodes[i];
        let conf = node.dir.join("nats.conf");
        std::fs::write(&conf, nats_config(node, &self.nodes))
            .map_err(StartError::io(format!("write {}", conf.display())))?;
        let svc = Service::spawn(
            &format!("nats-server {}", node.name),
            Command::new(bin).arg("-c").arg(&conf),
            &node.dir.join("nats.log"),
        )?;
        self.services[i] = Some(svc);
        Ok(())
    }

    async fn wait_healthy(&mut self, i: usize) -> Result<(), StartError> {
        let port = self.nodes[i].http_port;
        let svc = self.services[i].as_mut().expect("spawned");
        wait_ready(svc, &Probe::http(port, "/healthz"), READY_WITHIN).await?;
        // `/healthz` may answer before the node has caught up with the
        // meta leader; a short settle keeps the first stream create from
        // racing the election.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(body) = http_get(port, "/jsz").await
                && json_string_after(&body, "\"leader\"").is_some_and(|l| !l.is_empty())
            {
                return Ok(());
            }
            if self.nodes.len() == 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1; the body when the answer is 200.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The leader of `stream` in a `/jsz?streams=true` answer (pretty-printed):
/// `"stream_detail": [ { "name": "<stream>", ... "cluster": { ... "leader":
/// "nX"` — the first leader after the stream's name inside `stream_detail`
/// (a cluster's name, followed by its `leader`, may be the same word: the
/// meta cluster's and each stream's cluster's are skipped).
fn stream_leader_in(body: &str, stream: &str) -> Option<String> {
    let mut rest = &body[body.find("\"stream_detail\"")?..];
    loop {
        rest = &rest[rest.find("\"name\"")?..];
        let value_end = rest.find(',').unwrap_or(rest.len());
        let next_key = rest[value_end..].trim_start_matches([',', ' ', '\n', '\r', '\t']);
        if json_string_after(rest, "\"name\"").as_deref() == Some(stream)
            && !next_key.starts_with("\"leader\"")
        {
            return json_string_after(rest, "\"leader\"");
        }
        rest = &rest[1..];
    }
}

/// The string value of the first `key` (with its quotes) in a JSON text:
/// enough for nats-server's monitoring answers without a JSON dependency
/// in the harness core.
fn json_string_after(body: &str, key: &str) -> Option<String> {
    let at = body.find(key)? + key.len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_leader_is_read_from_the_stream_detail() {
        let body = r#"{
  "meta_cluster": { "name": "wsingest", "leader": "n2" },
  "account_details": [ { "name": "$G", "stream_detail": [
    { "name": "other", "cluster": { "name": "wsingest", "leader": "n1" } },
    { "name": "wsingest", "cluster": { "name": "wsingest", "leader": "n3",
      "replicas": [ { "name": "n2" } ] } } ] } ]
}"#;
        assert_eq!(stream_leader_in(body, "wsingest").as_deref(), Some("n3"));
        assert_eq!(stream_leader_in(body, "other").as_deref(), Some("n1"));
        assert_eq!(stream_leader_in(body, "missing"), None);
    }

    #[test]
    fn config_routes_to_the_other_nodes_only() {
        let node = |i: u16| NatsNode {
            name: format!("n{i}"),
            port: 4000 + i,
            cluster_port: 5000 + i,
            http_port: 6000 + i,
            dir: PathBuf::from(format!("/tmp/n{i}")),
        };
        let all = [node(1), node(2), node(3)];
        let conf = nats_config(&all[0], &all);
        assert!(conf.contains("listen: 127.0.0.1:4001"), "{conf}");
        assert!(
            conf.contains("routes: [nats://127.0.0.1:5002, nats://127.0.0.1:5003]"),
            "{conf}"
        );
        assert!(conf.contains("store_dir: \"/tmp/n1/jetstream\""), "{conf}");
        assert!(!nats_config(&all[0], &all[..1]).contains("cluster"));
    }

    #[test]
    fn json_string_after_reads_the_first_value() {
        let body = r#"{"meta_cluster":{"name":"wsingest","leader": "n2","cluster_size":3}}"#;
        assert_eq!(json_string_after(body, "\"leader\"").as_deref(), Some("n2"));
        assert_eq!(json_string_after(body, "\"missing\""), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_three_node_cluster_elects_a_leader_and_survives_a_node_kill() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = NatsCluster::start(dir.path(), 3)
            .await
            .expect("cluster starts");
        let leader = cluster.meta_leader().await.expect("a meta leader");
        cluster.kill(leader);
        // The other two elect a new leader.
        let deadline = Instant::now() + Duration::from_secs(20);
        let new_leader = loop {
            if let Some(l) = cluster.meta_leader().await
                && l != leader
            {
                break l;
            }
            assert!(Instant::now() < deadline, "no new meta leader after a kill");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_ne!(new_leader, leader);
        cluster.restart(leader).await.expect("node restarts");
    }
}
