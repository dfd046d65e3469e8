//! Committed commands per second through `Node::propose` with N concurrent proposers, durable
//! and in-memory in the same run (interleaved), beside the fsync latency of the data directory's
//! disk (a 4 KiB write + fdatasync). Each proposer acquires and releases its own name, so every
//! command commits and nothing waits on a lock. Not a benchmark harness (that is lockbench); it
//! exists so the figures in the issue notes can be reproduced.
//!
//! ```text
//! cargo run --release -p lockserver-node --example propose -- [PROPOSERS] [SECONDS] [ROUNDS] [DIR]
//! ```

use std::io::{Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockserver_core::*;
use lockserver_node::{Node, NodeConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let proposers = arg(0, 64) as usize;
    let seconds = arg(1, 5);
    let rounds = arg(2, 3);
    let base = args.get(3).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    for (in_place, how) in [(false, "appending"), (true, "in place ")] {
        let (p50, p99) = fsync_latency(&base, 500, in_place);
        println!(
            "fsync 4KiB+fdatasync {how} in {}: p50 {p50:.3} ms, p99 {p99:.3} ms",
            base.display()
        );
    }
    let (mut durable, mut memory) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for in_memory in [false, true] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let (rate, syncs, commands) =
                runtime.block_on(run(dir.path(), in_memory, proposers, seconds));
            let kind = if in_memory { "in-memory" } else { "durable" };
            let batch = if syncs > 0 {
                format!(", {:.1} commands/fsync", commands as f64 / syncs as f64)
            } else {
                String::new()
            };
            println!("round {round} {kind:9}: {rate:8.0} commands/s{batch}");
            if in_memory {
                memory.push(rate)
            } else {
                durable.push(rate)
            }
        }
    }
    let (durable, memory) = (median(&mut durable), median(&mut memory));
    println!(
        "median: durable {durable:.0}/s, in-memory {memory:.0}/s, durable/in-memory {:.2}",
        durable / memory
    );
}

async fn run(dir: &Path, in_memory: bool, proposers: usize, seconds: u64) -> (f64, u64, u64) {
    let mut config = NodeConfig::new(dir);
    config.in_memory = in_memory;
    let node = Node::open(config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let before = node.stats();
    let started = Instant::now();
    let tasks: Vec<_> = (0..proposers)
        .map(|i| {
            let (node, stop, committed) = (node.clone(), stop.clone(), committed.clone());
            tokio::spawn(async move {
                let name = LockName::new(&format!("bench-{i}")).unwrap();
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    next += 1;
                    let hold_id = HoldId::from_u128(((i as u128) << 64) | u128::from(next));
                    let acquire = Command::Acquire(Acquire {
                        hold_id,
                        name: name.clone(),
                        want: Want::Lock(Mode::Exclusive),
                        owner: Arc::from("bench"),
                        holder: Holder::Anonymous,
                        wait: Wait::Try,
                        ttl_ms: Some(30_000),
                        lock_delay_ms: 0,
                        request_id: None,
                        origin: Origin { boot: node.boot(), via: Via::Request(0) },
                    });
                    let granted = node.propose(acquire).await.unwrap().unwrap();
                    assert!(matches!(granted, Response::Granted { .. }), "{granted:?}");
                    let release = Command::Release { hold_id, reason: ReleaseReason::Client };
                    node.propose(release).await.unwrap().unwrap();
                    committed.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let done = committed.load(Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let after = node.stats();
    node.shutdown().await;
    // Each log entry carries a batch of commands, so commands (not entries) per fsync is the
    // group-commit figure.
    (done as f64 / elapsed.as_secs_f64(), after.log_syncs - before.log_syncs, done)
}

/// p50 and p99 in milliseconds of `samples` 4 KiB appends, each followed by fdatasync.
/// p50/p99 ms of a 4 KiB write + fdatasync: appending (the file grows each time) or, with
/// `in_place`, into a file zero-filled beforehand (as the log writes its active segment).
fn fsync_latency(dir: &Path, samples: usize, in_place: bool) -> (f64, f64) {
    let path = dir.join(format!("lockserver-fsync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    let block = [0x5au8; 4096];
    if in_place {
        file.write_all(&vec![0u8; 4096 * (samples + 1)]).unwrap();
        file.sync_all().unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
    }
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    (times[samples / 2], times[samples * 99 / 100])
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
