//! Group commit: appends queue up while the previous fsync runs; the flusher writes them all and
//! covers them with one fdatasync before acknowledging any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
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

/// The handle appenders use. The flusher thread owns the log; it stops when every handle is
/// dropped, after flushing what was queued.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
    stats: Arc<CommitStats>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("op", &self.op).finish()
    }
}

impl GroupCommitter {
    pub fn start(log: SegmentLog) -> std::io::Result<GroupCommitter> {
        let (queue, pending) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        thread::Builder::new()
            .name("lockserver-log".into())
            .spawn(move || flusher(log, pending, &thread_stats))?;
        Ok(GroupCommitter { queue, stats })
    }

    /// Queues `records`; `done` runs on the flusher thread once they are durable.
    pub fn append(&self, records: Vec<Record>, done: Done) {
        self.send(Op::Append(records), done);
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
        &self.stats
    }

    /// A shared handle on the counters, for metrics.
    pub fn stats_handle(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }
}

fn flusher(mut log: SegmentLog, pending: mpsc::Receiver<Pending>, stats: &CommitStats) {
    let mut failed: Option<String> = None;
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        if failed.is_none() {
            let mut result = Ok(());
            for item in &batch {
                result = match &item.op {
                    Op::Append(records) => log.append(records),
                    Op::Truncate(from) => log.truncate_from(*from),
                    Op::Purge(upto) => log.purge_upto(*upto),
                };
                if result.is_err() {
                    break;
                }
            }
            if let Err(err) = result.and_then(|()| log.sync()) {
                // After a failed write or fsync nothing later may be acknowledged: the state of
                // the file is unknown (the fsync-gate lesson). Refuse everything from now on.
                tracing::error!(error = %err, "log write failed; refusing further appends");
                failed = Some(err.to_string());
            } else {
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                stats.appends.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let records: usize = batch
                    .iter()
                    .map(|item| match &item.op {
                        Op::Append(records) => records.len(),
                        Op::Truncate(_) | Op::Purge(_) => 0,
                    })
                    .sum();
                stats.records.fetch_add(records as u64, Ordering::Relaxed);
            }
        }
        for item in batch {
            (item.done)(failed.clone().map_or(Ok(()), Err));
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
