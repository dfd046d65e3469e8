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

/// The hold's remaining TTL as the server reports it.
async fn expires_in_ms(client: &common::Client, location: &str) -> u64 {
    let hold = client.get(location).await;
    assert_eq!(hold.status, 200, "{hold:?}");
    hold.body["expires_in_ms"].as_u64().expect("a hold with a TTL")
}

#[tokio::test]
async fn restart_after_downtime_resumes_remaining_ttl() {
    let server = Server::start(&[]);
    let hold = server.client.lock("lease", json!({"ttl_ms": 1500})).await;
    assert_eq!(hold.status, 201);
    let location = hold.header("location").to_string();
    let before = expires_in_ms(&server.client, &location).await;
    let (_keep, data_dir) = server.kill_9();
    // Down for longer than the whole TTL: log time does not run while no node is up.
    std::thread::sleep(Duration::from_millis(2_000));
    let restarted = Server::start_with(Start { data_dir: Some(data_dir), ..Start::default() });
    let after = expires_in_ms(&restarted.client, &location).await;
    assert!(
        after >= before,
        "a restart never shortens a deadline: {after} ms left, {before} before"
    );
    // Resume adds its margin (2 s by default) on top, and the hold still ends on its own.
    let gone = restarted.client.until_status(&location, 404, Duration::from_secs(20)).await;
    assert!(gone >= Duration::from_millis(before), "expired after {gone:?}, {before} ms were left");
}

#[tokio::test]
async fn restart_never_grants_a_dead_waiter() {
    let server = Server::start(&[]);
    let hold = server.client.lock("x", json!({"ttl_ms": 1000})).await;
    assert_eq!(hold.status, 201);
    let waiting = {
        let client = server.client.clone();
        tokio::spawn(async move { client.lock("x", json!({"wait_ms": 60000})).await })
    };
    server.client.until_waiters("locks", "x", 1).await;
    let (_keep, data_dir) = server.kill_9();
    waiting.abort();
    let restarted = Server::start_with(Start { data_dir: Some(data_dir), ..Start::default() });
    let client = &restarted.client;
    assert_eq!(client.waiters("locks", "x").await, 0, "the dead boot's waiter is cancelled");
    // Once the surviving hold ends, nobody holds the name: the old waiter was never granted.
    client.until_status(hold.header("location"), 404, Duration::from_secs(20)).await;
    let view = client.get("/v1/locks/x").await;
    assert!(
        view.status == 404 || view.body["holders"].as_array().is_some_and(|h| h.is_empty()),
        "{view:?}"
    );
    let fresh = client.lock("x", json!({})).await;
    assert_eq!(fresh.status, 201, "the name is free: {fresh:?}");
    assert!(fresh.token() > hold.token());
}

#[tokio::test]
async fn a_corrupt_data_dir_is_a_clean_error_not_a_panic() {
    let server = Server::start(&[]);
    for i in 0..20 {
        assert_eq!(server.client.lock(&format!("n{i}"), json!({})).await.status, 201);
    }
    let (_keep, data_dir) = server.kill_9();
    let segment = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "log"))
        .expect("a log segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0xff; // inside the first record, with many records after it
    std::fs::write(&segment, &bytes).unwrap();

    let output = start_expecting_refusal(&data_dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must refuse to start on a damaged log");
    assert!(!stderr.contains("panicked"), "a clean error, not a panic: {stderr}");
    assert!(stderr.contains("corrupt") && stderr.contains("seg-"), "names the damage: {stderr}");

    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("thesis.tex"), "precious").unwrap();
    let output = start_expecting_refusal(foreign.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not a lockserver data directory"), "{stderr}");
    assert!(foreign.path().join("thesis.tex").exists());
}

/// Starts the binary on `data_dir` and returns its output once it exits; a server that starts
/// anyway is killed after a while, so a missed refusal fails the test instead of hanging it.
fn start_expecting_refusal(data_dir: &std::path::Path) -> std::process::Output {
    let child = std::process::Command::new(common::BIN)
        .args(["--port", "0", "--locker-port", "0", "--data-dir"])
        .arg(data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(std::time::Duration::from_secs(30)).is_err() {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    output
}
