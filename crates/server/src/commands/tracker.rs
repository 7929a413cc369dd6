//! The status of recent commands, for `GET .../commands/{cmd}` and for the
//! HTTP caller waiting on its command. Bounded: past `max` entries the
//! oldest is forgotten.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Status;

/// What an operator sees of a command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub cmd: String,
    pub device: String,
    pub name: String,
    pub status: Status,
    /// The device's answer, once it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

struct Entry {
    view: watch::Sender<View>,
    expires_at: Instant,
}

type Key = (String, String);

pub struct Tracker {
    max: usize,
    entries: HashMap<Key, Entry>,
    order: VecDeque<Key>,
}

impl Tracker {
    pub fn new(max: usize) -> Tracker {
        Tracker {
            max: max.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, device: &str, cmd: &str) -> Option<View> {
        self.entries
            .get(&key(device, cmd))
            .map(|e| e.view.borrow().clone())
    }

    pub fn subscribe(&self, device: &str, cmd: &str) -> Option<watch::Receiver<View>> {
        self.entries
            .get(&key(device, cmd))
            .map(|e| e.view.subscribe())
    }

    /// Start tracking a pending command (no-op when already tracked).
    pub fn insert(&mut self, device: &str, cmd: &str, name: &str, expires_at: Instant) {
        let k = key(device, cmd);
        if self.entries.contains_key(&k) {
            return;
        }
        while self.entries.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        let view = View {
            cmd: cmd.to_string(),
            device: device.to_string(),
            name: name.to_string(),
            status: Status::Pending,
            ok: None,
            detail: None,
        };
        self.entries.insert(
            k.clone(),
            Entry {
                view: watch::channel(view).0,
                expires_at,
            },
        );
        self.order.push_back(k);
    }

    /// Forget a command (a refused submission).
    pub fn remove(&mut self, device: &str, cmd: &str) {
        let k = key(device, cmd);
        if self.entries.remove(&k).is_some() {
            self.order.retain(|o| o != &k);
        }
    }

    /// Move a command forward; statuses never go back (a late `delivered`
    /// from another instance does not undo `done`). Returns whether it moved.
    pub fn update(
        &mut self,
        device: &str,
        cmd: &str,
        status: Status,
        ok: Option<bool>,
        detail: Option<String>,
    ) -> bool {
        let Some(e) = self.entries.get(&key(device, cmd)) else {
            return false;
        };
        e.view.send_if_modified(|v| {
            if status.rank() <= v.status.rank() {
                return false;
            }
            v.status = status;
            if ok.is_some() {
                v.ok = ok;
            }
            if detail.is_some() {
                v.detail = detail;
            }
            true
        })
    }

    /// Pending commands past their expiry become `expired`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for ((device, cmd), e) in &self.entries {
            if e.expires_at <= now && e.view.borrow().status == Status::Pending {
                out.push((device.clone(), cmd.clone()));
            }
        }
        for (device, cmd) in &out {
            self.update(
                device,
                cmd,
                Status::Expired,
                None,
                Some("not delivered before it expired".into()),
            );
        }
        out
    }
}

fn key(device: &str, cmd: &str) -> Key {
    (device.to_string(), cmd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses_move_forward_only_and_old_entries_go() {
        let now = Instant::now();
        let mut t = Tracker::new(2);
        t.insert("d", "c1", "reboot", now + Duration::from_secs(60));
        assert!(t.update("d", "c1", Status::Done, Some(true), None));
        assert!(!t.update("d", "c1", Status::Delivered, None, None));
        assert_eq!(t.get("d", "c1").unwrap().status, Status::Done);
        let soon = now + Duration::from_millis(1);
        t.insert("d", "c2", "x", soon);
        t.insert("d", "c3", "x", soon);
        assert!(
            t.get("d", "c1").is_none(),
            "oldest forgotten past the bound"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.expire(now), vec![]);
        let mut expired = t.expire(now + Duration::from_millis(2));
        expired.sort();
        assert_eq!(expired.len(), 2);
        assert_eq!(t.get("d", "c3").unwrap().status, Status::Expired);
    }
}
