//! The accept loop: HTTP/1.1 connections (keep-alive), the connection limit, delivery
//! tracking per connection, and graceful shutdown (stop accepting, let in-flight requests
//! answer, then return).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::delivery::{ConnState, TrackedIo};
use crate::http::{shutdown_started, SharedState};

/// How long shutdown waits for in-flight requests before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until shutdown starts, then drains. Returns when every connection is
/// closed (or the drain timed out).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: SharedState,
    shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    // One permit per open connection; a connection task holds its permit until it ends.
    let connections = Arc::new(Semaphore::new(state.config.limits.max_connections));
    let stop = shutdown_started(shutdown);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            state.metrics.connection_refused();
            tokio::spawn(refuse(stream, state.config.limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.metrics.connection_opened();
        let conn_state = Arc::new(ConnState::default());
        let io = TokioIo::new(TrackedIo::new(stream, conn_state.clone()));
        let router = router.clone();
        let metrics_state = state.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(conn_state.clone());
            let router = router.clone();
            let state = metrics_state.clone();
            async move {
                let response = router.oneshot(request).await;
                if let Ok(response) = &response {
                    state.metrics.response(response.status().as_u16());
                }
                response
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            state.metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway");
        }
    }
}

/// Answers one request on a connection over the limit with 429 `limit_exceeded`, then closes.
async fn refuse(mut stream: TcpStream, limit: usize) {
    // Read the request head first (briefly), so the client reads our answer rather than a
    // reset caused by closing with its request unread.
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut head)).await;
    let body = format!(
        r#"{{"error":{{"code":"limit_exceeded","message":"the server has {limit} open connections, the limit"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: \
         {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
