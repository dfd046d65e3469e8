//! The streaming session (`GET /v1/session`) against the real binary, with a real WebSocket
//! client: pipelining, FIFO hand-off, clean close vs drop, grace and resume with replay, lost
//! events, cancel racing a grant, half-open and slow-reader detection, malformed frames.

mod common;

use std::time::{Duration, Instant};

use common::stream::{code, hold, until, Ended, RawFrame, RawWs, Ws};
use common::Server;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const LATE_BOUND: Duration = Duration::from_secs(1);
const ADMIN: &str = "stream-admin-secret";

fn acquire(name: &str) -> Value {
    json!({"op": "acquire", "name": name})
}

fn waiting(name: &str, wait_ms: Value) -> Value {
    json!({"op": "acquire", "name": name, "wait_ms": wait_ms})
}

async fn holders(server: &Server, name: &str) -> usize {
    let view = server.client.get(&format!("/v1/locks/{name}")).await;
    assert_eq!(view.status, 200, "{view:?}");
    view.body["holders"].as_array().expect("holders").len()
}

async fn session_alive(server: &Server, session_id: &str) -> bool {
    let status = server.client.get(&format!("/v1/sessions/{session_id}")).await.status;
    assert!(status == 200 || status == 404, "{status}");
    status == 200
}

#[tokio::test]
async fn hello_opens_a_session_and_pipelined_acquires_answer_by_id() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 5000, "owner": "w1"})).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!((hello["ttl_ms"].as_u64(), hello["resumed"].as_bool()), (Some(5000), Some(false)));
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    assert_eq!(session_id.len(), 32);

    // 300 requests in flight on one connection before any reply is read.
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(ws.send(acquire(&format!("pipe-{i}"))).await);
    }
    let mut tokens = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let reply = ws.reply(id).await;
        let hold = hold(&reply);
        assert_eq!(hold["name"], format!("pipe-{i}"));
        assert_eq!(hold["session"], session_id.as_str());
        assert_eq!(hold["owner"], "w1", "the session's owner label");
        assert!(hold["expires_in_ms"].is_null(), "the session covers its holds");
        tokens.push(hold["token"].as_u64().unwrap());
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 300, "every grant has its own token");

    // The session and its holds are visible over HTTP.
    let view = server.client.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(view.body["holds"].as_array().unwrap().len(), 300, "{view:?}");

    // ping answers with the lease; check, renew and release work by hold id.
    let ping = ws.call(json!({"op": "ping"})).await;
    assert_eq!(ping["lease_ms"], 5000, "{ping}");
    let granted = ws.call(acquire("solo")).await;
    let (hold_id, token) =
        (hold(&granted)["hold_id"].clone(), hold(&granted)["token"].as_u64().unwrap());
    let check = ws.call(json!({"op": "check", "name": "solo", "token": token})).await;
    assert_eq!(check["valid"], true, "{check}");
    let renewed = ws.call(json!({"op": "renew", "hold_id": hold_id, "ttl_ms": 60000})).await;
    assert!(hold(&renewed)["expires_in_ms"].as_u64().unwrap() > 59_000, "{renewed}");
    let released = ws.call(json!({"op": "release", "hold_id": hold_id})).await;
    assert_eq!(released, json!({"id": released["id"], "ok": true}));
    let again = ws.call(json!({"op": "release", "hold_id": hold_id})).await;
    assert_eq!(code(&again), "not_found");
    let check = ws.call(json!({"op": "check", "name": "solo", "token": token})).await;
    assert_eq!(check["valid"], false);
    // A hold of somebody else cannot be released through this session.
    let other = server.client.lock("foreign", json!({})).await;
    let foreign = ws.call(json!({"op": "release", "hold_id": other.hold_id()})).await;
    assert_eq!(code(&foreign), "not_found");
    assert_eq!(holders(&server, "foreign").await, 1);
}

#[tokio::test]
async fn waiters_on_two_connections_are_handed_the_lock_in_fifo_order() {
    let server = Server::start(&[]);
    let mut a = Ws::connect(server.addr).await;
    let mut b = Ws::connect(server.addr).await;
    let mut c = Ws::connect(server.addr).await;
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.hello(json!({"ttl_ms": 10000})).await["ok"], true);
    }
    let first = a.call(acquire("fifo")).await;
    let b_id = b.send(waiting("fifo", json!(null))).await;
    server.client.until_waiters("locks", "fifo", 1).await;
    let c_id = c.send(waiting("fifo", json!(20000))).await;
    server.client.until_waiters("locks", "fifo", 2).await;
    let busy = c.call(acquire("fifo")).await;
    assert_eq!(code(&busy), "conflict", "no re-entrant acquire while waiting: {busy}");

    a.call(json!({"op": "release", "hold_id": hold(&first)["hold_id"]})).await;
    let b_hold = b.reply(b_id).await;
    assert!(hold(&b_hold)["token"].as_u64() > hold(&first)["token"].as_u64());
    assert!(!c.has_reply(c_id));
    assert_eq!(server.client.waiters("locks", "fifo").await, 1, "c still waits its turn");
    b.call(json!({"op": "release", "hold_id": hold(&b_hold)["hold_id"]})).await;
    let c_hold = c.reply(c_id).await;
    assert!(hold(&c_hold)["token"].as_u64() > hold(&b_hold)["token"].as_u64());
}

#[tokio::test]
async fn thousands_of_waiters_on_one_connection_are_granted_never_early() {
    let server = Server::start(&[]);
    let count = 2000;
    // Each name held over HTTP for 1 s.
    let started = Instant::now();
    for i in 0..count {
        let held = server.client.lock(&format!("many-{i}"), json!({"ttl_ms": 1000})).await;
        assert_eq!(held.status, 201, "{held:?}");
    }
    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 30000})).await;
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(ws.send(waiting(&format!("many-{i}"), json!(null))).await);
    }
    server.client.until_waiters("locks", &format!("many-{}", count - 1), 1).await;
    for id in ids {
        let reply = ws.reply(id).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1000), "granted before the holds expired: {waited:?}");
}

#[tokio::test]
async fn a_clean_close_ends_the_session_at_once_without_lock_delay() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 60000, "grace_ms": 60000})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let granted = ws.call(json!({"op": "acquire", "name": "clean", "lock_delay_ms": 30000})).await;
    hold(&granted);
    let mut other = Ws::connect(server.addr).await;
    other.hello(json!({})).await;
    let other_id = other.send(waiting("clean", json!(10000))).await;
    server.client.until_waiters("locks", "clean", 1).await;
    ws.close().await;
    let next = other.reply(other_id).await;
    hold(&next); // granted at once: no lock-delay after a voluntary end
    assert!(!session_alive(&server, &session_id).await, "the session ended with its connection");
}

#[tokio::test]
async fn an_abrupt_drop_keeps_the_holds_until_the_lease_ends_then_applies_lock_delay() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let leased = Instant::now();
    let hello = ws.hello(json!({"ttl_ms": 800})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    hold(&ws.call(json!({"op": "acquire", "name": "drop", "lock_delay_ms": 500})).await);
    ws.drop_abruptly();
    let mut other = Ws::connect(server.addr).await;
    other.hello(json!({"ttl_ms": 10000})).await;
    let reply = other.call(waiting("drop", json!(10000))).await;
    let granted_after = leased.elapsed();
    hold(&reply);
    // Never early: the lease (800 ms from the hello) and then the lock-delay (500 ms).
    assert!(granted_after >= Duration::from_millis(1300), "granted after {granted_after:?}");
    assert!(granted_after < Duration::from_millis(1300) + LATE_BOUND, "{granted_after:?}");
    assert!(!session_alive(&server, &session_id).await);
}

#[tokio::test]
async fn a_resumed_session_replays_what_happened_while_it_was_away() {
    let server = Server::start(&[]);
    let blocker = server.client.lock("later", json!({"ttl_ms": 600})).await;
    assert_eq!(blocker.status, 201);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 500, "grace_ms": 10000})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let kept = ws.call(acquire("kept")).await;
    let wait_id = ws.send(waiting("later", json!(null))).await;
    server.client.until_waiters("locks", "later", 1).await;
    ws.drop_abruptly();

    // While away: the blocker expires and the waiting acquire is granted (buffered); the
    // lease (500 ms) ends but the grace (10 s) keeps the session.
    until(Duration::from_secs(5), "the waiter is granted", || async {
        holders(&server, "later").await == 1 && server.client.waiters("locks", "later").await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the lease: grace is the input
    assert!(session_alive(&server, &session_id).await, "grace keeps the session");

    let mut back = Ws::connect(server.addr).await;
    let resumed = back.hello(json!({"session_id": session_id})).await;
    assert_eq!(resumed["ok"], true, "{resumed}");
    assert_eq!(resumed["resumed"], true);
    // The grant that happened while away is replayed with its request id.
    let granted = back.reply(wait_id).await;
    assert_eq!(hold(&granted)["name"], "later");
    // Holds from before the drop still belong to the session.
    let released = back.call(json!({"op": "release", "hold_id": hold(&kept)["hold_id"]})).await;
    assert_eq!(released["ok"], true, "{released}");
    let ping = back.call(json!({"op": "ping"})).await;
    assert_eq!(ping["lease_ms"], 500);
}

#[tokio::test]
async fn resuming_an_ended_session_answers_not_found() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 200})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    ws.drop_abruptly();
    until(Duration::from_secs(5), "the session ends", || async {
        !session_alive(&server, &session_id).await
    })
    .await;
    let mut back = Ws::connect(server.addr).await;
    let resumed = back.hello(json!({"session_id": session_id})).await;
    assert_eq!(code(&resumed), "not_found", "{resumed}");
    // The connection is still usable: a new session can be opened on it.
    let fresh = back.hello(json!({})).await;
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert_eq!(fresh["ttl_ms"], 2000, "the default lease");
}

#[tokio::test]
async fn a_hello_elsewhere_takes_over_an_attached_session() {
    let server = Server::start(&[]);
    let mut first = Ws::connect(server.addr).await;
    let hello = first.hello(json!({"ttl_ms": 10000})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let granted = first.call(acquire("moved")).await;
    let mut second = Ws::connect(server.addr).await;
    let resumed = second.hello(json!({"session_id": session_id})).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    match first.ended().await {
        Ended::Close { code, .. } => assert_eq!(code, 4001),
        other => panic!("{other:?}"),
    }
    let released =
        second.call(json!({"op": "release", "hold_id": hold(&granted)["hold_id"]})).await;
    assert_eq!(released["ok"], true, "{released}");
}

#[tokio::test]
async fn an_expired_hold_pushes_lost_never_early() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 10000})).await;
    let granted_at = Instant::now();
    let granted = ws.call(json!({"op": "acquire", "name": "ttl", "ttl_ms": 300})).await;
    let lost = ws.event().await;
    let after = granted_at.elapsed();
    assert_eq!(lost["event"], "lost", "{lost}");
    assert_eq!(lost["reason"], "expired");
    assert_eq!(lost["hold_id"], hold(&granted)["hold_id"]);
    assert_eq!(lost["token"], hold(&granted)["token"]);
    assert_eq!(lost["name"], "ttl");
    assert!(after >= Duration::from_millis(300), "lost after {after:?}");
    assert!(after < Duration::from_millis(300) + LATE_BOUND, "lost after {after:?}");
}

#[tokio::test]
async fn an_admin_force_release_pushes_lost_before_the_next_grant() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let admin = server.client.with_secret(ADMIN);
    let mut holder = Ws::connect(server.addr).await;
    holder.hello(json!({"ttl_ms": 10000})).await;
    let granted = holder.call(acquire("forced")).await;
    let mut next = Ws::connect(server.addr).await;
    next.hello(json!({"ttl_ms": 10000})).await;
    let next_id = next.send(waiting("forced", json!(null))).await;
    server.client.until_waiters("locks", "forced", 1).await;
    let hold_id = hold(&granted)["hold_id"].as_str().unwrap();
    assert_eq!(admin.delete(&format!("/v1/admin/holds/{hold_id}")).await.status, 204);
    let lost = holder.event().await;
    assert_eq!((lost["event"].as_str(), lost["reason"].as_str()), (Some("lost"), Some("admin")));
    hold(&next.reply(next_id).await);
    // The whole name: the holder is told, a waiter fails with `cancelled`.
    let waiter_id = holder.send(waiting("forced", json!(null))).await;
    server.client.until_waiters("locks", "forced", 1).await;
    assert_eq!(admin.delete("/v1/admin/locks/forced").await.status, 204);
    assert_eq!(next.event().await["reason"], "admin");
    assert_eq!(code(&holder.reply(waiter_id).await), "cancelled");
}

#[tokio::test]
async fn cancel_withdraws_a_waiter_or_gives_back_the_grant_that_won() {
    let server = Server::start(&[]);
    let mut owner = Ws::connect(server.addr).await;
    owner.hello(json!({"ttl_ms": 10000})).await;
    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 10000})).await;

    // Plain cancel of a waiter.
    let held = owner.call(acquire("race")).await;
    let wait_id = ws.send(waiting("race", json!(null))).await;
    server.client.until_waiters("locks", "race", 1).await;
    let cancel = ws.call(json!({"op": "cancel", "target": wait_id})).await;
    assert_eq!(cancel["ok"], true, "{cancel}");
    assert_eq!(code(&ws.reply(wait_id).await), "cancelled");
    assert_eq!(server.client.waiters("locks", "race").await, 0);
    let unknown = ws.call(json!({"op": "cancel", "target": 999})).await;
    assert_eq!(code(&unknown), "not_found");

    // Cancel racing the grant: whichever wins, the session ends up without the hold.
    let mut hold_id = hold(&held)["hold_id"].clone();
    let (mut withdrawn, mut given_back) = (0, 0);
    for _ in 0..20 {
        let wait_id = ws.send(waiting("race", json!(null))).await;
        server.client.until_waiters("locks", "race", 1).await;
        let release = owner.send(json!({"op": "release", "hold_id": hold_id})).await;
        let cancel_id = ws.send(json!({"op": "cancel", "target": wait_id})).await;
        let acquired = ws.reply(wait_id).await;
        let cancel = ws.reply(cancel_id).await;
        assert_eq!(cancel["ok"], true, "{cancel}");
        assert_eq!(owner.reply(release).await["ok"], true);
        if acquired["ok"] == true {
            assert_eq!(cancel["released"], acquired["hold"]["hold_id"], "{cancel}");
            given_back += 1;
        } else {
            assert_eq!(code(&acquired), "cancelled");
            assert!(cancel.get("released").is_none(), "{cancel}");
            withdrawn += 1;
        }
        assert_eq!(holders(&server, "race").await, 0, "nobody keeps the lock");
        hold_id = hold(&owner.call(acquire("race")).await)["hold_id"].clone();
    }
    assert_eq!(withdrawn + given_back, 20);
}

#[tokio::test]
async fn a_half_open_connection_is_detected_by_ping_and_pong() {
    let server = Server::start(&["--ws-heartbeat-ms", "200"]);
    let mut raw = RawWs::connect(server.addr).await;
    raw.send_text(r#"{"id":1,"op":"hello","ttl_ms":60000}"#).await;
    let silent_since = Instant::now();
    // This client reads, but never answers a ping.
    let mut pings = 0;
    let (code, reason) = loop {
        match raw.frame().await.expect("a close frame before the end") {
            RawFrame::Ping => pings += 1,
            RawFrame::Close { code, reason } => break (code, reason),
            RawFrame::Text(_) | RawFrame::Other(_) => {}
        }
    };
    let silent = silent_since.elapsed();
    assert_eq!(code, 4003, "{reason}");
    assert!(pings >= 1, "the server pinged first");
    assert!(silent >= Duration::from_millis(400), "dropped after {silent:?}");
    assert!(silent < Duration::from_millis(400) + LATE_BOUND, "dropped after {silent:?}");

    // A client that answers pings stays connected through many heartbeats.
    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 60000})).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1000), ws.event()).await;
    assert!(quiet.is_err(), "nothing but pings arrives");
    assert_eq!(ws.call(json!({"op": "ping"})).await["ok"], true);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_as_too_slow() {
    let server = Server::start(&["--ws-max-buffer-bytes", "65536"]);
    // A small receive buffer, so the server's replies back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut raw = RawWs::upgrade(stream, server.addr).await;
    raw.send_text(r#"{"id":1,"op":"hello","ttl_ms":60000,"grace_ms":60000}"#).await;
    // About 11 MB of replies (each echoes its 200-byte name): more than the kernel buffers.
    let name = "n".repeat(200);
    let sent = 20_000;
    for id in 2..sent {
        let request = json!({"id": id, "op": "acquire", "name": format!("{name}{id}")});
        raw.send_text(&request.to_string()).await;
    }
    // The server works through the requests while this client reads nothing, until it cuts
    // the connection.
    until(Duration::from_secs(20), "the slow reader is cut off", || async {
        server.stderr().contains("disconnecting a client that does not read")
    })
    .await;
    // Only now read: some replies, then the end of the connection (with the close reason
    // when there was room for it), never all of them.
    let mut replies = 0;
    let mut close_code = None;
    while let Some(frame) = raw.frame().await {
        match frame {
            RawFrame::Text(_) => replies += 1,
            RawFrame::Close { code, .. } => close_code = Some(code),
            _ => {}
        }
    }
    assert!(replies < sent - 1, "the server kept buffering: {replies} replies");
    if let Some(code) = close_code {
        assert_eq!(code, 4002);
    }
    assert_eq!(server.client.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn malformed_frames_get_error_replies_and_never_hurt_other_sessions() {
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let mut bystander = Ws::connect(server.addr).await;
    bystander.hello(json!({"ttl_ms": 10000})).await;
    let kept = bystander.call(acquire("bystander")).await;

    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 10000})).await;
    ws.send_text("{not json").await;
    let broken = ws.event().await;
    assert_eq!((broken["id"].clone(), code(&broken)), (Value::Null, "invalid_argument"));
    ws.send_message(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(code(&ws.event().await), "invalid_argument");
    ws.send_text(r#"{"op":"ping"}"#).await;
    assert!(ws.event().await["error"]["message"].as_str().unwrap().contains("id"));
    let unknown = ws.call(json!({"op": "jump"})).await;
    assert_eq!(code(&unknown), "invalid_argument", "the id is still recovered: {unknown}");
    let typo = ws.call(json!({"op": "acquire", "nme": "x"})).await;
    assert_eq!(code(&typo), "invalid_argument");
    let no_name = ws.call(json!({"op": "acquire"})).await;
    assert_eq!(code(&no_name), "invalid_argument");
    let bad_name = ws.call(json!({"op": "acquire", "name": "bad\u{7}name"})).await;
    assert_eq!(code(&bad_name), "invalid_argument");
    let negative = ws.call(json!({"op": "acquire", "name": "x", "wait_ms": -1})).await;
    assert_eq!(code(&negative), "invalid_argument");
    let semaphore = ws.call(json!({"op": "acquire", "name": "s", "kind": "semaphore"})).await;
    assert_eq!(code(&semaphore), "invalid_argument", "a semaphore needs its limit");
    let second_hello = ws.call(json!({"op": "hello"})).await;
    assert_eq!(code(&second_hello), "invalid_argument");
    let permits = ws
        .call(json!({"op": "acquire", "name": "s", "kind": "semaphore", "limit": 2, "permits": 3}))
        .await;
    assert_eq!(code(&permits), "invalid_argument");
    let sem = ws
        .call(json!({"op": "acquire", "name": "s", "kind": "semaphore", "limit": 2, "permits": 2}))
        .await;
    assert_eq!(hold(&sem)["kind"], "semaphore");

    // Over the size limit: the connection is closed with 1009.
    ws.send_text(&format!(r#"{{"id":99,"op":"check","name":"{}"}}"#, "x".repeat(8000))).await;
    match ws.ended().await {
        Ended::Close { code, .. } => assert_eq!(code, 1009),
        Ended::Eof => {}
    }
    // The other session never noticed.
    let check = bystander
        .call(json!({"op": "check", "name": "bystander", "token": hold(&kept)["token"]}))
        .await;
    assert_eq!(check["valid"], true);
}

#[tokio::test]
async fn the_upgrade_is_authenticated_like_http() {
    let server = Server::start(&["--secret", "stream-secret"]);
    let refused = Ws::connect_with(server.addr, None).await.err().expect("refused");
    assert_eq!(refused.0, 401);
    let body: Value = serde_json::from_str(&refused.1).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = Ws::connect_with(server.addr, Some("nope")).await.err().expect("refused");
    assert_eq!(wrong.0, 401);
    let mut ws = Ws::connect_with(server.addr, Some("stream-secret")).await.expect("upgraded");
    assert_eq!(ws.call(acquire("authed")).await["ok"], true, "a first request opens a session");
    // A plain GET (no upgrade) is a clear 400.
    let plain = server.client.with_secret("stream-secret").get("/v1/session").await;
    plain.assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn a_session_that_runs_out_of_lease_is_told_and_closed() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let opened = Instant::now();
    ws.hello(json!({"ttl_ms": 300})).await;
    let granted = ws.call(acquire("lease")).await;
    let lost = ws.event().await;
    let after = opened.elapsed();
    assert_eq!(
        (lost["reason"].as_str(), lost["hold_id"].clone()),
        (Some("session"), hold(&granted)["hold_id"].clone())
    );
    assert!(after >= Duration::from_millis(300), "{after:?}");
    match ws.ended().await {
        Ended::Close { code, reason } => assert_eq!(code, 4000, "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pings_keep_the_session_alive_past_its_ttl() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 300})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let granted = ws.call(acquire("kept-alive")).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let ping = ws.call(json!({"op": "ping"})).await;
        assert_eq!(ping["lease_ms"], 300, "{ping}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(session_alive(&server, &session_id).await);
    let check = ws
        .call(json!({"op": "check", "name": "kept-alive", "token": hold(&granted)["token"]}))
        .await;
    assert_eq!(check["valid"], true);
}

#[tokio::test]
async fn a_retried_acquire_with_the_same_request_id_keeps_its_hold_or_its_place() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 10000, "grace_ms": 10000})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let first = ws.call(json!({"op": "acquire", "name": "idem", "request_id": "r-1"})).await;
    let again = ws.call(json!({"op": "acquire", "name": "idem", "request_id": "r-1"})).await;
    assert_eq!(hold(&again)["hold_id"], hold(&first)["hold_id"], "the same hold");
    assert_eq!(hold(&again)["token"], hold(&first)["token"]);

    // A waiting acquire retried after a reconnect rejoins its place in the queue.
    let blocker = server.client.lock("queue", json!({"ttl_ms": 60000})).await;
    let behind = server.client.lock("queue", json!({"ttl_ms": 60000, "wait_ms": 1}));
    let waiting_id = ws
        .send(json!({"op": "acquire", "name": "queue", "wait_ms": null, "request_id": "r-2"}))
        .await;
    server.client.until_waiters("locks", "queue", 1).await;
    assert_eq!(behind.await.status, 409);
    ws.drop_abruptly();
    let mut back = Ws::connect(server.addr).await;
    assert_eq!(back.hello(json!({"session_id": session_id})).await["ok"], true);
    let retry_id = back
        .send(json!({"op": "acquire", "name": "queue", "wait_ms": null, "request_id": "r-2"}))
        .await;
    // The first request is answered `cancelled` (taken over), the retry waits in its place.
    assert_eq!(code(&back.reply(waiting_id).await), "cancelled");
    assert_eq!(server.client.waiters("locks", "queue").await, 1, "one place, not two");
    assert_eq!(server.client.delete(blocker.header("location")).await.status, 204);
    let granted = back.reply(retry_id).await;
    assert_eq!(hold(&granted)["name"], "queue");
}

#[tokio::test]
async fn a_detached_session_whose_buffer_overflows_ends() {
    let server = Server::start(&["--ws-max-buffer-bytes", "16384"]);
    let mut ws = Ws::connect(server.addr).await;
    let hello = ws.hello(json!({"ttl_ms": 60000, "grace_ms": 60000})).await;
    let session_id = hello["session_id"].as_str().unwrap().to_string();
    let count = 200;
    for i in 0..count {
        let held = server.client.lock(&format!("flood-{i}"), json!({"ttl_ms": 300})).await;
        assert_eq!(held.status, 201);
    }
    for i in 0..count {
        ws.send(waiting(&format!("flood-{i}"), json!(null))).await;
    }
    server.client.until_waiters("locks", &format!("flood-{}", count - 1), 1).await;
    ws.drop_abruptly();
    // 200 grants (about 70 KB of replies) while away: more than the 16 KB buffer, so the
    // session ends long before its 60 s lease and grace, and its holds are released.
    until(Duration::from_secs(10), "the session ends", || async {
        !session_alive(&server, &session_id).await
    })
    .await;
    for i in [0, count - 1] {
        // No session holds stay behind (the HTTP holds run out after 300 ms).
        until(Duration::from_secs(5), "the name is free", || async {
            holders(&server, &format!("flood-{i}")).await == 0
        })
        .await;
    }
    let mut back = Ws::connect(server.addr).await;
    assert_eq!(code(&back.hello(json!({"session_id": session_id})).await), "not_found");
}

#[tokio::test]
async fn shutdown_closes_streams_as_restarting_and_exits_promptly() {
    let mut server = Server::start(&[]);
    let mut ws = Ws::connect(server.addr).await;
    ws.hello(json!({"ttl_ms": 10000})).await;
    hold(&ws.call(acquire("across-restart")).await);
    server.terminate();
    match ws.ended().await {
        Ended::Close { code, .. } => assert_eq!(code, 1012),
        other => panic!("{other:?}"),
    }
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_clean_close_has_already_freed_the_holds() {
    let server = Server::start(&[]);
    for round in 0..30 {
        let mut ws = Ws::connect(server.addr).await;
        let reply = ws.call(acquire("closing")).await;
        hold(&reply);
        ws.close().await;
        // No polling: the close handshake completes only after the session has ended.
        assert_eq!(holders(&server, "closing").await, 0, "round {round}: still held after close");
    }
}
