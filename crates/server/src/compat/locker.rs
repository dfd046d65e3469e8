//! The locker binary TCP protocol (npm `locker-server` 0.1.3; client npm `locker` 0.1.0),
//! COMPAT.md §3, on its own listener (default 127.0.0.1:4545).
//!
//! Request, 14 + L bytes, little-endian: `u8 L` · `u32 sequence` · `u32 wait_ms` ·
//! `u32 timeout_ms` · `u8 action` (1 lock, 0 unlock) · `L bytes name`. Reply, 6 bytes:
//! `u32 sequence` · `u8 action` · `u8 result`. A connection is the holder
//! (`Holder::Connection`): its locks go when it does. Better than the original: values ≥ 2^31
//! ms are taken literally, unlocking a waiting request answers that request `(seq,1,0)`, a
//! sequence still in use is refused, and names are freed when unused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lockserver_core::{
    Acquire, Command, CoreError, Effect, HoldId, Holder, LockName, Mode, Origin, ReleaseReason,
    Response as CoreResponse, Via, Wait, Want,
};
use lockserver_node::{InboxKey, NodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::delivery::release_later;
use crate::http::{shutdown_started, SharedState};

const HEADER: usize = 14;
const LOCK: u8 = 1;
const UNLOCK: u8 = 0;

type Outcome = Result<Result<CoreResponse, CoreError>, NodeError>;
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

enum Done {
    Lock { seq: u32, outcome: Outcome },
    Unlock { seq: u32, outcome: Outcome },
}

/// One parsed request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    seq: u32,
    wait_ms: u32,
    timeout_ms: u32,
    action: u8,
    name: Vec<u8>,
}

/// The whole request at the front of `bytes`, if there is one, and its length.
fn parse_request(bytes: &[u8]) -> Option<(Request, usize)> {
    let len = usize::from(*bytes.first()?);
    let frame = bytes.get(..HEADER + len)?;
    let word =
        |at: usize| u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let request = Request {
        seq: word(1),
        wait_ms: word(5),
        timeout_ms: word(9),
        action: frame[13],
        name: frame[HEADER..].to_vec(),
    };
    Some((request, HEADER + len))
}

fn reply(out: &mut Vec<u8>, seq: u32, action: u8, ok: bool) {
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(action);
    out.push(u8::from(ok));
}

/// Accepts locker connections until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    state: SharedState,
    workers: Option<crate::listener::Spawner>,
) {
    let stop = shutdown_started(state.shutdown.clone());
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "locker accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        match &workers {
            Some(workers) => {
                // Moved as a std socket: a tokio socket belongs to the runtime that registered it.
                let Ok(stream) = stream.into_std() else { continue };
                let state = state.clone();
                workers.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => connection(stream, state).await,
                        Err(err) => tracing::warn!(error = %err, "cannot hand a locker connection to a worker"),
                    }
                });
            }
            None => drop(tokio::spawn(connection(stream, state.clone()))),
        }
    }
}

/// Where one of the connection's requests stands.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Waiting(HoldId),
    Held(HoldId),
}

async fn connection(mut stream: TcpStream, state: SharedState) {
    let node = state.node.clone();
    // Drawn at random: connection ids must be unique across boots.
    let conn_id = rand::random::<u64>();
    let mut inbox = node.connection_inbox(InboxKey::Connection(conn_id));
    let mut slots: HashMap<u32, Slot> = HashMap::new();
    let mut by_hold: HashMap<HoldId, u32> = HashMap::new();
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut input = Vec::with_capacity(256);
    let mut output = Vec::with_capacity(64);
    let mut chunk = [0u8; 4096];
    let shutdown = shutdown_started(state.shutdown.clone());
    tokio::pin!(shutdown);
    loop {
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
        }
        tokio::select! {
            biased;
            delivery = inbox.receiver.recv() => {
                let Some(delivery) = delivery else { break };
                match delivery.effect {
                    Effect::Granted { hold, .. } => {
                        if let Some(seq) = by_hold.get(&hold.hold_id).copied() {
                            slots.insert(seq, Slot::Held(hold.hold_id));
                            reply(&mut output, seq, LOCK, true);
                        }
                    }
                    Effect::WaitEnded { hold_id, .. } => {
                        if let Some(seq) = by_hold.remove(&hold_id) {
                            slots.remove(&seq);
                            reply(&mut output, seq, LOCK, false);
                        }
                    }
                    // The hold timeout: released silently.
                    Effect::Lost { hold_id, .. } => {
                        if let Some(seq) = by_hold.remove(&hold_id) {
                            slots.remove(&seq);
                        }
                    }
                    Effect::SessionEnded { .. } => {}
                }
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Done::Lock { seq, outcome } => {
                    let Some(Slot::Waiting(hold_id)) = slots.get(&seq).copied() else {
                        continue; // answered already by its grant or wait end
                    };
                    match outcome {
                        Ok(Ok(CoreResponse::Granted { .. })) => {
                            slots.insert(seq, Slot::Held(hold_id));
                            reply(&mut output, seq, LOCK, true);
                        }
                        Ok(Ok(CoreResponse::Queued { .. })) => {}
                        other => {
                            if other.is_err() {
                                // Outcome unknown: give back whatever it may have created.
                                release_later(&node, hold_id, ReleaseReason::Client);
                            }
                            slots.remove(&seq);
                            by_hold.remove(&hold_id);
                            reply(&mut output, seq, LOCK, false);
                        }
                    }
                }
                Done::Unlock { seq, outcome } => {
                    reply(&mut output, seq, UNLOCK, matches!(outcome, Ok(Ok(_))));
                }
            },
            read = stream.read(&mut chunk) => {
                let read = match read {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                input.extend_from_slice(&chunk[..read]);
                // Every whole request of the chunk, then one shift of the partial rest.
                let mut used = 0;
                while let Some((request, len)) = parse_request(&input[used..]) {
                    used += len;
                    handle(&state, conn_id, request, &mut slots, &mut by_hold, &mut inflight, &mut output);
                }
                input.drain(..used);
            }
            () = &mut shutdown => break,
        }
    }
    // The connection is gone: its locks and waiters go with it (a restart's `Resume` covers
    // the case where the node itself is stopping).
    if !slots.is_empty() && !state.shutting_down() {
        let command = Command::ReleaseHolder { holder: Holder::Connection(conn_id) };
        if let Err(err) = node.propose(command).await {
            tracing::warn!(error = %err, "cannot release a closed locker connection's locks");
        }
    }
}

fn handle(
    state: &SharedState,
    conn_id: u64,
    request: Request,
    slots: &mut HashMap<u32, Slot>,
    by_hold: &mut HashMap<HoldId, u32>,
    inflight: &mut FuturesUnordered<Pending>,
    output: &mut Vec<u8>,
) {
    let seq = request.seq;
    match request.action {
        LOCK => {
            let name =
                std::str::from_utf8(&request.name).ok().and_then(|name| LockName::new(name).ok());
            let (Some(name), false) = (name, slots.contains_key(&seq)) else {
                // A bad name, or a sequence still in use on this connection.
                return reply(output, seq, LOCK, false);
            };
            let hold_id = HoldId::from_u128(rand::random::<u128>());
            let wait = match request.wait_ms {
                0 => Wait::Try,
                ms => Wait::For(u64::from(ms)),
            };
            let command = Command::Acquire(Acquire {
                hold_id,
                name,
                want: Want::Lock(Mode::Exclusive),
                owner: lockserver_core::owner_label(""),
                holder: Holder::Connection(conn_id),
                wait,
                // There is no "hold forever": 0 releases right after the grant.
                ttl_ms: Some(u64::from(request.timeout_ms.max(1))),
                lock_delay_ms: 0,
                request_id: None,
                origin: Origin { boot: state.node.boot(), via: Via::Connection(conn_id) },
            });
            slots.insert(seq, Slot::Waiting(hold_id));
            by_hold.insert(hold_id, seq);
            let node = state.node.clone();
            inflight.push(Box::pin(async move {
                Done::Lock { seq, outcome: node.propose(command).await }
            }));
        }
        UNLOCK => {
            let hold_id = match slots.get(&seq).copied() {
                None => return reply(output, seq, UNLOCK, false),
                // Withdrawing a waiting request: its wait end answers it (seq,1,0) and frees the
                // slot; the unlock itself answers (seq,0,0).
                Some(Slot::Waiting(hold_id)) => {
                    release_later(&state.node, hold_id, ReleaseReason::Client);
                    return reply(output, seq, UNLOCK, false);
                }
                Some(Slot::Held(hold_id)) => hold_id,
            };
            slots.remove(&seq);
            by_hold.remove(&hold_id);
            let release = Command::Release { hold_id, reason: ReleaseReason::Client };
            let node = state.node.clone();
            inflight.push(Box::pin(async move {
                Done::Unlock { seq, outcome: node.propose(release).await }
            }));
        }
        _ => {} // unknown actions get no reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u32, wait: u32, timeout: u32, action: u8, name: &[u8]) -> Vec<u8> {
        let mut bytes = vec![name.len() as u8];
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(&wait.to_le_bytes());
        bytes.extend_from_slice(&timeout.to_le_bytes());
        bytes.push(action);
        bytes.extend_from_slice(name);
        bytes
    }

    #[test]
    fn requests_parse_whole_whatever_the_split() {
        let mut stream = frame(7, 1000, u32::MAX, LOCK, b"db");
        stream.extend(frame(8, 0, 0, UNLOCK, b""));
        // Reads whole requests off the front, as the connection loop does.
        fn take_all(buffer: &mut Vec<u8>, got: &mut Vec<Request>) {
            let mut used = 0;
            while let Some((request, len)) = parse_request(&buffer[used..]) {
                used += len;
                got.push(request);
            }
            buffer.drain(..used);
        }
        for cut in 0..stream.len() {
            let mut buffer = stream[..cut].to_vec();
            let mut got = Vec::new();
            take_all(&mut buffer, &mut got);
            buffer.extend_from_slice(&stream[cut..]);
            take_all(&mut buffer, &mut got);
            assert!(buffer.is_empty());
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(
                got[0],
                Request {
                    seq: 7,
                    wait_ms: 1000,
                    timeout_ms: u32::MAX,
                    action: LOCK,
                    name: b"db".to_vec()
                }
            );
            assert_eq!((got[1].seq, got[1].action, got[1].name.len()), (8, UNLOCK, 0));
        }
    }
}
