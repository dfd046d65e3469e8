//! One streaming session: its requests, the effects the node sends it, and its two modes —
//! attached to a connection, or detached (buffering) until a `hello` takes it over or it ends.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{FuturesUnordered, SplitStream};
use futures_util::StreamExt;
use lockserver_core::{
    Acquire, Command, CoreError, Effect, HoldId, Holder, LockName, Mode, Origin, ReleaseReason,
    Response as CoreResponse, SessionEnd, SessionId, TtlChange, Via, Wait, Want,
};
use lockserver_node::{Delivery, InboxKey, NodeError};
use lockserver_proto::stream::{close, LostReason as WireLost};
use lockserver_proto::StreamRequest;
use lockserver_proto::{ErrorDetail, Kind, LockMode, StreamEvent, StreamOp, StreamReply};
use tokio::time::Instant;

use super::outbox::{Out, Outbox};
use super::{close_frame, Claim, Takeover, CLOSE_BOUND};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::locks::wait_end_error;
use crate::http::{shutdown_started, wire_hold, SharedState};

/// How long a dropped connection's writer may take to send its close frame before the
/// socket is abandoned (its unwritten frames stay buffered for replay either way).
const DROP_BOUND: Duration = Duration::from_millis(200);

type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;
type Outcome<T> = Result<Result<T, CoreError>, NodeError>;

/// What the connection's caller and credentials give a session.
#[derive(Debug)]
pub(crate) struct SessionSettings {
    state: SharedState,
    principal: Principal,
}

impl SessionSettings {
    pub(crate) fn new(state: &SharedState, principal: Principal) -> SessionSettings {
        SessionSettings { state: state.clone(), principal }
    }
}

/// A request in flight through the node.
enum Done {
    Acquire {
        id: u64,
        drawn: HoldId,
        outcome: Outcome<CoreResponse>,
    },
    Release {
        id: u64,
        hold_id: HoldId,
        outcome: Outcome<CoreResponse>,
    },
    Renew {
        id: u64,
        outcome: Outcome<CoreResponse>,
    },
    Cancel {
        id: u64,
        hold_id: HoldId,
        granted: bool,
        outcome: Outcome<CoreResponse>,
    },
    Check {
        id: u64,
        outcome: Result<bool, NodeError>,
    },
    Ping {
        id: u64,
        outcome: Result<Option<u64>, NodeError>,
    },
    /// Bookkeeping (detach, end): nobody waits for the answer.
    Quiet {
        what: &'static str,
        outcome: Outcome<CoreResponse>,
    },
}

/// An acquire without its final answer yet.
#[derive(Debug)]
struct PendingAcquire {
    /// Its place in the queue (and the hold it becomes).
    hold_id: HoldId,
    wait_ms: Option<u64>,
    /// A `cancel` gave it back: a grant that still arrives answers `cancelled`.
    cancelled: bool,
}

/// How an attached connection ended.
enum Exit {
    /// The client closed cleanly: the session ends now, voluntarily.
    Closed,
    /// Anything else: the session goes on detached.
    Dropped(Option<CloseFrame>),
    /// A `hello` elsewhere takes the session over.
    TakenOver(Takeover),
    /// The session ended (lease, or it was closed elsewhere).
    Ended(CloseFrame),
    Shutdown,
}

#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    ttl_ms: u64,
    grace_ms: u64,
    owner: Arc<str>,
    state: SharedState,
    principal: Principal,
    inbox: lockserver_node::ConnectionInbox,
    claim: Claim,
    inflight: FuturesUnordered<Pending>,
    /// Acquires without their final answer, by request id.
    acquires: HashMap<u64, PendingAcquire>,
    /// The same acquires by the id of their place.
    waiting: HashMap<HoldId, u64>,
    /// Live holds of this session, each with the request that got it (0: from the table).
    holds: HashMap<HoldId, u64>,
    /// The connection while attached.
    conn: Option<Outbox>,
    /// Replies and events waiting for a connection while detached.
    buffer: VecDeque<Out>,
    buffer_bytes: usize,
    /// `EndSession` was proposed (the buffer overflowed): nothing more is buffered.
    ending: bool,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Done")
    }
}

impl Session {
    pub(crate) fn new(
        settings: SessionSettings,
        id: SessionId,
        ttl_ms: u64,
        grace_ms: u64,
        owner: Arc<str>,
        claim: Claim,
        holds: Vec<HoldId>,
    ) -> Session {
        let inbox = settings.state.node.connection_inbox(InboxKey::Session(id));
        Session {
            id,
            ttl_ms,
            grace_ms,
            owner,
            state: settings.state,
            principal: settings.principal,
            inbox,
            claim,
            inflight: FuturesUnordered::new(),
            acquires: HashMap::new(),
            waiting: HashMap::new(),
            holds: holds.into_iter().map(|hold| (hold, 0)).collect(),
            conn: None,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            ending: false,
        }
    }

    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    pub(crate) fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    pub(crate) fn set_grace(&mut self, grace_ms: u64) {
        self.grace_ms = grace_ms;
    }

    /// A new connection (and its credential) takes the session over.
    pub(crate) fn adopt(&mut self, settings: SessionSettings) {
        self.principal = settings.principal;
    }

    /// Serves the session on this connection: first the buffered replies and events (after
    /// the `hello` reply already queued), then `first` if the connection's first request was
    /// not a `hello`, then the loop. When the connection ends without a clean close, the
    /// session goes on detached in this task.
    pub(crate) async fn run(
        mut self,
        outbox: Outbox,
        mut stream: SplitStream<WebSocket>,
        first: Option<StreamRequest>,
    ) {
        for out in std::mem::take(&mut self.buffer) {
            outbox.push(out);
        }
        self.buffer_bytes = 0;
        self.conn = Some(outbox);
        if let Some(request) = first {
            self.on_request(request);
        }
        let exit = self.attached(&mut stream).await;
        drop(stream);
        let outbox = self.conn.take().expect("attached until the exit");
        match exit {
            Exit::Closed => {
                // The session ends before the close is answered: a client whose close has
                // completed can count on its holds being free.
                tracing::debug!(session = %self.id, "closed by its client");
                let command = Command::CloseSession { session_id: self.id };
                if let Err(err) = self.state.node.propose(command).await {
                    tracing::warn!(session = %self.id, error = %err, "cannot close the session");
                }
                outbox.stop(None, true, CLOSE_BOUND).await;
            }
            Exit::Ended(frame) => {
                outbox.stop(Some(frame), true, CLOSE_BOUND).await;
            }
            Exit::Shutdown => {
                let frame = close_frame(close::RESTARTING, "server shutting down");
                outbox.stop(Some(frame), true, CLOSE_BOUND).await;
            }
            Exit::TakenOver(takeover) => {
                let frame = close_frame(close::RESUMED_ELSEWHERE, "session resumed elsewhere");
                let unwritten = outbox.stop(Some(frame), false, DROP_BOUND).await;
                self.rebuffer(unwritten);
                let _ = takeover.send(self);
            }
            Exit::Dropped(frame) => {
                let unwritten = outbox.stop(frame, false, DROP_BOUND).await;
                self.rebuffer(unwritten);
                tracing::debug!(session = %self.id, grace_ms = self.grace_ms, "connection dropped");
                let command =
                    Command::DetachSession { session_id: self.id, grace_ms: self.grace_ms };
                self.quietly("detach", command);
                self.detached().await;
            }
        }
    }

    /// Puts frames that never reached the socket back in front of the buffer, for replay.
    fn rebuffer(&mut self, unwritten: VecDeque<Out>) {
        let mut buffer: VecDeque<Out> =
            unwritten.into_iter().filter(|out| !out.is_ping()).collect();
        buffer.extend(std::mem::take(&mut self.buffer));
        self.buffer_bytes = buffer.iter().map(Out::len).sum();
        for out in &mut buffer {
            // Not on a healthy connection: nobody is held back waiting for these.
            out.written = None;
            out.after = None;
        }
        self.buffer = buffer;
    }

    async fn attached(&mut self, stream: &mut SplitStream<WebSocket>) -> Exit {
        let config = &self.state.config;
        let heartbeat = Duration::from_millis(config.ws_heartbeat_ms);
        let limit = config.limits.ws_max_buffer_bytes;
        let shutdown = shutdown_started(self.state.shutdown.clone());
        tokio::pin!(shutdown);
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let unread = self.conn.as_ref().map_or(0, Outbox::bytes);
            if unread > limit {
                tracing::info!(session = %self.id, unread, "disconnecting a client that does not read");
                let reason = format!("too slow: more than {limit} bytes of replies unread");
                return Exit::Dropped(Some(close_frame(close::TOO_SLOW, &reason)));
            }
            let conn = self.conn.as_mut().expect("attached");
            tokio::select! {
                biased;
                Some(takeover) = self.claim.control.recv() => return Exit::TakenOver(takeover),
                delivery = self.inbox.receiver.recv() => match delivery {
                    Some(delivery) => {
                        if let Some(end) = self.on_effect(delivery) {
                            return Exit::Ended(end);
                        }
                    }
                    None => return Exit::Shutdown,
                },
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.on_done(done);
                }
                frame = stream.next() => {
                    last_heard = Instant::now();
                    pinged = false;
                    match frame {
                        Some(Ok(Message::Text(text))) => match parse(text.as_str()) {
                            Ok(request) => self.on_request(request),
                            Err((id, error)) => self.emit(error_out(id, error)),
                        },
                        Some(Ok(Message::Binary(_))) => {
                            self.emit(error_out(None, binary_frame_error()));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => return Exit::Closed,
                        Some(Err(err)) => return Exit::Dropped(read_error_close(&err, &self.state)),
                        None => return Exit::Dropped(None),
                    }
                }
                () = conn.failed() => return Exit::Dropped(None),
                _ = ticker.tick() => {
                    let quiet = last_heard.elapsed();
                    if quiet >= 2 * heartbeat {
                        let reason = format!("no pong within {} ms", heartbeat.as_millis());
                        return Exit::Dropped(Some(close_frame(close::NO_PONG, &reason)));
                    }
                    if quiet >= heartbeat && !pinged {
                        pinged = true;
                        self.emit(Out { frame: super::outbox::OutFrame::Ping, written: None, after: None });
                    }
                }
                () = &mut shutdown => return Exit::Shutdown,
            }
        }
    }

    /// No connection: effects are buffered until a `hello` takes the session over, it ends,
    /// or the buffer overflows (then the session is ended, involuntarily).
    async fn detached(mut self) {
        let limit = self.state.config.limits.ws_max_buffer_bytes;
        let shutdown = shutdown_started(self.state.shutdown.clone());
        tokio::pin!(shutdown);
        loop {
            if self.buffer_bytes > limit && !self.ending {
                tracing::info!(session = %self.id, "replay buffer overflowed; ending the session");
                self.ending = true;
                self.buffer.clear();
                self.buffer_bytes = 0;
                self.quietly("end", Command::EndSession { session_id: self.id });
            }
            tokio::select! {
                biased;
                Some(takeover) = self.claim.control.recv() => {
                    if self.ending {
                        drop(takeover); // ending: the new connection hears `not_found`
                        continue;
                    }
                    let _ = takeover.send(self);
                    return;
                }
                delivery = self.inbox.receiver.recv() => match delivery {
                    Some(delivery) => {
                        if self.on_effect(delivery).is_some() {
                            tracing::debug!(session = %self.id, "detached session ended");
                            return;
                        }
                    }
                    None => return,
                },
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.on_done(done);
                }
                () = &mut shutdown => return,
            }
        }
    }

    // ----- output -------------------------------------------------------------------------

    fn emit(&mut self, mut out: Out) {
        match &self.conn {
            Some(conn) => conn.push(out),
            None => {
                if self.ending {
                    return;
                }
                out.written = None;
                out.after = None;
                self.buffer_bytes += out.len();
                self.buffer.push_back(out);
            }
        }
    }

    fn reply(&mut self, reply: StreamReply) {
        self.emit(Out::text(to_json(&reply)));
    }

    fn fail(&mut self, id: u64, error: ApiError) {
        self.emit(error_out(Some(id), error));
    }

    fn push(&mut self, future: impl Future<Output = Done> + Send + 'static) {
        self.inflight.push(Box::pin(future));
    }

    fn quietly(&mut self, what: &'static str, command: Command) {
        let node = self.state.node.clone();
        self.push(async move { Done::Quiet { what, outcome: node.propose(command).await } });
    }

    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Outcome<CoreResponse>> + Send + 'static {
        let node = self.state.node.clone();
        async move { node.propose(command).await }
    }

    // ----- requests -----------------------------------------------------------------------

    fn on_request(&mut self, request: StreamRequest) {
        let Some(id) = request.id else {
            return self
                .emit(error_out(None, ApiError::invalid("every request needs an integer id")));
        };
        let Some(op) = request.op else {
            return self.fail(id, ApiError::invalid(format!("op is required: one of {OPS}")));
        };
        let result = match op {
            StreamOp::Hello => {
                Err(ApiError::invalid("hello must be the first request on a connection"))
            }
            StreamOp::Acquire => self.acquire(id, request),
            StreamOp::Release => self.release(id, &request),
            StreamOp::Renew => self.renew(id, &request),
            StreamOp::Cancel => self.cancel(id, &request),
            StreamOp::Check => self.check(id, request),
            StreamOp::Ping => {
                let node = self.state.node.clone();
                let session = self.id;
                self.push(
                    async move { Done::Ping { id, outcome: node.keep_alive(session).await } },
                );
                Ok(())
            }
        };
        if let Err(error) = result {
            self.fail(id, error);
        }
    }

    fn acquire(&mut self, id: u64, request: StreamRequest) -> Result<(), ApiError> {
        if self.acquires.contains_key(&id) {
            return Err(ApiError::invalid(format!("id {id} is already used by a pending acquire")));
        }
        let name = LockName::new(request.name.as_deref().ok_or_else(|| required("name"))?)?;
        self.principal.check_name(name.as_str())?;
        let want = match request.kind.unwrap_or(Kind::Lock) {
            Kind::Lock => {
                if request.limit.is_some() || request.permits.is_some() {
                    return Err(ApiError::invalid("limit and permits are for kind semaphore"));
                }
                Want::Lock(match request.mode.unwrap_or_default() {
                    LockMode::Exclusive => Mode::Exclusive,
                    LockMode::Shared => Mode::Shared,
                })
            }
            Kind::Semaphore => {
                if request.mode.is_some() {
                    return Err(ApiError::invalid("mode is for kind lock"));
                }
                let limit = request.limit.ok_or_else(|| required("limit (for a semaphore)"))?;
                Want::Semaphore { limit, permits: request.permits.unwrap_or(1) }
            }
        };
        let (wait, wait_ms) = match request.wait_ms {
            None | Some(Some(0)) => (Wait::Try, Some(0)),
            Some(Some(ms)) => (Wait::For(ms), Some(ms)),
            Some(None) => (Wait::Forever, None),
        };
        let hold_id = HoldId::from_u128(rand::random::<u128>());
        let command = Command::Acquire(Acquire {
            hold_id,
            name,
            want,
            owner: request.owner.map_or_else(|| self.owner.clone(), Into::into),
            holder: Holder::Session(self.id),
            wait,
            ttl_ms: request.ttl_ms.flatten(),
            lock_delay_ms: request.lock_delay_ms.unwrap_or(0),
            request_id: request.request_id.map(Into::into),
            origin: Origin { boot: self.state.node.boot(), via: Via::Session(self.id) },
        });
        // Registered before proposing: a grant may come before the proposal's own answer.
        self.acquires.insert(id, PendingAcquire { hold_id, wait_ms, cancelled: false });
        self.waiting.insert(hold_id, id);
        let outcome = self.propose(command);
        self.push(async move { Done::Acquire { id, drawn: hold_id, outcome: outcome.await } });
        Ok(())
    }

    /// A hold (or waiting acquire) of this session, by its id.
    fn own_hold(&self, request: &StreamRequest) -> Result<HoldId, ApiError> {
        let hold_id: HoldId =
            request.hold_id.as_deref().ok_or_else(|| required("hold_id"))?.parse()?;
        if self.holds.contains_key(&hold_id) || self.waiting.contains_key(&hold_id) {
            Ok(hold_id)
        } else {
            Err(ApiError::not_found("no live hold with that id on this session"))
        }
    }

    fn release(&mut self, id: u64, request: &StreamRequest) -> Result<(), ApiError> {
        let hold_id = self.own_hold(request)?;
        let outcome = self.propose(Command::Release { hold_id, reason: ReleaseReason::Client });
        self.push(async move { Done::Release { id, hold_id, outcome: outcome.await } });
        Ok(())
    }

    fn renew(&mut self, id: u64, request: &StreamRequest) -> Result<(), ApiError> {
        let hold_id = self.own_hold(request)?;
        let ttl = match request.ttl_ms {
            None => TtlChange::Same,
            Some(None) => TtlChange::Unlimited,
            Some(Some(ms)) => TtlChange::Set(ms),
        };
        let outcome = self.propose(Command::Renew { hold_id, ttl });
        self.push(async move { Done::Renew { id, outcome: outcome.await } });
        Ok(())
    }

    /// Withdraws a pending acquire, or gives back the hold its grant already brought.
    fn cancel(&mut self, id: u64, request: &StreamRequest) -> Result<(), ApiError> {
        let target = request.target.ok_or_else(|| required("target"))?;
        let (hold_id, granted) = if let Some(pending) = self.acquires.get_mut(&target) {
            pending.cancelled = true;
            (pending.hold_id, false)
        } else if let Some((hold_id, _)) = self.holds.iter().find(|(_, by)| **by == target) {
            (*hold_id, true)
        } else {
            return Err(ApiError::not_found(format!("no acquire with id {target} to cancel")));
        };
        let outcome = self.propose(Command::Release { hold_id, reason: ReleaseReason::Client });
        self.push(async move { Done::Cancel { id, hold_id, granted, outcome: outcome.await } });
        Ok(())
    }

    fn check(&mut self, id: u64, request: StreamRequest) -> Result<(), ApiError> {
        let name = LockName::new(request.name.as_deref().ok_or_else(|| required("name"))?)?;
        self.principal.check_name(name.as_str())?;
        let token = request.token.ok_or_else(|| required("token"))?;
        let node = self.state.node.clone();
        self.push(async move {
            let outcome = node.read(move |table, now| table.check(name.as_str(), token, now)).await;
            Done::Check { id, outcome }
        });
        Ok(())
    }

    // ----- answers ------------------------------------------------------------------------

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Acquire { id, drawn, outcome } => self.acquired(id, drawn, outcome),
            Done::Release { id, hold_id, outcome } => match flatten(outcome) {
                Ok(_) => {
                    self.holds.remove(&hold_id);
                    self.reply(StreamReply::ok(id));
                }
                Err(error) => self.fail(id, error),
            },
            Done::Renew { id, outcome } => match flatten(outcome) {
                Ok(CoreResponse::Renewed { hold }) => {
                    self.reply(StreamReply { hold: Some(wire_hold(&hold)), ..StreamReply::ok(id) })
                }
                Ok(other) => self.unexpected(id, "renew", &other),
                Err(error) => self.fail(id, error),
            },
            Done::Cancel { id, hold_id, granted, outcome } => match flatten(outcome) {
                // Not found: the acquire ended on its own meanwhile; it answers for itself.
                Ok(_) | Err(ApiError::NotFound(_)) => {
                    let released = granted && self.holds.remove(&hold_id).is_some();
                    let released = released.then(|| hold_id.to_string());
                    self.reply(StreamReply { released, ..StreamReply::ok(id) });
                }
                Err(error) => self.fail(id, error),
            },
            Done::Check { id, outcome } => match outcome {
                Ok(valid) => self.reply(StreamReply { valid: Some(valid), ..StreamReply::ok(id) }),
                Err(error) => self.fail(id, error.into()),
            },
            Done::Ping { id, outcome } => match outcome {
                Ok(Some(ttl_ms)) => {
                    self.reply(StreamReply { lease_ms: Some(ttl_ms), ..StreamReply::ok(id) })
                }
                Ok(None) => self.fail(id, ApiError::not_found("the session has ended")),
                Err(error) => self.fail(id, error.into()),
            },
            Done::Quiet { what, outcome } => {
                if let Err(error) = flatten(outcome) {
                    tracing::debug!(session = %self.id, what, %error, "session bookkeeping failed");
                }
            }
        }
    }

    fn acquired(&mut self, id: u64, drawn: HoldId, outcome: Outcome<CoreResponse>) {
        let Some(pending) = self.acquires.get_mut(&id) else {
            return; // answered already: its grant or wait end came first
        };
        match outcome {
            Err(error) => {
                // Outcome unknown: give back whatever it may have created.
                self.forget_acquire(id);
                self.quietly(
                    "release",
                    Command::Release { hold_id: drawn, reason: ReleaseReason::Client },
                );
                self.fail(id, error.into());
            }
            Ok(Err(refused)) => {
                self.forget_acquire(id);
                self.state.metrics.acquire_refused(&refused);
                self.fail(id, refused.into());
            }
            Ok(Ok(CoreResponse::Granted { hold, .. })) => {
                self.state.metrics.granted_at_once();
                self.waiting.remove(&drawn);
                self.granted(id, &hold, None);
            }
            Ok(Ok(CoreResponse::Queued { hold_id, .. })) => {
                self.state.metrics.queued();
                if hold_id != drawn {
                    // A `request_id` repeat rejoined an earlier place of this session.
                    pending.hold_id = hold_id;
                    self.waiting.remove(&drawn);
                    if let Some(earlier) = self.waiting.insert(hold_id, id) {
                        self.acquires.remove(&earlier);
                        let error = wait_end_error(lockserver_core::WaitEnd::Replaced, 0);
                        self.fail(earlier, error);
                    }
                }
            }
            Ok(Ok(other)) => {
                self.forget_acquire(id);
                self.unexpected(id, "acquire", &other);
            }
        }
    }

    fn forget_acquire(&mut self, id: u64) {
        if let Some(pending) = self.acquires.remove(&id) {
            self.waiting.remove(&pending.hold_id);
        }
    }

    /// A grant for the pending acquire `id`: its reply, or `cancelled` if a `cancel` already
    /// gave the hold back (the cancel's release comes after the grant in the log).
    fn granted(
        &mut self,
        id: u64,
        hold: &lockserver_core::HoldView,
        after: Option<lockserver_node::WrittenBefore>,
    ) {
        let cancelled = self.acquires.remove(&id).is_some_and(|pending| pending.cancelled);
        if cancelled {
            let error =
                ApiError::Cancelled("cancelled; the grant that won the race was given back".into());
            return self.fail(id, error);
        }
        self.holds.insert(hold.hold_id, id);
        let reply = StreamReply { hold: Some(wire_hold(hold)), ..StreamReply::ok(id) };
        self.emit(Out { after, ..Out::text(to_json(&reply)) });
    }

    fn unexpected(&mut self, id: u64, op: &str, response: &CoreResponse) {
        tracing::error!(?response, op, "unexpected response on a streaming session");
        self.fail(id, ApiError::Internal);
    }

    /// An effect for this session. Returns the close frame when the session has ended.
    fn on_effect(&mut self, delivery: Delivery) -> Option<CloseFrame> {
        let Delivery { effect, written, after } = delivery;
        match effect {
            Effect::Granted { hold, .. } => {
                self.state.metrics.granted_after_wait();
                match self.waiting.remove(&hold.hold_id) {
                    Some(id) => self.granted(id, &hold, after),
                    None => {
                        tracing::debug!(session = %self.id, hold_id = %hold.hold_id, "grant for no pending acquire");
                        self.holds.insert(hold.hold_id, 0);
                    }
                }
            }
            Effect::WaitEnded { hold_id, reason, .. } => {
                self.state.metrics.wait_ended(reason);
                if let Some(id) = self.waiting.remove(&hold_id) {
                    let wait_ms = self.acquires.remove(&id).and_then(|pending| pending.wait_ms);
                    self.fail(id, wait_end_error(reason, wait_ms.unwrap_or(0)));
                }
            }
            Effect::Lost { hold_id, name, token, reason, .. } => {
                self.holds.remove(&hold_id);
                let event = StreamEvent::Lost {
                    hold_id: hold_id.to_string(),
                    name: name.as_str().to_string(),
                    token: token.0,
                    reason: wire_lost(reason),
                };
                self.emit(Out { written, ..Out::text(to_json(&event)) });
            }
            Effect::SessionEnded { reason, .. } => {
                let why = match reason {
                    SessionEnd::Expired => "session ended: its lease ran out",
                    SessionEnd::Closed => "session ended: it was closed",
                };
                return Some(close_frame(close::SESSION_ENDED, why));
            }
        }
        None
    }
}

const OPS: &str = "hello, acquire, release, renew, cancel, check, ping";

fn required(field: &str) -> ApiError {
    ApiError::invalid(format!("{field} is required"))
}

fn flatten<T>(outcome: Outcome<T>) -> Result<T, ApiError> {
    Ok(outcome??)
}

fn wire_lost(reason: lockserver_core::LostReason) -> WireLost {
    match reason {
        lockserver_core::LostReason::Expired => WireLost::Expired,
        lockserver_core::LostReason::Session => WireLost::Session,
        lockserver_core::LostReason::Admin => WireLost::Admin,
        lockserver_core::LostReason::Undeliverable => WireLost::Undeliverable,
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot serialize a stream frame");
        r#"{"id":null,"ok":false,"error":{"code":"internal","message":"internal error"}}"#.into()
    })
}

/// Parses one request; on failure, the id (when it can be read) and the error to answer.
pub(crate) fn parse(text: &str) -> Result<StreamRequest, (Option<u64>, ApiError)> {
    serde_json::from_str(text).map_err(|err| {
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|value| value.get("id")?.as_u64());
        (id, ApiError::invalid(format!("invalid request: {err}")))
    })
}

pub(crate) fn error_out(id: Option<u64>, error: ApiError) -> Out {
    let detail: ErrorDetail = error.body().error;
    Out::text(to_json(&StreamReply::error(id, detail)))
}

pub(crate) fn binary_frame_error() -> ApiError {
    ApiError::invalid("binary frames are not supported: send each request as a JSON text frame")
}

/// The close frame for a failed read: a message over the size limit says so.
fn read_error_close(err: &axum::Error, state: &SharedState) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    let source = std::error::Error::source(err)?;
    match source.downcast_ref::<WsError>()? {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            let limit = state.config.limits.max_body_bytes;
            Some(close_frame(close::TOO_BIG, &format!("a message is larger than {limit} bytes")))
        }
        _ => None,
    }
}
