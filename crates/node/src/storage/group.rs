//! Group commit: appends queue up while the previous fsync runs; the flusher writes them all and
//! covers them with one fdatasync before acknowledging any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use super::log::{Record, SegmentLog};

/// Called once the records are durable (`Ok`) or can never be (`Err`).
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One queued operation on the log, applied in queue order.
#[derive(Debug)]
enum Op {
    Append(Vec<Record>),
    /// Remove records with index ≥ this.
    Truncate(u64),
    /// Drop whole segments whose records are all ≤ this.
    Purge(u64),
}

struct Pending {
    op: Op,
    done: Done,
}

/// Counters: how many fsyncs covered how many appends and records (batch size = ratio).
#[derive(Debug, Default)]
pub struct CommitStats {
    pub syncs: AtomicU64,
    pub appends: AtomicU64,
    pub records: AtomicU64,
}

/// The handle appenders use. Operations are queued to the flusher thread, which writes every
/// queued one and covers them with one fsync; or run at once on the caller's thread
/// ([`GroupCommitter::append_now`]) when the caller waits for durability anyway (openraft 0.9
/// appends one entry at a time and waits for its flush), which saves two thread wake-ups per
/// entry. The flusher thread stops when every handle is dropped, after flushing what was queued.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    writer: Mutex<Writer>,
    stats: Arc<CommitStats>,
}

#[derive(Debug)]
struct Writer {
    log: SegmentLog,
    /// After a failed write or fsync nothing later may be acknowledged: the state of the file
    /// is unknown (the fsync-gate lesson). Everything is refused from then on.
    failed: Option<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("op", &self.op).finish()
    }
}

impl GroupCommitter {
    pub fn start(log: SegmentLog) -> std::io::Result<GroupCommitter> {
        let (queue, pending) = mpsc::channel();
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer { log, failed: None }),
            stats: Arc::new(CommitStats::default()),
        });
        let thread_shared = shared.clone();
        thread::Builder::new()
            .name("lockserver-log".into())
            .spawn(move || flusher(&thread_shared, pending))?;
        Ok(GroupCommitter { queue, shared })
    }

    /// Queues `records`; `done` runs on the flusher thread once they are durable.
    pub fn append(&self, records: Vec<Record>, done: Done) {
        self.send(Op::Append(records), done);
    }

    /// Appends `records` and fsyncs on this thread (it blocks); `Ok` once they are durable.
    pub fn append_now(&self, records: Vec<Record>) -> Result<(), String> {
        self.shared.write(&[&Op::Append(records)])
    }

    /// Queues the removal of every record with index ≥ `from`; `done` runs once it is durable.
    pub fn truncate(&self, from: u64, done: Done) {
        self.send(Op::Truncate(from), done);
    }

    /// Queues the deletion of segments whose records are all ≤ `upto`.
    pub fn purge(&self, upto: u64, done: Done) {
        self.send(Op::Purge(upto), done);
    }

    fn send(&self, op: Op, done: Done) {
        if let Err(mpsc::SendError(pending)) = self.queue.send(Pending { op, done }) {
            (pending.done)(Err("the log writer has stopped".into()));
        }
    }

    pub fn stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// A shared handle on the counters, for metrics.
    pub fn stats_handle(&self) -> Arc<CommitStats> {
        self.shared.stats.clone()
    }
}

impl Shared {
    /// Applies `ops` in order and covers them with one fsync.
    fn write(&self, ops: &[&Op]) -> Result<(), String> {
        let mut writer = self.writer.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(failed) = &writer.failed {
            return Err(failed.clone());
        }
        let mut result = Ok(());
        for op in ops {
            result = match op {
                Op::Append(records) => writer.log.append(records),
                Op::Truncate(from) => writer.log.truncate_from(*from),
                Op::Purge(upto) => writer.log.purge_upto(*upto),
            };
            if result.is_err() {
                break;
            }
        }
        if let Err(err) = result.and_then(|()| writer.log.sync()) {
            tracing::error!(error = %err, "log write failed; refusing further appends");
            writer.failed = Some(err.to_string());
            return Err(err.to_string());
        }
        let stats = &self.stats;
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats.appends.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let records: usize = ops
            .iter()
            .map(|op| match op {
                Op::Append(records) => records.len(),
                Op::Truncate(_) | Op::Purge(_) => 0,
            })
            .sum();
        stats.records.fetch_add(records as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn flusher(shared: &Shared, pending: mpsc::Receiver<Pending>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let ops: Vec<&Op> = batch.iter().map(|item| &item.op).collect();
        let result = shared.write(&ops);
        for item in batch {
            (item.done)(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn appends_queued_during_an_fsync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = SegmentLog::open(dir.path()).unwrap();
        let committer = GroupCommitter::start(log).unwrap();
        let record = |index: u64| vec![Record { index, payload: vec![index as u8; 100] }];
        // The first acknowledgement holds the flusher until 99 more appends are queued.
        let gate = Arc::new(Barrier::new(2));
        let flusher_gate = gate.clone();
        let (entered, flusher_entered) = mpsc::channel();
        committer.append(
            record(1),
            Box::new(move |result| {
                result.unwrap();
                entered.send(()).unwrap();
                flusher_gate.wait();
            }),
        );
        flusher_entered.recv().unwrap();
        let (acks, acked) = mpsc::channel();
        for index in 2..=100 {
            let acks = acks.clone();
            committer.append(record(index), Box::new(move |result| acks.send(result).unwrap()));
        }
        gate.wait();
        for _ in 2..=100 {
            acked.recv().unwrap().unwrap();
        }
        assert_eq!(committer.stats().syncs.load(Ordering::Relaxed), 2, "one fsync for 99 appends");
        assert_eq!(committer.stats().records.load(Ordering::Relaxed), 100);
        drop(committer);
        let (_, replayed) = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 100);
    }
}
