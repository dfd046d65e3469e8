//! A durable node keeps in memory only the log entries not yet applied and a short tail: the
//! rest is in the segment log, from which a restart (and any late reader) gets it back.

mod common;

use common::holders;
use lockserver_core::*;
use lockserver_node::storage::log_store::TAIL_ENTRIES;
use lockserver_node::{Node, NodeConfig};

fn acquire(node: &Node, name: &str, hold: u128) -> Command {
    common::acquire(node, name, hold, "log-memory-test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_log_entries_leave_memory_and_a_restart_replays_them_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    // One snapshot (and purge) on the way, so the node restarts from a snapshot and a log
    // suffix longer than what was left in memory.
    let config = NodeConfig { snapshot_every: 1_000, ..NodeConfig::new(dir.path()) };
    let node = Node::open(config.clone()).await.unwrap();
    // One command per entry: each proposal waits for the one before to be applied.
    for i in 0..1_500u128 {
        let granted = node.propose(acquire(&node, &format!("n{i:04}"), i + 1)).await.unwrap();
        assert!(matches!(granted, Ok(Response::Granted { .. })), "{granted:?}");
    }
    let stats = node.stats();
    assert!(stats.last_applied >= 1_500, "{stats:?}");
    assert!(stats.snapshots_built >= 1, "{stats:?}");
    // Since the snapshot, about 500 entries; but the tail (and the last one, not yet applied
    // at its own append) are all that stay.
    assert!(stats.log_entries_in_memory <= TAIL_ENTRIES + 2, "{stats:?}");
    let before = holders(&node).await;
    assert_eq!(before.len(), 1_500);
    node.shutdown().await;
    drop(node);

    let node = Node::open(config).await.unwrap();
    assert_eq!(holders(&node).await, before, "the same holds with the same tokens");
    node.shutdown().await;
}
