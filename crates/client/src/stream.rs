//! The streaming transport: one WebSocket connection (`GET /v1/session`) that is the client's
//! session, run by one background task (the *driver*).
//!
//! Callers hand the driver requests without ids; it numbers them, writes them, and matches the
//! replies. It also keeps the session alive (`ping` every third of the TTL), keeps the local
//! lease deadline (ARCHITECTURE.md §2: send time of the last answered ping + `lease_ms` −
//! (round trip + `lease_ms` × drift)) and fires every hold's lost signal when it passes, turns
//! pushed `lost` events into lost signals, and reconnects after a drop: `hello{session_id}`
//! resumes the session, and every request without an answer yet is sent again under a new id
//! (acquires keep their `request_id`, so a repeat returns the same hold or rejoins the same
//! place in the queue). A request can then be answered under its old id (from the server's
//! replay buffer) or its new one: the first success counts, and an error counts only from the
//! newest id.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use lockserver_proto::stream::close;
use lockserver_proto::{ErrorBody, ErrorCode, StreamEvent, StreamOp, StreamReply, StreamRequest};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::Settings;
use crate::error::LockError;
use crate::handle::{LostReason, LostSender, LostSignal};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a caller gets back: the reply, and for a granted acquire the hold's lost signal.
#[derive(Debug)]
pub(crate) struct Answer {
    pub reply: StreamReply,
    pub lost: Option<LostSignal>,
}

type Reply = oneshot::Sender<Result<Answer, LockError>>;

enum Cmd {
    Call {
        slot: u64,
        request: Box<StreamRequest>,
        deadline: Option<Instant>,
        reply: Reply,
    },
    /// The caller of acquire `slot` went away: withdraw it (or give back its grant).
    Abandon {
        slot: u64,
    },
    /// Release a hold without waiting for the answer (a dropped handle).
    ReleaseLater {
        hold_id: String,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// The caller's side of the streaming transport. The driver starts on first use (inside the
/// caller's runtime) and ends when every client and handle is gone, closing the session.
#[derive(Debug)]
pub(crate) struct Stream {
    settings: Arc<Settings>,
    tx: OnceLock<mpsc::UnboundedSender<Cmd>>,
    next_slot: AtomicU64,
}

impl Stream {
    pub(crate) fn new(settings: Arc<Settings>) -> Stream {
        Stream { settings, tx: OnceLock::new(), next_slot: AtomicU64::new(1) }
    }

    fn sender(&self) -> &mpsc::UnboundedSender<Cmd> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Driver::new(self.settings.clone(), rx).run());
            tx
        })
    }

    /// Sends one request and waits for its answer. An acquire is withdrawn (`cancel`) if this
    /// future is dropped before it completes.
    pub(crate) async fn call(
        &self,
        request: StreamRequest,
        deadline: Option<Instant>,
    ) -> Result<Answer, LockError> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let is_acquire = request.op == Some(StreamOp::Acquire);
        let (reply, answer) = oneshot::channel();
        let sender = self.sender().clone();
        sender
            .send(Cmd::Call { slot, request: Box::new(request), deadline, reply })
            .map_err(|_| LockError::connection("the client's session task has stopped"))?;
        let mut guard = AbandonOnDrop { sender, slot, armed: is_acquire };
        let answer = answer
            .await
            .unwrap_or_else(|_| Err(LockError::connection("the client's session task stopped")));
        guard.armed = false;
        answer
    }

    pub(crate) fn release_later(&self, hold_id: &str) {
        // No driver yet means no session, so nothing to release.
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Cmd::ReleaseLater { hold_id: hold_id.to_string() });
        }
    }

    /// Ends the session at once (a clean close: no lock-delay) and waits for the server.
    pub(crate) async fn close(&self) {
        if let Some(tx) = self.tx.get() {
            let (done, wait) = oneshot::channel();
            if tx.send(Cmd::Close { done }).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

struct AbandonOnDrop {
    sender: mpsc::UnboundedSender<Cmd>,
    slot: u64,
    armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.sender.send(Cmd::Abandon { slot: self.slot });
        }
    }
}

/// One request the driver has taken and not yet answered.
struct Slot {
    request: StreamRequest,
    /// The id it was last sent under (`None`: not sent on the current connection).
    latest: Option<u64>,
    /// Every id it was sent under.
    ids: Vec<u64>,
    /// An acquire's wait deadline (re-sends wait only for what is left).
    deadline: Option<Instant>,
    /// `None` for the driver's own requests (background releases, cancels).
    reply: Option<Reply>,
    abandoned: bool,
}

struct Session {
    id: String,
    ttl: Duration,
    grace: Duration,
}

struct Driver {
    settings: Arc<Settings>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    sink: Option<SplitSink<Socket, Message>>,
    frames: Option<SplitStream<Socket>>,
    session: Option<Session>,
    next_id: u64,
    next_internal: u64,
    slots: HashMap<u64, Slot>,
    by_id: HashMap<u64, u64>,
    holds: HashMap<String, LostSender>,
    /// Outstanding pings: id → send time.
    pings: HashMap<u64, Instant>,
    next_ping: Instant,
    /// The local lease deadline (already less the drift, round trip and margin).
    deadline: Option<Instant>,
    /// The latest the server could still hold the session (last keepalive sent + lease).
    lease_end: Option<Instant>,
    dropped_at: Option<Instant>,
    next_attempt: Instant,
    backoff: Duration,
    /// When to stop waiting for the answer to a timed acquire (its deadline + the connect
    /// timeout): a server that stops answering cannot stall a bounded wait. Entries of
    /// answered slots are skipped lazily.
    give_ups: BTreeSet<(Instant, u64)>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Internal requests (cancels, background releases) use slots above this.
const INTERNAL_SLOTS: u64 = 1 << 62;

enum Event {
    Cmd(Option<Cmd>),
    Frame(Option<Result<Message, tungstenite::Error>>),
    Timer,
}

impl Driver {
    fn new(settings: Arc<Settings>, rx: mpsc::UnboundedReceiver<Cmd>) -> Driver {
        let now = Instant::now();
        Driver {
            settings,
            rx,
            sink: None,
            frames: None,
            session: None,
            next_id: 1,
            next_internal: INTERNAL_SLOTS,
            slots: HashMap::new(),
            by_id: HashMap::new(),
            holds: HashMap::new(),
            pings: HashMap::new(),
            next_ping: now,
            deadline: None,
            lease_end: None,
            dropped_at: None,
            next_attempt: now,
            backoff: MIN_BACKOFF,
            give_ups: BTreeSet::new(),
        }
    }

    async fn run(mut self) {
        loop {
            if self.sink.is_none() && self.wants_connection() && Instant::now() >= self.next_attempt
            {
                self.connect().await;
                continue;
            }
            let timer = self.next_timer();
            let event = tokio::select! {
                cmd = self.rx.recv() => Event::Cmd(cmd),
                frame = next_frame(&mut self.frames) => Event::Frame(frame),
                () = sleep_until(timer) => Event::Timer,
            };
            match event {
                Event::Cmd(None) => {
                    // Every client and handle is gone: end the session cleanly.
                    self.close().await;
                    return;
                }
                Event::Cmd(Some(cmd)) => self.on_cmd(cmd).await,
                Event::Frame(frame) => self.on_frame(frame).await,
                Event::Timer => self.on_timer().await,
            }
        }
    }

    /// Whether there is anything a connection is needed for.
    fn wants_connection(&self) -> bool {
        self.session.is_some() || !self.slots.is_empty()
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        if self.sink.is_some() {
            consider(self.next_ping);
        } else if self.wants_connection() {
            consider(self.next_attempt);
        }
        if let Some(deadline) = self.deadline {
            if !self.holds.is_empty() {
                consider(deadline);
            }
        }
        if let Some(&(at, _)) = self.give_ups.first() {
            consider(at);
        }
        next
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(deadline) = self.deadline {
            if now >= deadline && !self.holds.is_empty() {
                tracing::warn!("lease deadline passed without a renewed lease; holds are lost");
                for (_, lost) in self.holds.drain() {
                    lost.fire(LostReason::LeaseDeadline);
                }
            }
        }
        while let Some(&(at, slot)) = self.give_ups.first() {
            if at > now {
                break;
            }
            self.give_ups.pop_first();
            let Some(entry) = self.slots.get_mut(&slot) else { continue };
            if let Some(reply) = entry.reply.take() {
                let wait = match entry.request.wait_ms {
                    Some(Some(ms)) => Duration::from_millis(ms),
                    _ => Duration::ZERO,
                };
                let bound = wait + self.settings.connect_timeout;
                let _ = reply.send(Err(LockError::connection(format!(
                    "no answer from the server within {bound:?}; the acquire is withdrawn"
                ))));
                self.abandon(slot).await;
            }
        }
        if self.sink.is_some() && now >= self.next_ping {
            self.ping().await;
        }
    }

    async fn ping(&mut self) {
        let ttl = self.session.as_ref().map_or(Duration::from_secs(2), |s| s.ttl);
        // A ping unanswered for half the lease means a dead (half-open) connection: reconnect
        // and resume while the lease still allows it, rather than wait for TCP to give up.
        let oldest = self.pings.values().min().copied();
        if oldest.is_some_and(|sent| sent.elapsed() >= ttl / 2) {
            tracing::debug!("a ping went unanswered for half the lease; reconnecting");
            self.disconnected(None).await;
            return;
        }
        self.next_ping = Instant::now() + ttl / 3;
        let id = self.next_id();
        self.pings.insert(id, Instant::now());
        let request =
            StreamRequest { id: Some(id), op: Some(StreamOp::Ping), ..Default::default() };
        self.write(&request).await;
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Call { slot, request, deadline, reply } => {
                if let Some(deadline) = deadline {
                    self.give_ups.insert((deadline + self.settings.connect_timeout, slot));
                }
                let slot_entry = Slot {
                    request: *request,
                    latest: None,
                    ids: Vec::new(),
                    deadline,
                    reply: Some(reply),
                    abandoned: false,
                };
                self.slots.insert(slot, slot_entry);
                if self.sink.is_some() {
                    self.send_slot(slot).await;
                }
            }
            Cmd::Abandon { slot } => self.abandon(slot).await,
            Cmd::ReleaseLater { hold_id } => {
                // The handle is gone: nobody listens to its signal any more.
                self.holds.remove(&hold_id);
                if self.session.is_some() {
                    self.release(hold_id).await;
                }
            }
            Cmd::Close { done } => {
                self.close().await;
                let _ = done.send(());
            }
        }
    }

    /// Nobody waits for acquire `slot` any more: withdraw it, and give back its grant if one
    /// comes anyway.
    async fn abandon(&mut self, slot: u64) {
        let Some(entry) = self.slots.get_mut(&slot) else { return };
        entry.abandoned = true;
        entry.reply = None;
        match entry.latest {
            Some(target) => {
                let cancel = StreamRequest {
                    op: Some(StreamOp::Cancel),
                    target: Some(target),
                    ..Default::default()
                };
                self.internal(cancel).await;
            }
            None if entry.ids.is_empty() => {
                self.slots.remove(&slot);
            }
            // Sent on an earlier connection: it is sent again on the next one, then withdrawn.
            None => {}
        }
    }

    async fn release(&mut self, hold_id: String) {
        let request = StreamRequest {
            op: Some(StreamOp::Release),
            hold_id: Some(hold_id),
            ..Default::default()
        };
        self.internal(request).await;
    }

    /// A request of the driver's own (nobody waits for its answer).
    async fn internal(&mut self, request: StreamRequest) {
        let slot = self.next_internal;
        self.next_internal += 1;
        self.slots.insert(
            slot,
            Slot {
                request,
                latest: None,
                ids: Vec::new(),
                deadline: None,
                reply: None,
                abandoned: false,
            },
        );
        if self.sink.is_some() {
            self.send_slot(slot).await;
        }
    }

    /// Writes a slot's request under a fresh id.
    async fn send_slot(&mut self, slot: u64) {
        let id = self.next_id();
        let Some(entry) = self.slots.get_mut(&slot) else { return };
        let mut request = entry.request.clone();
        request.id = Some(id);
        if request.op == Some(StreamOp::Acquire) && !entry.ids.is_empty() {
            if let Some(deadline) = entry.deadline {
                // A re-send waits only for what is left of the caller's wait.
                let left = deadline.saturating_duration_since(Instant::now());
                request.wait_ms = Some(Some(crate::client::millis_up(left)));
            }
        }
        if request.op == Some(StreamOp::Cancel) {
            // A cancel follows its target to the target's newest id.
            if let Some(target) = request.target.and_then(|t| self.by_id.get(&t)) {
                if let Some(latest) = self.slots.get(target).and_then(|s| s.latest) {
                    request.target = Some(latest);
                }
            }
        }
        let entry = self.slots.get_mut(&slot).expect("slot present");
        entry.latest = Some(id);
        entry.ids.push(id);
        let abandoned = entry.abandoned;
        self.by_id.insert(id, slot);
        self.write(&request).await;
        if abandoned && request.op == Some(StreamOp::Acquire) {
            // Its caller left while we were disconnected: withdraw it right away.
            let cancel = StreamRequest {
                op: Some(StreamOp::Cancel),
                target: Some(id),
                ..Default::default()
            };
            Box::pin(self.internal(cancel)).await;
        }
    }

    async fn write(&mut self, request: &StreamRequest) {
        let Some(sink) = self.sink.as_mut() else { return };
        let text = serde_json::to_string(request).expect("requests serialize");
        if let Err(err) = sink.send(Message::Text(text.into())).await {
            tracing::debug!(%err, "write to the session failed");
            self.disconnected(None).await;
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) {
        match frame {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Close(frame))) => {
                self.disconnected(frame.map(|f| (u16::from(f.code), f.reason.to_string()))).await
            }
            Some(Ok(_)) => {} // pings are answered by tungstenite itself
            Some(Err(err)) => {
                tracing::debug!(%err, "the session's connection failed");
                self.disconnected(None).await;
            }
            None => self.disconnected(None).await,
        }
    }

    async fn on_text(&mut self, text: &str) {
        // Replies are the common frame: read one first (an event has no `ok`, so it never
        // passes for a reply), an event only when that fails.
        let reply: StreamReply = match serde_json::from_str(text) {
            Ok(reply) => reply,
            Err(err) => {
                match serde_json::from_str::<StreamEvent>(text) {
                    Ok(StreamEvent::Lost { hold_id, reason, .. }) => {
                        if let Some(lost) = self.holds.remove(&hold_id) {
                            lost.fire(reason.into());
                        }
                    }
                    Err(_) => tracing::warn!(%err, "unreadable frame from the server"),
                }
                return;
            }
        };
        let Some(id) = reply.id else {
            tracing::warn!(error = ?reply.error, "the server could not read a request");
            return;
        };
        if let Some(sent) = self.pings.remove(&id) {
            if reply.ok {
                self.extend_lease(sent, reply.lease_ms);
            } else if reply.error.as_ref().is_some_and(|e| e.code == ErrorCode::NotFound) {
                self.session_over("the session has ended").await;
            }
            return;
        }
        let Some(&slot) = self.by_id.get(&id) else { return };
        let Some(entry) = self.slots.get(&slot) else { return };
        if !reply.ok && entry.latest != Some(id) {
            return; // an error under an older id: the newest one decides
        }
        let entry = self.slots.remove(&slot).expect("slot present");
        for old in &entry.ids {
            self.by_id.remove(old);
        }
        let resent_release = entry.request.op == Some(StreamOp::Release) && entry.ids.len() > 1;
        if resent_release && reply.error.as_ref().is_some_and(|e| e.code == ErrorCode::NotFound) {
            // The first send's answer was lost with its connection: the hold is gone because
            // that release worked (a lost hold would have had its `lost` event).
            return self.answer(entry, StreamReply::ok(id)).await;
        }
        if !reply.ok {
            if let Some(detail) = &reply.error {
                if detail.code == ErrorCode::NotLeader {
                    if let Some(leader) = &detail.leader {
                        // Reconnect to the leader; the request is sent again there.
                        self.settings.follow_leader(leader);
                        let mut entry = entry;
                        entry.latest = None;
                        self.slots.insert(slot, entry);
                        self.disconnected(None).await;
                        return;
                    }
                }
            }
        }
        self.answer(entry, reply).await;
    }

    /// Hands a reply to its caller (or, for an abandoned acquire, gives back its grant).
    async fn answer(&mut self, entry: Slot, reply: StreamReply) {
        let granted = reply.ok && entry.request.op == Some(StreamOp::Acquire);
        let Some(hold) = reply.hold.as_ref().filter(|_| granted) else {
            if let Some(tx) = entry.reply {
                let _ = tx.send(Ok(Answer { reply, lost: None }));
            }
            return;
        };
        let hold_id = hold.hold_id.clone();
        if entry.abandoned || entry.reply.is_none() {
            self.release(hold_id).await;
            return;
        }
        let (lost_tx, lost) = LostSignal::pair();
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            lost_tx.fire(LostReason::LeaseDeadline);
        }
        self.holds.insert(hold_id.clone(), lost_tx);
        let tx = entry.reply.expect("checked above");
        if tx.send(Ok(Answer { reply, lost: Some(lost) })).is_err() {
            // The caller went away between the grant and now.
            self.holds.remove(&hold_id);
            self.release(hold_id).await;
        }
    }

    /// A committed keepalive sent at `sent` gave `lease_ms`: move the local deadline.
    fn extend_lease(&mut self, sent: Instant, lease_ms: Option<u64>) {
        let Some(lease_ms) = lease_ms else { return };
        let lease = Duration::from_millis(lease_ms);
        let round_trip = Instant::now().saturating_duration_since(sent);
        let safety = round_trip + lease.mul_f64(self.settings.drift) + self.settings.lease_margin;
        let deadline = sent + lease.saturating_sub(safety);
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.max(deadline)));
        let end = sent + lease;
        self.lease_end = Some(self.lease_end.map_or(end, |e| e.max(end)));
    }

    /// Opens a connection and says `hello` (resuming the session if there is one).
    async fn connect(&mut self) {
        let mut hops = 0;
        loop {
            match self.try_connect().await {
                Ok(()) => {
                    self.backoff = MIN_BACKOFF;
                    return;
                }
                Err(Failure::Leader(leader)) if hops < self.settings.max_redirects => {
                    hops += 1;
                    self.settings.follow_leader(&leader);
                }
                Err(Failure::Refused(error)) => {
                    // The server answered but will not have us (credential, arguments):
                    // retrying cannot help.
                    self.fail_all(&error);
                    self.session = None;
                    self.next_attempt = Instant::now() + self.backoff;
                    return;
                }
                Err(failure) => {
                    let message = failure.message();
                    tracing::debug!(%message, "cannot connect the session");
                    self.connect_failed(message).await;
                    return;
                }
            }
        }
    }

    /// After a failed attempt: keep trying while the session may still be resumed; otherwise
    /// give up on everything waiting.
    async fn connect_failed(&mut self, message: String) {
        let now = Instant::now();
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        let resumable = self.session.as_ref().is_some_and(|session| {
            let by_grace = self.dropped_at.map(|at| at + session.grace);
            let end = self.lease_end.into_iter().chain(by_grace).max();
            end.is_some_and(|end| now < end)
        });
        if resumable {
            // Requests whose wait is over cannot be helped by waiting for the reconnect.
            let over: Vec<u64> = self
                .slots
                .iter()
                .filter(|(_, s)| s.reply.is_some() && s.deadline.is_some_and(|d| d <= now))
                .map(|(&slot, _)| slot)
                .collect();
            for slot in over {
                let entry = self.slots.remove(&slot).expect("slot present");
                self.fail(entry, &LockError::Connection(message.clone()));
            }
            return;
        }
        if self.session.is_some() {
            self.session_over("the session could not be resumed in time").await;
        }
        self.fail_all(&LockError::Connection(message));
    }

    async fn try_connect(&mut self) -> Result<(), Failure> {
        let url = self.settings.ws_url();
        let mut request =
            url.as_str().into_client_request().map_err(|err| Failure::Refused(bad_url(&err)))?;
        if let Some(secret) = &self.settings.secret {
            let value = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
                Failure::Refused(LockError::Auth("the secret is not a valid header value".into()))
            })?;
            request.headers_mut().insert("authorization", value);
        }
        let timeout = self.settings.connect_timeout;
        let socket =
            match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await {
                Err(_) => {
                    return Err(Failure::Io(format!("no connection to {url} within {timeout:?}")))
                }
                Ok(Err(tungstenite::Error::Http(response))) => {
                    let status = response.status().as_u16();
                    let body = response.body().as_deref().unwrap_or_default();
                    return Err(http_refusal(status, body));
                }
                Ok(Err(err)) => return Err(Failure::Io(format!("cannot connect to {url}: {err}"))),
                Ok(Ok((socket, _))) => socket,
            };
        let (sink, frames) = socket.split();
        self.sink = Some(sink);
        self.frames = Some(frames);
        self.pings.clear();
        // hello: resume the session we have, or open one.
        loop {
            let resume = self.session.as_ref().map(|s| s.id.clone());
            let hello_id = self.next_id();
            let hello = StreamRequest {
                id: Some(hello_id),
                op: Some(StreamOp::Hello),
                session_id: Some(resume.clone()),
                ttl_ms: self
                    .settings
                    .session_ttl
                    .filter(|_| resume.is_none())
                    .map(|ttl| Some(crate::client::millis_up(ttl))),
                grace_ms: self.settings.grace.map(crate::client::millis_up),
                owner: Some(self.settings.owner.clone()).filter(|_| resume.is_none()),
                ..Default::default()
            };
            let sent = Instant::now();
            self.write(&hello).await;
            let reply = self.await_reply(hello_id, timeout).await?;
            if reply.ok {
                let (Some(id), Some(ttl)) = (reply.session_id.clone(), reply.ttl_ms) else {
                    self.drop_connection();
                    return Err(Failure::Io("the hello reply has no session".into()));
                };
                let grace = Duration::from_millis(reply.grace_ms.unwrap_or(0));
                self.session = Some(Session { id, ttl: Duration::from_millis(ttl), grace });
                self.extend_lease(sent, reply.lease_ms);
                self.next_ping = Instant::now() + Duration::from_millis(ttl) / 3;
                self.dropped_at = None;
                break;
            }
            let detail = reply.error.unwrap_or_else(|| {
                ErrorBody::new(ErrorCode::Internal, "an error without a body").error
            });
            match detail.code {
                ErrorCode::NotFound if resume.is_some() => {
                    // It ended while we were away: everything of it is gone. Open a new one.
                    self.session_over("the session ended while disconnected").await;
                }
                ErrorCode::NotLeader => {
                    self.drop_connection();
                    return Err(match detail.leader {
                        Some(leader) => Failure::Leader(leader),
                        None => Failure::Io(format!("not the leader: {}", detail.message)),
                    });
                }
                ErrorCode::Unavailable | ErrorCode::Internal => {
                    self.drop_connection();
                    return Err(Failure::Io(detail.message));
                }
                _ => {
                    self.drop_connection();
                    return Err(Failure::Refused(LockError::from_detail(detail, Duration::ZERO)));
                }
            }
        }
        // Everything not answered yet goes (again) on this connection.
        let mut pending: Vec<u64> = self.slots.keys().copied().collect();
        pending.sort_unstable();
        for slot in pending {
            if self.sink.is_none() {
                break;
            }
            self.send_slot(slot).await;
        }
        Ok(())
    }

    /// Reads frames until the reply `id` comes (nothing else comes before a hello's reply).
    async fn await_reply(&mut self, id: u64, timeout: Duration) -> Result<StreamReply, Failure> {
        let until = Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(until, next_frame(&mut self.frames)).await;
            match frame {
                Err(_) => {
                    self.drop_connection();
                    return Err(Failure::Io(format!("no answer to hello within {timeout:?}")));
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    if let Ok(reply) = serde_json::from_str::<StreamReply>(text.as_str()) {
                        if reply.id == Some(id) {
                            return Ok(reply);
                        }
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.drop_connection();
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(Failure::Io(format!("the server closed the session: {reason}")));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(err))) => {
                    self.drop_connection();
                    return Err(Failure::Io(format!("the connection failed: {err}")));
                }
                Ok(None) => {
                    self.drop_connection();
                    return Err(Failure::Io("the server closed the connection".into()));
                }
            }
        }
    }

    fn drop_connection(&mut self) {
        self.sink = None;
        self.frames = None;
        self.pings.clear();
        for entry in self.slots.values_mut() {
            entry.latest = None;
        }
    }

    /// The connection is gone. `close` is the server's close frame, if it sent one.
    async fn disconnected(&mut self, close: Option<(u16, String)>) {
        if self.sink.is_none() {
            return;
        }
        self.drop_connection();
        self.dropped_at = Some(Instant::now());
        self.next_attempt = Instant::now();
        match close {
            Some((close::SESSION_ENDED, reason)) => self.session_over(&reason).await,
            Some((close::RESUMED_ELSEWHERE, _)) => {
                self.session_over("the session was resumed on another connection").await
            }
            Some((code, reason)) => tracing::debug!(code, %reason, "the server closed the session"),
            None => {}
        }
    }

    /// The session has ended: every hold is lost and every request sent on it is answered
    /// with a connection error (nothing it created survives). Unsent requests wait for a new
    /// session.
    async fn session_over(&mut self, why: &str) {
        self.session = None;
        self.deadline = None;
        self.lease_end = None;
        for (_, lost) in self.holds.drain() {
            lost.fire(LostReason::SessionEnded);
        }
        // What was sent on it is answered; the driver's own requests (cancels, background
        // releases) concerned it alone and are dropped, sent or not.
        let sent: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.ids.is_empty() || s.reply.is_none())
            .map(|(&k, _)| k)
            .collect();
        for slot in sent {
            let entry = self.slots.remove(&slot).expect("slot present");
            for id in &entry.ids {
                self.by_id.remove(id);
            }
            let is_release = entry.request.op == Some(StreamOp::Release);
            if is_release {
                // Ending the session released it.
                if let Some(tx) = entry.reply {
                    let _ = tx.send(Ok(Answer { reply: StreamReply::ok(0), lost: None }));
                }
                continue;
            }
            self.fail(entry, &LockError::Connection(why.to_string()));
        }
    }

    fn fail(&mut self, entry: Slot, error: &LockError) {
        for id in &entry.ids {
            self.by_id.remove(id);
        }
        if let Some(tx) = entry.reply {
            let _ = tx.send(Err(error.clone()));
        }
    }

    fn fail_all(&mut self, error: &LockError) {
        for (_, entry) in std::mem::take(&mut self.slots) {
            if let Some(tx) = entry.reply {
                let _ = tx.send(Err(error.clone()));
            }
        }
        self.by_id.clear();
    }

    /// A clean close: the server ends the session at once, with no lock-delay.
    async fn close(&mut self) {
        if let Some(mut sink) = self.sink.take() {
            let frame = CloseFrame { code: CloseCode::Normal, reason: "client closed".into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            // Wait (briefly) for the server's close, so the session has ended when we return.
            if let Some(mut frames) = self.frames.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(message)) = frames.next().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        self.drop_connection();
        for (_, lost) in self.holds.drain() {
            lost.fire(LostReason::SessionEnded);
        }
        self.session = None;
        self.deadline = None;
        self.fail_all(&LockError::Connection("the client was closed".into()));
    }
}

enum Failure {
    Io(String),
    Leader(String),
    Refused(LockError),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Io(message) => message,
            Failure::Leader(leader) => format!("too many leader redirects (last: {leader})"),
            Failure::Refused(error) => error.to_string(),
        }
    }
}

fn bad_url(err: &tungstenite::Error) -> LockError {
    LockError::InvalidArgument(format!("bad server address: {err}"))
}

/// The upgrade was answered with an HTTP error.
fn http_refusal(status: u16, body: &[u8]) -> Failure {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => match error.code {
            ErrorCode::NotLeader => match error.leader {
                Some(leader) => Failure::Leader(leader),
                None => Failure::Io(format!("not the leader: {}", error.message)),
            },
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::LimitExceeded => {
                Failure::Io(format!("{}: {}", error.code, error.message))
            }
            _ => Failure::Refused(LockError::from_detail(error, Duration::ZERO)),
        },
        Err(_) => Failure::Io(format!(
            "the server answered HTTP {status} to the session upgrade: {}",
            String::from_utf8_lossy(body)
        )),
    }
}

async fn next_frame(
    frames: &mut Option<SplitStream<Socket>>,
) -> Option<Result<Message, tungstenite::Error>> {
    match frames {
        Some(frames) => frames.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
