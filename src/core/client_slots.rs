//! A fixed number of connection slots for a port an operator must always be able to reach (the
//! admin and control ports): when every slot is taken, a new connection takes the slot of the connection that
//! has been idle longest, which is told to close.
//!
//! "Idle" means no request is being answered: a keep-alive connection between requests, or one
//! that has not finished sending its first request (a slow or silent client). Only when every
//! connection is in the middle of a request is one of them evicted (the least recently active). So
//! clients that open connections and hold them cannot keep a fresh request out, and the port's
//! descriptors stay bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The slots of one port.
#[derive(Debug)]
pub(crate) struct ClientSlots {
    port: &'static str,
    max: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    clients: HashMap<u64, Client>,
}

#[derive(Debug)]
struct Client {
    /// When the last request ended, or when the connection opened.
    last_active: Instant,
    /// Requests being answered now.
    busy: u32,
    evict: CancellationToken,
}

/// One connection's slot; given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    slots: Arc<ClientSlots>,
    id: u64,
    evicted: CancellationToken,
}

impl ClientSlots {
    /// `port` names the port in metrics; `max` is at least 1.
    pub(crate) fn new(port: &'static str, max: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            port,
            max: max.max(1),
            table: Mutex::default(),
        })
    }

    /// A slot for a new connection, evicting the idlest connection when all are taken.
    pub(crate) fn admit(self: &Arc<Self>) -> ClientSlot {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.clients.len() >= self.max {
            let idlest = table
                .clients
                .iter()
                .min_by_key(|(_, client)| (client.busy > 0, client.last_active))
                .map(|(&id, _)| id);
            if let Some(client) = idlest.and_then(|id| table.clients.remove(&id)) {
                client.evict.cancel();
                crate::core::counters::metrics()
                    .clients_evicted
                    .with_label_values(&[self.port])
                    .inc();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let evicted = CancellationToken::new();
        table.clients.insert(
            id,
            Client {
                last_active: Instant::now(),
                busy: 0,
                evict: evicted.clone(),
            },
        );
        ClientSlot {
            slots: self.clone(),
            id,
            evicted,
        }
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().clients.len()
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Client)) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = table.clients.get_mut(&id) {
            change(client);
        }
    }
}

impl ClientSlot {
    /// Completes when a newer connection has taken this slot: close the connection.
    pub(crate) async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// Marks a request as being answered until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy {
        self.slots.update(self.id, |client| client.busy += 1);
        Busy {
            slots: self.slots.clone(),
            id: self.id,
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut table = self.slots.table.lock().unwrap_or_else(|e| e.into_inner());
        table.clients.remove(&self.id);
    }
}

/// A request being answered (see [`ClientSlot::busy`]).
#[derive(Debug)]
pub(crate) struct Busy {
    slots: Arc<ClientSlots>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slots.update(self.id, |client| {
            client.busy = client.busy.saturating_sub(1);
            client.last_active = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn is_evicted(slot: &ClientSlot) -> bool {
        slot.evicted.is_cancelled()
    }

    #[test]
    fn the_idlest_connection_gives_its_slot_to_a_new_one() {
        let slots = ClientSlots::new("test", 3);
        let first = slots.admit();
        std::thread::sleep(Duration::from_millis(2));
        let second = slots.admit();
        std::thread::sleep(Duration::from_millis(2));
        let third = slots.admit();
        // The first has just answered a request: the second is now the idlest.
        drop(first.busy());
        let fourth = slots.admit();
        assert_eq!(slots.len(), 3);
        assert!(is_evicted(&second));
        assert!(!is_evicted(&first) && !is_evicted(&third) && !is_evicted(&fourth));
        drop(second);
        assert_eq!(slots.len(), 3, "an evicted slot is not counted twice");
    }

    #[test]
    fn a_connection_answering_a_request_is_evicted_only_when_all_are() {
        let slots = ClientSlots::new("test", 2);
        let first = slots.admit();
        let _answering = first.busy();
        std::thread::sleep(Duration::from_millis(2));
        let second = slots.admit();
        let third = slots.admit();
        assert!(
            is_evicted(&second),
            "the idle one goes, although it is newer"
        );
        assert!(!is_evicted(&first));
        let _also = third.busy();
        let fourth = slots.admit();
        assert!(is_evicted(&first), "all busy: the oldest goes");
        assert!(!is_evicted(&third) && !is_evicted(&fourth));
        drop((first, second, third, fourth));
        assert_eq!(slots.len(), 0);
    }
}
