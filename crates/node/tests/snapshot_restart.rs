//! A durable node restarts from its newest snapshot plus the log after it: every hold and token
//! is back, nothing released comes back, and the next token is above every token issued.

mod common;

use common::holders;
use lockserver_core::*;
use lockserver_node::{Node, NodeConfig};

fn acquire(node: &Node, name: &str, hold: u128) -> Command {
    common::acquire(node, name, hold, "snapshot-test")
}

async fn open(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.snapshot_every = 16;
    Node::open(config).await.unwrap()
}

async fn grant(node: &Node, name: &str, hold: u128) -> u64 {
    match node.propose(acquire(node, name, hold)).await.unwrap() {
        Ok(Response::Granted { hold, .. }) => hold.token.0,
        other => panic!("acquire {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_a_snapshot_and_the_log_after_it_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let mut highest = 0;
    for i in 0..120u128 {
        highest = highest.max(grant(&node, &format!("n{i:03}"), i + 1).await);
    }
    for i in (0..120u128).step_by(2) {
        let release =
            Command::Release { hold_id: HoldId::from_u128(i + 1), reason: ReleaseReason::Client };
        node.propose(release).await.unwrap().unwrap();
    }
    // Snapshots were built by policy on the way; one more covers everything so far, and a
    // suffix of entries after it must be replayed from the log.
    assert!(node.stats().snapshots_built >= 1, "{:?}", node.stats());
    node.snapshot().await.unwrap();
    for i in 200..210u128 {
        highest = highest.max(grant(&node, &format!("s{i}"), i).await);
    }
    node.propose(Command::Release {
        hold_id: HoldId::from_u128(201),
        reason: ReleaseReason::Client,
    })
    .await
    .unwrap()
    .unwrap();
    let before = holders(&node).await;
    assert_eq!(before.len(), 60 + 9, "60 odd n-names and 9 s-names stay held");
    node.shutdown().await;
    drop(node);
    // Without its snapshot the compacted log cannot be replayed: a clean error, at once.
    let snapshot = dir.path().join("snapshot");
    let saved = std::fs::read(&snapshot).unwrap();
    std::fs::remove_file(&snapshot).unwrap();
    let started = std::time::Instant::now();
    let err = Node::open(NodeConfig { snapshot_every: 16, ..NodeConfig::new(dir.path()) }).await;
    let err = err.expect_err("a compacted log without its snapshot must not start");
    assert!(err.to_string().contains("snapshot is missing"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    std::fs::write(&snapshot, saved).unwrap();

    let node = open(dir.path()).await;
    assert_eq!(holders(&node).await, before, "the same holds with the same tokens");
    let next = grant(&node, "n000", 1_000).await;
    assert!(next > highest, "token {next} after a restart is not above {highest}");
    node.shutdown().await;
    drop(node);

    // A second restart (the snapshot now older than a longer suffix) agrees too.
    let node = open(dir.path()).await;
    let after = holders(&node).await;
    assert_eq!(after.len(), before.len() + 1);
    assert!(after
        .iter()
        .any(|(name, holds)| name == "n000" && holds == &[(HoldId::from_u128(1_000), next)]));
    node.shutdown().await;
}
