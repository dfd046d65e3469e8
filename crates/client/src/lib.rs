//! The Rust client of Lockserver: exclusive locks, reader-writer locks and semaphores across
//! processes and machines, each grant with a fencing token and a lost-lock signal.
//!
//! - [`Client`] (async, tokio) talks to the server over one WebSocket connection that is its
//!   session ([`Transport::Stream`], the default) or over plain HTTP ([`Transport::Http`]).
//! - [`blocking::Client`] is the same for code without an async runtime.
//! - The traits ([`LockProvider`], [`DistributedLock`], [`DistributedReaderWriterLock`],
//!   [`DistributedSemaphore`], [`LockHandle`]) are the backend-neutral API.
//! - Backends: feature `postgres` adds the `postgres` module (PostgreSQL advisory locks with
//!   fencing tokens from a sequence, a connection pool and a keepalive-driven lost signal).
//! - [`LockserverClient`], [`LockMode`], [`LockGuard`] and [`lock_scope!`] keep the original
//!   `lockserver` crate's client API (see [`compat`]).
//!
//! Safe by construction: a [`Handle`] releases its hold when dropped (in the background; `Drop`
//! never blocks), errors tell "not acquired" ([`LockError::Timeout`], [`LockError::Locked`])
//! from "outcome unknown" ([`LockError::Connection`]), and the fencing token is on every handle.
//!
//! # A lock
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::{Client, LockError};
//!
//! # async fn run() -> Result<(), LockError> {
//! let client = Client::builder().addr("127.0.0.1:8080").build()?;
//! let lock = client.lock("invoices");
//!
//! // Wait up to 5 s; `None` waits without a deadline, `Some(Duration::ZERO)` tries once.
//! let handle = lock.acquire(Some(Duration::from_secs(5))).await?;
//! // ... the critical section ...
//! handle.release().await?;
//!
//! // Or only if it is free right now:
//! match lock.try_acquire().await? {
//!     Some(handle) => drop(handle), // dropping releases too
//!     None => println!("someone else has it"),
//! }
//! # Ok(()) }
//! ```
//!
//! # A reader-writer lock
//!
//! ```no_run
//! # async fn run(client: lockserver_client::Client) -> Result<(), lockserver_client::LockError> {
//! let cache = client.rw_lock("cache");
//! let reader = cache.acquire_read(None).await?; // many readers at once
//! reader.release().await?;
//! let writer = cache.acquire_write(None).await?; // one writer, no readers
//! writer.release().await?;
//! # Ok(()) }
//! ```
//!
//! # A semaphore
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn run(client: lockserver_client::Client) -> Result<(), lockserver_client::LockError> {
//! let pool = client.semaphore("db-connections", 5); // at most 5 holders
//! let ticket = pool.acquire(Some(Duration::from_secs(10))).await?;
//! ticket.release().await?;
//! # Ok(()) }
//! ```
//!
//! # The same code on any backend
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::{DistributedLock, LockError, LockHandle, LockProvider};
//!
//! async fn run_exclusively<P: LockProvider>(provider: &P) -> Result<(), LockError> {
//!     let lock = provider.create_lock("migrations");
//!     let handle = lock.acquire(Some(Duration::from_secs(30))).await?;
//!     // ...
//!     handle.release().await
//! }
//! ```
//!
//! # Fencing tokens
//!
//! A lock can pass on while its old holder is paused (GC, swap, a partition). Send the token
//! with every write; the resource keeps the highest token it has seen and refuses lower ones
//! ([`Fence`] does exactly that):
//!
//! ```no_run
//! use lockserver_client::{Fence, FencingToken};
//!
//! static FENCE: Fence = Fence::new();
//!
//! fn write_report(token: FencingToken, report: &str) -> Result<(), String> {
//!     FENCE.admit(token).map_err(|stale| stale.to_string())?;
//!     // ... the write ...
//! # let _ = report;
//!     Ok(())
//! }
//!
//! # async fn run(client: lockserver_client::Client) -> Result<(), lockserver_client::LockError> {
//! let handle = client.lock("report").acquire(None).await?;
//! write_report(handle.token(), "Q3").expect("current token");
//! // The server can also say whether a token is still current:
//! assert!(client.check("report", handle.token()).await?);
//! # Ok(()) }
//! ```
//!
//! # Losing a lock
//!
//! A hold is lost when the server says so (TTL, admin force-release, session end) or when the
//! client's local lease deadline passes — always before the server could give the lock to
//! someone else. Stop working when [`Handle::lost`] fires:
//!
//! ```no_run
//! # async fn run(client: lockserver_client::Client) -> Result<(), lockserver_client::LockError> {
//! let handle = client.lock("leader").acquire(None).await?;
//! let mut lost = handle.lost();
//! tokio::select! {
//!     reason = lost.wait() => eprintln!("lost the lock: {reason:?}; stopping"),
//!     () = lead() => handle.release().await?,
//! }
//! # Ok(()) }
//! # async fn lead() {}
//! ```
//!
//! # The original API
//!
//! ```no_run
//! use lockserver_client::{lock_scope, LockserverClient};
//!
//! let client = LockserverClient::new_with_env(None::<String>, None::<String>, None::<String>);
//! lock_scope!(&client, "resource", {
//!     // critical section
//! })
//! .expect("the lock was taken and released");
//! ```

pub mod blocking;
mod client;
pub mod compat;
mod error;
mod fencing;
#[cfg(feature = "file")]
pub mod file;
mod handle;
mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod stream;
mod traits;

pub use client::{
    normalize_addr, Client, ClientBuilder, Lock, ReaderWriterLock, Semaphore, Transport,
    DEFAULT_ADDR,
};
pub use compat::{LockGuard, LockMode, LockserverClient};
pub use error::LockError;
pub use fencing::{Fence, FencingToken, StaleToken};
pub use handle::{Handle, LostReason, LostSignal};
pub use http::encode_segment;
pub use lockserver_proto as proto;
pub use traits::{
    DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockHandle, LockProvider,
};
