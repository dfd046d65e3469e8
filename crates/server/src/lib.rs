//! The Lockserver server: the native HTTP API over a node, with configuration, authentication,
//! limits, logs and graceful shutdown. The `lockserver` binary only parses its configuration,
//! sets up logging and calls [`run`]; tests can call the same.
//!
//! # Layout
//! - [`config`]: options and their layers (flags > environment > `.env` > TOML > defaults).
//! - `compat`: the protocols of older lock servers (COMPAT.md).
//! - [`auth`]: credentials → `Principal {prefix, rights}`, constant-time comparison.
//! - [`error`]: `ApiError`, the one place request failures become HTTP statuses and JSON.
//! - [`http`]: the router; one file per route group (locks, sessions, admin, health).
//! - [`delivery`]: guards that withdraw a waiter whose client left and release a grant whose
//!   201 could not be written.
//! - [`listener`]: the accept loop, the connection limit, graceful shutdown.
//! - [`metrics`]: counters for `/metrics`.
//! - `ws`: the streaming session (`GET /v1/session`, WebSocket).
//! - this file: [`Server`] (bind, open the node, announce, serve) and the start-up line.

pub mod auth;
mod compat;
pub mod config;
mod delivery;
pub mod error;
pub mod http;
mod listener;
pub mod metrics;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockserver_core::Limits;
use lockserver_node::{Node, NodeConfig, NodeError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, ConfigError};

/// Why the server could not start or stopped abnormally. Shown to the operator as is.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the node: {0}")]
    Node(#[from] NodeError),
    #[error("cannot write the ready file {path}: {source}")]
    ReadyFile { path: PathBuf, source: std::io::Error },
}

/// A bound, not yet serving server.
#[derive(Debug)]
pub struct Server {
    config: Config,
    listener: TcpListener,
    http_addr: SocketAddr,
    /// The locker protocol's listener, unless it is disabled.
    locker: Option<(TcpListener, SocketAddr)>,
}

impl Server {
    /// Validates the configuration and binds the HTTP listener (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let addr = SocketAddr::new(config.bind, config.port);
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        let locker = if config.serves("locker") {
            let addr = SocketAddr::new(config.locker_bind, config.locker_port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound =
                listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
            Some((listener, bound))
        } else {
            None
        };
        Ok(Server { config, listener, http_addr, locker })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Opens the node, prints the start-up line, writes the ready file, and serves until
    /// `shutdown` resolves; then stops accepting, lets in-flight requests answer and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server { config, listener, http_addr, locker } = self;
        let locker_addr = locker.as_ref().map(|(_, addr)| *addr);
        if !config.in_memory {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        }
        let node = Node::open(node_config(&config)).await?;

        // The one shutdown flag: set here when `shutdown` resolves; watched by the accept loop,
        // waiting long polls and `/readyz`.
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state =
            Arc::new(http::AppState::new(node.clone(), config.clone(), shutdown_rx.clone()));
        let router = http::router(state.clone());

        let line = startup_line(&config, http_addr, locker_addr);
        announce(&config, &line, http_addr, locker_addr)?;
        // HTTP and locker connections share the per-core connection workers.
        let workers = match listener::Workers::start(listener::worker_count()) {
            Ok(workers) => Some(workers),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start connection workers; serving on the main runtime");
                None
            }
        };
        let spawner = workers.as_ref().map(listener::Workers::spawner);
        let locker_task = locker.map(|(listener, _)| {
            tokio::spawn(compat::locker::serve(listener, state.clone(), spawner.clone()))
        });

        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested");
            let _ = shutdown_tx.send(true);
        });
        listener::serve(listener, router, state, shutdown_rx, spawner).await;
        if let Some(task) = locker_task {
            let _ = task.await; // stops accepting once shutdown starts
        }
        if let Some(workers) = workers {
            workers.stop().await;
        }
        signal.abort();
        // The node acknowledges a write only once it is durable, so nothing acknowledged is
        // pending here; shutting it down stops the tickers and closes the log cleanly.
        node.shutdown().await;
        if let Some(path) = &config.ready_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds and runs: see [`Server::run`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

fn node_config(config: &Config) -> NodeConfig {
    let mut node = NodeConfig::new(config.data_dir.clone());
    node.in_memory = config.in_memory;
    node.limits = Limits {
        max_names: config.limits.max_names,
        max_entries: config.limits.max_holds,
        max_waiters_per_name: config.limits.max_waiters_per_name,
        max_sessions: config.limits.max_sessions,
    };
    node
}

/// The fixed-format start-up line (stdout), one `key=value` per field, the data directory
/// last because a path may contain spaces:
/// `lockserver listening http=127.0.0.1:8080 locker=127.0.0.1:4545 auth=off admin=off storage=durable data_dir=./lockserver-data`
/// (`locker=off` when that surface is disabled).
pub fn startup_line(
    config: &Config,
    http_addr: SocketAddr,
    locker_addr: Option<SocketAddr>,
) -> String {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let locker = locker_addr.map_or_else(|| "off".to_string(), |addr| addr.to_string());
    format!(
        "lockserver listening http={http_addr} locker={locker} auth={} admin={} storage={} data_dir={}",
        on_off(config.secret.is_some()),
        on_off(config.admin_secret.is_some()),
        if config.in_memory { "in-memory" } else { "durable" },
        config.data_dir.display(),
    )
}

fn announce(
    config: &Config,
    line: &str,
    http_addr: SocketAddr,
    locker_addr: Option<SocketAddr>,
) -> Result<(), ServerError> {
    if let Some(addr) = locker_addr.filter(|addr| !addr.ip().is_loopback()) {
        tracing::warn!(
            %addr,
            "the locker protocol has no authentication and no TLS, and listens beyond loopback"
        );
    }
    if config.secret.is_none() {
        tracing::warn!(
            "no LOCKSERVER_SECRET set: authentication is off and the server listens on \
             loopback ({}) only",
            config.bind
        );
    }
    if config.rdlm_open && config.secret.is_some() && config.serves("rdlm") {
        tracing::warn!(
            "--rdlm-open: the RDLM lock routes (/locks/...) take requests without a credential"
        );
    }
    if config.admin_secret.is_none() {
        tracing::info!("no LOCKSERVER_ADMIN_SECRET set: admin routes answer 403");
    }
    tracing::info!(http = %http_addr, data_dir = %config.data_dir.display(),
        in_memory = config.in_memory, auth = config.secret.is_some(), "lockserver listening");
    // The ready file first: whoever reads the line may look for the file at once.
    if let Some(path) = &config.ready_file {
        write_ready_file(path, http_addr, locker_addr)
            .map_err(|source| ServerError::ReadyFile { path: path.clone(), source })?;
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    Ok(())
}

/// Writes `http=ADDR` (and `locker=ADDR`) lines to a temporary file and renames it, so a
/// reader never sees half.
fn write_ready_file(
    path: &Path,
    http_addr: SocketAddr,
    locker_addr: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut text = format!("http={http_addr}\n");
    if let Some(addr) = locker_addr {
        text.push_str(&format!("locker={addr}\n"));
    }
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Sets up the tracing subscriber (stderr) with `config.log_level` as the filter.
pub fn init_tracing(config: &Config) -> Result<(), ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level).map_err(|err| {
        ConfigError::Invalid(format!("--log-level {:?}: {err}", config.log_level))
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|err| ConfigError::Invalid(format!("cannot set up logging: {err}")))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
