//! Resident memory of a durable node holding N locks (default 1,000,000): after loading them,
//! at its peak while a snapshot of them is built and written, and after a restart from that
//! snapshot. The node's own share beside the lock table shows as the log entries it holds in
//! memory. The restart runs in a child process, as a real one would: memory the first node freed
//! but the allocator kept does not count against it. Not a benchmark harness (lockbench's `scale` workload is the proof over HTTP); it
//! exists so the memory figures in the issue notes can be reproduced at the node level.
//!
//! ```text
//! cargo run --release -p lockserver-node --example memory -- [LOCKS] [DIR]
//! ```

use std::sync::Arc;

use lockserver_core::*;
use lockserver_node::{Node, NodeConfig};

const PROPOSERS: u64 = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, locks] = &args[..] {
        if flag == "--reopen" {
            return reopen(dir.as_ref(), locks.parse().unwrap());
        }
    }
    let locks = args.first().and_then(|s| s.parse().ok()).unwrap_or(1_000_000u64);
    let base = args.get(1).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        report("started", None);
        let node = Node::open(NodeConfig::new(dir.path())).await.unwrap();
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..PROPOSERS)
            .map(|proposer| {
                let node = node.clone();
                tokio::spawn(async move {
                    for i in (proposer..locks).step_by(PROPOSERS as usize) {
                        let granted = node.propose(acquire(&node, i)).await.unwrap().unwrap();
                        assert!(matches!(granted, Response::Granted { .. }), "{granted:?}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!("{locks} locks acquired in {seconds:.1} s");
        report("held", Some(&node));

        reset_peak();
        node.snapshot().await.unwrap();
        report("after a snapshot", Some(&node));
        let bytes = std::fs::metadata(dir.path().join("snapshot")).map_or(0, |m| m.len());
        println!("snapshot file: {} MB", bytes >> 20);
        node.shutdown().await;
    });
    drop(runtime);
    let reopened = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--reopen".as_ref(), dir.path().as_os_str(), locks.to_string().as_ref()])
        .status()
        .unwrap();
    assert!(reopened.success());
}

/// The restart: opens the node in `dir`, checks it holds `locks` locks and reports.
fn reopen(dir: &std::path::Path, locks: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let node = Node::open(NodeConfig::new(dir)).await.unwrap();
        let holds = node.read(|table, _| table.stats().holds).await.unwrap();
        assert_eq!(holds as u64, locks);
        report("restarted", Some(&node));
        node.shutdown().await;
    });
}

fn acquire(node: &Node, i: u64) -> Command {
    Command::Acquire(Acquire {
        hold_id: HoldId::from_u128(u128::from(i) + 1),
        name: LockName::new(&format!("scale/{i:08}")).unwrap(),
        want: Want::Lock(Mode::Exclusive),
        owner: Arc::from(""),
        holder: Holder::Anonymous,
        wait: Wait::Try,
        ttl_ms: None,
        lock_delay_ms: 0,
        request_id: None,
        origin: Origin { boot: node.boot(), via: Via::Request(0) },
    })
}

/// Prints this process's resident set and its peak since the last [`reset_peak`].
fn report(when: &str, node: Option<&Node>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    let log = node.map_or(String::new(), |node| {
        let stats = node.stats();
        format!(
            ", log entries in memory {}, snapshots {}",
            stats.log_entries_in_memory, stats.snapshots_built
        )
    });
    println!("{when:>16}: RSS {} MB, peak {} MB{log}", field("VmRSS:"), field("VmHWM:"));
}

/// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
