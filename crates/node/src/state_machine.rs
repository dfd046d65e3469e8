//! The raft state machine: applies committed entries to the lock table, routes their effects,
//! and builds and installs snapshots of the table.
//!
//! The table sits in [`Machine`], shared with the [`Node`](crate::Node) for reads. Effects are
//! routed under the table lock, so every inbox sees them in log order. A snapshot is the core's
//! versioned table bytes; in durable mode it is also kept in `snapshot` in the data directory
//! (framed, checksummed, replaced atomically), which is where a restart starts from before
//! replaying the log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lockserver_core::{Effect, HoldId, Limits, NodeEpoch, Table};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::raft_types::{
    Applied, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::router::Router;
use crate::storage::files;
use crate::storage::log::LogError;
use crate::storage::log_store::AppliedIndex;
use crate::tokens::TokenReserve;

const SNAPSHOT_MAGIC: &[u8; 8] = b"LKSNAPSM";

/// The snapshot file's body: postcard's encoding of this struct, `postcard(meta) ·
/// varint(table length) · table bytes` (a byte sequence is its length, then its bytes). Read
/// with the table borrowed from the file's bytes; written in parts ([`Machine::keep`]), so the
/// table bytes are never copied next to the rest.
#[derive(Deserialize)]
struct SnapshotFile<'a> {
    meta: SnapshotMeta,
    #[serde(borrow)]
    table: &'a [u8],
}

/// The snapshot file's body read from `path`: its meta, and its table (the body's suffix).
fn parse_snapshot<'a>(path: &Path, body: &'a [u8]) -> Result<SnapshotFile<'a>, LogError> {
    let (file, rest): (SnapshotFile<'a>, _) =
        postcard::take_from_bytes(body).map_err(|err| corrupt(path, err))?;
    if !rest.is_empty() {
        return Err(corrupt(path, format!("{} bytes after the table", rest.len())));
    }
    Ok(file)
}

/// The table and what was last applied to it.
#[derive(Debug)]
pub struct MachineState {
    pub table: Table,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// The current snapshot: its meta, and its bytes when they are not on disk.
#[derive(Debug, Clone)]
struct Current {
    meta: SnapshotMeta,
    in_memory: Option<Vec<u8>>,
}

/// State shared by the raft state machine, the snapshot builder and the node.
#[derive(Debug)]
pub struct Machine {
    state: Mutex<MachineState>,
    limits: Limits,
    pub router: Router,
    pub boot: NodeEpoch,
    /// The table's earliest deadline, watched by the expiry ticker.
    pub next_deadline: watch::Sender<Option<u64>>,
    /// Grants nobody could receive go here, to be released.
    undeliverable: mpsc::UnboundedSender<HoldId>,
    /// `--in-memory`: the token high-water mark that must cover every token issued.
    tokens: Option<TokenReserve>,
    /// Durable mode: where the snapshot lives.
    snapshot_path: Option<PathBuf>,
    current: Mutex<Option<Current>>,
    snapshots_built: AtomicU64,
    applied: AppliedIndex,
}

/// How a machine is set up.
#[derive(Debug)]
pub struct MachineConfig {
    pub limits: Limits,
    pub boot: NodeEpoch,
    pub router: Router,
    pub next_deadline: watch::Sender<Option<u64>>,
    pub undeliverable: mpsc::UnboundedSender<HoldId>,
    pub tokens: Option<TokenReserve>,
    /// `Some(dir)` for durable mode: the snapshot is read from and written to `dir/snapshot`.
    pub data_dir: Option<PathBuf>,
    /// Where the machine publishes its last applied index, for the log store.
    pub applied: AppliedIndex,
}

fn corrupt(path: &Path, what: impl ToString) -> LogError {
    LogError::Corrupt { path: path.to_path_buf(), offset: 0, what: what.to_string() }
}

impl Machine {
    /// Builds the machine, starting from the snapshot on disk when there is one.
    pub fn open(config: MachineConfig) -> Result<Arc<Machine>, LogError> {
        let snapshot_path = config.data_dir.as_ref().map(|dir| dir.join("snapshot"));
        let mut state = MachineState {
            table: Table::new(config.limits),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        let mut current = None;
        if let Some(path) = &snapshot_path {
            if let Some(body) = files::read_framed(path, SNAPSHOT_MAGIC)? {
                let file = parse_snapshot(path, &body)?;
                state.table =
                    Table::restore(file.table, config.limits).map_err(|err| corrupt(path, err))?;
                state.last_applied = file.meta.last_log_id;
                state.membership = file.meta.last_membership.clone();
                current = Some(Current { meta: file.meta, in_memory: None });
            }
        }
        if let Some(id) = state.last_applied {
            config.applied.set(id.index);
        }
        Ok(Arc::new(Machine {
            state: Mutex::new(state),
            limits: config.limits,
            router: config.router,
            boot: config.boot,
            next_deadline: config.next_deadline,
            undeliverable: config.undeliverable,
            tokens: config.tokens,
            snapshot_path,
            current: Mutex::new(current),
            snapshots_built: AtomicU64::new(0),
            applied: config.applied,
        }))
    }

    /// Locks the table (never across an await).
    pub fn lock(&self) -> MutexGuard<'_, MachineState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// How many snapshots this process built.
    pub fn snapshots_built(&self) -> u64 {
        self.snapshots_built.load(Ordering::Relaxed)
    }

    fn publish_deadline(&self, next: Option<u64>) {
        self.next_deadline.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
    }

    #[allow(clippy::result_large_err, reason = "openraft's storage traits return its StorageError")]
    fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Applied>, StorageError> {
        let mut replies = Vec::new();
        let mut undeliverable = Vec::new();
        let mut state = self.lock();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::Nothing
                }
                EntryPayload::Normal(cmd) => {
                    let mut effects: Vec<Effect> = Vec::new();
                    let responses: Vec<_> = cmd
                        .commands
                        .into_iter()
                        .map(|command| state.table.apply(cmd.ctx, command, &mut effects))
                        .collect();
                    if let Some(tokens) = &self.tokens {
                        // No token may be seen before the high-water mark covers it.
                        tokens
                            .cover(state.table.next_token())
                            .map_err(|err| StorageIOError::apply(entry.log_id, &err))?;
                    }
                    undeliverable.extend(self.router.route(self.boot, effects));
                    Applied::Commands(responses)
                }
            };
            replies.push(reply);
        }
        let next = state.table.next_deadline();
        let last_applied = state.last_applied;
        drop(state);
        if let Some(id) = last_applied {
            self.applied.set(id.index);
        }
        self.publish_deadline(next);
        for hold_id in undeliverable {
            let _ = self.undeliverable.send(hold_id);
        }
        Ok(replies)
    }

    fn build(&self) -> (SnapshotMeta, Vec<u8>) {
        let state = self.lock();
        let built = self.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match state.last_applied {
            Some(id) => {
                format!("{}-{}-{}-{built}", id.leader_id.term, id.leader_id.node_id, id.index)
            }
            None => format!("none-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        (meta, state.table.snapshot())
    }

    /// Keeps `meta` and `table` as the current snapshot: on disk (durable) or in memory.
    /// Hands `table` back: in durable mode it is moved to the writing thread and back, never
    /// copied; in memory a copy of it is the current snapshot.
    async fn keep(&self, meta: &SnapshotMeta, table: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let Some(path) = &self.snapshot_path else {
            let in_memory = Some(table.clone());
            self.set_current(Current { meta: meta.clone(), in_memory });
            return Ok(table);
        };
        // What postcard writes for `SnapshotFile` before the table's bytes.
        let head = postcard::to_allocvec(&(meta, table.len()))
            .map_err(|err| StorageIOError::write_snapshot(Some(meta.signature()), &err))?;
        let path = path.clone();
        let (written, table) = tokio::task::spawn_blocking(move || {
            (files::write_framed(&path, SNAPSHOT_MAGIC, &[&head, &table]), table)
        })
        .await
        .map_err(|err| StorageIOError::write_snapshot(Some(meta.signature()), &err))?;
        written.map_err(|err| StorageIOError::write_snapshot(Some(meta.signature()), &err))?;
        self.set_current(Current { meta: meta.clone(), in_memory: None });
        Ok(table)
    }

    fn set_current(&self, current: Current) {
        *self.current.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(current);
    }

    #[allow(clippy::result_large_err, reason = "openraft's storage traits return its StorageError")]
    fn current_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.current.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
        let Some(current) = current else { return Ok(None) };
        let table = match (current.in_memory, &self.snapshot_path) {
            (Some(bytes), _) => bytes,
            (None, Some(path)) => {
                let read_error = |err: &LogError| {
                    StorageIOError::read_snapshot(Some(current.meta.signature()), err)
                };
                let mut body = files::read_framed(path, SNAPSHOT_MAGIC)
                    .map_err(|err| read_error(&err))?
                    .ok_or_else(|| read_error(&corrupt(path, "snapshot file is missing")))?;
                let table_len =
                    parse_snapshot(path, &body).map_err(|err| read_error(&err))?.table.len();
                // The table is the body's suffix: it moves to the front of the same buffer.
                body.drain(..body.len() - table_len);
                body
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Snapshot { meta: current.meta, snapshot: Box::new(Cursor::new(table)) }))
    }
}

/// The state machine handed to openraft.
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub machine: Arc<Machine>,
}

/// Builds snapshots of the shared machine.
#[derive(Debug)]
pub struct SnapshotBuilder {
    machine: Arc<Machine>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, table) = self.machine.build();
        let table = self.machine.keep(&meta, table).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(table)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.machine.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.machine.apply_entries(entries)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { machine: self.machine.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let table = Table::restore(&bytes, self.machine.limits)
            .map_err(|err| StorageIOError::read_snapshot(Some(meta.signature()), &err))?;
        self.machine.keep(meta, bytes).await?;
        let next = table.next_deadline();
        {
            let mut state = self.machine.lock();
            state.table = table;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
        }
        if let Some(id) = meta.last_log_id {
            self.machine.applied.set(id.index);
        }
        self.machine.publish_deadline(next);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.machine.current_snapshot()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lockserver_core::*;
    use openraft::CommittedLeaderId;
    use serde::Serialize;

    use super::*;
    use crate::raft_types::LogCmd;

    /// The snapshot file's body as it was written before the table was written in place (an
    /// owned copy of the table in the struct): the bytes this build must still write and read.
    #[derive(Serialize)]
    struct OwnedSnapshotFile {
        meta: SnapshotMeta,
        table: Vec<u8>,
    }

    fn machine(dir: &Path) -> Arc<Machine> {
        let (next_deadline, _) = watch::channel(None);
        let (undeliverable, _) = mpsc::unbounded_channel();
        Machine::open(MachineConfig {
            limits: Limits::default(),
            boot: NodeEpoch { node: 1, epoch: 1 },
            router: Router::default(),
            next_deadline,
            undeliverable,
            tokens: None,
            data_dir: Some(dir.to_path_buf()),
            applied: AppliedIndex::default(),
        })
        .unwrap()
    }

    fn acquire(machine: &Machine, i: u128) -> Command {
        Command::Acquire(Acquire {
            hold_id: HoldId::from_u128(i + 1),
            name: LockName::new(&format!("name-{i}")).unwrap(),
            want: Want::Lock(Mode::Exclusive),
            owner: Arc::from("snapshot-file-test"),
            holder: Holder::Anonymous,
            wait: Wait::Try,
            ttl_ms: Some(60_000),
            lock_delay_ms: 0,
            request_id: None,
            origin: Origin { boot: machine.boot, via: Via::Request(0) },
        })
    }

    #[tokio::test]
    async fn the_snapshot_file_keeps_its_format_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let machine = machine(dir.path());
        let commands = (0..200).map(|i| acquire(&machine, i)).collect();
        let ctx = Ctx { now_ms: 1_000, wall_ms: 1_700_000_000_000 };
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let entry = Entry { log_id, payload: EntryPayload::Normal(LogCmd { ctx, commands }) };
        machine.apply_entries([entry]).unwrap();
        let (meta, table) = machine.build();
        assert_eq!(meta.last_log_id, Some(log_id));
        let old_body = OwnedSnapshotFile { meta: meta.clone(), table: table.clone() };
        let old_file = files::frame(SNAPSHOT_MAGIC, &postcard::to_allocvec(&old_body).unwrap());

        let kept = machine.keep(&meta, table).await.unwrap();
        assert_eq!(kept, old_body.table, "the table comes back as it went in");
        let path = dir.path().join("snapshot");
        assert_eq!(std::fs::read(&path).unwrap(), old_file, "the same bytes as before");

        let current = machine.current_snapshot().unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert_eq!(current.snapshot.into_inner(), old_body.table);

        let restarted = self::machine(dir.path());
        let state = restarted.lock();
        assert_eq!(state.last_applied, Some(log_id));
        assert_eq!(state.table.snapshot(), old_body.table, "the same table after a restart");
        assert_eq!(state.table.stats().holds, 200);
    }
}
