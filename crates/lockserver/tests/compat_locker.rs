//! The locker binary TCP protocol (COMPAT.md §3) with a raw client: replies, FIFO waits, hold
//! timeouts, unlock by sequence, disconnect release, split and coalesced frames, and the
//! "we do better" lines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{field, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOCK: u8 = 1;
const UNLOCK: u8 = 0;

fn frame(seq: u32, wait: u32, timeout: u32, action: u8, name: &str) -> Vec<u8> {
    let mut bytes = vec![name.len() as u8];
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&wait.to_le_bytes());
    bytes.extend_from_slice(&timeout.to_le_bytes());
    bytes.push(action);
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

fn locker_addr(server: &Server) -> SocketAddr {
    field(&server.startup_line, "locker").parse().expect("a locker address")
}

struct Conn(TcpStream);

impl Conn {
    async fn open(server: &Server) -> Conn {
        Conn(TcpStream::connect(locker_addr(server)).await.unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    async fn lock(&mut self, seq: u32, wait: u32, timeout: u32, name: &str) {
        self.send(&frame(seq, wait, timeout, LOCK, name)).await;
    }

    async fn unlock(&mut self, seq: u32) {
        self.send(&frame(seq, 0, 0, UNLOCK, "")).await;
    }

    /// The next reply `(seq, action, result)`.
    async fn reply(&mut self) -> (u32, u8, u8) {
        let mut bytes = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), self.0.read_exact(&mut bytes))
            .await
            .expect("a reply within 10 s")
            .expect("a whole reply");
        (u32::from_le_bytes(bytes[..4].try_into().unwrap()), bytes[4], bytes[5])
    }

    /// No reply within `within`.
    async fn silent(&mut self, within: Duration) {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(within, self.0.read(&mut byte)).await;
        assert!(read.is_err(), "unexpected bytes: {read:?}");
    }
}

#[tokio::test]
async fn lock_unlock_and_busy_answers() {
    let server = Server::start(&[]);
    let mut a = Conn::open(&server).await;
    let mut b = Conn::open(&server).await;
    a.lock(1, 0, 60_000, "db").await;
    assert_eq!(a.reply().await, (1, LOCK, 1));
    b.lock(1, 0, 60_000, "db").await;
    assert_eq!(b.reply().await, (1, LOCK, 0), "busy, no wait: refused at once");
    a.lock(2, 0, 60_000, "db").await;
    assert_eq!(a.reply().await, (2, LOCK, 0), "not re-entrant");
    b.unlock(1).await;
    assert_eq!(b.reply().await, (1, UNLOCK, 0), "another connection cannot unlock it");
    a.unlock(1).await;
    assert_eq!(a.reply().await, (1, UNLOCK, 1));
    a.unlock(1).await;
    assert_eq!(a.reply().await, (1, UNLOCK, 0));
    // One lock model: the native view sees a locker hold while it lives.
    b.lock(3, 0, 60_000, "db").await;
    assert_eq!(b.reply().await, (3, LOCK, 1));
    let view = server.client.get("/v1/locks/db").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 1);
    // Bad names and unknown actions.
    a.lock(4, 0, 1000, "").await;
    assert_eq!(a.reply().await, (4, LOCK, 0));
    a.send(&frame(5, 0, 0, 9, "db")).await;
    a.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn waiters_are_granted_in_fifo_order_and_waits_run_out() {
    let server = Server::start(&[]);
    let mut holder = Conn::open(&server).await;
    holder.lock(1, 0, 60_000, "q").await;
    assert_eq!(holder.reply().await, (1, LOCK, 1));
    let mut waiters = Vec::new();
    for i in 0..3u32 {
        let mut conn = Conn::open(&server).await;
        conn.lock(10 + i, 20_000, 60_000, "q").await;
        server.client.until_waiters("locks", "q", u64::from(i) + 1).await;
        waiters.push(conn);
    }
    holder.unlock(1).await;
    assert_eq!(holder.reply().await, (1, UNLOCK, 1));
    for (i, conn) in waiters.iter_mut().enumerate() {
        assert_eq!(conn.reply().await, (10 + i as u32, LOCK, 1), "waiter {i} in turn");
        conn.unlock(10 + i as u32).await;
        assert_eq!(conn.reply().await.2, 1);
    }
    // A wait that runs out, never early.
    holder.lock(2, 0, 60_000, "q").await;
    assert_eq!(holder.reply().await, (2, LOCK, 1));
    let mut late = Conn::open(&server).await;
    let started = Instant::now();
    late.lock(7, 300, 60_000, "q").await;
    assert_eq!(late.reply().await, (7, LOCK, 0));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_millis(1300), "{waited:?}");
}

#[tokio::test]
async fn the_hold_timeout_releases_silently_and_hands_over() {
    let server = Server::start(&[]);
    let mut holder = Conn::open(&server).await;
    let started = Instant::now();
    holder.lock(1, 0, 300, "t").await;
    assert_eq!(holder.reply().await, (1, LOCK, 1));
    let mut next = Conn::open(&server).await;
    next.lock(2, 10_000, 60_000, "t").await;
    assert_eq!(next.reply().await, (2, LOCK, 1));
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(300), "never early: {after:?}");
    holder.silent(Duration::from_millis(100)).await; // the timeout says nothing
    holder.unlock(1).await;
    assert_eq!(holder.reply().await, (1, UNLOCK, 0), "already released");
}

#[tokio::test]
async fn a_disconnect_releases_locks_and_removes_waiters() {
    let server = Server::start(&[]);
    let mut a = Conn::open(&server).await;
    a.lock(1, 0, 60_000, "d1").await;
    assert_eq!(a.reply().await.2, 1);
    let mut b = Conn::open(&server).await;
    b.lock(1, 0, 60_000, "d2").await;
    assert_eq!(b.reply().await.2, 1);
    a.lock(2, 30_000, 60_000, "d2").await;
    server.client.until_waiters("locks", "d2", 1).await;
    drop(a);
    server.client.until_waiters("locks", "d2", 0).await;
    let mut c = Conn::open(&server).await;
    c.lock(1, 5_000, 60_000, "d1").await;
    assert_eq!(c.reply().await, (1, LOCK, 1), "the dropped connection's lock is free");
}

#[tokio::test]
async fn frames_may_be_split_or_coalesced_and_replies_come_out_of_order() {
    let server = Server::start(&[]);
    let mut blocker = Conn::open(&server).await;
    blocker.lock(1, 0, 60_000, "slow").await;
    assert_eq!(blocker.reply().await.2, 1);
    let mut conn = Conn::open(&server).await;
    // Two requests in one write: the first waits, the second is answered first.
    let mut both = frame(1, 10_000, 60_000, LOCK, "slow");
    both.extend(frame(2, 0, 60_000, LOCK, "fast"));
    conn.send(&both).await;
    assert_eq!(conn.reply().await, (2, LOCK, 1));
    // One request a byte at a time.
    for byte in frame(3, 0, 60_000, LOCK, "bytewise") {
        conn.send(&[byte]).await;
    }
    assert_eq!(conn.reply().await, (3, LOCK, 1));
    blocker.unlock(1).await;
    assert_eq!(blocker.reply().await.2, 1);
    assert_eq!(conn.reply().await, (1, LOCK, 1));
}

#[tokio::test]
async fn the_originals_bugs_are_fixed() {
    let server = Server::start(&[]);
    let mut holder = Conn::open(&server).await;
    // Values ≥ 2^31 ms are literal (the original clamps them to 1 ms).
    holder.lock(1, 0, u32::MAX, "big").await;
    assert_eq!(holder.reply().await, (1, LOCK, 1));
    let view = server.client.get("/v1/locks/big").await;
    let expires = view.body["holders"][0]["expires_in_ms"].as_u64().unwrap();
    assert!(expires > 4_000_000_000, "{expires}");
    // A sequence still in use is refused, not orphaned.
    holder.lock(1, 0, 1_000, "other").await;
    assert_eq!(holder.reply().await, (1, LOCK, 0));
    // Unlocking a waiting request answers both.
    let mut waiter = Conn::open(&server).await;
    waiter.lock(5, 60_000, 1_000, "big").await;
    server.client.until_waiters("locks", "big", 1).await;
    waiter.unlock(5).await;
    let mut replies = [waiter.reply().await, waiter.reply().await];
    replies.sort();
    assert_eq!(replies, [(5, UNLOCK, 0), (5, LOCK, 0)]);
    assert_eq!(server.client.waiters("locks", "big").await, 0);
}

#[tokio::test]
async fn the_listener_can_be_turned_off() {
    let server = Server::start(&["--no-locker"]);
    assert_eq!(field(&server.startup_line, "locker"), "off");
    let other = Server::start(&["--disable", "locker"]);
    assert_eq!(field(&other.startup_line, "locker"), "off");
}
