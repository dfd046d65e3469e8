//! The Rust client crate against the real server: every primitive over both transports, the
//! lost-lock signal (admin force-release, a killed server, a closed session), drop-releases,
//! cancellation, reconnect with resume, leader hints, the blocking API and the original API.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use lockserver_client::{
    blocking, Client, DistributedLock, Fence, FencingToken, LockError, LockHandle, LockMode,
    LockProvider, LockserverClient, LostReason, Transport,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const ADMIN: &str = "client-test-admin";

fn client(server: &Server, transport: Transport) -> Client {
    Client::builder().addr(server.addr.to_string()).transport(transport).build().expect("client")
}

/// The holders the server shows for a lock name.
async fn holders(server: &Server, name: &str) -> Vec<Value> {
    let view = server.client.get(&format!("/v1/locks/{name}")).await;
    assert_eq!(view.status, 200, "{view:?}");
    view.body["holders"].as_array().cloned().unwrap_or_default()
}

/// Polls (at most 10 s) until the name has `count` holders.
async fn until_holders(server: &Server, name: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = holders(server, name).await.len();
        if now == count {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {now} holders, expected {count}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn primitives(transport: Transport) {
    let server = Server::start(&[]);
    let (a, b) = (client(&server, transport), client(&server, transport));
    // A third party: on the stream, one session acquiring a name it holds is a conflict.
    let c = client(&server, transport);

    // Exclusive: try, timed and unbounded waits.
    let held = a.lock("x").acquire(Some(Duration::ZERO)).await.expect("free lock");
    assert!(b.lock("x").try_acquire().await.expect("try").is_none());
    assert_eq!(b.lock("x").acquire(Some(Duration::ZERO)).await.unwrap_err(), LockError::Locked);
    let started = Instant::now();
    let waited = b.lock("x").acquire(Some(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(waited, LockError::Timeout(Duration::from_millis(300)));
    assert!(started.elapsed() >= Duration::from_millis(300), "timed out early");
    assert!(started.elapsed() < Duration::from_secs(5));
    let lock = b.lock("x");
    let waiter = tokio::spawn(async move { lock.acquire(None).await });
    server.client.until_waiters("locks", "x", 1).await;
    let first_token = held.token();
    held.release().await.expect("release");
    let next = waiter.await.unwrap().expect("granted after the release");
    assert!(next.token() > first_token, "tokens rise");
    assert_eq!(holders(&server, "x").await[0]["hold_id"], next.hold_id());
    assert!(b.check("x", next.token()).await.unwrap());
    assert!(!b.check("x", first_token).await.unwrap());
    next.release().await.unwrap();

    // Reader-writer.
    let r1 = a.rw_lock("rw").acquire_read(Some(Duration::ZERO)).await.expect("reader 1");
    let r2 = b.rw_lock("rw").acquire_read(Some(Duration::ZERO)).await.expect("reader 2");
    assert!(c.rw_lock("rw").try_acquire_write().await.unwrap().is_none());
    drop(r1);
    r2.release().await.unwrap();
    let w = a.rw_lock("rw").acquire_write(Some(Duration::from_secs(5))).await.expect("writer");
    // Re-entrant on one session is refused, not a deadlock.
    if transport == Transport::Stream {
        let again = a.rw_lock("rw").acquire_write(None).await.unwrap_err();
        assert_eq!(again.code(), Some(lockserver_client::proto::ErrorCode::Conflict));
    }
    assert!(b.rw_lock("rw").try_acquire_read().await.unwrap().is_none());
    w.release().await.unwrap();

    // Semaphore.
    let t1 = a.semaphore("pool", 2).acquire(Some(Duration::ZERO)).await.expect("ticket 1");
    let t2 = b.semaphore("pool", 2).acquire(Some(Duration::ZERO)).await.expect("ticket 2");
    assert!(c.semaphore("pool", 2).try_acquire().await.unwrap().is_none());
    assert!(matches!(
        c.semaphore("pool", 2).acquire_many(3, None).await,
        Err(LockError::InvalidArgument(_))
    ));
    t1.release().await.unwrap();
    t2.release().await.unwrap();

    // Bad names fail before any request.
    assert!(matches!(a.lock("").acquire(None).await, Err(LockError::InvalidName(_))));
    assert!(matches!(a.lock("a\u{7}b").try_acquire().await, Err(LockError::InvalidName(_))));
    // Names with reserved bytes are one path segment.
    let odd = a.lock("a/b %?#é").try_acquire().await.unwrap().expect("odd name");
    odd.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_transport_primitives() {
    primitives(Transport::Stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_transport_primitives() {
    primitives(Transport::Http).await;
}

async fn drop_releases(transport: Transport) {
    let server = Server::start(&[]);
    let (a, b) = (client(&server, transport), client(&server, transport));
    let handle = a.lock("d").acquire(None).await.unwrap();
    let waiter = {
        let lock = b.lock("d");
        tokio::spawn(async move { lock.acquire(Some(Duration::from_secs(10))).await })
    };
    server.client.until_waiters("locks", "d", 1).await;
    drop(handle); // Drop never blocks; the release goes out in the background.
    let next = waiter.await.unwrap().expect("the drop released the lock");
    assert_eq!(holders(&server, "d").await.len(), 1);
    drop(next);
    until_holders(&server, "d", 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_handle_releases_it_stream() {
    drop_releases(Transport::Stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_handle_releases_it_http() {
    drop_releases(Transport::Http).await;
}

async fn cancelled_acquire(transport: Transport) {
    let server = Server::start(&[]);
    let (a, b) = (client(&server, transport), client(&server, transport));
    let held = a.lock("c").acquire(None).await.unwrap();
    let lock = b.lock("c");
    let waiting = tokio::spawn(async move { lock.acquire(None).await });
    server.client.until_waiters("locks", "c", 1).await;
    waiting.abort(); // dropping the future withdraws the waiter
    server.client.until_waiters("locks", "c", 0).await;
    held.release().await.unwrap();
    // No ghost holder took it: the next try succeeds at once.
    let again = a.lock("c").try_acquire().await.unwrap().expect("free after the cancel");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_acquire_withdraws_the_waiter_stream() {
    cancelled_acquire(Transport::Stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_acquire_withdraws_the_waiter_http() {
    cancelled_acquire(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_force_release_fires_the_lost_signal() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let admin = server.client.with_secret(ADMIN);
    for transport in [Transport::Stream, Transport::Http] {
        let c = Client::builder()
            .addr(server.addr.to_string())
            .transport(transport)
            .hold_ttl(Duration::from_millis(600))
            .build()
            .unwrap();
        let handle = c.lock("victim").acquire(None).await.unwrap();
        let mut lost = handle.lost();
        assert!(!lost.is_lost());
        let gone = admin.delete(&format!("/v1/admin/holds/{}", handle.hold_id())).await;
        assert_eq!(gone.status, 204, "{gone:?}");
        let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait())
            .await
            .expect("the lost signal fires");
        let expected = match transport {
            Transport::Stream => LostReason::Admin,
            // HTTP learns it at the next renewal, which only sees that the hold is gone.
            Transport::Http => LostReason::Expired,
        };
        assert_eq!(reason, Some(expected));
        assert!(handle.is_lost());
        assert_eq!(handle.release().await.unwrap_err(), LockError::Lost(expected));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_fires_the_lost_signal_at_the_local_deadline() {
    let server = Server::start(&[]);
    let ttl = Duration::from_millis(1000);
    // A margin keeps the check honest on a loaded machine: without one the signal's only slack
    // before the server's release is 1 % of the ttl plus a round trip.
    let c = Client::builder()
        .addr(server.addr.to_string())
        .session_ttl(ttl)
        .lease_margin(Duration::from_millis(200))
        .build()
        .unwrap();
    let handle = c.lock("k").acquire(None).await.unwrap();
    let mut lost = handle.lost();
    let killed_at = Instant::now();
    let (_dir, _data) = server.kill_9();
    let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait())
        .await
        .expect("the local deadline fires");
    assert_eq!(reason, Some(LostReason::LeaseDeadline));
    // Before the server could have released it: the lease counts from the last ping's send,
    // which was before the kill.
    assert!(killed_at.elapsed() < ttl, "fired {:?} after the kill", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn close_ends_the_session_and_its_holds() {
    let server = Server::start(&[]);
    let c = client(&server, Transport::Stream);
    let handle = c.lock("s").acquire(None).await.unwrap();
    let mut lost = handle.lost();
    c.close().await;
    assert_eq!(lost.wait().await, Some(LostReason::SessionEnded));
    until_holders(&server, "s", 0).await;
    // The client opens a new session when used again.
    let again = c.lock("s").try_acquire().await.unwrap().expect("a new session");
    again.release().await.unwrap();
}

/// A TCP proxy whose connections can be cut, to break a client's connection mid-session.
struct Proxy {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refusing: Arc<AtomicBool>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let accept = {
            let connections = connections.clone();
            let refusing = refusing.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else { return };
                    if refusing.load(Ordering::SeqCst) {
                        let _ = inbound.shutdown().await;
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        Proxy { addr, connections, refusing, _accept: accept }
    }

    /// Drops every open connection (both sides see a reset, no close frame).
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_connection_resumes_the_session() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.addr).await;
    let c = Client::builder()
        .addr(proxy.addr.to_string())
        .session_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let direct = client(&server, Transport::Stream);
    let held = c.lock("r").acquire(None).await.unwrap();
    let blocker = direct.lock("w").acquire(None).await.unwrap();
    // A waiter of the proxied client, pending across the break.
    let lock = c.lock("w");
    let waiter = tokio::spawn(async move { lock.acquire(Some(Duration::from_secs(20))).await });
    server.client.until_waiters("locks", "w", 1).await;

    proxy.refusing.store(true, Ordering::SeqCst);
    proxy.cut();
    // While it is away, the waiter's turn comes.
    blocker.release().await.unwrap();
    until_holders(&server, "w", 1).await;
    proxy.refusing.store(false, Ordering::SeqCst);

    let granted = waiter.await.unwrap().expect("the grant made while away is delivered");
    let shown = holders(&server, "w").await;
    assert_eq!(shown.len(), 1, "one hold, not two: {shown:?}");
    assert_eq!(shown[0]["hold_id"], granted.hold_id());
    // The hold from before the break survived it: same id, never lost.
    assert!(!held.is_lost());
    assert_eq!(holders(&server, "r").await[0]["hold_id"], held.hold_id());
    held.release().await.expect("released over the resumed session");
    granted.release().await.unwrap();
    until_holders(&server, "r", 0).await;
    until_holders(&server, "w", 0).await;
}

/// A "follower" that answers everything with `not_leader` and the real server as the leader.
async fn fake_follower(leader: String) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let leader = leader.clone();
            tokio::spawn(async move {
                let _ = common::read_raw_response(&mut socket).await; // the request head
                let body = serde_json::json!({"error": {"code": "not_leader",
                    "message": "this node is a follower", "leader": leader}})
                .to_string();
                let response = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_hints_are_followed() {
    let server = Server::start(&[]);
    for transport in [Transport::Stream, Transport::Http] {
        let follower = fake_follower(server.base.clone()).await;
        let c = Client::builder().addr(follower.to_string()).transport(transport).build().unwrap();
        let handle = c.lock("led").acquire(None).await.expect("served by the leader");
        assert_eq!(holders(&server, "led").await.len(), 1);
        handle.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_unreachable_servers_are_told_apart() {
    let server = Server::start(&["--secret", "s3cret"]);
    for transport in [Transport::Stream, Transport::Http] {
        let wrong = Client::builder()
            .addr(server.addr.to_string())
            .secret("nope")
            .transport(transport)
            .build()
            .unwrap();
        assert!(matches!(wrong.lock("a").try_acquire().await, Err(LockError::Auth(_))));
        let right = Client::builder()
            .addr(server.addr.to_string())
            .secret("s3cret")
            .transport(transport)
            .build()
            .unwrap();
        right.lock("a").try_acquire().await.unwrap().expect("free").release().await.unwrap();
        // Nothing listens on port 9 of loopback: the outcome is a connection error.
        let nowhere = Client::builder()
            .addr("127.0.0.1:9")
            .transport(transport)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let error = nowhere.lock("a").acquire(None).await.unwrap_err();
        assert!(matches!(error, LockError::Connection(_)), "{error:?}");
        assert!(error.is_outcome_unknown());
    }
}

/// Code written against the traits runs on this backend.
async fn exclusive_via_traits<P: LockProvider>(provider: &P, name: &str) -> Option<FencingToken> {
    let lock = provider.create_lock(name);
    let handle = lock.acquire(Some(Duration::from_secs(5))).await.expect("acquire");
    let token = handle.token();
    handle.release().await.expect("release");
    token
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trait_api_and_the_fence() {
    let server = Server::start(&[]);
    let c = client(&server, Transport::Stream);
    let first = exclusive_via_traits(&c, "t").await.expect("a token");
    let second = exclusive_via_traits(&c, "t").await.expect("a token");
    let fence = Fence::new();
    fence.admit(second).unwrap();
    assert!(fence.admit(first).is_err(), "an older holder is refused");
}

#[test]
fn the_blocking_api() {
    let server = Server::start(&[]);
    let a = blocking::Client::builder().addr(server.addr.to_string()).build().unwrap();
    let b = blocking::Client::builder().addr(server.addr.to_string()).build().unwrap();
    let held = a.lock("b").acquire(Some(Duration::from_secs(5))).unwrap();
    assert!(b.lock("b").try_acquire().unwrap().is_none());
    let started = Instant::now();
    assert!(matches!(
        b.lock("b").acquire(Some(Duration::from_millis(200))),
        Err(LockError::Timeout(_))
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(b.check("b", held.token()).unwrap());
    assert_eq!(held.wait_lost(Some(Duration::from_millis(50))), None);
    drop(held); // releases in the background
    let next = b.lock("b").acquire(Some(Duration::from_secs(5))).unwrap();
    let reader = a.rw_lock("brw").acquire_read(None).unwrap();
    let ticket = a.semaphore("bsem", 1).acquire(None).unwrap();
    assert!(b.semaphore("bsem", 1).try_acquire().unwrap().is_none());
    next.release().unwrap();
    reader.release().unwrap();
    ticket.release().unwrap();
    // Dropping the last client closes its session: its holds end at once.
    let kept = b.lock("kept").acquire(None).unwrap();
    std::mem::forget(kept.lost()); // (a signal clone outliving the client is fine)
    drop(kept);
    drop(b);
    let c = blocking::Client::builder().addr(server.addr.to_string()).build().unwrap();
    c.lock("kept").acquire(Some(Duration::from_secs(5))).expect("freed").release().unwrap();
}

#[test]
fn the_original_api_waits_on_the_server() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let first = LockserverClient::new(addr.clone(), "w1", "");
    let second = LockserverClient::new(addr.clone(), "w2", "");
    first.acquire("res").expect("free");
    let busy = second.acquire_with_mode("res", LockMode::NonBlocking).unwrap_err();
    assert_eq!(busy.kind(), std::io::ErrorKind::WouldBlock);
    let value = lockserver_client::lock_scope!(&second, "res", non_blocking, { 1 });
    assert!(value.is_err(), "non_blocking lock_scope! returns the error, no panic");
    // A blocking acquire waits on the server and is granted when the holder releases.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        first.release("res").expect("release");
    });
    let started = Instant::now();
    let value = lockserver_client::lock_scope!(&second, "res", { 40 + 2 }).expect("waited");
    assert_eq!(value, 42);
    assert!(started.elapsed() >= Duration::from_millis(150));
    releaser.join().unwrap();
    // The guard released it: another owner gets it at once, with an expiry.
    let third = LockserverClient::new(addr, "w3", "");
    third.acquire_with_mode_and_expire("res", LockMode::NonBlocking, 1).expect("released");
    third.release("res").unwrap();
    assert!(third.release("res").is_err(), "a second release is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_with_its_own_ttl_is_lost_when_it_expires_never_early() {
    let server = Server::start(&[]);
    let c = client(&server, Transport::Stream);
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    let handle = c.lock("short").with_ttl(ttl).acquire(None).await.unwrap();
    let mut lost = handle.lost();
    assert_eq!(lost.wait().await, Some(LostReason::Expired));
    assert!(started.elapsed() >= ttl, "expired early: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5));
    until_holders(&server, "short", 0).await;
    assert_eq!(handle.release().await.unwrap_err(), LockError::Lost(LostReason::Expired));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_cannot_stall_a_bounded_wait() {
    let server = Server::start(&[]);
    let holder = client(&server, Transport::Stream);
    let held = holder.lock("frozen").acquire(None).await.unwrap();
    let c = Client::builder()
        .addr(server.addr.to_string())
        .connect_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    c.lock("warm-up").try_acquire().await.unwrap().expect("free").release().await.unwrap();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = Instant::now();
    let outcome = c.lock("frozen").acquire(Some(Duration::from_millis(300))).await;
    let took = started.elapsed();
    signal("-CONT");
    let error = outcome.unwrap_err();
    assert!(error.is_outcome_unknown(), "{error:?}");
    assert!(took >= Duration::from_millis(300), "gave up early: {took:?}");
    assert!(took < Duration::from_secs(5), "stalled for {took:?}");
    // Once the server answers again, the withdrawn request leaves no waiter behind.
    server.client.until_waiters("locks", "frozen", 0).await;
    held.release().await.unwrap();
    until_holders(&server, "frozen", 0).await;
}
