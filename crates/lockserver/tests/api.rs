//! The lock and semaphore routes of API.md against the real binary: every success shape,
//! every error code, bad input of every kind, names as single path segments.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn lock_acquire_get_renew_release_round_trip() {
    let server = Server::start(&[]);
    let client = &server.client;
    let created = client.lock("db", json!({"owner": "worker-1", "ttl_ms": 30000})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("content-type"), "application/json");
    let hold_id = created.hold_id();
    assert_eq!(hold_id.len(), 32);
    assert!(hold_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let location = created.header("location").to_string();
    assert_eq!(location, format!("/v1/locks/db/{hold_id}"));
    let hold = &created.body;
    assert_eq!(hold["name"], "db");
    assert_eq!(hold["kind"], "lock");
    assert_eq!(hold["mode"], "exclusive");
    assert_eq!(hold["permits"], 1);
    assert_eq!(hold["limit"], json!(null));
    assert_eq!(hold["owner"], "worker-1");
    assert_eq!(hold["session"], json!(null));
    assert!(hold["token"].as_u64().unwrap() >= 1);
    assert!(hold["granted_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let expires = hold["expires_in_ms"].as_u64().unwrap();
    assert!(expires <= 30000 && expires > 29000, "{expires}");

    let fetched = client.get(&location).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["token"], hold["token"]);

    let renewed = client.post(&format!("{location}/renew"), json!({"ttl_ms": 5000})).await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    let expires = renewed.body["expires_in_ms"].as_u64().unwrap();
    assert!(expires <= 5000 && expires > 4000, "{expires}");
    let same = client.post(&format!("{location}/renew"), json!({})).await;
    assert_eq!(same.status, 200);
    assert!(same.body["expires_in_ms"].as_u64().unwrap() <= 5000, "absent ttl_ms keeps 5000");
    let unlimited = client.post(&format!("{location}/renew"), json!({"ttl_ms": null})).await;
    assert_eq!(unlimited.status, 200);
    assert_eq!(unlimited.body["expires_in_ms"], json!(null));
    assert_eq!(unlimited.body["token"], hold["token"], "renew keeps the token");

    let released = client.delete(&location).await;
    assert_eq!(released.status, 204, "{released:?}");
    client.get(&location).await.assert_error(404, "not_found");
    client.delete(&location).await.assert_error(404, "not_found");
    client.post(&format!("{location}/renew"), json!({})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn try_lock_on_a_held_name_is_locked_and_tokens_rise() {
    let server = Server::start(&[]);
    let client = &server.client;
    let first = client.lock("db", json!({})).await;
    assert_eq!(first.status, 201);
    client.lock("db", json!({"wait_ms": 0})).await.assert_error(409, "locked");
    client.lock("db", json!({})).await.assert_error(409, "locked");
    assert_eq!(client.delete(first.header("location")).await.status, 204);
    let second = client.lock("db", json!({})).await;
    assert_eq!(second.status, 201);
    assert!(second.token() > first.token(), "tokens strictly increase per name");
    let other = client.lock("other", json!({})).await;
    assert!(other.token() > second.token(), "one counter for every name");
}

#[tokio::test]
async fn default_ttl_applies_without_ttl_and_session_and_null_means_none() {
    let server = Server::start(&["--default-ttl-ms", "7000"]);
    let client = &server.client;
    let defaulted = client.lock("a", json!({})).await;
    let expires = defaulted.body["expires_in_ms"].as_u64().unwrap();
    assert!(expires <= 7000 && expires > 6000, "{expires}");
    let forever = client.lock("b", json!({"ttl_ms": null})).await;
    assert_eq!(forever.status, 201);
    assert_eq!(forever.body["expires_in_ms"], json!(null));
}

#[tokio::test]
async fn name_state_and_check() {
    let server = Server::start(&[]);
    let client = &server.client;
    let empty = client.get("/v1/locks/nobody").await;
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.body,
        json!({"name": "nobody", "kind": "lock", "limit": null, "holders": [], "waiters": 0,
               "last_token": null})
    );
    let empty_semaphore = client.get("/v1/semaphores/nobody").await;
    assert_eq!(empty_semaphore.body["kind"], "semaphore");

    let held = client.lock("db", json!({"owner": "o"})).await;
    let view = client.get("/v1/locks/db").await;
    assert_eq!(view.body["holders"][0]["hold_id"], held.body["hold_id"]);
    assert_eq!(view.body["last_token"], held.body["token"]);
    assert_eq!(view.body["waiters"], 0);

    let token = held.token();
    let valid = client.post("/v1/locks/db/check", json!({"token": token})).await;
    assert_eq!(valid.status, 200);
    assert_eq!(valid.body, json!({"valid": true}));
    let stale = client.post("/v1/locks/db/check", json!({"token": token + 1000})).await;
    assert_eq!(stale.body, json!({"valid": false}));
    let elsewhere = client.post("/v1/locks/other/check", json!({"token": token})).await;
    assert_eq!(elsewhere.body, json!({"valid": false}), "a token is valid for its name only");
    client.delete(held.header("location")).await;
    let after = client.post("/v1/locks/db/check", json!({"token": token})).await;
    assert_eq!(after.body, json!({"valid": false}), "released: no longer current");
    let view = client.get("/v1/locks/db").await;
    assert_eq!(view.body["holders"], json!([]));
}

#[tokio::test]
async fn names_are_single_percent_encoded_segments() {
    let server = Server::start(&[]);
    let client = &server.client;
    let cases = [
        ("a%2Fcheck", "a/check"),
        ("b%2Fx", "b/x"),
        ("%25", "%"),
        ("%E3%83%AD%E3%83%83%E3%82%AF%2F%C3%BC", "ロック/ü"),
        ("check", "check"),
        ("a%20b%3F%23", "a b?#"),
    ];
    for (encoded, name) in cases {
        let created = client.lock(encoded, json!({})).await;
        assert_eq!(created.status, 201, "{name}: {created:?}");
        assert_eq!(created.body["name"], name);
        let location = created.header("location").to_string();
        let fetched = client.get(&location).await;
        assert_eq!(fetched.status, 200, "{name}: Location {location} must round-trip");
        let view = client.get(&format!("/v1/locks/{encoded}")).await;
        assert_eq!(view.body["name"], name);
        assert_eq!(view.body["holders"].as_array().unwrap().len(), 1, "{name}");
        let check = client
            .post(&format!("/v1/locks/{encoded}/check"), json!({"token": created.token()}))
            .await;
        assert_eq!(check.body, json!({"valid": true}), "{name}");
    }
    // `a/check` and `a` are different names: the lock `a` is still free.
    assert_eq!(client.lock("a", json!({})).await.status, 201);
    // An unencoded slash is another route (a hold id's), never the name "b/x".
    client.lock("b/x", json!({})).await.assert_error(405, "invalid_argument");
    let view = client.get("/v1/locks/b%2Fx").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_of_every_kind_gets_a_json_4xx_never_a_500() {
    let server = Server::start(&["--max-wait-ms", "1000", "--max-body-bytes", "2048"]);
    let client = &server.client;
    let bodies = [
        r#"{"owner": "x""#,
        "not json",
        r#"{"unknown": 1}"#,
        r#"{"wait_ms": "10"}"#,
        r#"{"wait_ms": -1}"#,
        r#"{"wait_ms": 1.5}"#,
        r#"{"wait_ms": 18446744073709551616}"#,
        r#"{"wait_ms": 1001}"#,
        r#"{"wait_ms": null}"#,
        r#"{"ttl_ms": 0}"#,
        r#"{"ttl_ms": -5}"#,
        r#"{"ttl_ms": 1e3}"#,
        r#"{"ttl_ms": 999999999999999999}"#,
        r#"{"mode": "writer"}"#,
        r#"{"mode": 1}"#,
        r#"{"lock_delay_ms": 60001}"#,
        r#"{"session": "not-a-session"}"#,
        r#"{"request_id": ""}"#,
        r#"[1, 2]"#,
    ];
    for body in bodies {
        let answer = client.send("POST", "/v1/locks/db", Some(body)).await;
        answer.assert_error(400, "invalid_argument");
    }
    let long_owner = json!({"owner": "o".repeat(300)});
    client.lock("db", long_owner).await.assert_error(400, "invalid_argument");
    let long_request_id = json!({"request_id": "r".repeat(65)});
    client.lock("db", long_request_id).await.assert_error(400, "invalid_argument");

    // Names: 10 KB, 256 bytes, control characters, invalid UTF-8.
    let huge = "n".repeat(10 * 1024);
    client.lock(&huge, json!({})).await.assert_error(400, "invalid_argument");
    client.lock(&"n".repeat(256), json!({})).await.assert_error(400, "invalid_argument");
    assert_eq!(client.lock(&"n".repeat(255), json!({})).await.status, 201);
    client.lock("a%0Ab", json!({})).await.assert_error(400, "invalid_argument");
    client.lock("%FF%FE", json!({})).await.assert_error(400, "invalid_argument");
    client.get(&format!("/v1/locks/{huge}")).await.assert_error(400, "invalid_argument");

    // Ids.
    client.get("/v1/locks/db/xyz").await.assert_error(400, "invalid_argument");
    client
        .get(&format!("/v1/locks/db/{}", "A".repeat(32)))
        .await
        .assert_error(400, "invalid_argument");
    client.delete("/v1/sessions/123").await.assert_error(400, "invalid_argument");
    client.get(&format!("/v1/locks/db/{}", "0".repeat(32))).await.assert_error(404, "not_found");

    // Check, renew, semaphores.
    client.post("/v1/locks/db/check", json!({})).await.assert_error(400, "invalid_argument");
    client
        .post("/v1/locks/db/check", json!({"token": -1}))
        .await
        .assert_error(400, "invalid_argument");
    client
        .post("/v1/locks/db/check", json!({"token": "1"}))
        .await
        .assert_error(400, "invalid_argument");
    client.post("/v1/semaphores/s", json!({})).await.assert_error(400, "invalid_argument");
    client
        .post("/v1/semaphores/s", json!({"limit": 0}))
        .await
        .assert_error(400, "invalid_argument");
    client
        .post("/v1/semaphores/s", json!({"limit": 2, "permits": 3}))
        .await
        .assert_error(400, "invalid_argument");
    client
        .post("/v1/semaphores/s", json!({"limit": 2, "permits": 0}))
        .await
        .assert_error(400, "invalid_argument");
    client
        .post("/v1/semaphores/s", json!({"limit": 4294967296u64}))
        .await
        .assert_error(400, "invalid_argument");
    client
        .post("/v1/semaphores/s", json!({"limit": 2, "mode": "shared"}))
        .await
        .assert_error(400, "invalid_argument");

    // Release by request needs a request_id; unknown query keys are refused.
    client.delete("/v1/locks/db").await.assert_error(400, "invalid_argument");
    client.delete("/v1/locks/db?request_id=r&bogus=1").await.assert_error(400, "invalid_argument");

    // Body size and methods.
    let big = format!(r#"{{"owner": "{}"}}"#, "x".repeat(4096));
    client.send("POST", "/v1/locks/db", Some(&big)).await.assert_error(413, "invalid_argument");
    client.send("PUT", "/v1/locks/db", None).await.assert_error(405, "invalid_argument");
    client.send("PATCH", "/v1/sessions", None).await.assert_error(405, "invalid_argument");
    client.send("GET", "/v1/locks/db/check", None).await.assert_error(405, "invalid_argument");
    client.get("/v2/nothing").await.assert_error(404, "not_found");

    // Nothing above took the lock or broke the server.
    let fine = client.lock("db", json!({})).await;
    assert_eq!(fine.status, 201, "{fine:?}");
    assert_eq!(client.get("/healthz").await.status, 200);
    let metrics = client.get("/metrics").await.text;
    assert!(metrics.contains("lockserver_http_responses_total{class=\"5xx\"} 0"), "{metrics}");
}

#[tokio::test]
async fn semaphores_count_permits_and_refuse_mismatches() {
    let server = Server::start(&[]);
    let client = &server.client;
    let two = client.post("/v1/semaphores/pool", json!({"limit": 3, "permits": 2})).await;
    assert_eq!(two.status, 201, "{two:?}");
    assert_eq!(two.body["kind"], "semaphore");
    assert_eq!(two.body["mode"], json!(null));
    assert_eq!(two.body["limit"], 3);
    assert_eq!(two.body["permits"], 2);
    assert!(two.header("location").starts_with("/v1/semaphores/pool/"));
    let one = client.post("/v1/semaphores/pool", json!({"limit": 3})).await;
    assert_eq!(one.status, 201);
    assert_eq!(one.body["permits"], 1);
    client.post("/v1/semaphores/pool", json!({"limit": 3})).await.assert_error(409, "locked");
    client.post("/v1/semaphores/pool", json!({"limit": 4})).await.assert_error(409, "conflict");
    client.lock("pool", json!({})).await.assert_error(409, "conflict");
    let view = client.get("/v1/semaphores/pool").await;
    assert_eq!(view.body["kind"], "semaphore");
    assert_eq!(view.body["limit"], 3);
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 2);
    // A hold is only reachable under its own kind's route.
    let hold_id = one.hold_id();
    client.get(&format!("/v1/locks/pool/{hold_id}")).await.assert_error(404, "not_found");
    assert_eq!(client.get(&format!("/v1/semaphores/pool/{hold_id}")).await.status, 200);
    let renewed =
        client.post(&format!("/v1/semaphores/pool/{hold_id}/renew"), json!({"ttl_ms": 9000})).await;
    assert_eq!(renewed.status, 200);
    let check = client.post("/v1/semaphores/pool/check", json!({"token": one.token()})).await;
    assert_eq!(check.body, json!({"valid": true}));
    assert_eq!(client.delete(two.header("location")).await.status, 204);
    let again = client.post("/v1/semaphores/pool", json!({"limit": 3, "permits": 2})).await;
    assert_eq!(again.status, 201);
    // A lock name is not a semaphore either.
    client.lock("lockname", json!({})).await;
    client.post("/v1/semaphores/lockname", json!({"limit": 2})).await.assert_error(409, "conflict");
}

#[tokio::test]
async fn request_id_retries_return_the_same_hold_and_release_by_request() {
    let server = Server::start(&[]);
    let client = &server.client;
    let body = json!({"owner": "w1", "request_id": "r-17", "ttl_ms": 20000});
    let first = client.lock("db", body.clone()).await;
    assert_eq!(first.status, 201);
    let retry = client.lock("db", body.clone()).await;
    assert_eq!(retry.status, 201, "a retry returns the same hold: {retry:?}");
    assert_eq!(retry.hold_id(), first.hold_id());
    assert_eq!(retry.token(), first.token());
    // Another owner's request_id is another request.
    client
        .lock("db", json!({"owner": "w2", "request_id": "r-17"}))
        .await
        .assert_error(409, "locked");
    // The same request_id for another name is a conflict.
    client.lock("other", body.clone()).await.assert_error(409, "conflict");

    client.delete("/v1/locks/db?request_id=r-17&owner=w2").await.assert_error(404, "not_found");
    client.delete("/v1/locks/other?request_id=r-17&owner=w1").await.assert_error(404, "not_found");
    assert_eq!(client.delete("/v1/locks/db?request_id=r-17&owner=w1").await.status, 204);
    client.get(first.header("location")).await.assert_error(404, "not_found");
    client.delete("/v1/locks/db?request_id=r-17&owner=w1").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn release_by_request_cancels_a_waiting_request() {
    let server = Server::start(&[]);
    let client = server.client.clone();
    let holder = client.lock("db", json!({})).await;
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client.lock("db", json!({"owner": "w", "request_id": "q1", "wait_ms": 20000})).await
        })
    };
    client.until_waiters("locks", "db", 1).await;
    assert_eq!(client.delete("/v1/locks/db?request_id=q1&owner=w").await.status, 204);
    waiting.await.unwrap().assert_error(409, "cancelled");
    assert_eq!(client.waiters("locks", "db").await, 0);
    assert_eq!(client.delete(holder.header("location")).await.status, 204);
}
