//! The snapshot format: the whole table, versioned, byte-for-byte deterministic.
//!
//! Layout: the 8-byte magic `LKSNAPv\0`, a little-endian `u32` format version, then the body in
//! postcard. The body types below are the persisted format and are separate from the in-memory
//! types, so either can change without silently changing the other. Derived indexes (timers,
//! holder and request indexes, per-name counters) are not stored; `restore` rebuilds them.

use std::borrow::Cow;
use std::collections::HashMap;
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

/// The body, as written: each list serialized straight from the table (no owned copy of it
/// is built; a snapshot of a million holds would otherwise cost hundreds of megabytes).
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
    ///
    /// The body is read item by item straight into the table (no owned copy of it is built),
    /// and a name that turns out to be an exclusive lock with one holder is stored as just that
    /// holder from the start: restoring a million holds costs little beyond the table itself.
    pub fn restore(bytes: &[u8], limits: Limits) -> Result<Table, SnapshotError> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let mut restorer = Restorer {
            table: Table::new(limits),
            owners: Owners::default(),
            plain: Vec::new(),
            plain_used: 0,
            session_refs: Vec::new(),
            error: None,
            previous_name: None,
            body_len: bytes.len(),
        };
        let mut deserializer = postcard::Deserializer::from_bytes(&bytes[12..]);
        let read = serde::de::DeserializeSeed::deserialize(Body(&mut restorer), &mut deserializer);
        if let Some(error) = restorer.error.take() {
            return Err(error);
        }
        read.map_err(|err| corrupt(err.to_string()))?;
        restorer.finish()
    }
}

/// A table being rebuilt from a snapshot's body, read item by item.
struct Restorer<'de> {
    table: Table,
    owners: Owners,
    /// Names that are a lock with no lock-delay, in snapshot (name) order, with their last
    /// token: each is added when its first entry shows whether it is a single exclusive holder.
    plain: Vec<(&'de str, u64)>,
    plain_used: usize,
    /// Sessions that holds refer to: sessions come after the entries in the body.
    session_refs: Vec<SessionId>,
    /// The first problem found while reading (postcard's errors carry no message of ours).
    error: Option<SnapshotError>,
    /// The last name read: names must come in strictly ascending order.
    previous_name: Option<Cow<'de, str>>,
    /// What room a list may reserve at once is bounded by the body's size, so a corrupt length
    /// cannot make restore allocate much more than the snapshot it reads.
    body_len: usize,
}

impl<'de> Restorer<'de> {
    // Each list reserves room for the count its length claims, but never more bytes than the
    // body has: a real snapshot's items take more bytes in the body than in these structures
    // (a name at least ~5, an entry ~30, a session ~25), so only a corrupt length is cut, and
    // then the structure simply grows as items really arrive.
    fn reserve_names(&mut self, count: usize) {
        let most = self.body_len / std::mem::size_of::<(&str, u64)>();
        self.plain.reserve_exact(count.min(most));
    }

    fn reserve_entries(&mut self, count: usize) {
        // A hash-table slot: one pointer and a control byte, at most 8 in 7 full.
        self.table.entries.reserve(count.min(self.body_len / 12));
    }

    fn reserve_sessions(&mut self, count: usize) {
        let slot = std::mem::size_of::<(SessionId, Session)>() + 2;
        self.table.sessions.reserve(count.min(self.body_len / slot));
    }

    fn name(&mut self, raw: NameV1<'de>) -> Result<(), SnapshotError> {
        if self.previous_name.as_deref().is_some_and(|previous| previous >= &*raw.name) {
            return Err(corrupt("names out of order or stored twice"));
        }
        self.previous_name = Some(raw.name.clone());
        if raw.semaphore_limit == 0 && raw.delay_until == 0 {
            // A name lent from the body waits for its first entry; one postcard had to copy
            // (never with the in-memory reader used here) is added as it is.
            if let Cow::Borrowed(name) = raw.name {
                self.plain.push((name, raw.last_token));
                return Ok(());
            }
        }
        let lock_name = LockName::new(&raw.name).map_err(|e| corrupt(e.to_string()))?;
        let kind = match raw.semaphore_limit {
            0 => NameKind::Lock,
            limit => NameKind::Semaphore { limit },
        };
        let mut state = crate::table::NameState::new(kind);
        state.last_token = raw.last_token;
        state.delay_until = raw.delay_until;
        if raw.delay_until > 0 {
            self.table.timers.insert((raw.delay_until, Timer::Delay(lock_name.clone())));
        }
        self.table.names.insert(lock_name, state);
        Ok(())
    }

    fn entry(&mut self, raw: EntryV1<'_>) -> Result<(), SnapshotError> {
        let id = HoldId::from_u128(raw.id);
        if self.table.entries.contains_key(&id) {
            return Err(corrupt("two entries share an id"));
        }
        // The entry shares its name with the table's key, as it does when granted live.
        let (name, plain_last_token) = match self.table.names.get_key_value(&*raw.name) {
            Some((name, _)) => (name.clone(), None),
            None => {
                let found = self.plain.binary_search_by(|(name, _)| (*name).cmp(&*raw.name));
                let index = found.map_err(|_| corrupt("an entry refers to an unknown name"))?;
                self.plain_used += 1;
                let name = LockName::new(&raw.name).map_err(|e| corrupt(e.to_string()))?;
                (name, Some(self.plain[index].1))
            }
        };
        let entry = restore_entry(id, raw, name.clone(), &mut self.owners, &mut self.session_refs)?;
        let table = &mut self.table;
        if let Some(request) = &entry.request {
            let scope = crate::command::RequestScope::of(&entry.holder, &entry.owner);
            table.by_request.insert((scope, request.request_id.clone()), id);
            table.timers.insert((request.retain_until, Timer::Request(id)));
        }
        if entry.holder != Holder::Anonymous {
            table.by_holder.insert((entry.holder.clone(), entry.name.clone()), id);
        }
        match &entry.state {
            EntryState::Waiting(wait) => {
                if let Some(deadline) = wait.deadline {
                    table.timers.insert((deadline, Timer::Wait(id)));
                }
                table.waiting_count += 1;
            }
            EntryState::Held(held) => {
                if let Some(deadline) = held.expires_at.get() {
                    table.timers.insert((deadline, Timer::Hold(id)));
                }
            }
        }
        match (&entry.state, plain_last_token) {
            // The usual held lock: the name is just its holder.
            (EntryState::Held(held), Some(last))
                if entry.mode == Mode::Exclusive && held.token.get() == last =>
            {
                table.names.insert_held(name, id, last);
            }
            (state, plain) => {
                if let Some(last) = plain {
                    let mut fresh = crate::table::NameState::new(NameKind::Lock);
                    fresh.last_token = last;
                    table.names.insert(name.clone(), fresh);
                }
                let names = &mut table.names;
                let mut name_state = names.get_mut(&name).expect("added above");
                match state {
                    EntryState::Waiting(wait) => {
                        name_state.queue.get_or_insert_with(Default::default).insert(wait.seq, id);
                    }
                    EntryState::Held(_) => {
                        match name_state.kind {
                            NameKind::Lock => {
                                name_state.used += 1;
                                name_state.exclusive |= entry.mode == Mode::Exclusive;
                            }
                            NameKind::Semaphore { .. } => name_state.used += entry.permits,
                        }
                        name_state.holders.push(id);
                    }
                }
            }
        }
        table.entries.insert(Box::new(entry));
        Ok(())
    }

    fn session(&mut self, raw: SessionV1<'_>) -> Result<(), SnapshotError> {
        let id = SessionId::from_u128(raw.id);
        let owner = self.owners.get(&raw.owner);
        let session = Session { ttl_ms: raw.ttl_ms, owner, deadline: raw.deadline };
        if self.table.sessions.insert(id, session).is_some() {
            return Err(corrupt("a session stored twice"));
        }
        self.table.timers.insert((raw.deadline, Timer::Session(id)));
        Ok(())
    }

    fn finish(self) -> Result<Table, SnapshotError> {
        let mut table = self.table;
        if self.plain_used != self.plain.len() {
            return Err(corrupt("a name with nothing held, waiting or delayed on it"));
        }
        if self.session_refs.iter().any(|session| !table.sessions.contains_key(session)) {
            return Err(corrupt("a hold refers to an unknown session"));
        }
        // The table forgets such names after every command: a snapshot never holds one.
        if table.names.iter().any(|(_, state)| state.is_unused(table.now_ms)) {
            return Err(corrupt("a name with nothing held, waiting or delayed on it"));
        }
        // Holders were added in id order; a name's holders go in grant (token) order.
        let Table { names, entries, .. } = &mut table;
        names.sort_holders(|id| entries.get(id).and_then(|e| e.held()).map(|h| h.token.get()));
        crate::invariants::check_structure(&table).map_err(corrupt)?;
        Ok(table)
    }
}

/// The body: four counters, then the names, the entries and the sessions.
struct Body<'r, 'de>(&'r mut Restorer<'de>);

const BODY_FIELDS: &[&str] =
    &["now_ms", "wall_ms", "next_token", "next_seq", "names", "entries", "sessions"];

impl<'de> serde::de::DeserializeSeed<'de> for Body<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("SnapshotV1", BODY_FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for Body<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a version 1 snapshot body")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let restorer = self.0;
        let mut counter = || -> Result<u64, A::Error> {
            seq.next_element()?.ok_or_else(|| A::Error::custom("snapshot body cut short"))
        };
        restorer.table.now_ms = counter()?;
        restorer.table.wall_ms = counter()?;
        restorer.table.next_token = counter()?;
        restorer.table.next_seq = counter()?;
        let read =
            seq.next_element_seed(ReadItems(restorer, Restorer::reserve_names, Restorer::name))?;
        read.ok_or_else(|| A::Error::custom("no names"))?;
        let read =
            seq.next_element_seed(ReadItems(restorer, Restorer::reserve_entries, Restorer::entry))?;
        read.ok_or_else(|| A::Error::custom("no entries"))?;
        let read = seq.next_element_seed(ReadItems(
            restorer,
            Restorer::reserve_sessions,
            Restorer::session,
        ))?;
        read.ok_or_else(|| A::Error::custom("no sessions"))?;
        Ok(())
    }
}

/// One list of the body, each item handed to the restorer as it is read.
struct ReadItems<'r, 'de, T>(
    &'r mut Restorer<'de>,
    fn(&mut Restorer<'de>, usize),
    fn(&mut Restorer<'de>, T) -> Result<(), SnapshotError>,
);

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for ReadItems<'_, 'de, T> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ReadItems<'_, 'de, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ReadItems(restorer, reserve, apply) = self;
        // Room for the whole list at once (postcard knows its length; each reserve bounds it).
        let count = seq.size_hint().unwrap_or(0);
        reserve(restorer, count);
        while let Some(item) = seq.next_element::<T>()? {
            if let Err(error) = apply(restorer, item) {
                restorer.error = Some(error);
                return Err(serde::de::Error::custom("snapshot is corrupt"));
            }
        }
        Ok(())
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
    name: LockName,
    owners: &mut Owners,
    session_refs: &mut Vec<SessionId>,
) -> Result<crate::table::Entry, SnapshotError> {
    let holder = match raw.holder {
        HolderV1::Anonymous => Holder::Anonymous,
        HolderV1::Session(session) => {
            let session = SessionId::from_u128(session);
            session_refs.push(session);
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
