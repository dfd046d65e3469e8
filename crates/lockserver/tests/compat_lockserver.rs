//! The original Lockserver's HTTP API (COMPAT.md §1): exact statuses and plain-text bodies,
//! owner identity, exact expiry, the fencing-token header, the `wait_ms` extension, and one
//! lock model shared with the native API.

mod common;

use std::time::{Duration, Instant};

use common::{Resp, Server};
use serde_json::json;

async fn acquire(server: &Server, body: serde_json::Value) -> Resp {
    server.client.post("/acquire", body).await
}

async fn release(server: &Server, resource: &str, owner: &str) -> Resp {
    server.client.post("/release", json!({"resource": resource, "owner": owner})).await
}

#[track_caller]
fn assert_text(resp: &Resp, status: u16, text: &str) {
    assert_eq!((resp.status, resp.text.as_str()), (status, text), "{resp:?}");
    assert!(resp.header("content-type").starts_with("text/plain"), "{resp:?}");
}

#[tokio::test]
async fn acquire_and_release_answer_exactly_as_the_original() {
    let server = Server::start(&[]);
    let granted = acquire(&server, json!({"resource": "db", "owner": "a"})).await;
    assert_text(&granted, 200, "OK");
    let token: u64 = granted.header("x-lockserver-token").parse().expect("a fencing token");
    // Held by anyone, the same owner too (not re-entrant).
    let same = acquire(&server, json!({"resource": "db", "owner": "a"})).await;
    assert_text(&same, 409, "ERR Resource is already locked");
    let other = acquire(&server, json!({"resource": "db", "owner": "b"})).await;
    assert_text(&other, 409, "ERR Resource is already locked");
    assert_text(&release(&server, "db", "b").await, 409, "ERR Resource is already locked");
    assert_text(&release(&server, "db", "a").await, 200, "OK");
    assert_text(&release(&server, "db", "a").await, 409, "ERR Resource not found");
    let again = acquire(&server, json!({"resource": "db", "owner": "b", "x": 1})).await;
    assert_text(&again, 200, "OK");
    let next: u64 = again.header("x-lockserver-token").parse().unwrap();
    assert!(next > token, "tokens only grow");
}

#[tokio::test]
async fn a_compat_lock_is_an_ordinary_hold_of_the_one_lock_model() {
    let server = Server::start(&[]);
    assert_eq!(acquire(&server, json!({"resource": "shared", "owner": "svc"})).await.status, 200);
    let view = server.client.get("/v1/locks/shared").await;
    let holders = view.body["holders"].as_array().unwrap();
    assert_eq!((holders.len(), holders[0]["owner"].as_str()), (1, Some("svc")));
    assert!(holders[0]["expires_in_ms"].is_null(), "no expire: no expiry, as the original");
    server.client.lock("shared", json!({})).await.assert_error(409, "locked");
    // A native hold is never freed by a compat release, and blocks compat acquires.
    let native = server.client.lock("native", json!({"owner": "svc"})).await;
    assert_eq!(native.status, 201);
    assert_text(&release(&server, "native", "svc").await, 409, "ERR Resource is already locked");
    assert_text(
        &acquire(&server, json!({"resource": "native", "owner": "svc"})).await,
        409,
        "ERR Resource is already locked",
    );
    // A native release by hold id frees a compat hold.
    let hold_id = holders[0]["hold_id"].as_str().unwrap();
    assert_eq!(server.client.delete(&format!("/v1/locks/shared/{hold_id}")).await.status, 204);
    assert_text(&release(&server, "shared", "svc").await, 409, "ERR Resource not found");
}

#[tokio::test]
async fn expire_is_exact_to_the_millisecond_and_never_early() {
    let server = Server::start(&[]);
    let started = Instant::now();
    assert_eq!(
        acquire(&server, json!({"resource": "exp", "owner": "a", "expire": 1})).await.status,
        200
    );
    // The extension waits on the server instead of polling.
    let waited = acquire(&server, json!({"resource": "exp", "owner": "b", "wait_ms": 5000})).await;
    let after = started.elapsed();
    assert_text(&waited, 200, "OK");
    assert!(after >= Duration::from_secs(1), "granted after {after:?}");
    assert!(after < Duration::from_millis(1900), "granted after {after:?}");
    // Without wait_ms: at once, as the original.
    let started = Instant::now();
    let busy = acquire(&server, json!({"resource": "exp", "owner": "c"})).await;
    assert_text(&busy, 409, "ERR Resource is already locked");
    assert!(started.elapsed() < Duration::from_millis(500));
    let timed_out = acquire(&server, json!({"resource": "exp", "owner": "c", "wait_ms": 50})).await;
    assert_text(&timed_out, 409, "ERR Resource is already locked");
}

#[tokio::test]
async fn bad_bodies_are_400_and_a_secret_is_401_in_plain_text() {
    let server = Server::start(&["--secret", "compat-secret"]);
    let client = server.client.with_secret("compat-secret");
    for body in [
        "{not json",
        r#"{"owner":"a"}"#,
        r#"{"resource":"db"}"#,
        r#"{"resource":5,"owner":"a"}"#,
        r#"{"resource":"db","owner":"a","expire":-1}"#,
        r#"{"resource":"db","owner":"a","expire":1.5}"#,
        r#"{"resource":"db","owner":"a","expire":0}"#,
        r#"{"resource":"","owner":"a"}"#,
    ] {
        let resp = client.send("POST", "/acquire", Some(body)).await;
        assert_eq!(resp.status, 400, "{body}: {resp:?}");
        assert!(resp.header("content-type").starts_with("text/plain"), "{resp:?}");
    }
    let body = json!({"resource": "db", "owner": "a"});
    assert_text(
        &server.client.post("/acquire", body.clone()).await,
        401,
        "Missing or invalid secret",
    );
    let wrong = server.client.with_secret("nope");
    assert_text(&wrong.post("/release", body.clone()).await, 401, "Missing or invalid secret");
    // The original's header, any case.
    let resp = reqwest::Client::new()
        .post(format!("{}/acquire", server.base))
        .header("x-lockserver-secret", "compat-secret")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_surface_can_be_turned_off() {
    let server = Server::start(&["--disable", "lockserver-http"]);
    let resp = acquire(&server, json!({"resource": "db", "owner": "a"})).await;
    resp.assert_error(404, "not_found");
    let refused = std::process::Command::new(common::BIN)
        .args(["--disable", "rdlm-typo", "--port", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown surface"));
}
