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
        // Drop must not block: hand the release to the runtime. Without a runtime (process
        // teardown) the hold's TTL or session ends it, as after a crash.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.node.clone();
        let command = Command::Release { hold_id: self.hold_id, reason: self.reason };
        tracing::debug!(hold_id = %self.hold_id, reason = ?self.reason, "releasing an undelivered request");
        runtime.spawn(async move {
            // Not found is fine: the wait ended or the node released it first.
            let _ = node.propose(command).await;
        });
    }
}

/// Per-connection delivery state: guards whose bytes hyper has taken but not yet flushed.
///
/// Owned by the connection's [`TrackedIo`] and shared (via a request extension) with the
/// response bodies of that connection. A std mutex: held only to push or take the list.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    pending: Mutex<Vec<HoldGuard>>,
}

impl ConnState {
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
    pub(crate) fn new(data: Bytes, guard: HoldGuard, conn: Option<Arc<ConnState>>) -> DeliveryBody {
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
