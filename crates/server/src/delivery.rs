//! Making sure a grant is never left behind by a client that went away.
//!
//! An acquire owns a [`HoldGuard`] from before it is proposed until its answer has been
//! written to the socket. Dropping an armed guard releases the hold or withdraws the waiter:
//!
//! - the client disconnects while the request waits: hyper drops the handler future, the
//!   guard drops with it and the waiter is withdrawn (`cancelled`);
//! - the grant arrives but the 201 cannot be written: the guard travels inside the response
//!   body ([`DeliveryBody`]); when hyper takes the body's bytes the guard moves to the
//!   connection ([`ConnState`]), and only the next successful flush of the socket disarms it.
//!   If the connection fails or closes first, the guard drops armed and the hold is released
//!   (reason `undeliverable`).
//!
//! "Written" means accepted by the kernel's socket buffer: a peer that vanishes after that
//! keeps its hold until the TTL or its session ends, as with any client crash.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use lockserver_core::{Command, HoldId, ReleaseReason};
use lockserver_node::Node;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Releases a hold (or withdraws a waiter) when dropped while armed.
#[derive(Debug)]
pub(crate) struct HoldGuard {
    node: Node,
    hold_id: HoldId,
    reason: ReleaseReason,
    armed: bool,
}

impl HoldGuard {
    /// Armed for a request that may be waiting: dropping withdraws it as the client's choice.
    pub(crate) fn waiting(node: Node, hold_id: HoldId) -> HoldGuard {
        HoldGuard { node, hold_id, reason: ReleaseReason::Client, armed: true }
    }

    /// The request turned out to concern another id (a `request_id` repeat rejoined it).
    pub(crate) fn retarget(&mut self, hold_id: HoldId) {
        self.hold_id = hold_id;
    }

    /// The hold is granted; from now on a drop means its answer could not be delivered.
    pub(crate) fn granted(&mut self) {
        self.reason = ReleaseReason::Undeliverable;
    }

    /// Nothing left to clean up (the answer was written, or the request ended without a hold).
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::debug!(hold_id = %self.hold_id, reason = ?self.reason, "releasing an undelivered request");
        release_later(&self.node, self.hold_id, self.reason);
    }
}

/// Releases a hold (or withdraws a waiter) without waiting for the answer: for callers that
/// must not block (a `Drop`) or have no one to tell. Without a runtime (process teardown) the
/// hold's TTL or session ends it, as after a crash. Not found is fine: it ended meanwhile.
pub(crate) fn release_later(node: &Node, hold_id: HoldId, reason: ReleaseReason) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let node = node.clone();
    runtime.spawn(async move {
        let _ = node.propose(Command::Release { hold_id, reason }).await;
    });
}

/// What an open connection holds while its socket lives: its permit under the connection
/// limit and a token the shutdown drain waits for. Dropped with the socket, including a socket
/// that was upgraded to a WebSocket.
#[derive(Debug)]
pub(crate) struct ConnLease {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _alive: tokio::sync::mpsc::Sender<()>,
    state: crate::http::SharedState,
}

impl ConnLease {
    pub(crate) fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        alive: tokio::sync::mpsc::Sender<()>,
        state: crate::http::SharedState,
    ) -> ConnLease {
        ConnLease { _permit: permit, _alive: alive, state }
    }
}

impl Drop for ConnLease {
    fn drop(&mut self) {
        self.state.metrics.connection_closed();
    }
}

/// Per-connection delivery state: guards whose bytes hyper has taken but not yet flushed.
///
/// Owned by the connection's [`TrackedIo`] and shared (via a request extension) with the
/// response bodies of that connection. A std mutex: held only to push or take the list.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    pending: Mutex<Vec<HoldGuard>>,
    _lease: Option<ConnLease>,
}

impl ConnState {
    pub(crate) fn with_lease(lease: ConnLease) -> ConnState {
        ConnState { pending: Mutex::default(), _lease: Some(lease) }
    }

    fn hand_over(&self, guard: HoldGuard) {
        self.lock().push(guard);
    }

    /// Everything handed over so far reached the socket.
    fn flushed(&self) {
        let delivered = std::mem::take(&mut *self.lock());
        for guard in delivered {
            guard.disarm();
        }
    }

    /// The connection failed or closed: whatever was not flushed is released.
    fn failed(&self) {
        let undelivered = std::mem::take(&mut *self.lock());
        drop(undelivered);
    }

    fn has_pending(&self) -> bool {
        !self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HoldGuard>> {
        self.pending.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A socket that tells its [`ConnState`] when writes reached the kernel or failed.
#[derive(Debug)]
pub(crate) struct TrackedIo<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> TrackedIo<S> {
    pub(crate) fn new(inner: S, state: Arc<ConnState>) -> TrackedIo<S> {
        TrackedIo { inner, state }
    }
}

impl<S> Drop for TrackedIo<S> {
    fn drop(&mut self) {
        self.state.failed();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &result {
            self.state.failed();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(_)) = &result {
            self.state.failed();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper calls this only after its write buffer is empty: every byte it took from a
        // body before this call is now in the kernel.
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        match &result {
            Poll::Ready(Ok(())) if self.state.has_pending() => self.state.flushed(),
            Poll::Ready(Err(_)) => self.state.failed(),
            _ => {}
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A one-chunk response body carrying the guard of the hold it announces.
#[derive(Debug)]
pub(crate) struct DeliveryBody {
    data: Option<Bytes>,
    guard: Option<HoldGuard>,
    conn: Option<Arc<ConnState>>,
}

impl DeliveryBody {
    /// `conn` is absent when the request did not come through our listener (tests calling
    /// the router directly); the guard is then disarmed once hyper takes the bytes.
    /// `data` must not be empty: hyper never polls an empty body, so its guard would drop
    /// armed and release the hold.
    pub(crate) fn new(data: Bytes, guard: HoldGuard, conn: Option<Arc<ConnState>>) -> DeliveryBody {
        debug_assert!(!data.is_empty(), "an empty delivery body is never polled");
        DeliveryBody { data: Some(data), guard: Some(guard), conn }
    }
}

impl Body for DeliveryBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(data) = self.data.take() else {
            return Poll::Ready(None);
        };
        if let Some(guard) = self.guard.take() {
            match &self.conn {
                Some(conn) => conn.hand_over(guard),
                None => guard.disarm(),
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use lockserver_core::{Acquire, Holder, Mode, Origin, Response, Via, Wait, Want};
    use lockserver_node::NodeConfig;
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn node_with_hold(dir: &std::path::Path) -> (Node, HoldId) {
        let mut config = NodeConfig::new(dir);
        config.in_memory = true;
        let node = Node::open(config).await.unwrap();
        let hold_id = HoldId::from_u128(rand::random());
        let acquire = Command::Acquire(Acquire {
            hold_id,
            name: lockserver_core::LockName::new("db").unwrap(),
            want: Want::Lock(Mode::Exclusive),
            owner: "".into(),
            holder: Holder::Anonymous,
            wait: Wait::Try,
            ttl_ms: None,
            lock_delay_ms: 0,
            request_id: None,
            origin: Origin { boot: node.boot(), via: Via::Request(node.next_local_id()) },
        });
        let granted = node.propose(acquire).await.unwrap().unwrap();
        assert!(matches!(granted, Response::Granted { .. }));
        (node, hold_id)
    }

    async fn held(node: &Node, hold_id: HoldId) -> bool {
        node.read(move |table, now| table.hold(hold_id, now).is_some()).await.unwrap()
    }

    /// Waits (bounded) for the spawned release to run.
    async fn until_released(node: &Node, hold_id: HoldId) {
        for _ in 0..1000 {
            if !held(node, hold_id).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the hold was never released");
    }

    fn granted_guard(node: &Node, hold_id: HoldId) -> HoldGuard {
        let mut guard = HoldGuard::waiting(node.clone(), hold_id);
        guard.granted();
        guard
    }

    #[tokio::test]
    async fn a_body_dropped_before_it_was_sent_releases_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (node, hold_id) = node_with_hold(dir.path()).await;
        let conn = Arc::new(ConnState::default());
        let body =
            DeliveryBody::new(Bytes::from_static(b"{}"), granted_guard(&node, hold_id), Some(conn));
        drop(body);
        until_released(&node, hold_id).await;
    }

    #[tokio::test]
    async fn bytes_taken_but_never_flushed_release_the_hold_when_the_connection_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (node, hold_id) = node_with_hold(dir.path()).await;
        let conn = Arc::new(ConnState::default());
        let (socket, _peer) = tokio::io::duplex(64);
        let io = TrackedIo::new(socket, conn.clone());
        let mut body =
            DeliveryBody::new(Bytes::from_static(b"{}"), granted_guard(&node, hold_id), Some(conn));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"{}"));
        drop(body);
        assert!(held(&node, hold_id).await, "taken is not yet written");
        drop(io);
        until_released(&node, hold_id).await;
    }

    #[tokio::test]
    async fn a_flushed_answer_keeps_the_hold_even_after_the_connection_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (node, hold_id) = node_with_hold(dir.path()).await;
        let conn = Arc::new(ConnState::default());
        let (socket, _peer) = tokio::io::duplex(64);
        let mut io = TrackedIo::new(socket, conn.clone());
        let mut body =
            DeliveryBody::new(Bytes::from_static(b"{}"), granted_guard(&node, hold_id), Some(conn));
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        io.write_all(&data).await.unwrap();
        io.flush().await.unwrap();
        drop(io);
        drop(body);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(held(&node, hold_id).await, "a delivered grant is never released");
    }

    #[tokio::test]
    async fn a_disarmed_guard_releases_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (node, hold_id) = node_with_hold(dir.path()).await;
        granted_guard(&node, hold_id).disarm();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(held(&node, hold_id).await);
    }
}
