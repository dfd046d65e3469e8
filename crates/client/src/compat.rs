//! The API of the original `lockserver` crate's client (0.1.3), kept so existing code compiles
//! after renaming the crate: `LockserverClient`, `LockMode`, `LockGuard` and
//! [`lock_scope!`](crate::lock_scope). It speaks the original's routes (`POST /acquire`,
//! `POST /release`, identity = owner), which every Lockserver serves.
//!
//! Better than the original:
//! - a blocking acquire waits on the server (the `wait_ms` extension of `/acquire`), so it is
//!   granted the moment the lock is free, in FIFO order, instead of polling every 200 ms;
//! - `lock_scope!` returns a `Result` instead of panicking when the lock cannot be taken;
//! - there is no default secret (the original sent `changeme`), and the default owner is
//!   unique to the process, so two processes never share an identity by accident;
//! - `acquire_with_mode_and_expire` takes `10` as well as `Some(10)`.
//!
//! ```no_run
//! use lockserver_client::{lock_scope, LockMode, LockserverClient};
//!
//! let client = LockserverClient::new_with_env(None::<String>, None::<String>, None::<String>);
//! let total = lock_scope!(&client, "ledger", { 2 + 2 }).expect("locked and ran");
//! assert_eq!(total, 4);
//! if client.acquire_with_mode("ledger", LockMode::NonBlocking).is_ok() {
//!     let _guard = lockserver_client::LockGuard::new(&client, "ledger");
//!     // critical section; released when the guard drops
//! }
//! ```

use std::io;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use reqwest::blocking::Client as HttpClient;
use reqwest::StatusCode;
use serde::Serialize;

use crate::client::normalize_addr;

/// How `acquire_with_mode` behaves when the lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Wait (on the server) until the lock is granted.
    Blocking,
    /// Fail at once with [`io::ErrorKind::WouldBlock`] if the lock is held.
    NonBlocking,
}

/// One server-side wait of a blocking acquire; it is re-issued until granted.
const WAIT_CHUNK_MS: u64 = 30_000;
/// The pause after an immediate refusal of a blocking acquire, before asking again.
const REFUSED_PAUSE: Duration = Duration::from_millis(200);

/// A client of the original API: locks identified by (resource, owner).
#[derive(Debug)]
pub struct LockserverClient {
    addr: String,
    owner: String,
    secret: Option<String>,
    /// Unwind-safe as the original's client was (it holds no state a panic could break), so
    /// `catch_unwind(|| lock_scope!(&client, ...))` still compiles.
    http: AssertUnwindSafe<HttpClient>,
}

impl Clone for LockserverClient {
    fn clone(&self) -> Self {
        LockserverClient {
            addr: self.addr.clone(),
            owner: self.owner.clone(),
            secret: self.secret.clone(),
            http: AssertUnwindSafe(self.http.0.clone()),
        }
    }
}

#[derive(Serialize)]
struct AcquireBody<'a> {
    resource: &'a str,
    owner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct ReleaseBody<'a> {
    resource: &'a str,
    owner: &'a str,
}

fn default_owner() -> String {
    format!("owner-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

impl LockserverClient {
    /// A client for `addr` (`host:port` or `http://host:port`), acting as `owner`, sending
    /// `secret` (an empty secret sends none).
    pub fn new(
        addr: impl Into<String>,
        owner: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        let secret: String = secret.into();
        LockserverClient::build(addr.into(), owner.into(), Some(secret).filter(|s| !s.is_empty()))
    }

    /// Like [`new`](LockserverClient::new), taking what is `None` from `LOCKSERVER_ADDR`
    /// (default `127.0.0.1:8080`), `LOCKSERVER_OWNER` (default: unique to this process) and
    /// `LOCKSERVER_SECRET` (default: none), in the environment or a `.env` file.
    pub fn new_with_env(
        addr: Option<impl Into<String>>,
        owner: Option<impl Into<String>>,
        secret: Option<impl Into<String>>,
    ) -> Self {
        let _ = dotenvy::dotenv();
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let addr = addr
            .map(Into::into)
            .or_else(|| env("LOCKSERVER_ADDR"))
            .unwrap_or_else(|| crate::client::DEFAULT_ADDR.to_string());
        let owner =
            owner.map(Into::into).or_else(|| env("LOCKSERVER_OWNER")).unwrap_or_else(default_owner);
        let secret = secret.map(Into::into).or_else(|| env("LOCKSERVER_SECRET"));
        LockserverClient::build(addr, owner, secret.filter(|s| !s.is_empty()))
    }

    fn build(addr: String, owner: String, secret: Option<String>) -> Self {
        let http = HttpClient::builder()
            .timeout(None)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        LockserverClient { addr, owner, secret, http: AssertUnwindSafe(http) }
    }

    /// The owner this client acts as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn post(&self, route: &str, body: &impl Serialize, wait_ms: u64) -> io::Result<StatusCode> {
        let base = normalize_addr(&self.addr)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut request = self
            .http
            .post(format!("{base}{route}"))
            .timeout(Duration::from_millis(wait_ms) + Duration::from_secs(30))
            .json(body);
        if let Some(secret) = &self.secret {
            request = request.header("X-LOCKSERVER-SECRET", secret);
        }
        let response =
            request.send().map_err(|err| io::Error::other(format!("Request error: {err}")))?;
        Ok(response.status())
    }

    /// Acquires `resource`, waiting until it is granted.
    pub fn acquire(&self, resource: &str) -> io::Result<()> {
        self.acquire_with_mode_and_expire(resource, LockMode::Blocking, None)
    }

    /// Acquires `resource`, waiting or not.
    pub fn acquire_with_mode(&self, resource: &str, mode: LockMode) -> io::Result<()> {
        self.acquire_with_mode_and_expire(resource, mode, None)
    }

    /// Acquires `resource`, released by the server `expire` seconds after the grant
    /// (`None`: no expiry).
    pub fn acquire_with_mode_and_expire(
        &self,
        resource: &str,
        mode: LockMode,
        expire: impl Into<Option<u64>>,
    ) -> io::Result<()> {
        let expire = expire.into();
        let wait_ms = match mode {
            LockMode::Blocking => Some(WAIT_CHUNK_MS),
            LockMode::NonBlocking => None,
        };
        let body = AcquireBody { resource, owner: &self.owner, expire, wait_ms };
        loop {
            let asked = std::time::Instant::now();
            match self.post("/acquire", &body, wait_ms.unwrap_or(0))? {
                StatusCode::OK => return Ok(()),
                StatusCode::CONFLICT if mode == LockMode::Blocking => {
                    // A refusal before the wait ran out (this owner already holds it, a limit)
                    // would repeat at once: pause as the original did between its polls.
                    if asked.elapsed() < Duration::from_millis(WAIT_CHUNK_MS / 2) {
                        std::thread::sleep(REFUSED_PAUSE);
                    }
                    continue;
                }
                StatusCode::CONFLICT => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "Resource is locked"))
                }
                status => return Err(io::Error::other(format!("HTTP error: {status}"))),
            }
        }
    }

    /// Releases `resource` (held by this owner).
    pub fn release(&self, resource: &str) -> io::Result<()> {
        let body = ReleaseBody { resource, owner: &self.owner };
        match self.post("/release", &body, 0)? {
            StatusCode::OK => Ok(()),
            status => Err(io::Error::other(format!("HTTP error: {status}"))),
        }
    }
}

/// Releases the lock when dropped.
#[derive(Debug)]
pub struct LockGuard<'a> {
    client: &'a LockserverClient,
    resource: &'a str,
}

impl<'a> LockGuard<'a> {
    /// A guard for a lock `client` already holds.
    pub fn new(client: &'a LockserverClient, resource: &'a str) -> Self {
        LockGuard { client, resource }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.client.release(self.resource) {
            tracing::warn!(resource = self.resource, %err, "release on guard drop failed");
        }
    }
}

/// Runs a block while holding a lock of the original API, and releases it after.
///
/// `lock_scope!(&client, "res", { ... })` waits for the lock; `lock_scope!(&client, "res",
/// non_blocking, { ... })` fails at once if it is held. Either returns
/// `Result<T, std::io::Error>` with the block's value, never panics.
#[macro_export]
macro_rules! lock_scope {
    ($client:expr, $resource:expr, $block:block) => {
        $crate::lock_scope!(@run $client, $resource, $crate::LockMode::Blocking, $block)
    };
    ($client:expr, $resource:expr, non_blocking, $block:block) => {
        $crate::lock_scope!(@run $client, $resource, $crate::LockMode::NonBlocking, $block)
    };
    (@run $client:expr, $resource:expr, $mode:expr, $block:block) => {{
        match $client.acquire_with_mode($resource, $mode) {
            ::std::result::Result::Ok(()) => {
                let _guard = $crate::LockGuard::new($client, $resource);
                #[allow(clippy::redundant_closure_call)]
                let result = (|| $block)();
                ::std::result::Result::<_, ::std::io::Error>::Ok(result)
            }
            ::std::result::Result::Err(err) => ::std::result::Result::Err(err),
        }
    }};
}
