//! Event fan-out: every subscriber (a connection that sent `Events`) gets
//! every event, in order; one that falls a whole queue behind is dropped
//! rather than slowing the agent down.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

use husk_protocol::Event;

use super::lock;
use crate::log::{debug, info};

/// Queued events per subscriber before it is dropped as too slow.
pub const EVENT_QUEUE: usize = 1024;

/// The subscribers of the agent's events.
pub struct Events {
    queue: usize,
    subscribers: Mutex<Vec<SyncSender<Event>>>,
}

impl Default for Events {
    fn default() -> Events {
        Events::with_queue(EVENT_QUEUE)
    }
}

impl Events {
    /// Subscribers get up to `queue` unread events.
    pub fn with_queue(queue: usize) -> Events {
        Events {
            queue,
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Sends `e` to every subscriber; drops those that hung up or fell
    /// `queue` events behind.
    pub fn emit(&self, e: Event) {
        debug!("event {e:?}");
        lock(&self.subscribers).retain(|s| match s.try_send(e.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                info!(
                    "dropping an events subscriber: {} events unread",
                    self.queue
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// A new subscriber: it gets every event emitted from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = sync_channel(self.queue);
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Subscribers currently held.
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom(n: u64) -> Event {
        Event::Oom {
            id: "c".into(),
            oom_kills: n,
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let ev = Events::default();
        let (a, b) = (ev.subscribe(), ev.subscribe());
        ev.emit(oom(1));
        ev.emit(oom(2));
        for rx in [&a, &b] {
            assert_eq!(rx.try_recv().unwrap(), oom(1));
            assert_eq!(rx.try_recv().unwrap(), oom(2));
            assert!(rx.try_recv().is_err());
        }
    }

    #[test]
    fn late_subscribers_miss_earlier_events() {
        let ev = Events::default();
        ev.emit(oom(1));
        let rx = ev.subscribe();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn gone_and_slow_subscribers_are_dropped() {
        let ev = Events::with_queue(2);
        let gone = ev.subscribe();
        let slow = ev.subscribe();
        let keen = ev.subscribe();
        drop(gone);
        ev.emit(oom(1));
        assert_eq!(ev.subscribers(), 2, "the hung-up one is dropped");
        assert_eq!(keen.try_recv().unwrap(), oom(1));
        ev.emit(oom(2));
        assert_eq!(keen.try_recv().unwrap(), oom(2));
        ev.emit(oom(3)); // `slow` has 2 unread: full
        assert_eq!(ev.subscribers(), 1);
        assert_eq!(keen.try_recv().unwrap(), oom(3));
        // What it had queued is still readable, then it ends.
        assert_eq!(slow.iter().count(), 2);
    }
}
