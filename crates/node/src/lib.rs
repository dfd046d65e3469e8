//! The Lockserver node: runs every command through the log, applies it to the lock table and
//! delivers the effects to whoever waits for them.
//!
//! # Layout
//! - [`Node`]: the API the surfaces (HTTP, WebSocket, compat listeners) call: `propose` a
//!   command, `read` the table linearizably, and register to receive effects.
//! - [`router`]: delivers each effect exactly once to the request, connection or session it
//!   is for; a grant nobody can receive is released (`undeliverable`).
//! - [`clock`]: the log clock (never the wall clock, never goes back).
//! - the expiry ticker: a timer on the table's earliest deadline that proposes `Expire`.
//! - [`storage`]: the segment log and its group committer (not yet wired under `propose`).

pub mod clock;
pub mod router;
pub mod storage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockserver_core::{
    Command, CoreError, Ctx, Effect, HoldId, Limits, NodeEpoch, ReleaseReason, Response, Table,
};
use tokio::sync::watch;

use crate::clock::LogClock;
use crate::router::Router;
pub use crate::router::{ConnectionInbox, RequestInbox};

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: u64,
    /// Where the log and snapshots live (unused with `in_memory`, except for the token
    /// high-water file).
    pub data_dir: std::path::PathBuf,
    pub in_memory: bool,
    pub limits: Limits,
    /// How much `Resume` extends every deadline after a restart or leader change.
    pub resume_margin_ms: u64,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> NodeConfig {
        NodeConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            in_memory: false,
            limits: Limits::default(),
            resume_margin_ms: 2_000,
        }
    }
}

/// Why a proposal or read could not be served; the outcome of a failed proposal is unknown.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<String> },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// A handle on the running node. Cheap to clone; every clone is the same node.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    boot: NodeEpoch,
    /// The table. A std mutex: every critical section is one `apply` or one read, never held
    /// across an await.
    table: Mutex<Table>,
    clock: LogClock,
    router: Router,
    /// The earliest deadline in the table, watched by the expiry ticker.
    next_deadline: watch::Sender<Option<u64>>,
    next_local_id: AtomicU64,
}

impl Node {
    /// Opens the node and proposes `Resume` as its first command.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let boot = NodeEpoch { node: config.node_id, epoch: rand::random::<u64>() | 1 };
        let (next_deadline, deadline_rx) = watch::channel(None);
        let node = Node {
            inner: Arc::new(Inner {
                boot,
                table: Mutex::new(Table::new(config.limits)),
                clock: LogClock::start_at(0),
                router: Router::default(),
                next_deadline,
                next_local_id: AtomicU64::new(1),
            }),
        };
        node.propose(Command::Resume { margin_ms: config.resume_margin_ms, live: vec![boot] })
            .await?
            .map_err(|err| NodeError::Unavailable(format!("resume failed: {err}")))?;
        tokio::spawn(expiry_ticker(Arc::downgrade(&node.inner), deadline_rx));
        Ok(node)
    }

    /// This node's boot: goes into every waiter's origin.
    pub fn boot(&self) -> NodeEpoch {
        self.inner.boot
    }

    /// The current log time.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// A fresh id for a request or connection origin, unique within this boot.
    pub fn next_local_id(&self) -> u64 {
        self.inner.next_local_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an HTTP-style request to receive the effect for its queued acquire. Register
    /// before proposing; dropping the inbox unregisters it (a later grant is then released).
    pub fn request_inbox(&self) -> RequestInbox {
        let id = self.next_local_id();
        self.inner.router.register_request(id)
    }

    /// Registers a connection (or a session's stream) to receive its effects: grants and
    /// wait ends for `Via::Connection(id)`/`Via::Session`, and `lost` for its holder.
    pub fn connection_inbox(&self, key: router::InboxKey) -> ConnectionInbox {
        self.inner.router.register_connection(key)
    }

    /// Runs `command` through the log and applies it; returns the table's answer once it is
    /// durable. `Err` means the outcome is unknown.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Response, CoreError>, NodeError> {
        let (response, undeliverable) = self.inner.apply(command);
        self.release_undeliverable(undeliverable);
        Ok(response)
    }

    /// A linearizable read of the table at the current log time.
    pub async fn read<R>(&self, read: impl FnOnce(&Table, u64) -> R) -> Result<R, NodeError> {
        let now = self.now_ms();
        let table = self.inner.table.lock().unwrap_or_else(|poison| poison.into_inner());
        Ok(read(&table, now))
    }

    fn release_undeliverable(&self, holds: Vec<HoldId>) {
        if holds.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            for hold_id in holds {
                let command = Command::Release { hold_id, reason: ReleaseReason::Undeliverable };
                let _ = node.propose(command).await;
            }
        });
    }
}

impl Inner {
    /// Applies one command and routes its effects; returns the grants that could not be
    /// delivered.
    fn apply(&self, command: Command) -> (Result<Response, CoreError>, Vec<HoldId>) {
        let mut effects: Vec<Effect> = Vec::new();
        let ctx = Ctx { now_ms: self.clock.now_ms(), wall_ms: clock::wall_ms() };
        let mut table = self.table.lock().unwrap_or_else(|poison| poison.into_inner());
        let response = table.apply(ctx, command, &mut effects);
        // Routed under the table lock so effects reach their inboxes in log order.
        let undeliverable = self.router.route(self.boot, effects);
        let next = table.next_deadline();
        drop(table);
        self.next_deadline.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
        (response, undeliverable)
    }
}

/// Proposes `Expire` when the log clock reaches the table's earliest deadline. Stops when the
/// node is dropped.
async fn expiry_ticker(inner: std::sync::Weak<Inner>, mut deadline: watch::Receiver<Option<u64>>) {
    loop {
        let next = *deadline.borrow_and_update();
        let sleep = match (next, inner.upgrade()) {
            (_, None) => return,
            (Some(at), Some(inner)) => {
                Some(Duration::from_millis(at.saturating_sub(inner.clock.now_ms())))
            }
            (None, Some(_)) => None,
        };
        let fired = match sleep {
            Some(duration) => tokio::select! {
                _ = tokio::time::sleep(duration) => true,
                changed = deadline.changed() => { if changed.is_err() { return } false }
            },
            None => {
                if deadline.changed().await.is_err() {
                    return;
                }
                false
            }
        };
        if fired {
            let Some(inner) = inner.upgrade() else { return };
            let node = Node { inner };
            let _ = node.propose(Command::Expire).await;
        }
    }
}
