//! The raft log store: every entry since the last purge is kept in memory for reads; in
//! durable mode each appended batch also goes through the group committer to the segment log
//! and openraft is told it is flushed only after the fdatasync that covers it. The vote and the
//! purge point live in a small framed `meta` file replaced atomically.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::files;
use super::group::{Done, GroupCommitter};
use super::log::{LogError, Record, SegmentLog};
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

const META_MAGIC: &[u8; 8] = b"LKSMETA\0";

/// What the meta file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

type Entries = Arc<RwLock<BTreeMap<u64, Entry>>>;

/// The log store handed to openraft.
#[derive(Debug)]
pub struct LogStore {
    entries: Entries,
    meta: Meta,
    committed: Option<LogId>,
    durable: Option<Durable>,
}

#[derive(Debug)]
struct Durable {
    meta_path: PathBuf,
    committer: GroupCommitter,
}

/// A reader over the same entries, for replication and apply.
#[derive(Clone, Debug)]
pub struct LogReader {
    entries: Entries,
}

fn read_entries<RB: RangeBounds<u64>>(entries: &Entries, range: RB) -> Vec<Entry> {
    let entries = entries.read().unwrap_or_else(|poison| poison.into_inner());
    entries.range(range).map(|(_, entry)| entry.clone()).collect()
}

impl LogStore {
    /// A log that lives only in memory (`--in-memory`).
    pub fn in_memory() -> LogStore {
        LogStore {
            entries: Entries::default(),
            meta: Meta::default(),
            committed: None,
            durable: None,
        }
    }

    /// Opens the durable log under `dir` (segments in `dir/log`, metadata in `dir/meta`).
    pub fn open(dir: &Path) -> Result<LogStore, LogError> {
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
        let purged = meta.last_purged.map_or(0, |id| id.index + 1);
        let mut entries = BTreeMap::new();
        for record in records {
            if record.index < purged {
                continue;
            }
            let entry: Entry =
                postcard::from_bytes(&record.payload).map_err(|err| LogError::Corrupt {
                    path: log_dir.clone(),
                    offset: 0,
                    what: format!("entry {}: {err}", record.index),
                })?;
            let follows = entries.keys().next_back().is_none_or(|last| record.index == last + 1);
            if entry.log_id.index != record.index || !follows {
                let what = format!("record {} holds entry {}", record.index, entry.log_id.index);
                return Err(LogError::Corrupt { path: log_dir, offset: 0, what });
            }
            entries.insert(record.index, entry);
        }
        let committer = GroupCommitter::start(log)
            .map_err(|source| LogError::Io { path: log_dir.clone(), source })?;
        Ok(LogStore {
            entries: Arc::new(RwLock::new(entries)),
            meta,
            committed: None,
            durable: Some(Durable { meta_path, committer }),
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

    #[allow(clippy::result_large_err, reason = "openraft's storage traits return its StorageError")]
    fn save_meta(&self) -> Result<(), StorageError> {
        let Some(durable) = &self.durable else { return Ok(()) };
        let body = postcard::to_allocvec(&self.meta).map_err(|err| StorageIOError::write(&err))?;
        files::write_atomic(&durable.meta_path, &files::frame(META_MAGIC, &body))
            .map_err(|err| StorageIOError::write(&err).into())
    }

    fn entries(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.write().unwrap_or_else(|poison| poison.into_inner())
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
        Ok(read_entries(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_entries(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = self.entries().values().next_back().map(|entry| *entry.get_log_id());
        let last_purged_log_id = self.meta.last_purged;
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { entries: self.entries.clone() }
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
        let mut records = Vec::new();
        {
            let mut stored = self.entries();
            for entry in entries {
                if self.durable.is_some() {
                    let payload = postcard::to_allocvec(&entry)
                        .map_err(|err| StorageIOError::write_log_entry(entry.log_id, &err))?;
                    records.push(Record { index: entry.log_id.index, payload });
                }
                stored.insert(entry.log_id.index, entry);
            }
        }
        match &self.durable {
            None => callback.log_io_completed(Ok(())),
            // On the node's raft thread (a single-threaded runtime) the write and fsync run right
            // here: openraft waits for the flush before its next step anyway, and the thread has
            // nothing else to do meanwhile. Elsewhere the flusher thread does it, so a
            // multi-threaded runtime's worker is never blocked.
            Some(durable) if crate::on_single_threaded_runtime() => {
                let result = durable.committer.append_now(records);
                callback.log_io_completed(result.map_err(io::Error::other));
            }
            Some(durable) => durable.committer.append(
                records,
                Box::new(move |result| callback.log_io_completed(result.map_err(io::Error::other))),
            ),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.entries().split_off(&log_id.index);
        let Some(durable) = &self.durable else { return Ok(()) };
        let committer = durable.committer.clone();
        wait_for(
            |done| committer.truncate(log_id.index, done),
            |err| StorageIOError::write_logs(&err).into(),
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is durable before any segment goes, so a restart never reads a gap.
        self.meta.last_purged = Some(log_id);
        self.save_meta()?;
        {
            let mut entries = self.entries();
            let kept = entries.split_off(&(log_id.index + 1));
            *entries = kept;
        }
        let Some(durable) = &self.durable else { return Ok(()) };
        let committer = durable.committer.clone();
        wait_for(
            |done| committer.purge(log_id.index, done),
            |err| StorageIOError::write_logs(&err).into(),
        )
        .await
    }
}
