//! Sessions over HTTP: create, keepalive, inspect, close; expiry releases every hold and
//! cancels every waiter; a session is not re-entrant.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

#[tokio::test]
async fn session_life_cycle() {
    let server = Server::start(&[]);
    let client = &server.client;
    let created = client.post("/v1/sessions", json!({"ttl_ms": 10000, "owner": "svc"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let session_id = created.body["session_id"].as_str().unwrap().to_string();
    assert_eq!(session_id.len(), 32);
    assert_eq!(created.body["ttl_ms"], 10000);
    let path = format!("/v1/sessions/{session_id}");

    let hold = client.lock("db", json!({"session": session_id})).await;
    assert_eq!(hold.status, 201, "{hold:?}");
    assert_eq!(hold.body["session"], session_id.as_str());
    assert_eq!(hold.body["expires_in_ms"], json!(null), "a session hold lives with its session");

    let shown = client.get(&path).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["session_id"], session_id.as_str());
    assert_eq!(shown.body["ttl_ms"], 10000);
    assert!(shown.body["expires_in_ms"].as_u64().unwrap() <= 10000);
    assert_eq!(shown.body["holds"][0]["hold_id"], hold.body["hold_id"]);

    let kept = client.post(&format!("{path}/keepalive"), json!({})).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body, json!({"session_id": session_id, "ttl_ms": 10000}));

    // Not re-entrant: the same session on the same name is a conflict, at once.
    client
        .lock("db", json!({"session": session_id, "wait_ms": 5000}))
        .await
        .assert_error(409, "conflict");

    // A waiter of the session is cancelled when the session closes.
    let other = client.lock("other", json!({})).await;
    let waiting = {
        let client = client.clone();
        let session_id = session_id.clone();
        tokio::spawn(async move {
            client.lock("other", json!({"session": session_id, "wait_ms": 20000})).await
        })
    };
    client.until_waiters("locks", "other", 1).await;

    assert_eq!(client.delete(&path).await.status, 204);
    waiting.await.unwrap().assert_error(409, "cancelled");
    client.get(hold.header("location")).await.assert_error(404, "not_found");
    client.get(&path).await.assert_error(404, "not_found");
    client.delete(&path).await.assert_error(404, "not_found");
    client.post(&format!("{path}/keepalive"), json!({})).await.assert_error(404, "not_found");
    client.lock("x", json!({"session": session_id})).await.assert_error(404, "not_found");
    assert_eq!(other.status, 201);
}

#[tokio::test]
async fn session_expiry_releases_its_holds_never_early() {
    let server = Server::start(&[]);
    let client = &server.client;
    let opened_at = Instant::now();
    let created = client.post("/v1/sessions", json!({"ttl_ms": 600})).await;
    let session_id = created.body["session_id"].as_str().unwrap().to_string();
    let hold = client.lock("db", json!({"session": session_id, "ttl_ms": null})).await;
    assert_eq!(hold.status, 201);
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let answer = client.lock("db", json!({"wait_ms": 10000})).await;
            (answer, Instant::now())
        })
    };
    let (answer, answered_at) = waiter.await.unwrap();
    assert_eq!(answer.status, 201, "{answer:?}");
    let after = answered_at - opened_at;
    assert!(after >= Duration::from_millis(600), "released before the session ended: {after:?}");
    assert!(after <= Duration::from_millis(1600), "too late: {after:?}");
    client.get(hold.header("location")).await.assert_error(404, "not_found");
    client.get(&format!("/v1/sessions/{session_id}")).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn keepalives_keep_a_session_and_its_holds() {
    let server = Server::start(&[]);
    let client = &server.client;
    let created = client.post("/v1/sessions", json!({"ttl_ms": 400})).await;
    let session_id = created.body["session_id"].as_str().unwrap().to_string();
    let hold = client.lock("db", json!({"session": session_id})).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let kept = client.post(&format!("/v1/sessions/{session_id}/keepalive"), json!({})).await;
        assert_eq!(kept.status, 200, "kept alive at {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get(hold.header("location")).await.status, 200);
}

#[tokio::test]
async fn session_ttl_is_bounded() {
    let server = Server::start(&["--min-session-ttl-ms", "200", "--max-session-ttl-ms", "5000"]);
    let client = &server.client;
    client.post("/v1/sessions", json!({"ttl_ms": 199})).await.assert_error(400, "invalid_argument");
    client
        .post("/v1/sessions", json!({"ttl_ms": 5001}))
        .await
        .assert_error(400, "invalid_argument");
    client.post("/v1/sessions", json!({})).await.assert_error(400, "invalid_argument");
    client
        .post("/v1/sessions", json!({"ttl_ms": 1000, "x": 1}))
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(client.post("/v1/sessions", json!({"ttl_ms": 200})).await.status, 201);
}
