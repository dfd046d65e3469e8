//! The raft log store. In memory (`--in-memory`) every entry since the last purge is kept in a
//! map for reads. In durable mode each appended batch also goes through the group committer to
//! the segment log, and openraft is told it is flushed only after the fdatasync that covers it;
//! the map then keeps only the entries not yet applied or not yet durable, plus a short tail of
//! [`TAIL_ENTRIES`]: older ones are read back from the segment log in the rare case openraft
//! asks for them (a follower that lags behind). The vote and the purge point live in a small
//! framed `meta` file replaced atomically.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::files;
use super::group::{Done, GroupCommitter};
use super::log::{self, LogError, Record, SegmentLog};
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

const META_MAGIC: &[u8; 8] = b"LKSMETA\0";

/// Applied and durable entries kept in memory behind the last applied one (durable mode): the
/// recent past openraft may still read without a disk read, at a bounded cost (an entry carries
/// up to 1024 commands).
pub const TAIL_ENTRIES: u64 = 256;

/// The index of the last entry the state machine applied: set by the machine after each apply
/// and snapshot install, read by the log store to drop applied entries from memory. 0 also
/// stands for "nothing applied"; the store never drops entries that low anyway.
#[derive(Clone, Debug, Default)]
pub struct AppliedIndex(Arc<AtomicU64>);

impl AppliedIndex {
    pub fn set(&self, index: u64) {
        self.0.store(index, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What the log store and its readers share.
#[derive(Debug)]
struct Shared {
    cached: RwLock<Cached>,
    /// Durable mode: the segment log's directory, where evicted entries are read back from.
    log_dir: Option<PathBuf>,
}

/// The entries in memory, and which ones are only on disk. One lock over both, so a reader sees
/// the map and the evicted range as of the same moment.
#[derive(Debug, Default)]
struct Cached {
    /// Every entry after the purge point except the evicted ones. Never loses its newest
    /// entries to eviction, so its last key is the log's last index (unless it is empty: then
    /// everything is purged).
    entries: BTreeMap<u64, Entry>,
    /// The entries evicted from `entries` (durable mode), which are only in the segment log:
    /// they come right before the first one in `entries`.
    evicted: Option<RangeInclusive<u64>>,
}

impl Cached {
    /// The part of `range` that must be read from disk.
    fn on_disk_only(&self, range: &impl RangeBounds<u64>) -> Option<RangeInclusive<u64>> {
        let evicted = self.evicted.as_ref()?;
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => *end,
            Bound::Excluded(end) => end.checked_sub(1)?,
            Bound::Unbounded => u64::MAX,
        };
        let (start, end) = (start.max(*evicted.start()), end.min(*evicted.end()));
        (start <= end).then_some(start..=end)
    }

    /// Drops from memory the entries up to `upto`, oldest first.
    fn evict_upto(&mut self, upto: u64) {
        while let Some(entry) = self.entries.first_entry() {
            if *entry.key() > upto {
                return;
            }
            let index = *entry.key();
            entry.remove();
            let first = self.evicted.as_ref().map_or(index, |evicted| *evicted.start());
            self.evicted = Some(first..=index);
        }
    }

    /// Forgets the entries up to `upto`, in memory or evicted.
    fn purge_upto(&mut self, upto: u64) {
        self.entries = self.entries.split_off(&(upto + 1));
        self.evicted = self.evicted.take().and_then(|evicted| {
            let start = (*evicted.start()).max(upto + 1);
            (start <= *evicted.end()).then(|| start..=*evicted.end())
        });
    }
}

/// The log store handed to openraft.
#[derive(Debug)]
pub struct LogStore {
    shared: Arc<Shared>,
    meta: Meta,
    committed: Option<LogId>,
    durable: Option<Durable>,
}

#[derive(Debug)]
struct Durable {
    meta_path: PathBuf,
    committer: GroupCommitter,
    applied: AppliedIndex,
    /// The last index known durable: set once an append's fsync returned (on this thread, or on
    /// the flusher thread in the append's callback).
    flushed: Arc<AtomicU64>,
}

/// A reader over the same entries, for replication and apply.
#[derive(Clone, Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// What the meta file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cached> {
        self.cached.write().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The entries in `range`: from memory, and the evicted part of it from the segment log
    /// (read without holding the lock).
    async fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let (on_disk, in_memory): (_, Vec<Entry>) = {
            let cached = self.read();
            let on_disk = cached.on_disk_only(&range);
            (on_disk, cached.entries.range(range).map(|(_, entry)| entry.clone()).collect())
        };
        let (Some(wanted), Some(log_dir)) = (on_disk, &self.log_dir) else { return Ok(in_memory) };
        let log_dir = log_dir.clone();
        let mut entries = tokio::task::spawn_blocking(move || read_back(&log_dir, wanted))
            .await
            .map_err(|err| StorageIOError::read_logs(&err))?
            .map_err(|err| StorageIOError::read_logs(&err))?;
        entries.extend(in_memory);
        Ok(entries)
    }
}

/// Reads the entries `wanted` back from the segment log in `log_dir`: all of them, or an error.
fn read_back(log_dir: &Path, wanted: RangeInclusive<u64>) -> Result<Vec<Entry>, LogError> {
    let records = log::read_range(log_dir, wanted.clone())?;
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        entries.push(decode(log_dir, &record)?);
    }
    let first = entries.first().map(|entry| entry.log_id.index);
    if first != Some(*wanted.start()) || entries.len() as u64 != wanted.end() - wanted.start() + 1 {
        let what = format!("entries {wanted:?} are not all in the log");
        return Err(LogError::Corrupt { path: log_dir.to_path_buf(), offset: 0, what });
    }
    Ok(entries)
}

/// The entry a record holds.
fn decode(log_dir: &Path, record: &Record) -> Result<Entry, LogError> {
    let corrupt = |what| LogError::Corrupt { path: log_dir.to_path_buf(), offset: 0, what };
    let entry: Entry = postcard::from_bytes(&record.payload)
        .map_err(|err| corrupt(format!("entry {}: {err}", record.index)))?;
    if entry.log_id.index != record.index {
        return Err(corrupt(format!("record {} holds entry {}", record.index, entry.log_id.index)));
    }
    Ok(entry)
}

impl LogStore {
    /// A log that lives only in memory (`--in-memory`).
    pub fn in_memory() -> LogStore {
        LogStore {
            shared: Arc::new(Shared { cached: RwLock::default(), log_dir: None }),
            meta: Meta::default(),
            committed: None,
            durable: None,
        }
    }

    /// Opens the durable log under `dir` (segments in `dir/log`, metadata in `dir/meta`).
    /// `applied` is the state machine's: entries it has applied leave memory (but a tail).
    pub fn open(dir: &Path, applied: AppliedIndex) -> Result<LogStore, LogError> {
        let meta_path = dir.join("meta");
        let meta: Meta = match files::read_framed(&meta_path, META_MAGIC)? {
            Some(body) => postcard::from_bytes(&body).map_err(|err| LogError::Corrupt {
                path: meta_path.clone(),
                offset: 0,
                what: err.to_string(),
            })?,
            None => Meta::default(),
        };
        let log_dir = dir.join("log");
        let (log, records) = SegmentLog::open(&log_dir)?;
        // Every entry after the purge point is read in: none of them is applied yet (the
        // snapshot ends at the purge point), and the first append after the replay evicts them.
        let purged = meta.last_purged.map_or(0, |id| id.index + 1);
        let mut entries = BTreeMap::new();
        for record in records {
            if record.index < purged {
                continue;
            }
            let entry = decode(&log_dir, &record)?;
            let follows = entries.keys().next_back().is_none_or(|last| record.index == last + 1);
            if !follows {
                let what = format!("record {} does not follow the one before", record.index);
                return Err(LogError::Corrupt { path: log_dir, offset: 0, what });
            }
            entries.insert(record.index, entry);
        }
        let flushed = Arc::new(AtomicU64::new(log.last_index().unwrap_or(0)));
        let committer = GroupCommitter::start(log)
            .map_err(|source| LogError::Io { path: log_dir.clone(), source })?;
        let cached = Cached { entries, evicted: None };
        Ok(LogStore {
            shared: Arc::new(Shared { cached: RwLock::new(cached), log_dir: Some(log_dir) }),
            meta,
            committed: None,
            durable: Some(Durable { meta_path, committer, applied, flushed }),
        })
    }

    /// The index of the last entry purged from the log (a snapshot must cover it).
    pub fn last_purged_index(&self) -> Option<u64> {
        self.meta.last_purged.map(|id| id.index)
    }

    /// Group-commit counters (durable mode): fsyncs, appends, records.
    pub fn commit_stats(&self) -> Option<Arc<super::group::CommitStats>> {
        self.durable.as_ref().map(|durable| durable.committer.stats_handle())
    }

    /// A reader over this log's entries (for its counters: openraft gets its own).
    pub fn reader(&self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }

    #[allow(clippy::result_large_err, reason = "openraft's storage traits return its StorageError")]
    fn save_meta(&self) -> Result<(), StorageError> {
        let Some(durable) = &self.durable else { return Ok(()) };
        let body = postcard::to_allocvec(&self.meta).map_err(|err| StorageIOError::write(&err))?;
        files::write_atomic(&durable.meta_path, &files::frame(META_MAGIC, &body))
            .map_err(|err| StorageIOError::write(&err).into())
    }

    /// Stores `entries`, then calls `flushed` once they are durable (at once in memory).
    /// [`RaftLogStorage::append`] with a plain callback, which tests can pass.
    #[allow(clippy::result_large_err, reason = "openraft's storage traits return its StorageError")]
    fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        flushed: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), StorageError> {
        let Some(durable) = &self.durable else {
            let mut cached = self.shared.write();
            for entry in entries {
                cached.entries.insert(entry.log_id.index, entry);
            }
            drop(cached);
            flushed(Ok(()));
            return Ok(());
        };
        let mut records = Vec::new();
        {
            let mut cached = self.shared.write();
            for entry in entries {
                let payload = postcard::to_allocvec(&entry)
                    .map_err(|err| StorageIOError::write_log_entry(entry.log_id, &err))?;
                records.push(Record { index: entry.log_id.index, payload });
                cached.entries.insert(entry.log_id.index, entry);
            }
            // Applied and durable entries leave memory, but the last few. One or two per append
            // in the steady state: what was applied since the previous append.
            let applied_and_durable =
                durable.applied.get().min(durable.flushed.load(Ordering::Acquire));
            if let Some(upto) = applied_and_durable.checked_sub(TAIL_ENTRIES) {
                cached.evict_upto(upto);
            }
        }
        let Some(last) = records.last().map(|record| record.index) else {
            flushed(Ok(()));
            return Ok(());
        };
        let flushed_index = durable.flushed.clone();
        let done = move |result: Result<(), String>| {
            if result.is_ok() {
                flushed_index.fetch_max(last, Ordering::Release);
            }
            flushed(result.map_err(io::Error::other));
        };
        if crate::on_single_threaded_runtime() {
            // On the node's raft thread (a single-threaded runtime) the write and fsync run
            // right here: openraft waits for the flush before its next step anyway, and the
            // thread has nothing else to do meanwhile. Elsewhere the flusher thread does it, so
            // a multi-threaded runtime's worker is never blocked.
            done(durable.committer.append_now(records));
        } else {
            durable.committer.append(records, Box::new(done));
        }
        Ok(())
    }
}

impl LogReader {
    /// How many entries are held in memory.
    pub fn entries_in_memory(&self) -> usize {
        self.shared.read().entries.len()
    }
}

/// Runs one committer operation and waits for it to be durable.
async fn wait_for(
    start: impl FnOnce(Done),
    error: impl FnOnce(io::Error) -> StorageError,
) -> Result<(), StorageError> {
    let (done, finished) = tokio::sync::oneshot::channel();
    start(Box::new(move |result| {
        let _ = done.send(result);
    }));
    match finished.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(error(io::Error::other(message))),
        Err(_) => Err(error(io::Error::other("the log writer has stopped"))),
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared.entries(range).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared.entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = self.shared.read().entries.values().next_back().map(|entry| *entry.get_log_id());
        let last_purged_log_id = self.meta.last_purged;
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta.vote = Some(*vote);
        self.save_meta()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Kept in memory only: after a restart the leader re-commits (openraft allows losing it).
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_entries(entries, move |result| callback.log_io_completed(result))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cached = self.shared.write();
            // Only entries not yet applied are truncated, and those are never evicted.
            debug_assert!(cached.evicted.as_ref().is_none_or(|e| *e.end() < log_id.index));
            cached.entries.split_off(&log_id.index);
        }
        let Some(durable) = &self.durable else { return Ok(()) };
        let committer = durable.committer.clone();
        wait_for(
            |done| committer.truncate(log_id.index, done),
            |err| StorageIOError::write_logs(&err).into(),
        )
        .await?;
        // After the appends queued before it have set theirs.
        durable.flushed.fetch_min(log_id.index.saturating_sub(1), Ordering::Release);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is durable before any segment goes, so a restart never reads a gap.
        self.meta.last_purged = Some(log_id);
        self.save_meta()?;
        self.shared.write().purge_upto(log_id.index);
        let Some(durable) = &self.durable else { return Ok(()) };
        let committer = durable.committer.clone();
        wait_for(
            |done| committer.purge(log_id.index, done),
            |err| StorageIOError::write_logs(&err).into(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use lockserver_core::{Command, Ctx};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft_types::LogCmd;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// An entry whose payload differs with its index.
    fn entry(index: u64) -> Entry {
        let ctx = Ctx { now_ms: index, wall_ms: index * 7 };
        let commands = vec![Command::Expire; (index % 5) as usize];
        Entry { log_id: log_id(index), payload: EntryPayload::Normal(LogCmd { ctx, commands }) }
    }

    /// Appends the entries `indexes` one at a time and waits until each is durable, as openraft
    /// does; with `applied`, marks each applied right after, as the state machine does.
    async fn append(
        store: &mut LogStore,
        indexes: RangeInclusive<u64>,
        applied: Option<&AppliedIndex>,
    ) {
        for index in indexes {
            let (done, flushed) = tokio::sync::oneshot::channel();
            store
                .append_entries([entry(index)], move |result| {
                    let _ = done.send(result);
                })
                .unwrap();
            flushed.await.unwrap().unwrap();
            if let Some(applied) = applied {
                applied.set(index);
            }
        }
    }

    /// Runs on either runtime flavor: a single-threaded one appends and fsyncs inline, a
    /// multi-threaded one through the flusher thread (the flushed index is set in its callback).
    async fn applied_entries_leave_memory_and_are_read_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let applied = AppliedIndex::default();
        let mut store = LogStore::open(dir.path(), applied.clone()).unwrap();
        let reader = store.reader();
        let all: Vec<Entry> = (1..=2000).map(entry).collect();

        append(&mut store, 1..=600, None).await;
        assert_eq!(reader.entries_in_memory(), 600, "entries not applied stay in memory");
        applied.set(600);
        append(&mut store, 601..=2000, Some(&applied)).await;
        // At the last append, 1999 was applied and durable: up to 1999 - 256 left memory.
        let evicted = 1999 - TAIL_ENTRIES;
        assert_eq!(store.shared.read().evicted, Some(1..=evicted));
        assert_eq!(reader.entries_in_memory() as u64, 2000 - evicted);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2000)));

        let from_disk = store.try_get_log_entries(1..=100).await.unwrap();
        assert_eq!(from_disk, all[0..100]);
        let across = store.try_get_log_entries(1700..1800).await.unwrap();
        assert_eq!(across, all[1699..1799]);
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), all);
        let mut log_reader = store.get_log_reader().await;
        assert_eq!(
            log_reader.try_get_log_entries(evicted..=evicted + 1).await.unwrap(),
            [entry(evicted), entry(evicted + 1)]
        );
        assert_eq!(reader.entries_in_memory() as u64, 2000 - evicted, "reads put nothing back");

        // After a purge the evicted entries past the purge point are still read from disk.
        store.purge(log_id(1500)).await.unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), all[1500..]);
        assert_eq!(store.try_get_log_entries(1501..1503).await.unwrap(), all[1500..1502]);

        drop(store);
        let mut store = LogStore::open(dir.path(), AppliedIndex::default()).unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), all[1500..]);
        append(&mut store, 2001..=2001, None).await;
        assert_eq!(store.try_get_log_entries(2000..).await.unwrap(), [entry(2000), entry(2001)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn applied_entries_leave_memory_appending_inline() {
        applied_entries_leave_memory_and_are_read_back_from_disk().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applied_entries_leave_memory_appending_through_the_flusher() {
        applied_entries_leave_memory_and_are_read_back_from_disk().await;
    }

    #[tokio::test]
    async fn in_memory_keeps_every_entry() {
        let applied = AppliedIndex::default();
        let mut store = LogStore::in_memory();
        append(&mut store, 1..=600, Some(&applied)).await;
        assert_eq!(store.reader().entries_in_memory(), 600);
    }

    #[test]
    fn the_range_read_from_disk_is_the_evicted_part() {
        let mut cached = Cached { entries: BTreeMap::new(), evicted: Some(11..=100) };
        assert_eq!(cached.on_disk_only(&(..)), Some(11..=100));
        assert_eq!(cached.on_disk_only(&(50..60)), Some(50..=59));
        assert_eq!(cached.on_disk_only(&(90..=200)), Some(90..=100));
        assert_eq!(cached.on_disk_only(&(101..)), None);
        assert_eq!(cached.on_disk_only(&(..=10)), None);
        assert_eq!(cached.on_disk_only(&(5..5)), None);
        cached.purge_upto(50);
        assert_eq!(cached.on_disk_only(&(..)), Some(51..=100));
        cached.purge_upto(100);
        assert_eq!(cached.on_disk_only(&(..)), None);
    }
}
