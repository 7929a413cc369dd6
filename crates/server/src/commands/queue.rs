//! A session's command queue: bounded like a channel, but allocating
//! nothing until a command arrives. Every session has one and most never
//! receive a command; tokio's `mpsc` allocates its channel and a first block
//! of 32 slots up front (~0.8 KiB per session, measured with heaptrack), this
//! ~0.1 KiB.
//!
//! The router holds the [`Sender`] (in its map of sessions), the session the
//! [`Receiver`]. Dropping the sender (a newer session took over, or the
//! session was unregistered) ends the queue: the receiver gets what is left,
//! then `None`. Closing the receiver makes later sends fail, so the router
//! stores or reroutes those commands instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Command;

struct Shared {
    items: Mutex<VecDeque<Box<Command>>>,
    capacity: usize,
    /// The sender is gone, or the receiver closed.
    closed: AtomicBool,
    /// Wakes the receiver. `notify_one` keeps a permit when nobody waits, so
    /// a command pushed between the receiver's check and its wait is not
    /// missed.
    wake: Notify,
}

impl Shared {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Box<Command>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue of at most `capacity` commands.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        capacity,
        closed: AtomicBool::new(false),
        wake: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// The router's end.
pub struct Sender(Arc<Shared>);

impl Sender {
    /// Queue `cmd`, or give it back when the queue is full or closed.
    pub fn try_send(&self, cmd: Box<Command>) -> Result<(), Box<Command>> {
        let s = &self.0;
        {
            let mut items = s.items();
            if s.closed.load(Ordering::Acquire) || items.len() >= s.capacity {
                return Err(cmd);
            }
            items.push_back(cmd);
        }
        s.wake.notify_one();
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// The session's end.
pub struct Receiver(Arc<Shared>);

impl Receiver {
    /// The next command; `None` once the queue is empty and closed.
    pub async fn recv(&self) -> Option<Box<Command>> {
        loop {
            if let Some(cmd) = self.try_recv() {
                return Some(cmd);
            }
            if self.0.closed.load(Ordering::Acquire) {
                // A send may have landed just before the close.
                return self.try_recv();
            }
            self.0.wake.notified().await;
        }
    }

    pub fn try_recv(&self) -> Option<Box<Command>> {
        self.0.items().pop_front()
    }

    /// Refuse further commands; those queued stay for [`Self::try_recv`].
    pub fn close(&self) {
        // Under the lock: a send either sees the flag or is queued before it.
        let _items = self.0.items();
        self.0.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cmd(name: &str) -> Box<Command> {
        Box::new(Command {
            id: name.into(),
            name: name.into(),
            args: None,
            expires_at: tokio::time::Instant::now() + Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn bounded_in_order_and_ends_when_the_sender_goes() {
        let (tx, rx) = queue(2);
        assert!(tx.try_send(cmd("a")).is_ok());
        assert!(tx.try_send(cmd("b")).is_ok());
        assert_eq!(tx.try_send(cmd("c")).unwrap_err().name, "c", "full");
        assert_eq!(rx.recv().await.unwrap().name, "a");
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = rx.recv().await {
                got.push(c.name.clone());
            }
            got
        });
        tokio::task::yield_now().await;
        assert!(tx.try_send(cmd("d")).is_ok());
        drop(tx);
        assert_eq!(waiting.await.unwrap(), ["b", "d"]);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_a_send() {
        let (tx, rx) = queue(4);
        let waiting = tokio::spawn(async move { rx.recv().await.map(|c| c.name.clone()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tx.try_send(cmd("x")).is_ok());
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.unwrap().unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn a_closed_receiver_refuses_sends_and_keeps_what_was_queued() {
        let (tx, rx) = queue(4);
        assert!(tx.try_send(cmd("a")).is_ok());
        rx.close();
        assert!(tx.try_send(cmd("b")).is_err());
        assert_eq!(rx.try_recv().unwrap().name, "a");
        assert!(rx.try_recv().is_none());
    }
}
