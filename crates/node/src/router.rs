//! Effect delivery: each effect goes to the one inbox it is for, exactly once.
//!
//! Requests (an HTTP long-poll) get a oneshot inbox keyed by `Via::Request(id)`; connections
//! and sessions get an unbounded inbox keyed by `InboxKey` that receives their grants, wait
//! ends and `lost` events. The router owns only the sending halves; an inbox unregisters
//! itself when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lockserver_core::{Effect, HoldId, Holder, NodeEpoch, SessionId, Via};
use tokio::sync::{mpsc, oneshot};

/// Which connection-style inbox an effect goes to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InboxKey {
    Connection(u64),
    Session(SessionId),
}

#[derive(Debug, Default, Clone)]
pub struct Router {
    shared: Arc<Mutex<Routes>>,
}

#[derive(Debug, Default)]
struct Routes {
    requests: HashMap<u64, oneshot::Sender<Effect>>,
    connections: HashMap<InboxKey, mpsc::UnboundedSender<Effect>>,
}

/// The receiving half for one request's effect. Dropping it unregisters the request.
#[derive(Debug)]
pub struct RequestInbox {
    pub id: u64,
    pub receiver: oneshot::Receiver<Effect>,
    router: Router,
}

impl Drop for RequestInbox {
    fn drop(&mut self) {
        self.router.lock().requests.remove(&self.id);
    }
}

/// The receiving half for a connection's or session's effects.
#[derive(Debug)]
pub struct ConnectionInbox {
    pub key: InboxKey,
    pub receiver: mpsc::UnboundedReceiver<Effect>,
    router: Router,
}

impl Drop for ConnectionInbox {
    fn drop(&mut self) {
        self.router.lock().connections.remove(&self.key);
    }
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.shared.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn register_request(&self, id: u64) -> RequestInbox {
        let (sender, receiver) = oneshot::channel();
        self.lock().requests.insert(id, sender);
        RequestInbox { id, receiver, router: self.clone() }
    }

    pub fn register_connection(&self, key: InboxKey) -> ConnectionInbox {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock().connections.insert(key, sender);
        ConnectionInbox { key, receiver, router: self.clone() }
    }

    /// Delivers `effects` in order; returns the grants nobody could receive.
    pub fn route(&self, boot: NodeEpoch, effects: Vec<Effect>) -> Vec<HoldId> {
        let mut undeliverable = Vec::new();
        if effects.is_empty() {
            return undeliverable;
        }
        let mut routes = self.lock();
        for effect in effects {
            let target = match &effect {
                Effect::Granted { origin, .. } | Effect::WaitEnded { origin, .. } => {
                    if origin.boot != boot {
                        continue; // another node's (or a dead boot's) request
                    }
                    match origin.via {
                        Via::Request(id) => {
                            let granted = granted_id(&effect);
                            let delivered = routes
                                .requests
                                .remove(&id)
                                .is_some_and(|sender| sender.send(effect).is_ok());
                            if !delivered {
                                undeliverable.extend(granted);
                            }
                            continue;
                        }
                        Via::Connection(id) => InboxKey::Connection(id),
                        Via::Session(id) => InboxKey::Session(id),
                    }
                }
                Effect::Lost { holder, .. } => match holder {
                    Holder::Session(id) => InboxKey::Session(*id),
                    Holder::Connection(id) => InboxKey::Connection(*id),
                    Holder::Anonymous | Holder::CompatOwner(_) => continue,
                },
                Effect::SessionEnded { session_id, .. } => InboxKey::Session(*session_id),
            };
            let granted = granted_id(&effect);
            let delivered =
                routes.connections.get(&target).is_some_and(|sender| sender.send(effect).is_ok());
            if !delivered {
                undeliverable.extend(granted);
            }
        }
        undeliverable
    }
}

fn granted_id(effect: &Effect) -> Option<HoldId> {
    match effect {
        Effect::Granted { hold, .. } => Some(hold.hold_id),
        _ => None,
    }
}
