//! The Redis servers: one connection each, scripts run on all of them at once, their answers
//! tallied for a quorum, and the pub/sub wake-ups a waiter listens to.

use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use ::redis::{Client, ErrorKind, Script, Value};
use futures_util::future::join_all;
use futures_util::stream::{select_all, SelectAll, StreamExt};
use tokio::time::Instant;

use crate::error::LockError;

/// One Redis server.
pub(crate) struct Server {
    /// `host:port/db`, for messages (never the password).
    pub addr: String,
    /// Makes the pub/sub connections of waiters (one per wait, closed when the wait ends).
    client: Client,
    /// The command connection, shared by every lock of the provider (multiplexed). It
    /// reconnects by itself: a command after a broken connection starts a reconnect and fails,
    /// later ones use the new connection.
    connection: ConnectionManager,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// A script with its keys and arguments.
pub(crate) struct Call<'a> {
    pub script: &'a Script,
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

/// What one server answered.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Granted / extended / released; with the token the grant drew (0 when none).
    Yes(u64),
    /// Held by someone else / not ours (any more).
    No,
    /// No answer: refused connection, broken connection, timeout, a server error.
    Failed(String),
}

impl Server {
    /// Opens (lazily) a server from its URL; a bad URL is [`LockError::InvalidArgument`].
    pub fn open(url: &str, command_timeout: Duration) -> Result<Server, LockError> {
        let client = Client::open(url)
            .map_err(|err| LockError::InvalidArgument(format!("bad redis url: {err}")))?;
        let info = client.get_connection_info();
        let addr = format!("{}/{}", info.addr(), info.redis_settings().db());
        // No reconnect retries inside a command: a dead server must fail fast so a quorum of
        // the others can answer; the next command tries to reconnect again.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout));
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(|err| LockError::InvalidArgument(format!("redis {addr}: {err}")))?;
        Ok(Server { addr, client, connection })
    }

    async fn command(&self, command: ::redis::Cmd, budget: Duration) -> Result<Value, String> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(budget, command.query_async::<Value>(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(format!("redis {}: {err}", self.addr)),
            Err(_) => Err(format!("redis {}: no answer within {budget:?}", self.addr)),
        }
    }

    pub async fn ping(&self, budget: Duration) -> Result<(), String> {
        self.command(::redis::cmd("PING"), budget).await.map(drop)
    }

    /// Whether every write is on disk before the server answers (`appendonly yes` and
    /// `appendfsync always`). `CONFIG` refused or renamed away: not known, so not durable.
    pub async fn durable(&self, budget: Duration) -> Result<bool, String> {
        let mut durable = true;
        for (parameter, wanted) in [("appendonly", "yes"), ("appendfsync", "always")] {
            let mut command = ::redis::cmd("CONFIG");
            command.arg("GET").arg(parameter);
            let mut connection = self.connection.clone();
            let answer =
                tokio::time::timeout(budget, command.query_async::<Vec<String>>(&mut connection));
            let pair = match answer.await {
                Ok(Ok(pair)) => pair,
                // The server answered, with an error: CONFIG is not allowed here.
                Ok(Err(err)) if matches!(err.kind(), ErrorKind::Server(_)) => return Ok(false),
                Ok(Err(err)) => return Err(format!("redis {}: {err}", self.addr)),
                Err(_) => return Err(format!("redis {}: no answer within {budget:?}", self.addr)),
            };
            durable &= pair.get(1).is_some_and(|value| value.eq_ignore_ascii_case(wanted));
        }
        Ok(durable)
    }

    async fn run(&self, call: &Call<'_>, budget: Duration) -> Result<Value, String> {
        let mut invocation = call.script.prepare_invoke();
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(arg);
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(budget, invocation.invoke_async::<Value>(&mut connection)).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(format!("redis {}: {err}", self.addr)),
            Err(_) => Err(format!("redis {}: no answer within {budget:?}", self.addr)),
        }
    }

    /// A grant script: `{1, token}` or `{0}`.
    async fn grant(&self, call: &Call<'_>, budget: Duration) -> Reply {
        let value = match self.run(call, budget).await {
            Ok(value) => value,
            Err(err) => return Reply::Failed(err),
        };
        match ::redis::from_redis_value::<Vec<i64>>(value) {
            Ok(answer) if answer.first() == Some(&1) => {
                Reply::Yes(answer.get(1).and_then(|token| u64::try_from(*token).ok()).unwrap_or(0))
            }
            Ok(_) => Reply::No,
            Err(err) => Reply::Failed(format!("redis {}: unexpected answer: {err}", self.addr)),
        }
    }

    /// An extension or release script: 1 or 0.
    async fn confirm(&self, call: &Call<'_>, budget: Duration) -> Reply {
        let value = match self.run(call, budget).await {
            Ok(value) => value,
            Err(err) => return Reply::Failed(err),
        };
        match ::redis::from_redis_value::<i64>(value) {
            Ok(1) => Reply::Yes(0),
            Ok(_) => Reply::No,
            Err(err) => Reply::Failed(format!("redis {}: unexpected answer: {err}", self.addr)),
        }
    }

    /// Which of `keys` are set (`MGET`), for picking a free semaphore slot.
    async fn occupied(&self, keys: &[String], budget: Duration) -> Result<Vec<bool>, String> {
        let mut command = ::redis::cmd("MGET");
        command.arg(keys);
        let value = self.command(command, budget).await?;
        let values: Vec<Option<String>> = ::redis::from_redis_value(value)
            .map_err(|err| format!("redis {}: unexpected answer: {err}", self.addr))?;
        Ok(values.iter().map(Option::is_some).collect())
    }

    async fn subscribe(&self, channel: &str, budget: Duration) -> Option<PubSubStream> {
        let subscribed = tokio::time::timeout(budget, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub.into_on_message())
        })
        .await;
        match subscribed {
            Ok(Ok(messages)) => Some(messages),
            Ok(Err(err)) => {
                tracing::debug!(server = %self.addr, %err, "no wake-ups from this server");
                None
            }
            Err(_) => None,
        }
    }
}

/// The answers of all servers to one script.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub yes: usize,
    pub no: usize,
    pub failed: usize,
    /// The token of a grant (the single instance's; Redlock draws none).
    pub token: u64,
    /// The first failure, for the error message.
    pub error: Option<String>,
}

impl Tally {
    fn add(&mut self, reply: Reply) {
        match reply {
            Reply::Yes(token) => {
                self.yes += 1;
                self.token = self.token.max(token);
            }
            Reply::No => self.no += 1,
            Reply::Failed(err) => {
                self.failed += 1;
                self.error.get_or_insert(err);
            }
        }
    }
}

/// All the servers of a provider: one (a single instance) or several (Redlock).
#[derive(Debug)]
pub(crate) struct Servers {
    list: Vec<Server>,
}

impl Servers {
    pub fn new(list: Vec<Server>) -> Servers {
        debug_assert!(!list.is_empty());
        Servers { list }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn first(&self) -> &Server {
        &self.list[0]
    }

    /// A majority: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.list.len() / 2 + 1
    }

    pub fn has_quorum(&self, tally: &Tally) -> bool {
        tally.yes >= self.quorum()
    }

    /// So many servers failed that a quorum cannot be had from the rest.
    pub fn too_many_failed(&self, tally: &Tally) -> bool {
        tally.failed > self.list.len() - self.quorum()
    }

    /// So many servers said "not yours" that a quorum cannot be had from the rest.
    pub fn too_many_refused(&self, tally: &Tally) -> bool {
        tally.no > self.list.len() - self.quorum()
    }

    /// The error for an operation that could not reach a quorum because servers failed.
    pub fn unreachable(&self, tally: &Tally) -> LockError {
        LockError::Connection(format!(
            "{} of {} redis servers failed ({})",
            tally.failed,
            self.list.len(),
            tally.error.as_deref().unwrap_or("no answer")
        ))
    }

    pub async fn ping_all(&self, budget: Duration) -> Tally {
        let replies = join_all(self.list.iter().map(|server| async move {
            match server.ping(budget).await {
                Ok(()) => Reply::Yes(0),
                Err(err) => Reply::Failed(err),
            }
        }))
        .await;
        tally(replies)
    }

    /// Runs a grant script on every server at once.
    pub async fn grant(&self, call: &Call<'_>, budget: Duration) -> Tally {
        tally(join_all(self.list.iter().map(|server| server.grant(call, budget))).await)
    }

    /// Runs an extension or release script on every server at once.
    pub async fn confirm(&self, call: &Call<'_>, budget: Duration) -> Tally {
        tally(join_all(self.list.iter().map(|server| server.confirm(call, budget))).await)
    }

    /// For each of `keys`, on how many servers it is free; `Err` when too many servers failed.
    pub async fn free_counts(
        &self,
        keys: &[String],
        budget: Duration,
    ) -> Result<Vec<usize>, LockError> {
        let answers = join_all(self.list.iter().map(|server| server.occupied(keys, budget))).await;
        let mut free = vec![0; keys.len()];
        let mut failures = Tally::default();
        for answer in answers {
            match answer {
                Ok(occupied) => {
                    for (count, occupied) in free.iter_mut().zip(occupied) {
                        *count += usize::from(!occupied);
                    }
                }
                Err(err) => failures.add(Reply::Failed(err)),
            }
        }
        if self.too_many_failed(&failures) {
            return Err(self.unreachable(&failures));
        }
        Ok(free)
    }

    /// Subscribes to `channel` on every server that answers (best effort: without any, the
    /// waiter falls back to polling).
    pub async fn subscribe(&self, channel: &str, budget: Duration) -> Wakeups {
        let streams =
            join_all(self.list.iter().map(|server| server.subscribe(channel, budget))).await;
        let streams: Vec<PubSubStream> = streams.into_iter().flatten().collect();
        Wakeups { messages: (!streams.is_empty()).then(|| select_all(streams)) }
    }
}

fn tally(replies: Vec<Reply>) -> Tally {
    let mut tally = Tally::default();
    for reply in replies {
        tally.add(reply);
    }
    tally
}

/// The release messages of one name, from every server a waiter subscribed on. Owned by one
/// acquire call; dropping it closes its connections.
pub(crate) struct Wakeups {
    /// `None` when no subscription worked or every one has ended (a server went away).
    messages: Option<SelectAll<PubSubStream>>,
}

impl Wakeups {
    /// Waits for a release message or `until`, whichever comes first. A message can be
    /// missed (published between a failed try and the wait, or lost with a connection), which
    /// is why the caller bounds `until` by a fallback poll.
    pub async fn wait(&mut self, until: Instant) {
        let Some(messages) = &mut self.messages else {
            tokio::time::sleep_until(until).await;
            return;
        };
        tokio::select! {
            message = messages.next() => {
                if message.is_none() {
                    self.messages = None;
                }
            }
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
