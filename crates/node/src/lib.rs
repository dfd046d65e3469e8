//! The Lockserver node: runs every command through the raft log (openraft, a one-member
//! cluster by default), applies it to the lock table once it is durable, and delivers the
//! effects to whoever waits for them.
//!
//! # Layout
//! - [`Node`]: the API the surfaces (HTTP, WebSocket, compat listeners) call: `propose` a
//!   command, `read` the table linearizably, `keep_alive` sessions (coalesced), and register
//!   inboxes to receive effects.
//! - [`raft_types`]: what a log entry carries ([`raft_types::LogCmd`]: log time + command).
//! - [`storage`]: our own storage under openraft: the segment log, its group committer, the
//!   raft log store (vote, purge point) and the small framed files.
//! - [`state_machine`]: applies entries to the table, routes effects, builds and installs
//!   snapshots.
//! - [`router`]: delivers each effect exactly once to the request, connection or session it
//!   is for; a grant nobody can receive is released (`undeliverable`).
//! - [`clock`]: the log clock (starts at the highest committed `now_ms`, never goes back).
//! - [`tokens`]: the `--in-memory` token high-water mark.
//! - the expiry ticker: a timer on the table's earliest deadline that proposes `Expire`.

pub mod clock;
pub mod network;
pub mod raft_types;
pub mod router;
pub mod state_machine;
pub mod storage;
pub mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lockserver_core::{
    Command, CoreError, Ctx, HoldId, Limits, NodeEpoch, ReleaseReason, Response, SessionId, Table,
};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::LogClock;
use crate::raft_types::{Applied, LogCmd, Raft};
use crate::router::Router;
pub use crate::router::{
    ConnectionInbox, Delivery, InboxKey, RequestInbox, Written, WrittenBefore,
};
use crate::state_machine::{Machine, MachineConfig, StateMachine};
use crate::storage::group::CommitStats;
use crate::storage::log_store::{AppliedIndex, LogReader, LogStore};
use crate::tokens::TokenReserve;

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: u64,
    /// Where the log and snapshots live. With `in_memory` only the token high-water file is
    /// kept there.
    pub data_dir: PathBuf,
    pub in_memory: bool,
    pub limits: Limits,
    /// How much `Resume` extends every deadline after a restart or leader change (at least the
    /// longest election timeout plus clock drift).
    pub resume_margin_ms: u64,
    /// A snapshot is built (and the log before it purged) after this many entries.
    pub snapshot_every: u64,
    /// How long `open` waits for the node to become leader and replay its log.
    pub start_timeout: Duration,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            in_memory: false,
            limits: Limits::default(),
            resume_margin_ms: 2_000,
            snapshot_every: 50_000,
            start_timeout: Duration::from_secs(60),
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

/// Counters for metrics and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Durable mode: fdatasyncs of the log, and the appends and entries they covered.
    pub log_syncs: u64,
    pub log_appends: u64,
    pub log_records: u64,
    pub snapshots_built: u64,
    pub last_applied: u64,
    /// Log entries held in memory: in durable mode those not yet applied or durable and a
    /// short tail; in memory every entry since the last snapshot.
    pub log_entries_in_memory: u64,
    /// Commands proposed, and the log entries that carried them (several share one entry).
    pub commands: u64,
    pub command_entries: u64,
    /// `keep_alive` calls, and the `KeepAlive` commands that carried them.
    pub keepalives: u64,
    pub keepalive_commands: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commands: AtomicU64,
    command_entries: AtomicU64,
    keepalives: AtomicU64,
    keepalive_commands: AtomicU64,
}

/// A handle on the running node. Cheap to clone; every clone is the same node.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    boot: NodeEpoch,
    raft: Raft,
    machine: Arc<Machine>,
    clock: LogClock,
    next_local_id: AtomicU64,
    commit_stats: Option<Arc<CommitStats>>,
    /// For the count of log entries held in memory.
    log_reader: LogReader,
    keepalives: Mutex<KeepAliveBatch>,
    proposals: Mutex<ProposalBatch>,
    counters: Counters,
    /// The runtime of the raft thread: openraft's tasks, the proposal and keepalive flushers,
    /// the expiry ticker. One thread, so a log entry's trip (flusher -> raft core -> log write
    /// -> state machine -> flusher) never waits for another thread to wake.
    runtime: tokio::runtime::Handle,
    /// Dropped (after raft has shut down) to end the raft thread.
    stop_thread: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("boot", &self.boot).finish_non_exhaustive()
    }
}

type Answer = Result<Result<Response, CoreError>, NodeError>;
type ProposalReply = oneshot::Sender<Answer>;
type ReplyBatch = Vec<(ProposalReply, Answer)>;

/// A queued proposal and the thread of the single-threaded runtime it came from, if any.
#[derive(Debug)]
struct Proposal {
    command: Command,
    reply: ProposalReply,
    home: Option<std::thread::ThreadId>,
}

/// Proposals waiting for the next log entry, and whether the flusher is writing entries.
#[derive(Debug, Default)]
struct ProposalBatch {
    pending: Vec<Proposal>,
    /// One entry is written at a time. Measured with two: the second entry leaves with the few
    /// proposals that arrived first and costs a whole fsync, and throughput drops by a third.
    flushing: bool,
    /// For each single-threaded runtime that proposes (the server's connection workers): a task
    /// on it that hands out that runtime's answers, so an entry's answers cost one cross-thread
    /// wake per runtime instead of one per proposal.
    homes: std::collections::HashMap<std::thread::ThreadId, Home>,
}

impl ProposalBatch {
    /// Whether the caller should start the flusher: something is pending and none runs (it is
    /// then marked running).
    fn claim_flusher(&mut self) -> bool {
        let start = !self.pending.is_empty() && !self.flushing;
        self.flushing |= start;
        start
    }
}

/// A single-threaded runtime that proposes.
#[derive(Debug)]
struct Home {
    /// To the task on it that hands out its answers.
    answers: mpsc::UnboundedSender<ReplyBatch>,
    /// A task is queued on it to start the flusher once the runtime's current round of ready
    /// tasks has proposed: one wake of the raft thread per round, not per proposal.
    kick_queued: bool,
}

/// Most commands in one log entry; more wait for the next.
const MAX_COMMANDS_PER_ENTRY: usize = 1024;

type KeepAliveReply = oneshot::Sender<Result<Option<u64>, NodeError>>;

/// Keepalives waiting for the next `KeepAlive` command.
#[derive(Debug, Default)]
struct KeepAliveBatch {
    pending: Vec<(SessionId, KeepAliveReply)>,
    in_flight: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The raft task owns the storage; stop it with the last handle, then the thread.
        let raft = self.raft.clone();
        let stop = self.stop_thread.take();
        self.runtime.spawn(async move {
            let _ = raft.shutdown().await;
            drop(stop);
        });
    }
}

/// Starts the raft thread: a single-threaded runtime that runs until `stop` is dropped.
fn start_raft_thread() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), NodeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| unavailable(format!("cannot start the raft runtime: {err}")))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("lockserver-raft".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
        })
        .map_err(|err| unavailable(format!("cannot start the raft thread: {err}")))?;
    Ok((handle, stop))
}

/// Whether the caller runs on a single-threaded tokio runtime (the raft thread, a server's
/// connection worker): work there may finish inline, and answers to it can be batched per thread.
pub(crate) fn on_single_threaded_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

fn storage_error(err: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(err.to_string())
}

fn unavailable(err: impl std::fmt::Display) -> NodeError {
    NodeError::Unavailable(err.to_string())
}

impl Node {
    /// Opens the node: reads the data directory (a clean error if it is corrupt or foreign),
    /// starts raft, waits until it leads and has applied its whole log, starts the log clock at
    /// the highest committed log time, and proposes `Resume` as the first command.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let boot = NodeEpoch { node: config.node_id, epoch: rand::random::<u64>() | 1 };
        let dir = config.data_dir.clone();
        let in_memory = config.in_memory;
        // Set by the machine as it applies, read by the log store to drop applied entries.
        let applied = AppliedIndex::default();
        let log_applied = applied.clone();
        let (tokens, token_floor, log_store) = tokio::task::spawn_blocking(move || {
            storage::files::open_data_dir(&dir)?;
            if in_memory {
                let (tokens, floor) = TokenReserve::open(&dir)?;
                Ok((Some(tokens), floor, LogStore::in_memory()))
            } else {
                Ok((None, 0, LogStore::open(&dir, log_applied)?))
            }
        })
        .await
        .map_err(storage_error)?
        .map_err(|err: storage::log::LogError| storage_error(err))?;
        let commit_stats = log_store.commit_stats();
        let log_reader = log_store.reader();
        let (next_deadline, deadline_rx) = watch::channel(None);
        let (undeliverable, undeliverable_rx) = mpsc::unbounded_channel();
        let machine = Machine::open(MachineConfig {
            limits: config.limits,
            boot,
            router: Router::default(),
            next_deadline,
            undeliverable,
            tokens,
            data_dir: (!config.in_memory).then(|| config.data_dir.clone()),
            applied,
        })
        .map_err(storage_error)?;
        if let Some(purged) = log_store.last_purged_index() {
            let covered = machine.lock().last_applied.map(|id| id.index);
            if covered.is_none_or(|index| index < purged) {
                let path = config.data_dir.join("snapshot");
                return Err(storage_error(storage::log::LogError::Corrupt {
                    path,
                    offset: 0,
                    what: format!(
                        "the log was compacted up to entry {purged} but the snapshot {}",
                        covered.map_or("is missing".to_string(), |i| format!("ends at entry {i}"))
                    ),
                }));
            }
        }

        let raft_config = openraft::Config {
            cluster_name: "lockserver".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(unavailable)?;
        let state_machine = StateMachine { machine: machine.clone() };
        let (runtime, stop_thread) = start_raft_thread()?;
        let node_id = config.node_id;
        // openraft spawns its tasks on the runtime it is created in: the raft thread's.
        let raft = runtime
            .spawn(async move {
                Raft::new(
                    node_id,
                    Arc::new(raft_config),
                    network::Network,
                    log_store,
                    state_machine,
                )
                .await
            })
            .await
            .map_err(unavailable)?
            .map_err(storage_error)?;
        if let Err(err) = start_leading(&raft, config.node_id, config.start_timeout).await {
            let _ = raft.shutdown().await;
            return Err(err);
        }

        // Log time resumes where the log left it: downtime does not count against any deadline.
        let clock = LogClock::start_at(machine.lock().table.now_ms());
        let node = Node {
            inner: Arc::new(Inner {
                boot,
                raft,
                machine,
                clock,
                next_local_id: AtomicU64::new(1),
                commit_stats,
                log_reader,
                keepalives: Mutex::new(KeepAliveBatch::default()),
                proposals: Mutex::new(ProposalBatch::default()),
                counters: Counters::default(),
                runtime,
                stop_thread: Some(stop_thread),
            }),
        };
        let resume =
            Command::Resume { margin_ms: config.resume_margin_ms, live: vec![boot], token_floor };
        node.propose(resume)
            .await?
            .map_err(|err| NodeError::Unavailable(format!("resume failed: {err}")))?;
        let runtime = &node.inner.runtime;
        runtime.spawn(expiry_ticker(Arc::downgrade(&node.inner), deadline_rx));
        runtime.spawn(release_undeliverable(Arc::downgrade(&node.inner), undeliverable_rx));
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
        self.inner.machine.router.register_request(id)
    }

    /// Registers a connection (or a session's stream) to receive its effects: grants and
    /// wait ends for `Via::Connection(id)`/`Via::Session`, and `lost` for its holder.
    pub fn connection_inbox(&self, key: router::InboxKey) -> ConnectionInbox {
        self.inner.machine.router.register_connection(key)
    }

    /// Runs `command` through the log and applies it; returns the table's answer once it is
    /// durable. `Err` means the outcome is unknown.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Response, CoreError>, NodeError> {
        let (reply, answer) = oneshot::channel();
        let home = on_single_threaded_runtime().then(|| std::thread::current().id());
        let start = {
            let mut batch = lock(&self.inner.proposals);
            batch.pending.push(Proposal { command, reply, home });
            match home {
                Some(id) => {
                    let home = batch.homes.entry(id).or_insert_with(|| {
                        let (answers, receiver) = mpsc::unbounded_channel();
                        tokio::spawn(hand_out_answers(receiver));
                        Home { answers, kick_queued: false }
                    });
                    let kick = !home.kick_queued;
                    home.kick_queued = true;
                    kick.then_some(Start::Kick(id))
                }
                None => batch.claim_flusher().then_some(Start::Flusher),
            }
        };
        match start {
            // Queued behind the tasks this runtime already has ready, which may propose too.
            Some(Start::Kick(id)) => drop(tokio::spawn(kick_flusher(self.clone(), id))),
            Some(Start::Flusher) => drop(self.inner.runtime.spawn(flush_proposals(self.clone()))),
            None => {}
        }
        answer.await.map_err(|_| unavailable("the node stopped"))?
    }

    /// Writes `commands` as one log entry stamped with the current log time; their answers in
    /// order once the entry is durable and applied.
    async fn write(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Response, CoreError>>, NodeError> {
        let counters = &self.inner.counters;
        counters.commands.fetch_add(commands.len() as u64, Ordering::Relaxed);
        counters.command_entries.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx { now_ms: self.inner.clock.now_ms(), wall_ms: clock::wall_ms() };
        match self.inner.raft.client_write(LogCmd { ctx, commands }).await {
            Ok(written) => match written.data {
                Applied::Commands(responses) => Ok(responses),
                Applied::Nothing => Err(unavailable("the command was not applied")),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(NodeError::NotLeader { leader: forward.leader_node.map(|node| node.addr) })
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Keeps `session` alive. Keepalives that arrive while one `KeepAlive` command is in the
    /// log are coalesced into the next one. Returns the session's TTL, or `None` if it is gone.
    pub async fn keep_alive(&self, session: SessionId) -> Result<Option<u64>, NodeError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut batch = lock(&self.inner.keepalives);
            batch.pending.push((session, reply));
            !std::mem::replace(&mut batch.in_flight, true)
        };
        if start {
            self.inner.runtime.spawn(flush_keepalives(self.clone()));
        }
        answer.await.map_err(|_| unavailable("the node stopped"))?
    }

    /// A linearizable read of the table at the current log time.
    pub async fn read<R>(&self, read: impl FnOnce(&Table, u64) -> R) -> Result<R, NodeError> {
        self.inner.raft.ensure_linearizable().await.map_err(|err| match err {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward)) => {
                NodeError::NotLeader { leader: forward.leader_node.map(|node| node.addr) }
            }
            err => unavailable(err),
        })?;
        let now = self.now_ms();
        let state = self.inner.machine.lock();
        Ok(read(&state.table, now))
    }

    /// Counters: log fsyncs and what they covered, snapshots, last applied index.
    pub fn stats(&self) -> NodeStats {
        let mut stats = NodeStats {
            snapshots_built: self.inner.machine.snapshots_built(),
            last_applied: self.inner.machine.lock().last_applied.map_or(0, |id| id.index),
            log_entries_in_memory: self.inner.log_reader.entries_in_memory() as u64,
            commands: self.inner.counters.commands.load(Ordering::Relaxed),
            command_entries: self.inner.counters.command_entries.load(Ordering::Relaxed),
            keepalives: self.inner.counters.keepalives.load(Ordering::Relaxed),
            keepalive_commands: self.inner.counters.keepalive_commands.load(Ordering::Relaxed),
            ..NodeStats::default()
        };
        if let Some(commit) = &self.inner.commit_stats {
            stats.log_syncs = commit.syncs.load(Ordering::Relaxed);
            stats.log_appends = commit.appends.load(Ordering::Relaxed);
            stats.log_records = commit.records.load(Ordering::Relaxed);
        }
        stats
    }

    /// Builds a snapshot of everything applied so far (the log before it is then purged) and
    /// waits for it.
    pub async fn snapshot(&self) -> Result<(), NodeError> {
        let target = self.inner.machine.lock().last_applied.map_or(0, |id| id.index);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            // A trigger while a snapshot is already being built (by policy) is dropped, and
            // that snapshot may end below `target`: trigger again until one covers it.
            self.inner.raft.trigger().snapshot().await.map_err(unavailable)?;
            let covered = self
                .inner
                .raft
                .wait(Some(Duration::from_secs(1)))
                .metrics(|m| m.snapshot.is_some_and(|id| id.index >= target), "snapshot")
                .await;
            match covered {
                Ok(_) => return Ok(()),
                Err(err) if std::time::Instant::now() >= deadline => return Err(unavailable(err)),
                Err(_) => {}
            }
        }
    }

    /// Stops raft (the log is flushed); the node answers `unavailable` afterwards.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Makes this node the leader of its one-member cluster (initializing it on first start) and
/// waits until it has applied every entry of its log.
async fn start_leading(raft: &Raft, node_id: u64, timeout: Duration) -> Result<(), NodeError> {
    if !raft.is_initialized().await.map_err(unavailable)? {
        let members = BTreeMap::from([(node_id, BasicNode::default())]);
        raft.initialize(members).await.map_err(unavailable)?;
    } else if raft.metrics().borrow().current_leader != Some(node_id) {
        raft.trigger().elect().await.map_err(unavailable)?;
    }
    raft.wait(Some(timeout))
        .state(ServerState::Leader, "become leader")
        .await
        .map_err(|err| unavailable(format!("did not become leader: {err}")))?;
    raft.ensure_linearizable()
        .await
        .map_err(|err| unavailable(format!("could not replay the log: {err}")))?;
    Ok(())
}

enum Start {
    Kick(std::thread::ThreadId),
    Flusher,
}

/// Starts the flusher (unless one runs) for what a home runtime proposed in its last round.
async fn kick_flusher(node: Node, home: std::thread::ThreadId) {
    let start = {
        let mut batch = lock(&node.inner.proposals);
        if let Some(home) = batch.homes.get_mut(&home) {
            home.kick_queued = false;
        }
        batch.claim_flusher()
    };
    if start {
        let runtime = node.inner.runtime.clone();
        runtime.spawn(flush_proposals(node));
    }
}

/// Writes queued proposals, one log entry per round, until none are left: proposals that arrive
/// while an entry is being made durable go together into the next one.
async fn flush_proposals(node: Node) {
    loop {
        let pending: Vec<_> = {
            let mut batch = lock(&node.inner.proposals);
            if batch.pending.is_empty() {
                batch.flushing = false;
                return;
            }
            let take = batch.pending.len().min(MAX_COMMANDS_PER_ENTRY);
            batch.pending.drain(..take).collect()
        };
        let mut commands = Vec::with_capacity(pending.len());
        let mut replies = Vec::with_capacity(pending.len());
        for proposal in pending {
            commands.push(proposal.command);
            replies.push((proposal.reply, proposal.home));
        }
        let answers: Vec<Answer> = match node.write(commands).await {
            Ok(responses) if responses.len() == replies.len() => {
                responses.into_iter().map(Ok).collect()
            }
            Ok(responses) => {
                let err = unavailable(format!(
                    "{} answers for {} commands",
                    responses.len(),
                    replies.len()
                ));
                vec![Err(err); replies.len()]
            }
            Err(err) => vec![Err(err); replies.len()],
        };
        deliver_answers(&node, replies, answers);
    }
}

/// Sends each answer to its proposer: directly when it waits on this thread or on a
/// multi-threaded runtime, else in one batch per home runtime.
fn deliver_answers(
    node: &Node,
    replies: Vec<(ProposalReply, Option<std::thread::ThreadId>)>,
    answers: Vec<Answer>,
) {
    let here = std::thread::current().id();
    // A few home runtimes at most (one per connection worker): a list beats a map here.
    let mut by_home: Vec<(std::thread::ThreadId, ReplyBatch)> = Vec::new();
    for ((reply, home), answer) in replies.into_iter().zip(answers) {
        match home {
            Some(home) if home != here => match by_home.iter_mut().find(|(id, _)| *id == home) {
                Some((_, batch)) => batch.push((reply, answer)),
                None => by_home.push((home, vec![(reply, answer)])),
            },
            _ => {
                let _ = reply.send(answer);
            }
        }
    }
    if by_home.is_empty() {
        return;
    }
    let senders: Vec<_> = {
        let batch = lock(&node.inner.proposals);
        by_home
            .into_iter()
            .map(|(home, replies)| (batch.homes.get(&home).map(|h| h.answers.clone()), replies))
            .collect()
    };
    for (sender, replies) in senders {
        let undelivered = match sender {
            Some(sender) => match sender.send(replies) {
                Ok(()) => continue,
                // That runtime has stopped; its proposers are gone or will see a closed channel.
                Err(mpsc::error::SendError(replies)) => replies,
            },
            None => replies,
        };
        for (reply, answer) in undelivered {
            let _ = reply.send(answer);
        }
    }
}

/// Runs on a proposer's single-threaded runtime: hands out the answers sent to it.
async fn hand_out_answers(mut batches: mpsc::UnboundedReceiver<ReplyBatch>) {
    while let Some(batch) = batches.recv().await {
        for (reply, answer) in batch {
            let _ = reply.send(answer);
        }
    }
}

async fn flush_keepalives(node: Node) {
    loop {
        let pending = {
            let mut batch = lock(&node.inner.keepalives);
            if batch.pending.is_empty() {
                batch.in_flight = false;
                return;
            }
            std::mem::take(&mut batch.pending)
        };
        let sessions = pending.iter().map(|(session, _)| *session).collect();
        let counters = &node.inner.counters;
        counters.keepalives.fetch_add(pending.len() as u64, Ordering::Relaxed);
        counters.keepalive_commands.fetch_add(1, Ordering::Relaxed);
        let result = node.propose(Command::KeepAlive { sessions }).await;
        match result {
            Ok(Ok(Response::KeptAlive { ttl_ms })) => {
                for ((_, reply), ttl) in pending.into_iter().zip(ttl_ms) {
                    let _ = reply.send(Ok(ttl));
                }
            }
            Ok(other) => {
                let err = unavailable(format!("keepalive answered {other:?}"));
                for (_, reply) in pending {
                    let _ = reply.send(Err(err.clone()));
                }
            }
            Err(err) => {
                for (_, reply) in pending {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Releases grants that could not be delivered. Stops with the node.
async fn release_undeliverable(node: Weak<Inner>, mut holds: mpsc::UnboundedReceiver<HoldId>) {
    while let Some(hold_id) = holds.recv().await {
        let Some(inner) = node.upgrade() else { return };
        let node = Node { inner };
        let command = Command::Release { hold_id, reason: ReleaseReason::Undeliverable };
        if let Err(err) = node.propose(command).await {
            tracing::warn!(%hold_id, error = %err, "could not release an undeliverable grant");
        }
    }
}

/// Proposes `Expire` when the log clock reaches the table's earliest deadline. Stops when the
/// node is dropped.
async fn expiry_ticker(inner: Weak<Inner>, mut deadline: watch::Receiver<Option<u64>>) {
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
