//! Process life: graceful shutdown on SIGTERM (stop accepting, answer in-flight requests,
//! exit 0) and `kill -9` + restart (acknowledged holds survive, tokens never go back).

mod common;

use std::time::Duration;

use common::{Server, Start};
use serde_json::json;

#[tokio::test]
async fn sigterm_answers_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut server = Server::start_with(Start {
        args: vec!["--ready-file".into(), ready.display().to_string()],
        ..Start::default()
    });
    let client = server.client.clone();
    assert_eq!(client.lock("db", json!({})).await.status, 201);
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("db", json!({"wait_ms": 30000})).await })
    };
    client.until_waiters("locks", "db", 1).await;

    server.terminate();
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting request is answered at shutdown")
        .unwrap();
    answer.assert_error(503, "unavailable");
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    assert!(!ready.exists(), "the ready file is removed on a clean stop");
    assert!(server.stderr().contains("stopped"), "{}", server.stderr());
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/healthz", server.base))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn kill_9_and_restart_keeps_acknowledged_holds_and_tokens_rise() {
    let server = Server::start(&[]);
    let client = &server.client;
    let mut highest = 0;
    for i in 0..5 {
        let hold = client.lock(&format!("n{i}"), json!({"ttl_ms": 60000})).await;
        assert_eq!(hold.status, 201);
        client.delete(hold.header("location")).await;
        highest = highest.max(hold.token());
    }
    let kept = client.lock("kept", json!({"ttl_ms": null, "owner": "survivor"})).await;
    assert_eq!(kept.status, 201);
    highest = highest.max(kept.token());
    let location = kept.header("location").to_string();

    let (_keep_alive, data_dir) = server.kill_9();
    let restarted = Server::start_with(Start { data_dir: Some(data_dir), ..Start::default() });
    let client = &restarted.client;
    let survivor = client.get(&location).await;
    assert_eq!(survivor.status, 200, "an acknowledged hold survives kill -9: {survivor:?}");
    assert_eq!(survivor.body["token"], kept.body["token"]);
    client.lock("kept", json!({})).await.assert_error(409, "locked");
    let fresh = client.lock("n0", json!({})).await;
    assert_eq!(fresh.status, 201);
    assert!(fresh.token() > highest, "token {} after restart, {highest} before", fresh.token());
}

#[tokio::test]
async fn in_memory_restart_never_reuses_tokens() {
    let server = Server::start(&["--in-memory"]);
    let mut highest = 0;
    for i in 0..5 {
        let hold = server.client.lock(&format!("n{i}"), json!({})).await;
        assert_eq!(hold.status, 201);
        highest = highest.max(hold.token());
    }
    let (_keep_alive, data_dir) = server.kill_9();
    let restarted = Server::start_with(Start {
        args: vec!["--in-memory".into()],
        data_dir: Some(data_dir),
        ..Start::default()
    });
    let fresh = restarted.client.lock("n0", json!({})).await;
    assert_eq!(fresh.status, 201, "in memory: nothing survives but the token high-water mark");
    assert!(fresh.token() > highest, "token {} after restart, {highest} before", fresh.token());
}
