//! Authentication (401/403), admin routes (listing, force-release, sessions), health and
//! metrics, and every server limit answering 429 `limit_exceeded` (413 for the body).

mod common;

use std::time::Duration;

use common::{raw_request, read_raw_response, Server};
use serde_json::json;

const SECRET: &str = "client-secret-1";
const ADMIN: &str = "admin-secret-1";

#[tokio::test]
async fn secrets_gate_every_route_but_health_and_metrics() {
    let server = Server::start(&["--secret", SECRET, "--admin-secret", ADMIN]);
    assert!(server.startup_line.contains(" auth=on admin=on "), "{}", server.startup_line);
    let anonymous = &server.client;
    let wrong = server.client.with_secret("nope");
    let client = server.client.with_secret(SECRET);
    let admin = server.client.with_secret(ADMIN);

    anonymous.lock("db", json!({})).await.assert_error(401, "unauthorized");
    wrong.lock("db", json!({})).await.assert_error(401, "unauthorized");
    anonymous.get("/v1/locks/db").await.assert_error(401, "unauthorized");
    anonymous.post("/v1/sessions", json!({"ttl_ms": 1000})).await.assert_error(401, "unauthorized");
    let held = client.lock("db", json!({})).await;
    assert_eq!(held.status, 201);

    // The other header works too.
    let via_header = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/v1/locks/db", server.base))
        .header("X-LOCKSERVER-SECRET", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(via_header.status().as_u16(), 200);

    // Admin routes: client secret 403, missing/wrong 401, admin secret 200.
    client.get("/v1/admin/locks").await.assert_error(403, "forbidden");
    anonymous.get("/v1/admin/locks").await.assert_error(401, "unauthorized");
    wrong.get("/v1/admin/sessions").await.assert_error(401, "unauthorized");
    assert_eq!(admin.get("/v1/admin/locks").await.status, 200);
    // The admin credential may use client routes too.
    assert_eq!(admin.get("/v1/locks/db").await.status, 200);

    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(anonymous.get(open).await.status, 200, "{open}");
    }
    let metrics = anonymous.get("/metrics").await;
    assert!(metrics.header("content-type").starts_with("text/plain"));
    assert!(metrics.text.contains("lockserver_holds 1"), "{}", metrics.text);
    assert!(!metrics.text.contains("\"db\"") && !metrics.text.contains("=\"db"), "no lock names");
}

#[tokio::test]
async fn admin_routes_answer_403_without_an_admin_secret() {
    let server = Server::start(&[]);
    assert!(server.startup_line.contains(" auth=off admin=off "), "{}", server.startup_line);
    let client = &server.client;
    client.get("/v1/admin/locks").await.assert_error(403, "forbidden");
    client.get("/v1/admin/sessions").await.assert_error(403, "forbidden");
    client.delete("/v1/admin/locks/db").await.assert_error(403, "forbidden");
    client
        .delete(&format!("/v1/admin/holds/{}", "0".repeat(32)))
        .await
        .assert_error(403, "forbidden");
    assert!(server.stderr().contains("loopback"), "start-up says auth is off: {}", server.stderr());
}

#[tokio::test]
async fn admin_lists_names_with_holders_and_waiters_in_pages() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let client = &server.client;
    let admin = server.client.with_secret(ADMIN);
    for name in ["app/a", "app/b", "app/c", "other"] {
        let encoded = name.replace('/', "%2F");
        assert_eq!(client.lock(&encoded, json!({"owner": "o"})).await.status, 201);
    }
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client.lock("app%2Fa", json!({"owner": "w", "mode": "shared", "wait_ms": 20000})).await
        })
    };
    client.until_waiters("locks", "app%2Fa", 1).await;

    let page = admin.get("/v1/admin/locks?prefix=app%2F&limit=2").await;
    assert_eq!(page.status, 200, "{page:?}");
    let locks = page.body["locks"].as_array().unwrap();
    let names: Vec<&str> = locks.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app/a", "app/b"]);
    assert_eq!(locks[0]["kind"], "lock");
    assert_eq!(locks[0]["holders"][0]["owner"], "o");
    let waiters = locks[0]["waiters"].as_array().unwrap();
    assert_eq!(waiters.len(), 1);
    assert_eq!(waiters[0]["owner"], "w");
    assert_eq!(waiters[0]["mode"], "shared");
    assert_eq!(waiters[0]["permits"], 1);
    assert!(waiters[0]["waiting_ms"].is_u64());
    assert!(locks[0]["last_token"].is_u64());
    let next = page.body["next"].as_str().expect("a cursor").to_string();
    let rest = admin
        .get(&format!("/v1/admin/locks?prefix=app%2F&limit=2&after={}", next.replace('/', "%2F")))
        .await;
    let names: Vec<&str> = rest.body["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app/c"]);
    assert_eq!(rest.body["next"], json!(null));
    let everything = admin.get("/v1/admin/locks").await;
    assert_eq!(everything.body["locks"].as_array().unwrap().len(), 4);
    admin.get("/v1/admin/locks?limit=0").await.assert_error(400, "invalid_argument");
    admin.get("/v1/admin/locks?limit=x").await.assert_error(400, "invalid_argument");
    waiter.abort();
}

#[tokio::test]
async fn admin_force_release_of_a_name_and_of_a_hold() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let client = &server.client;
    let admin = server.client.with_secret(ADMIN);
    let held = client.lock("db", json!({"ttl_ms": null, "lock_delay_ms": 5000})).await;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("db", json!({"wait_ms": 20000})).await })
    };
    client.until_waiters("locks", "db", 1).await;
    assert_eq!(admin.delete("/v1/admin/locks/db").await.status, 204);
    waiter.await.unwrap().assert_error(409, "cancelled");
    client.get(held.header("location")).await.assert_error(404, "not_found");
    // No lock-delay unless asked for.
    let next = client.lock("db", json!({"ttl_ms": null, "lock_delay_ms": 5000})).await;
    assert_eq!(next.status, 201);
    admin.delete("/v1/admin/locks/nothing-here").await.assert_error(404, "not_found");

    // With ?lock_delay=true the holder's delay applies.
    assert_eq!(admin.delete("/v1/admin/locks/db?lock_delay=true").await.status, 204);
    client.lock("db", json!({})).await.assert_error(409, "locked");

    let single = client.lock("one", json!({})).await;
    let path = format!("/v1/admin/holds/{}", single.hold_id());
    assert_eq!(admin.delete(&path).await.status, 204);
    client.get(single.header("location")).await.assert_error(404, "not_found");
    admin.delete(&path).await.assert_error(404, "not_found");
    admin.delete("/v1/admin/holds/zz").await.assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn admin_lists_sessions() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let client = &server.client;
    let admin = server.client.with_secret(ADMIN);
    let created = client.post("/v1/sessions", json!({"ttl_ms": 30000, "owner": "svc-1"})).await;
    let session_id = created.body["session_id"].as_str().unwrap();
    client.lock("db", json!({"session": session_id})).await;
    let listed = admin.get("/v1/admin/sessions").await;
    assert_eq!(listed.status, 200);
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], session_id);
    assert_eq!(sessions[0]["owner"], "svc-1");
    assert_eq!(sessions[0]["ttl_ms"], 30000);
    assert!(sessions[0]["expires_in_ms"].as_u64().unwrap() <= 30000);
    assert_eq!(sessions[0]["holds"][0]["name"], "db");
    assert_eq!(sessions[0]["waiters"], 0);
}

#[tokio::test]
async fn every_limit_answers_limit_exceeded() {
    let server = Server::start(&[
        "--max-names",
        "2",
        "--max-waiters-per-name",
        "1",
        "--max-sessions",
        "1",
        "--max-holds",
        "3",
    ]);
    let client = &server.client;
    assert_eq!(client.lock("n1", json!({})).await.status, 201);
    assert_eq!(client.lock("n2", json!({"mode": "shared"})).await.status, 201);
    let third = client.lock("n3", json!({})).await;
    third.assert_error(429, "limit_exceeded");
    assert!(third.body["error"]["message"].as_str().unwrap().contains("names"), "{third:?}");

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("n1", json!({"wait_ms": 20000})).await })
    };
    client.until_waiters("locks", "n1", 1).await;
    let second_waiter = client.lock("n1", json!({"wait_ms": 20000})).await;
    second_waiter.assert_error(429, "limit_exceeded");
    // Three entries now (two holds, one waiter): a fourth hold is over the limit.
    client.lock("n2", json!({"mode": "shared"})).await.assert_error(429, "limit_exceeded");

    assert_eq!(client.post("/v1/sessions", json!({"ttl_ms": 5000})).await.status, 201);
    client.post("/v1/sessions", json!({"ttl_ms": 5000})).await.assert_error(429, "limit_exceeded");
    waiter.abort();
}

#[tokio::test]
async fn connections_over_the_limit_get_429() {
    let server = Server::start(&["--max-connections", "2"]);
    // Two raw connections hold both slots (each waits on a held lock).
    let client = &server.client;
    let holder = client.lock("c", json!({})).await;
    assert_eq!(holder.status, 201);
    let first = raw_request(server.addr, "POST", "/v1/locks/c", r#"{"wait_ms": 20000}"#).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The reqwest client's pooled connection is the second slot; a third is refused.
    loop {
        let mut extra = raw_request(server.addr, "GET", "/healthz", "").await;
        let answer = read_raw_response(&mut extra).await;
        if answer.starts_with("HTTP/1.1 429") {
            assert!(answer.contains(r#""code":"limit_exceeded""#), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("content-type: application/json"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refused: {answer}");
    }
    drop(first);
    // Slots free up again once connections close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut extra = raw_request(server.addr, "GET", "/healthz", "").await;
        if read_raw_response(&mut extra).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never came back");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let server = Server::start(&["--max-body-bytes", "100"]);
    let big = format!(r#"{{"owner": "{}"}}"#, "x".repeat(200));
    let mut stream = raw_request(server.addr, "POST", "/v1/locks/big", &big).await;
    let answer = read_raw_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"invalid_argument""#), "{answer}");
}
