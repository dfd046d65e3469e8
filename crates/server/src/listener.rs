//! The accept loop: HTTP/1.1 connections (keep-alive), the connection limit, delivery
//! tracking per connection, and graceful shutdown (stop accepting, let in-flight requests
//! answer, then return).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

use crate::delivery::{ConnLease, ConnState, TrackedIo};
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
    workers: Option<Spawner>,
) {
    // Every connection (and every WebSocket it upgrades to) holds a clone of `alive`; the
    // drain below ends when the last one is dropped.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // One permit per open connection; a connection task holds its permit until it ends.
    let connections = Arc::new(Semaphore::new(state.config.limits.max_connections));
    let stop = shutdown_started(shutdown.clone());
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
        let lease = ConnLease::new(permit, alive.clone(), state.clone());
        let connection =
            serve_connection(stream, peer, router.clone(), state.clone(), shutdown.clone(), lease);
        match &workers {
            Some(workers) => workers.spawn(connection),
            None => drop(tokio::spawn(connection)),
        }
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for in-flight requests");
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway");
        }
    }
}

/// One connection: hyper over a [`TrackedIo`], the router as its service. The connection's
/// lease (its permit under the connection limit) lives as long as the socket, also after an
/// upgrade to WebSocket.
fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    state: SharedState,
    shutdown: watch::Receiver<bool>,
    lease: ConnLease,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // Moved between runtimes as a std socket: a tokio socket belongs to the runtime whose
    // reactor registered it, and the connection runs on a worker's runtime.
    let stream = stream.into_std();
    async move {
        let stream = match stream.and_then(TcpStream::from_std) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "cannot hand the connection to a worker");
                return;
            }
        };
        let conn_state = Arc::new(ConnState::with_lease(lease));
        let io = TokioIo::new(TrackedIo::new(stream, conn_state.clone()));
        let service_state = state.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(conn_state.clone());
            let router = router.clone();
            let state = service_state.clone();
            async move {
                let response = router.oneshot(request).await;
                if let Ok(response) = &response {
                    state.metrics.response(response.status().as_u16());
                }
                response
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown_started(shutdown) => {
                // Finish the request in flight, then close; idle keep-alive connections close now.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
    }
}

pub(crate) fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}

/// Connection workers: one single-threaded runtime per core, each on its own OS thread. A
/// connection lives on one worker for its whole life, as in actix: no work stealing and no
/// cross-core wake-ups on the request path. The accept loops (HTTP and locker) hand
/// connections out round-robin through a [`Spawner`].
pub(crate) struct Workers {
    spawner: Spawner,
    /// Dropping a sender (in `stop`) ends its worker's `block_on`; the thread then drops its
    /// runtime outside any async context.
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut workers = Workers {
            spawner: Spawner { handles: Arc::from([]), next: Arc::default() },
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("lockserver-http-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            workers.threads.push(thread);
        }
        workers.spawner.handles = Arc::from(handles);
        Ok(workers)
    }

    pub(crate) fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Ends every worker (their connections have drained by now) and waits for the threads.
    pub(crate) async fn stop(self) {
        drop(self.stops);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Hands connections to the workers in turn. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Spawner {
    handles: Arc<[tokio::runtime::Handle]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Spawner {
    pub(crate) fn spawn(&self, connection: impl std::future::Future<Output = ()> + Send + 'static) {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handles[turn % self.handles.len()].spawn(connection);
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
