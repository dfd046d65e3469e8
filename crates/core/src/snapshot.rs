//! The snapshot format: the whole table, versioned, byte-for-byte deterministic.
//!
//! Layout: the 8-byte magic `LKSNAPv\0`, a little-endian `u32` format version, then the body in
//! postcard. The body types below are the persisted format and are separate from the in-memory
//! types, so either can change without silently changing the other. Derived indexes (timers,
//! holder and request indexes, per-name counters) are not stored; `restore` rebuilds them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::Mode;
use crate::ids::{HoldId, Holder, NodeEpoch, Origin, SessionId, Via};
use crate::name::LockName;
use crate::table::{
    EntryState, HeldState, Limits, NameKind, OptMs, RequestMeta, Session, Table, Timer, WaitState,
};

pub const MAGIC: &[u8; 8] = b"LKSNAPv\0";
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a lockserver snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u32),
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

/// The body as read back. Strings borrow from the snapshot bytes where postcard allows it.
#[derive(Deserialize)]
struct SnapshotV1<'a> {
    now_ms: u64,
    wall_ms: u64,
    next_token: u64,
    next_seq: u64,
    #[serde(borrow)]
    names: Vec<NameV1<'a>>,
    #[serde(borrow)]
    entries: Vec<EntryV1<'a>>,
    #[serde(borrow)]
    sessions: Vec<SessionV1<'a>>,
}

/// The body as written: the same fields in the same order, each list serialized straight from
/// the table (no owned copy of it is built; a snapshot of a million holds would otherwise cost
/// hundreds of megabytes while it is written).
#[derive(Serialize)]
struct SnapshotV1Out<'a> {
    now_ms: u64,
    wall_ms: u64,
    next_token: u64,
    next_seq: u64,
    names: Items<'a, NameV1<'a>>,
    entries: Items<'a, EntryV1<'a>>,
    sessions: Items<'a, SessionV1<'a>>,
}

/// A list serialized item by item from an iterator of known length.
struct Items<'a, T>(std::cell::RefCell<Option<Box<dyn ExactSizeIterator<Item = T> + 'a>>>);

impl<'a, T> Items<'a, T> {
    fn new(items: impl ExactSizeIterator<Item = T> + 'a) -> Items<'a, T> {
        Items(std::cell::RefCell::new(Some(Box::new(items))))
    }
}

impl<T: Serialize> Serialize for Items<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let items =
            self.0.borrow_mut().take().ok_or_else(|| S::Error::custom("serialized twice"))?;
        let mut seq = serializer.serialize_seq(Some(items.len()))?;
        for item in items {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

#[derive(Serialize, Deserialize)]
struct NameV1<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// 0 for a lock, the limit for a semaphore.
    semaphore_limit: u32,
    last_token: u64,
    delay_until: u64,
}

#[derive(Serialize, Deserialize)]
struct EntryV1<'a> {
    id: u128,
    #[serde(borrow)]
    name: Cow<'a, str>,
    shared: bool,
    permits: u32,
    lock_delay_ms: u32,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    #[serde(borrow)]
    holder: HolderV1<'a>,
    ttl_ms: Option<u64>,
    #[serde(borrow)]
    request: Option<(Cow<'a, str>, u64)>,
    state: StateV1,
}

#[derive(Serialize, Deserialize)]
enum HolderV1<'a> {
    Anonymous,
    Session(u128),
    CompatOwner(#[serde(borrow)] Cow<'a, str>),
    Connection(u64),
    Rdlm(u128),
}

#[derive(Serialize, Deserialize)]
enum StateV1 {
    Waiting { seq: u64, since_ms: u64, deadline: Option<u64>, origin: OriginV1 },
    Held { token: u64, granted_wall_ms: u64, granted_log_ms: u64, expires_at: Option<u64> },
}

#[derive(Serialize, Deserialize)]
struct OriginV1 {
    node: u64,
    epoch: u64,
    /// 0 session, 1 connection, 2 request.
    via_kind: u8,
    via_id: u128,
}

#[derive(Serialize, Deserialize)]
struct SessionV1<'a> {
    id: u128,
    ttl_ms: u64,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    deadline: u64,
}

fn corrupt(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt(what.into())
}

impl Table {
    /// The whole table as versioned bytes. Equal tables give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let names = self.names.iter().map(|(name, state)| NameV1 {
            name: Cow::Borrowed(name.as_str()),
            semaphore_limit: match state.kind {
                NameKind::Lock => 0,
                NameKind::Semaphore { limit } => limit,
            },
            last_token: state.last_token,
            delay_until: state.delay_until,
        });
        let mut by_id: Vec<&crate::table::Entry> = self.entries.values().collect();
        by_id.sort_unstable_by_key(|entry| entry.id);
        let entries = by_id.into_iter().map(|entry| entry_v1(entry.id, entry));
        let mut session_ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        session_ids.sort_unstable();
        let sessions = session_ids.into_iter().map(|id| {
            let session = &self.sessions[&id];
            SessionV1 {
                id: id.as_u128(),
                ttl_ms: session.ttl_ms,
                owner: Cow::Borrowed(&*session.owner),
                deadline: session.deadline,
            }
        });
        let body = SnapshotV1Out {
            now_ms: self.now_ms,
            wall_ms: self.wall_ms,
            next_token: self.next_token,
            next_seq: self.next_seq,
            names: Items::new(names),
            entries: Items::new(entries),
            sessions: Items::new(sessions),
        };
        let mut bytes = Vec::with_capacity(64 + self.entries.len() * 64);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        postcard::to_extend(&body, bytes).expect("serializing to a Vec cannot fail")
    }

    /// Rebuilds a table from `snapshot` bytes, checking every cross-reference.
    pub fn restore(bytes: &[u8], limits: Limits) -> Result<Table, SnapshotError> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let body: SnapshotV1 =
            postcard::from_bytes(&bytes[12..]).map_err(|err| corrupt(err.to_string()))?;
        let mut table = Table::new(limits);
        table.now_ms = body.now_ms;
        table.wall_ms = body.wall_ms;
        table.next_token = body.next_token;
        table.next_seq = body.next_seq;
        for name in body.names {
            let lock_name = LockName::new(&name.name).map_err(|e| corrupt(e.to_string()))?;
            let kind = match name.semaphore_limit {
                0 => NameKind::Lock,
                limit => NameKind::Semaphore { limit },
            };
            let mut state = crate::table::NameState::new(kind);
            state.last_token = name.last_token;
            state.delay_until = name.delay_until;
            if name.delay_until > 0 {
                table.timers.insert((name.delay_until, Timer::Delay(lock_name.clone())));
            }
            table.names.insert(lock_name, state);
        }
        let mut owners = Owners::default();
        for session in body.sessions {
            let id = SessionId::from_u128(session.id);
            table.timers.insert((session.deadline, Timer::Session(id)));
            let owner = owners.get(&session.owner);
            table
                .sessions
                .insert(id, Session { ttl_ms: session.ttl_ms, owner, deadline: session.deadline });
        }
        let mut holders_by_token: BTreeMap<u64, HoldId> = BTreeMap::new();
        for raw in body.entries {
            let id = HoldId::from_u128(raw.id);
            if table.entries.contains_key(&id) {
                return Err(corrupt("two entries share an id"));
            }
            let entry = restore_entry(id, raw, &table, &mut owners)?;
            let scope = crate::command::RequestScope::of(&entry.holder, &entry.owner);
            if let Some(request) = &entry.request {
                table.by_request.insert((scope, request.request_id.clone()), id);
                table.timers.insert((request.retain_until, Timer::Request(id)));
            }
            if entry.holder != Holder::Anonymous {
                table.by_holder.insert((entry.holder.clone(), entry.name.clone()), id);
            }
            let state = table.names.get_mut(&entry.name).ok_or_else(|| corrupt("unknown name"))?;
            match &entry.state {
                EntryState::Waiting(wait) => {
                    state.queue.get_or_insert_with(Default::default).insert(wait.seq, id);
                    table.waiting_count += 1;
                    if let Some(deadline) = wait.deadline {
                        table.timers.insert((deadline, Timer::Wait(id)));
                    }
                }
                EntryState::Held(held) => {
                    match state.kind {
                        NameKind::Lock => {
                            state.used += 1;
                            state.exclusive |= entry.mode == Mode::Exclusive;
                        }
                        NameKind::Semaphore { .. } => state.used += entry.permits,
                    }
                    if holders_by_token.insert(held.token.get(), id).is_some() {
                        return Err(corrupt("two holds share a token"));
                    }
                    if let Some(deadline) = held.expires_at.get() {
                        table.timers.insert((deadline, Timer::Hold(id)));
                    }
                }
            }
            table.entries.insert(Box::new(entry));
        }
        for id in holders_by_token.into_values() {
            let name = table.entries[&id].name.clone();
            table.names.get_mut(&name).expect("checked above").holders.push(id);
        }
        table.names.compact_all();
        crate::invariants::check_structure(&table).map_err(corrupt)?;
        Ok(table)
    }
}

/// One entry as the snapshot stores it, borrowing its strings from the table.
fn entry_v1(id: HoldId, entry: &crate::table::Entry) -> EntryV1<'_> {
    EntryV1 {
        id: id.as_u128(),
        name: Cow::Borrowed(entry.name.as_str()),
        shared: entry.mode == Mode::Shared,
        permits: entry.permits,
        lock_delay_ms: u32::from(entry.lock_delay_ms),
        owner: Cow::Borrowed(&*entry.owner),
        holder: match &entry.holder {
            Holder::Anonymous => HolderV1::Anonymous,
            Holder::Session(id) => HolderV1::Session(id.as_u128()),
            Holder::CompatOwner(owner) => HolderV1::CompatOwner(Cow::Borrowed(&**owner)),
            Holder::Connection(conn) => HolderV1::Connection(*conn),
            Holder::Rdlm(uid) => HolderV1::Rdlm(uid.as_u128()),
        },
        ttl_ms: entry.ttl_ms.get(),
        request: entry.request.as_ref().map(|r| (Cow::Borrowed(&*r.request_id), r.retain_until)),
        state: match &entry.state {
            EntryState::Waiting(wait) => StateV1::Waiting {
                seq: wait.seq,
                since_ms: wait.since_ms,
                deadline: wait.deadline,
                origin: OriginV1 {
                    node: wait.origin.boot.node,
                    epoch: wait.origin.boot.epoch,
                    via_kind: match wait.origin.via {
                        Via::Session(_) => 0,
                        Via::Connection(_) => 1,
                        Via::Request(_) => 2,
                    },
                    via_id: match wait.origin.via {
                        Via::Session(id) => id.as_u128(),
                        Via::Connection(id) | Via::Request(id) => u128::from(id),
                    },
                },
            },
            EntryState::Held(held) => StateV1::Held {
                token: held.token.get(),
                granted_wall_ms: held.granted_wall_ms,
                granted_log_ms: held.granted_log_ms,
                expires_at: held.expires_at.get(),
            },
        },
    }
}

/// `value`, refused if it is `Some(0)` (never written: TTLs are at least 1 ms, deadlines lie
/// after log time 0).
fn nonzero(value: Option<u64>, what: &str) -> Result<Option<u64>, SnapshotError> {
    if value == Some(0) {
        return Err(corrupt(what));
    }
    Ok(value)
}

/// Owner labels read back, each allocated once however many holds and sessions carry it.
#[derive(Default)]
struct Owners(HashMap<Arc<str>, ()>);

impl Owners {
    fn get(&mut self, label: &str) -> Arc<str> {
        if let Some((owner, ())) = self.0.get_key_value(label) {
            return owner.clone();
        }
        let owner: Arc<str> = Arc::from(label);
        self.0.insert(owner.clone(), ());
        owner
    }
}

fn restore_entry(
    id: HoldId,
    raw: EntryV1<'_>,
    table: &Table,
    owners: &mut Owners,
) -> Result<crate::table::Entry, SnapshotError> {
    // The entry shares its name with the table's key, as it does when granted live.
    let name = match table.names.get_key_value(&*raw.name) {
        Some((name, _)) => name.clone(),
        None => return Err(corrupt("an entry refers to an unknown name")),
    };
    let holder = match raw.holder {
        HolderV1::Anonymous => Holder::Anonymous,
        HolderV1::Session(session) => {
            let session = SessionId::from_u128(session);
            if !table.sessions.contains_key(&session) {
                return Err(corrupt("a hold refers to an unknown session"));
            }
            Holder::Session(session)
        }
        HolderV1::CompatOwner(owner) => Holder::CompatOwner(owners.get(&owner)),
        HolderV1::Connection(conn) => Holder::Connection(conn),
        HolderV1::Rdlm(uid) => Holder::Rdlm(HoldId::from_u128(uid)),
    };
    let state = match raw.state {
        StateV1::Waiting { seq, since_ms, deadline, origin } => {
            let via = match origin.via_kind {
                0 => Via::Session(SessionId::from_u128(origin.via_id)),
                1 => Via::Connection(origin.via_id as u64),
                2 => Via::Request(origin.via_id as u64),
                _ => return Err(corrupt("unknown waiter origin")),
            };
            let boot = NodeEpoch { node: origin.node, epoch: origin.epoch };
            EntryState::Waiting(Box::new(WaitState {
                seq,
                since_ms,
                deadline,
                origin: Origin { boot, via },
            }))
        }
        StateV1::Held { token, granted_wall_ms, granted_log_ms, expires_at } => {
            let expires_at = OptMs::new(nonzero(expires_at, "a hold expiring at log time 0")?);
            let token = std::num::NonZeroU64::new(token).ok_or_else(|| corrupt("a token of 0"))?;
            EntryState::Held(HeldState { token, granted_wall_ms, granted_log_ms, expires_at })
        }
    };
    Ok(crate::table::Entry {
        id,
        name,
        mode: if raw.shared { Mode::Shared } else { Mode::Exclusive },
        permits: raw.permits,
        lock_delay_ms: u16::try_from(raw.lock_delay_ms)
            .ok()
            .filter(|ms| u64::from(*ms) <= crate::command::MAX_LOCK_DELAY_MS)
            .ok_or_else(|| corrupt("a lock-delay over the maximum"))?,
        owner: owners.get(&raw.owner),
        holder,
        ttl_ms: OptMs::new(nonzero(raw.ttl_ms, "a TTL of 0")?),
        request: raw.request.map(|(request_id, retain_until)| {
            Box::new(RequestMeta { request_id: Arc::from(request_id), retain_until })
        }),
        state,
    })
}
