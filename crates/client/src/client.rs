//! [`Client`]: the Lockserver provider, its builder, and the lock objects it makes.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lockserver_proto::{Hold, Kind, LockMode, StreamOp, StreamRequest};
use tokio::time::Instant;

use crate::error::{validate_name, LockError};
use crate::handle::Handle;
use crate::http::Http;
use crate::stream::Stream;
use crate::traits::{
    tried, DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockProvider,
};

/// How the client talks to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Transport {
    /// One WebSocket connection that is the client's session (`/v1/session`): holds die with
    /// the client, waits need no polling, `lost` events are pushed. The default.
    #[default]
    Stream,
    /// Plain HTTP requests (long-poll waits, a renewed TTL per hold): for networks that do not
    /// pass WebSocket. A lost hold is noticed at the next renewal or the local deadline.
    Http,
}

/// Everything the transports read; the server address changes when a leader hint says so.
#[derive(Debug)]
pub(crate) struct Settings {
    base: RwLock<String>,
    pub secret: Option<String>,
    pub owner: String,
    pub session_ttl: Option<Duration>,
    pub grace: Option<Duration>,
    pub hold_ttl: Duration,
    pub connect_timeout: Duration,
    pub lease_margin: Duration,
    pub drift: f64,
    pub max_redirects: u32,
}

impl Settings {
    /// The server's base URL (`http://host:port`, no trailing slash).
    pub fn base(&self) -> String {
        self.base.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn ws_url(&self) -> String {
        let base = self.base();
        format!("ws{}/v1/session", base.strip_prefix("http").unwrap_or(&base))
    }

    /// A `not_leader` answer named the leader: talk to it from now on.
    pub fn follow_leader(&self, leader: &str) {
        match normalize_addr(leader) {
            Ok(base) => {
                tracing::debug!(%base, "following the leader hint");
                *self.base.write().unwrap_or_else(|e| e.into_inner()) = base;
            }
            Err(err) => tracing::warn!(%leader, %err, "ignoring an unusable leader hint"),
        }
    }
}

/// The server's base URL from an address as users write it: `host:port`, `host` (port 8080),
/// `http://host:port` or `http://host:port/` → `http://host:port`. The CLI and the clients
/// share this rule.
pub fn normalize_addr(addr: &str) -> Result<String, LockError> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(LockError::InvalidArgument("the server address is empty".into()));
    }
    if addr.starts_with("https://") || addr.starts_with("wss://") {
        return Err(LockError::InvalidArgument(
            "TLS (https://) is not built into this client; reach Lockserver over http:// or \
             through a local TLS-terminating proxy"
                .into(),
        ));
    }
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("ws://"))
        .unwrap_or(addr)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('/') {
        return Err(LockError::InvalidArgument(format!(
            "bad server address {addr:?}: expected host:port or http://host:port"
        )));
    }
    let with_port = if has_port(rest) { rest.to_string() } else { format!("{rest}:8080") };
    Ok(format!("http://{with_port}"))
}

fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        // `[::1]:8080` has a port; `[::1]` and `::1` do not.
        Some((head, port)) => {
            port.parse::<u16>().is_ok() && (!head.contains(':') || head.ends_with(']'))
        }
        None => false,
    }
}

/// Configures a [`Client`]. Every setting has a default; `build` checks them.
///
/// ```
/// use std::time::Duration;
/// use lockserver_client::Client;
///
/// let client = Client::builder()
///     .addr("127.0.0.1:8080")
///     .owner("billing-worker-3")
///     .session_ttl(Duration::from_secs(5))
///     .build()
///     .expect("a valid configuration");
/// # drop(client);
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    addr: String,
    addr_given: bool,
    secret: Option<String>,
    owner: Option<String>,
    transport: Transport,
    session_ttl: Option<Duration>,
    grace: Option<Duration>,
    hold_ttl: Duration,
    connect_timeout: Duration,
    lease_margin: Duration,
    drift: f64,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            addr: DEFAULT_ADDR.to_string(),
            addr_given: false,
            secret: None,
            owner: None,
            transport: Transport::Stream,
            session_ttl: None,
            grace: None,
            hold_ttl: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            lease_margin: Duration::ZERO,
            drift: 0.01,
        }
    }
}

/// Where the clients look when no address is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

impl ClientBuilder {
    /// The server: `host:port` or `http://host:port` (default `127.0.0.1:8080`).
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self.addr_given = true;
        self
    }

    /// The client secret (sent as `Authorization: Bearer`). None by default.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The label the server shows for this client's session and holds (default:
    /// `program:pid`).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Reads `LOCKSERVER_ADDR`, `LOCKSERVER_SECRET` and `LOCKSERVER_OWNER` (from the
    /// environment, or a `.env` file in the working directory) for the settings not given yet.
    pub fn from_env(mut self) -> Self {
        let _ = dotenvy::dotenv();
        if !self.addr_given {
            if let Ok(addr) = std::env::var("LOCKSERVER_ADDR") {
                if !addr.is_empty() {
                    self.addr = addr;
                }
            }
        }
        if self.secret.is_none() {
            self.secret = std::env::var("LOCKSERVER_SECRET").ok().filter(|s| !s.is_empty());
        }
        if self.owner.is_none() {
            self.owner = std::env::var("LOCKSERVER_OWNER").ok().filter(|s| !s.is_empty());
        }
        self
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The session's lease (stream transport): how soon the server frees this client's holds
    /// after it dies. Default: the server's (2 s on a single node).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = Some(ttl);
        self
    }

    /// How long the session outlives a dropped connection, so a reconnect can resume it
    /// (stream transport). Default: the server's (0: the lease alone).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The TTL of each hold over the HTTP transport, renewed every third of it (default 30 s).
    pub fn hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Moves the local lease deadline this much earlier still, so work can be stopped (a
    /// child process killed) before the server could release the hold. Default 0.
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
        self
    }

    /// The bound on the rate difference of the client's and the server's clocks (default 0.01,
    /// 1%), taken off every lease.
    pub fn drift(mut self, drift: f64) -> Self {
        self.drift = drift;
        self
    }

    pub fn build(self) -> Result<Client, LockError> {
        let base = normalize_addr(&self.addr)?;
        if !(0.0..0.5).contains(&self.drift) {
            return Err(LockError::InvalidArgument("drift must be in [0, 0.5)".into()));
        }
        if let Some(ttl) = self.session_ttl {
            if self.lease_margin * 2 > ttl {
                return Err(LockError::InvalidArgument(format!(
                    "lease_margin ({:?}) must be at most half the session ttl ({ttl:?}): the lease \
                     is renewed every third of the ttl",
                    self.lease_margin
                )));
            }
        }
        if self.lease_margin * 2 > self.hold_ttl {
            return Err(LockError::InvalidArgument(format!(
                "lease_margin ({:?}) must be at most half the hold ttl ({:?})",
                self.lease_margin, self.hold_ttl
            )));
        }
        if self.hold_ttl < Duration::from_millis(100) {
            return Err(LockError::InvalidArgument("hold_ttl must be at least 100 ms".into()));
        }
        if let Some(secret) = &self.secret {
            if secret.chars().any(|c| c.is_control()) {
                return Err(LockError::InvalidArgument("the secret has control characters".into()));
            }
        }
        let owner = self.owner.unwrap_or_else(default_owner);
        let settings = Arc::new(Settings {
            base: RwLock::new(base),
            secret: self.secret,
            owner,
            session_ttl: self.session_ttl,
            grace: self.grace,
            hold_ttl: self.hold_ttl,
            connect_timeout: self.connect_timeout,
            lease_margin: self.lease_margin,
            drift: self.drift,
            max_redirects: 3,
        });
        let transport = match self.transport {
            Transport::Stream => Wire::Stream(Stream::new(settings.clone())),
            Transport::Http => Wire::Http(Http::new(settings.clone())?),
        };
        Ok(Client { shared: Arc::new(Shared { settings, wire: transport }) })
    }
}

/// `program:pid`: enough to find the process behind a hold in the admin listing.
fn default_owner() -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "client".into());
    format!("{program}:{}", std::process::id())
}

#[derive(Debug)]
enum Wire {
    Stream(Stream),
    Http(Http),
}

/// What the client, its lock objects and its handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: Arc<Settings>,
    wire: Wire,
}

/// What to acquire.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub name: String,
    pub kind: Kind,
    pub mode: Option<LockMode>,
    pub limit: Option<u32>,
    pub permits: Option<u32>,
    pub ttl: Option<Duration>,
    pub lock_delay: Option<Duration>,
}

/// Milliseconds for the wire, rounding up so a wait is never shorter than asked.
pub(crate) fn millis_up(duration: Duration) -> u64 {
    let ms = duration.as_millis() + u128::from(duration.subsec_nanos() % 1_000_000 != 0);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

pub(crate) fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Shared {
    async fn acquire(
        self: &Arc<Self>,
        spec: Spec,
        timeout: Option<Duration>,
    ) -> Result<Handle, LockError> {
        validate_name(&spec.name)?;
        let (hold, lost) = match &self.wire {
            Wire::Stream(stream) => {
                let request = StreamRequest {
                    op: Some(StreamOp::Acquire),
                    name: Some(spec.name.clone()),
                    kind: Some(spec.kind),
                    mode: spec.mode,
                    limit: spec.limit,
                    permits: spec.permits,
                    wait_ms: Some(timeout.map(millis_up)),
                    ttl_ms: spec.ttl.map(|ttl| Some(millis_up(ttl))),
                    lock_delay_ms: spec.lock_delay.map(millis_up),
                    request_id: Some(request_id()),
                    ..Default::default()
                };
                let deadline = timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t);
                let answer = stream.call(request, deadline).await?;
                match (answer.reply.hold, answer.lost) {
                    (Some(hold), Some(lost)) if answer.reply.ok => (hold, lost),
                    _ => {
                        return Err(refusal(answer.reply.error, timeout));
                    }
                }
            }
            Wire::Http(http) => http.acquire(&spec, timeout).await?,
        };
        Ok(Handle::new(hold, lost, self.clone()))
    }

    pub(crate) async fn release(&self, hold: &Hold) -> Result<(), LockError> {
        match &self.wire {
            Wire::Stream(stream) => {
                let request = StreamRequest {
                    op: Some(StreamOp::Release),
                    hold_id: Some(hold.hold_id.clone()),
                    ..Default::default()
                };
                let answer = stream.call(request, None).await?;
                if answer.reply.ok {
                    Ok(())
                } else {
                    Err(refusal(answer.reply.error, None))
                }
            }
            Wire::Http(http) => http.release(hold).await,
        }
    }

    pub(crate) fn release_later(&self, hold: &Hold) {
        match &self.wire {
            Wire::Stream(stream) => stream.release_later(&hold.hold_id),
            Wire::Http(http) => http.release_later(hold),
        }
    }

    async fn check(&self, name: &str, token: u64) -> Result<bool, LockError> {
        validate_name(name)?;
        match &self.wire {
            Wire::Stream(stream) => {
                let request = StreamRequest {
                    op: Some(StreamOp::Check),
                    name: Some(name.to_string()),
                    token: Some(token),
                    ..Default::default()
                };
                let answer = stream.call(request, None).await?;
                match answer.reply.valid {
                    Some(valid) if answer.reply.ok => Ok(valid),
                    _ => Err(refusal(answer.reply.error, None)),
                }
            }
            Wire::Http(http) => http.check(name, token).await,
        }
    }
}

/// The error of a refused request. `timeout` is what the caller asked to wait: a re-sent
/// acquire may answer `locked` where the first try would have said `timeout`.
pub(crate) fn refusal(
    error: Option<lockserver_proto::ErrorDetail>,
    timeout: Option<Duration>,
) -> LockError {
    let Some(detail) = error else {
        return LockError::Server {
            code: lockserver_proto::ErrorCode::Internal,
            message: "a reply with neither a result nor an error".into(),
        };
    };
    let wait = timeout.unwrap_or(Duration::MAX);
    match LockError::from_detail(detail, wait) {
        LockError::Locked if !wait.is_zero() => LockError::Timeout(wait),
        other => other,
    }
}

/// A Lockserver client: the provider of locks, reader-writer locks and semaphores.
///
/// Cheap to clone (clones share one session). Over the default stream transport the session
/// opens on first use and ends when the client and every handle are dropped, or at
/// [`close`](Client::close).
///
/// ```no_run
/// use std::time::Duration;
/// use lockserver_client::{Client, LockError};
///
/// # async fn run() -> Result<(), LockError> {
/// let client = Client::builder().addr("127.0.0.1:8080").build()?;
/// let lock = client.lock("reports/daily");
/// let handle = lock.acquire(Some(Duration::from_secs(5))).await?;
/// println!("writing with fencing token {}", handle.token());
/// handle.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.shared.settings.base())
            .field("owner", &self.shared.settings.owner)
            .finish()
    }
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from `LOCKSERVER_ADDR`, `LOCKSERVER_SECRET` and `LOCKSERVER_OWNER`
    /// (environment or `.env`), with defaults for the rest.
    pub fn from_env() -> Result<Client, LockError> {
        ClientBuilder::default().from_env().build()
    }

    /// An exclusive lock named `name`.
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock { shared: self.shared.clone(), spec: self.spec(name, Kind::Lock, None) }
    }

    /// A reader-writer lock named `name`.
    pub fn rw_lock(&self, name: impl Into<String>) -> ReaderWriterLock {
        ReaderWriterLock { shared: self.shared.clone(), spec: self.spec(name, Kind::Lock, None) }
    }

    /// A semaphore named `name` with `limit` tickets.
    pub fn semaphore(&self, name: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore {
            shared: self.shared.clone(),
            spec: self.spec(name, Kind::Semaphore, Some(limit)),
        }
    }

    fn spec(&self, name: impl Into<String>, kind: Kind, limit: Option<u32>) -> Spec {
        Spec {
            name: name.into(),
            kind,
            mode: None,
            limit,
            permits: None,
            ttl: None,
            lock_delay: None,
        }
    }

    /// Whether `token` is the token of a live hold of `name` (the server's CheckSequencer).
    pub async fn check(&self, name: &str, token: crate::FencingToken) -> Result<bool, LockError> {
        self.shared.check(name, token.0).await
    }

    /// The owner label this client sends.
    pub fn owner(&self) -> &str {
        &self.shared.settings.owner
    }

    /// Ends the session now (a clean close: its holds are released at once, with no
    /// lock-delay, and their lost signals fire). The client opens a new session if used again.
    pub async fn close(&self) {
        if let Wire::Stream(stream) = &self.shared.wire {
            stream.close().await;
        }
    }
}

impl LockProvider for Client {
    type Lock = Lock;
    type ReaderWriterLock = ReaderWriterLock;
    type Semaphore = Semaphore;

    fn create_lock(&self, name: &str) -> Lock {
        self.lock(name)
    }

    fn create_reader_writer_lock(&self, name: &str) -> ReaderWriterLock {
        self.rw_lock(name)
    }

    fn create_semaphore(&self, name: &str, max_count: u32) -> Semaphore {
        self.semaphore(name, max_count)
    }
}

macro_rules! hold_options {
    () => {
        /// Gives each hold its own TTL as well (besides the session's lease): the server
        /// releases it this long after the grant unless renewed.
        pub fn with_ttl(mut self, ttl: Duration) -> Self {
            self.spec.ttl = Some(ttl);
            self
        }

        /// After an involuntary end of a hold (TTL, session loss), nobody gets the name for
        /// this long (at most 60 s).
        pub fn with_lock_delay(mut self, delay: Duration) -> Self {
            self.spec.lock_delay = Some(delay);
            self
        }

        pub fn name(&self) -> &str {
            &self.spec.name
        }
    };
}

/// An exclusive lock (made by [`Client::lock`]).
#[derive(Clone, Debug)]
pub struct Lock {
    shared: Arc<Shared>,
    spec: Spec,
}

impl Lock {
    hold_options!();

    /// Waits up to `timeout` (`None`: no deadline; `Some(ZERO)`: try once) for the lock.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        let spec = Spec { mode: Some(LockMode::Exclusive), ..self.spec.clone() };
        self.shared.acquire(spec, timeout).await
    }

    /// Takes the lock if it is free now; `None` if it is held.
    pub async fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

/// A reader-writer lock (made by [`Client::rw_lock`]).
#[derive(Clone, Debug)]
pub struct ReaderWriterLock {
    shared: Arc<Shared>,
    spec: Spec,
}

impl ReaderWriterLock {
    hold_options!();

    pub async fn acquire_read(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        let spec = Spec { mode: Some(LockMode::Shared), ..self.spec.clone() };
        self.shared.acquire(spec, timeout).await
    }

    pub async fn try_acquire_read(&self) -> Result<Option<Handle>, LockError> {
        tried(self.acquire_read(Some(Duration::ZERO)).await)
    }

    pub async fn acquire_write(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        let spec = Spec { mode: Some(LockMode::Exclusive), ..self.spec.clone() };
        self.shared.acquire(spec, timeout).await
    }

    pub async fn try_acquire_write(&self) -> Result<Option<Handle>, LockError> {
        tried(self.acquire_write(Some(Duration::ZERO)).await)
    }
}

/// A counting semaphore (made by [`Client::semaphore`]).
#[derive(Clone, Debug)]
pub struct Semaphore {
    shared: Arc<Shared>,
    spec: Spec,
}

impl Semaphore {
    hold_options!();

    /// How many tickets the semaphore has.
    pub fn max_count(&self) -> u32 {
        self.spec.limit.unwrap_or(0)
    }

    /// Takes one ticket, waiting up to `timeout`.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        self.acquire_many(1, timeout).await
    }

    /// Takes `permits` tickets at once (1 ≤ permits ≤ the limit).
    pub async fn acquire_many(
        &self,
        permits: u32,
        timeout: Option<Duration>,
    ) -> Result<Handle, LockError> {
        if permits == 0 || permits > self.max_count() {
            return Err(LockError::InvalidArgument(format!(
                "permits must be 1 to {}, not {permits}",
                self.max_count()
            )));
        }
        let spec = Spec { permits: Some(permits), ..self.spec.clone() };
        self.shared.acquire(spec, timeout).await
    }

    pub async fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

impl DistributedLock for Lock {
    type Handle = Handle;

    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        Lock::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        Lock::try_acquire(self).await
    }
}

impl DistributedReaderWriterLock for ReaderWriterLock {
    type ReadHandle = Handle;
    type WriteHandle = Handle;

    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn acquire_read(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        ReaderWriterLock::acquire_read(self, timeout).await
    }

    async fn try_acquire_read(&self) -> Result<Option<Handle>, LockError> {
        ReaderWriterLock::try_acquire_read(self).await
    }

    async fn acquire_write(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        ReaderWriterLock::acquire_write(self, timeout).await
    }

    async fn try_acquire_write(&self) -> Result<Option<Handle>, LockError> {
        ReaderWriterLock::try_acquire_write(self).await
    }
}

impl DistributedSemaphore for Semaphore {
    type Handle = Handle;

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn max_count(&self) -> u32 {
        Semaphore::max_count(self)
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        Semaphore::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        Semaphore::try_acquire(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize_to_a_base_url() {
        assert_eq!(normalize_addr("127.0.0.1:9000").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(normalize_addr("http://db.example:81/").unwrap(), "http://db.example:81");
        assert_eq!(normalize_addr("locks.internal").unwrap(), "http://locks.internal:8080");
        assert_eq!(normalize_addr("[::1]:7000").unwrap(), "http://[::1]:7000");
        assert!(normalize_addr("https://x:1").is_err());
        assert!(normalize_addr("").is_err());
        assert!(normalize_addr("http://x:1/prefix").is_err());
    }

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(millis_up(Duration::ZERO), 0);
        assert_eq!(millis_up(Duration::from_micros(1)), 1);
        assert_eq!(millis_up(Duration::from_millis(1500)), 1500);
        assert_eq!(millis_up(Duration::from_micros(1500)), 2);
    }
}
