//! Effect delivery: each effect goes to the one inbox it is for, exactly once.
//!
//! Requests (an HTTP long-poll) get a oneshot inbox keyed by `Via::Request(id)`; connections
//! and sessions get an unbounded inbox keyed by `InboxKey` that receives their grants, wait
//! ends and `lost` events. The router owns only the sending halves; an inbox unregisters
//! itself when dropped.
//!
//! # Lost before granted
//! When one command takes a name from its holder (TTL, admin, session end) and gives it to the
//! next, the holder's `lost` event must reach its socket before the next holder hears of its
//! grant. Each `lost` delivered to an inbox carries a [`Written`] ticket, dropped by the
//! receiver once the event is written (or cannot be); a later grant of the same name in the
//! same batch carries the [`WrittenBefore`] that resolves when every such ticket is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lockserver_core::{Effect, HoldId, Holder, LockName, NodeEpoch, SessionId, Via};
use tokio::sync::{mpsc, oneshot, Notify};

/// Which connection-style inbox an effect goes to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InboxKey {
    Connection(u64),
    Session(SessionId),
}

/// One effect on its way to its inbox, with the write order it must keep with other inboxes.
#[derive(Debug)]
pub struct Delivery {
    pub effect: Effect,
    /// For a `lost` event: drop it once the event is written to the socket (or never will be).
    pub written: Option<Written>,
    /// For a grant: write the answer only once this has passed (the name's earlier holders
    /// have been told they lost it).
    pub after: Option<WrittenBefore>,
}

impl Delivery {
    fn plain(effect: Effect) -> Delivery {
        Delivery { effect, written: None, after: None }
    }
}

#[derive(Debug, Default)]
struct Barrier {
    pending: AtomicUsize,
    notify: Notify,
}

/// A ticket for one `lost` event not yet written. Dropping it marks the event written.
#[derive(Debug)]
pub struct Written(Arc<Barrier>);

impl Drop for Written {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.notify.notify_waiters();
        }
    }
}

/// Resolves once every [`Written`] ticket of its batch and name is gone.
#[derive(Clone, Debug)]
pub struct WrittenBefore(Arc<Barrier>);

impl WrittenBefore {
    /// Waits until the earlier holders' `lost` events are written. Callers bound the wait:
    /// the order is promised for healthy connections, and a stuck one must not hold others.
    pub async fn passed(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn is_passed(&self) -> bool {
        self.0.pending.load(Ordering::Acquire) == 0
    }
}

#[derive(Debug, Default, Clone)]
pub struct Router {
    shared: Arc<Mutex<Routes>>,
}

#[derive(Debug, Default)]
struct Routes {
    requests: HashMap<u64, oneshot::Sender<Delivery>>,
    connections: HashMap<InboxKey, mpsc::UnboundedSender<Delivery>>,
}

/// The receiving half for one request's effect. Dropping it unregisters the request.
#[derive(Debug)]
pub struct RequestInbox {
    pub id: u64,
    pub receiver: oneshot::Receiver<Delivery>,
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
    pub receiver: mpsc::UnboundedReceiver<Delivery>,
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
        // Names whose holders were told they lost them in this batch (rare: usually empty).
        let mut lost_on: Vec<(LockName, Arc<Barrier>)> = Vec::new();
        let mut routes = self.lock();
        for effect in effects {
            let mut delivery = Delivery::plain(effect);
            let target = match &delivery.effect {
                Effect::Granted { origin, hold } => {
                    if origin.boot != boot {
                        continue; // another node's (or a dead boot's) request
                    }
                    delivery.after = lost_on
                        .iter()
                        .find(|(name, _)| *name == hold.name)
                        .map(|(_, barrier)| WrittenBefore(barrier.clone()));
                    match origin.via {
                        Via::Request(id) => {
                            let hold_id = hold.hold_id;
                            let delivered = routes
                                .requests
                                .remove(&id)
                                .is_some_and(|sender| sender.send(delivery).is_ok());
                            if !delivered {
                                undeliverable.push(hold_id);
                            }
                            continue;
                        }
                        Via::Connection(id) => InboxKey::Connection(id),
                        Via::Session(id) => InboxKey::Session(id),
                    }
                }
                Effect::WaitEnded { origin, .. } => {
                    if origin.boot != boot {
                        continue;
                    }
                    match origin.via {
                        Via::Request(id) => {
                            if let Some(sender) = routes.requests.remove(&id) {
                                let _ = sender.send(delivery);
                            }
                            continue;
                        }
                        Via::Connection(id) => InboxKey::Connection(id),
                        Via::Session(id) => InboxKey::Session(id),
                    }
                }
                Effect::Lost { holder, name, .. } => {
                    let key = match holder {
                        Holder::Session(id) => InboxKey::Session(*id),
                        Holder::Connection(id) => InboxKey::Connection(*id),
                        Holder::Anonymous | Holder::CompatOwner(_) | Holder::Rdlm(_) => continue,
                    };
                    if routes.connections.contains_key(&key) {
                        let barrier = match lost_on.iter().find(|(lost, _)| lost == name) {
                            Some((_, barrier)) => barrier.clone(),
                            None => {
                                let barrier = Arc::new(Barrier::default());
                                lost_on.push((name.clone(), barrier.clone()));
                                barrier
                            }
                        };
                        barrier.pending.fetch_add(1, Ordering::AcqRel);
                        delivery.written = Some(Written(barrier));
                    }
                    key
                }
                Effect::SessionEnded { session_id, .. } => InboxKey::Session(*session_id),
            };
            let granted = granted_id(&delivery.effect);
            // A failed send drops the delivery, and with it any `Written` ticket.
            let delivered =
                routes.connections.get(&target).is_some_and(|sender| sender.send(delivery).is_ok());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lockserver_core::{FencingToken, HoldView, Kind, LostReason, Mode, Origin};

    use super::*;

    const BOOT: NodeEpoch = NodeEpoch { node: 1, epoch: 1 };

    fn name(text: &str) -> LockName {
        LockName::new(text).unwrap()
    }

    fn lost(session: SessionId, on: &str) -> Effect {
        Effect::Lost {
            hold_id: HoldId::from_u128(1),
            name: name(on),
            token: FencingToken(1),
            holder: Holder::Session(session),
            reason: LostReason::Expired,
        }
    }

    fn granted(session: SessionId, on: &str) -> Effect {
        Effect::Granted {
            hold: HoldView {
                name: name(on),
                hold_id: HoldId::from_u128(2),
                kind: Kind::Lock,
                mode: Some(Mode::Exclusive),
                permits: 1,
                limit: None,
                owner: "".into(),
                holder: Holder::Session(session),
                token: FencingToken(2),
                granted_at_ms: 0,
                granted_log_ms: 0,
                ttl_ms: None,
                expires_in_ms: None,
                request_id: None,
            },
            origin: Origin { boot: BOOT, via: Via::Session(session) },
        }
    }

    #[tokio::test]
    async fn a_grant_waits_for_the_lost_event_of_the_same_name_to_be_written() {
        let router = Router::default();
        let (a, b) = (SessionId::from_u128(10), SessionId::from_u128(11));
        let mut inbox_a = router.register_connection(InboxKey::Session(a));
        let mut inbox_b = router.register_connection(InboxKey::Session(b));
        let undeliverable =
            router.route(BOOT, vec![lost(a, "db"), granted(b, "db"), granted(b, "other")]);
        assert!(undeliverable.is_empty());
        let lost = inbox_a.receiver.recv().await.unwrap();
        let grant = inbox_b.receiver.recv().await.unwrap();
        let unrelated = inbox_b.receiver.recv().await.unwrap();
        assert!(unrelated.after.is_none(), "another name waits for nothing");
        let after = grant.after.expect("the grant waits for the lost event");
        assert!(!after.is_passed());
        let waiting = tokio::spawn(async move { after.passed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "never before the lost event is written");
        drop(lost); // written
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_lost_event_nobody_receives_holds_nothing_back() {
        let router = Router::default();
        let (a, b) = (SessionId::from_u128(10), SessionId::from_u128(11));
        let mut inbox_b = router.register_connection(InboxKey::Session(b));
        router.route(BOOT, vec![lost(a, "db"), granted(b, "db")]);
        let grant = inbox_b.receiver.recv().await.unwrap();
        assert!(grant.after.is_none_or(|after| after.is_passed()));
    }

    #[test]
    fn a_grant_for_an_unregistered_inbox_is_undeliverable() {
        let router = Router::default();
        let undeliverable = router.route(BOOT, vec![granted(SessionId::from_u128(3), "db")]);
        assert_eq!(undeliverable, vec![HoldId::from_u128(2)]);
    }
}
