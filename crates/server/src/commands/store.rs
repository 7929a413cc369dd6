//! `commands.store`: the last undelivered commands per device, delivered
//! when the device connects. Bounded per device (the oldest goes first) and
//! in devices (new devices are refused when full); commands expire.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::Command;

/// What storing a command did.
#[derive(Debug, PartialEq)]
pub enum Stored {
    Kept,
    /// Kept; this older command made room and is gone.
    Replaced(String),
    /// Already stored (the same id).
    Duplicate,
    /// No room for another device.
    Full,
}

pub struct Store {
    per_device: usize,
    max_devices: usize,
    devices: HashMap<String, VecDeque<Command>>,
}

impl Store {
    pub fn new(per_device: usize, max_devices: usize) -> Store {
        Store {
            per_device: per_device.max(1),
            max_devices,
            devices: HashMap::new(),
        }
    }

    pub fn push(&mut self, device: &str, cmd: Command) -> Stored {
        let room = self.devices.len() < self.max_devices;
        let queue = match self.devices.get_mut(device) {
            Some(q) => q,
            None if room => self.devices.entry(device.to_string()).or_default(),
            None => return Stored::Full,
        };
        if queue.iter().any(|c| c.id == cmd.id) {
            return Stored::Duplicate;
        }
        let replaced = if queue.len() >= self.per_device {
            queue.pop_front().map(|c| c.id)
        } else {
            None
        };
        queue.push_back(cmd);
        match replaced {
            Some(id) => Stored::Replaced(id),
            None => Stored::Kept,
        }
    }

    /// Everything stored for `device`, oldest first, minus expired ones.
    pub fn take(&mut self, device: &str, now: Instant) -> Vec<Command> {
        self.devices
            .remove(device)
            .map(|q| q.into_iter().filter(|c| c.expires_at > now).collect())
            .unwrap_or_default()
    }

    pub fn remove(&mut self, device: &str, id: &str) {
        if let Some(q) = self.devices.get_mut(device) {
            q.retain(|c| c.id != id);
            if q.is_empty() {
                self.devices.remove(device);
            }
        }
    }

    /// Drop expired commands.
    pub fn expire(&mut self, now: Instant) {
        self.devices.retain(|_, q| {
            q.retain(|c| c.expires_at > now);
            !q.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.devices.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cmd(id: &str, expires_at: Instant) -> Command {
        Command {
            id: id.into(),
            name: "n".into(),
            args: None,
            expires_at,
        }
    }

    #[test]
    fn bounded_per_device_and_in_devices() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut s = Store::new(2, 1);
        assert_eq!(s.push("a", cmd("1", later)), Stored::Kept);
        assert_eq!(s.push("a", cmd("1", later)), Stored::Duplicate);
        assert_eq!(s.push("a", cmd("2", later)), Stored::Kept);
        assert_eq!(s.push("a", cmd("3", later)), Stored::Replaced("1".into()));
        assert_eq!(s.push("b", cmd("1", later)), Stored::Full);
        let ids: Vec<String> = s.take("a", now).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["2", "3"]);
        assert!(s.is_empty());
    }

    #[test]
    fn expired_commands_are_not_delivered() {
        let now = Instant::now();
        let mut s = Store::new(4, 4);
        s.push("a", cmd("old", now));
        s.push("a", cmd("new", now + Duration::from_secs(1)));
        assert_eq!(s.take("a", now).len(), 1);
        s.push("a", cmd("old", now));
        s.expire(now);
        assert!(s.is_empty());
    }
}
