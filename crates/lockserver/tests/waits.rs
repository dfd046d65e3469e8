//! Long polls: FIFO hand-off, shared vs exclusive, semaphore queues, timeouts and expiry that
//! are never early (and late by at most a second), lock-delay, and clients that go away.

mod common;

use std::time::{Duration, Instant};

use common::{raw_request, read_raw_response, Client, Resp, Server};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const LATE_BOUND: Duration = Duration::from_secs(1);

fn spawn_acquire(client: &Client, path: &str, body: Value) -> JoinHandle<(Resp, Instant)> {
    let client = client.clone();
    let path = path.to_string();
    tokio::spawn(async move {
        let answer = client.post(&path, body).await;
        (answer, Instant::now())
    })
}

#[tokio::test]
async fn waiters_are_granted_one_by_one_in_fifo_order() {
    let server = Server::start(&[]);
    let client = &server.client;
    let first = client.lock("fifo", json!({"owner": "h"})).await;
    assert_eq!(first.status, 201);
    let mut waiting = Vec::new();
    for i in 0..4 {
        let body = json!({"owner": format!("w{i}"), "wait_ms": 20000});
        waiting.push(spawn_acquire(client, "/v1/locks/fifo", body));
        // Enqueue strictly one after another.
        client.until_waiters("locks", "fifo", i + 1).await;
    }
    let mut location = first.header("location").to_string();
    let mut last_token = first.token();
    for (i, task) in waiting.into_iter().enumerate() {
        assert!(!task.is_finished(), "w{i} must not be granted before its turn");
        assert_eq!(client.delete(&location).await.status, 204);
        let (granted, _) = task.await.unwrap();
        assert_eq!(granted.status, 201, "{granted:?}");
        assert_eq!(granted.body["owner"], format!("w{i}"), "FIFO order");
        assert!(granted.token() > last_token);
        last_token = granted.token();
        location = granted.header("location").to_string();
        assert_eq!(client.waiters("locks", "fifo").await, 3 - i as u64);
    }
}

#[tokio::test]
async fn shared_holders_coexist_and_a_queued_writer_holds_back_later_readers() {
    let server = Server::start(&[]);
    let client = &server.client;
    let reader_a = client.lock("rw", json!({"mode": "shared"})).await;
    let reader_b = client.lock("rw", json!({"mode": "shared"})).await;
    assert_eq!((reader_a.status, reader_b.status), (201, 201));
    assert_eq!(reader_b.body["mode"], "shared");
    client.lock("rw", json!({"mode": "exclusive"})).await.assert_error(409, "locked");
    let writer =
        spawn_acquire(client, "/v1/locks/rw", json!({"owner": "writer", "wait_ms": 20000}));
    client.until_waiters("locks", "rw", 1).await;
    // No barging: a new reader waits behind the queued writer.
    client.lock("rw", json!({"mode": "shared"})).await.assert_error(409, "locked");
    let late_reader = spawn_acquire(
        client,
        "/v1/locks/rw",
        json!({"owner": "late-reader", "mode": "shared", "wait_ms": 20000}),
    );
    client.until_waiters("locks", "rw", 2).await;
    assert_eq!(client.delete(reader_a.header("location")).await.status, 204);
    assert!(!writer.is_finished(), "one reader still holds");
    assert_eq!(client.delete(reader_b.header("location")).await.status, 204);
    let (writer, _) = writer.await.unwrap();
    assert_eq!(writer.status, 201);
    assert_eq!(client.waiters("locks", "rw").await, 1);
    assert!(!late_reader.is_finished());
    assert_eq!(client.delete(writer.header("location")).await.status, 204);
    let (late_reader, _) = late_reader.await.unwrap();
    assert_eq!(late_reader.status, 201);
    assert_eq!(late_reader.body["owner"], "late-reader");
}

#[tokio::test]
async fn consecutive_readers_at_the_head_are_granted_together() {
    let server = Server::start(&[]);
    let client = &server.client;
    let writer = client.lock("rw", json!({})).await;
    let readers: Vec<_> = (0..3)
        .map(|i| {
            spawn_acquire(
                client,
                "/v1/locks/rw",
                json!({"owner": format!("r{i}"), "mode": "shared", "wait_ms": 20000}),
            )
        })
        .collect();
    client.until_waiters("locks", "rw", 3).await;
    client.delete(writer.header("location")).await;
    for reader in readers {
        assert_eq!(reader.await.unwrap().0.status, 201);
    }
    let view = client.get("/v1/locks/rw").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_semaphore_waiter_proceeds_when_enough_permits_free() {
    let server = Server::start(&[]);
    let client = &server.client;
    let big = client.post("/v1/semaphores/pool", json!({"limit": 2, "permits": 2})).await;
    let waiter =
        spawn_acquire(client, "/v1/semaphores/pool", json!({"limit": 2, "wait_ms": 20000}));
    client.until_waiters("semaphores", "pool", 1).await;
    client.delete(big.header("location")).await;
    let (granted, _) = waiter.await.unwrap();
    assert_eq!(granted.status, 201);
    assert_eq!(granted.body["kind"], "semaphore");
}

#[tokio::test]
async fn a_wait_times_out_never_early() {
    let server = Server::start(&[]);
    let client = &server.client;
    client.lock("busy", json!({})).await;
    let started = Instant::now();
    let answer = client.lock("busy", json!({"wait_ms": 400})).await;
    let took = started.elapsed();
    answer.assert_error(409, "timeout");
    assert!(took >= Duration::from_millis(400), "timed out early: {took:?}");
    assert!(took <= Duration::from_millis(400) + LATE_BOUND, "too late: {took:?}");
    assert_eq!(client.waiters("locks", "busy").await, 0, "a timed-out waiter leaves the queue");
}

#[tokio::test]
async fn an_expiring_hold_hands_over_to_the_waiter_never_early() {
    let server = Server::start(&[]);
    let client = &server.client;
    let granted_at = Instant::now();
    let holder = client.lock("lease", json!({"ttl_ms": 500})).await;
    assert_eq!(holder.status, 201);
    let waiter = spawn_acquire(client, "/v1/locks/lease", json!({"wait_ms": 10000}));
    let (answer, answered_at) = waiter.await.unwrap();
    assert_eq!(answer.status, 201, "{answer:?}");
    let after = answered_at - granted_at;
    assert!(after >= Duration::from_millis(500), "granted before the TTL ended: {after:?}");
    assert!(after <= Duration::from_millis(500) + LATE_BOUND, "too late: {after:?}");
    assert!(answer.token() > holder.token());
    client.get(holder.header("location")).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn lock_delay_holds_the_name_after_an_involuntary_end_only() {
    let server = Server::start(&[]);
    let client = &server.client;
    // Voluntary release: no delay.
    let voluntary = client.lock("vol", json!({"ttl_ms": 10000, "lock_delay_ms": 5000})).await;
    client.delete(voluntary.header("location")).await;
    assert_eq!(client.lock("vol", json!({})).await.status, 201);

    // Expiry: nobody gets the name until TTL + delay.
    let granted_at = Instant::now();
    let expiring = client.lock("del", json!({"ttl_ms": 300, "lock_delay_ms": 700})).await;
    assert_eq!(expiring.status, 201);
    let waiter = spawn_acquire(client, "/v1/locks/del", json!({"wait_ms": 10000}));
    client.until_status(expiring.header("location"), 404, Duration::from_secs(5)).await;
    let expired_at = granted_at.elapsed();
    assert!(expired_at >= Duration::from_millis(300), "expired early: {expired_at:?}");
    if granted_at.elapsed() < Duration::from_millis(900) {
        client.lock("del", json!({})).await.assert_error(409, "locked");
    }
    let (answer, answered_at) = waiter.await.unwrap();
    assert_eq!(answer.status, 201);
    let after = answered_at - granted_at;
    assert!(after >= Duration::from_millis(1000), "granted inside the lock-delay: {after:?}");
    assert!(after <= Duration::from_millis(1000) + LATE_BOUND, "too late: {after:?}");
}

#[tokio::test]
async fn a_client_that_disconnects_while_waiting_is_cancelled() {
    let server = Server::start(&[]);
    let client = &server.client;
    let holder = client.lock("dc", json!({})).await;
    let stream = raw_request(server.addr, "POST", "/v1/locks/dc", r#"{"wait_ms": 30000}"#).await;
    client.until_waiters("locks", "dc", 1).await;
    drop(stream);
    client.until_waiters("locks", "dc", 0).await;
    // The departed waiter never becomes an invisible holder.
    client.delete(holder.header("location")).await;
    let next = client.lock("dc", json!({})).await;
    assert_eq!(next.status, 201, "{next:?}");
    let view = client.get("/v1/locks/dc").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_raw_long_poll_gets_its_201_when_granted() {
    let server = Server::start(&[]);
    let client = &server.client;
    let holder = client.lock("raw", json!({})).await;
    let mut stream =
        raw_request(server.addr, "POST", "/v1/locks/raw", r#"{"wait_ms": 30000}"#).await;
    client.until_waiters("locks", "raw", 1).await;
    client.delete(holder.header("location")).await;
    let response = read_raw_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.to_ascii_lowercase().contains("location: /v1/locks/raw/"), "{response}");
    // The hold the client received stays (it was delivered), also once that connection
    // closes: only an unwritten 201 releases its hold.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_connections(client).await > 1 {
        assert!(Instant::now() < deadline, "the server did not notice the closed connection");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let view = client.get("/v1/locks/raw").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 1, "{view:?}");
}

async fn open_connections(client: &Client) -> u64 {
    let metrics = client.get("/metrics").await.text;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("lockserver_http_connections_open "))
        .and_then(|value| value.trim().parse().ok())
        .expect("connections gauge")
}
