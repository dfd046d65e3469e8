//! The persisted snapshot format does not drift: a table holding one of everything the format
//! stores (lock and semaphore names, anonymous, session, compat-owner, connection and RDLM
//! holders, a waiter with its origin, a request id, a lock-delay) serializes to the exact bytes
//! this build has always written, and those bytes restore to the same table.

use std::sync::Arc;

use lockserver_core::*;

const BOOT: NodeEpoch = NodeEpoch { node: 3, epoch: 0x5eed };

fn table_with_one_of_everything() -> Table {
    let mut table = Table::default();
    let mut effects = Vec::new();
    let mut now = 1_000;
    let mut run = |table: &mut Table, command: Command| {
        now += 7;
        let ctx = Ctx { now_ms: now, wall_ms: 1_700_000_000_000 + now };
        table.apply(ctx, command, &mut effects).expect("every setup command succeeds")
    };
    let session = SessionId::from_u128(0xabc0_0000_0000_0000_0000_0000_0000_0def);
    run(
        &mut table,
        Command::OpenSession { session_id: session, ttl_ms: 5_000, owner: "svc".into() },
    );
    let acquire = |id: u128, name: &str, want: Want, holder: Holder, wait: Wait| {
        Command::Acquire(Acquire {
            hold_id: HoldId::from_u128(id),
            name: LockName::new(name).unwrap(),
            want,
            owner: Arc::from(format!("owner-{id}")),
            holder,
            wait,
            ttl_ms: Some(30_000),
            lock_delay_ms: 0,
            request_id: None,
            origin: Origin { boot: BOOT, via: Via::Request(id as u64) },
        })
    };
    run(&mut table, acquire(11, "db", Want::Lock(Mode::Exclusive), Holder::Anonymous, Wait::Try));
    let mut waiter =
        acquire(12, "db", Want::Lock(Mode::Shared), Holder::Connection(42), Wait::For(9_000));
    if let Command::Acquire(a) = &mut waiter {
        a.request_id = Some(Arc::from("retry-1"));
        a.origin = Origin { boot: BOOT, via: Via::Connection(42) };
    }
    run(&mut table, waiter);
    let mut in_session =
        acquire(13, "cfg", Want::Lock(Mode::Shared), Holder::Session(session), Wait::Try);
    if let Command::Acquire(a) = &mut in_session {
        a.lock_delay_ms = 2_000;
        a.ttl_ms = None;
    }
    run(&mut table, in_session);
    let semaphore = Want::Semaphore { limit: 5, permits: 2 };
    run(&mut table, acquire(14, "pool", semaphore, Holder::CompatOwner("alice".into()), Wait::Try));
    let rdlm = Holder::Rdlm(HoldId::from_u128(0x77));
    run(&mut table, acquire(15, "üñí/cødé", Want::Lock(Mode::Exclusive), rdlm, Wait::Try));
    let kept = SessionId::from_u128(0x5e55);
    run(&mut table, Command::OpenSession { session_id: kept, ttl_ms: 8_000, owner: "kept".into() });
    run(
        &mut table,
        acquire(16, "aux", Want::Lock(Mode::Exclusive), Holder::Session(kept), Wait::Try),
    );
    // An involuntary end of the session leaves "cfg" under a lock-delay.
    run(&mut table, Command::EndSession { session_id: session });
    table
}

/// The bytes of `table_with_one_of_everything()`'s snapshot, as written before the
/// serializer stopped building an owned copy of the table (same format, version 1).
const GOLDEN: &str = "4c4b534e4150760001000000a708a7d895ffbc3106010503617578000500036366670002f81702646200010004706f6f6c0503000dc3bcc3b1c3ad2f63c3b864c3a9000400050b026462000100086f776e65722d31310001b0ea01000101f6d795ffbc31f60701a7f2010c026462010100086f776e65722d3132032a01b0ea01010772657472792d31bdd7240000fd0701a64e03edbd01012a0e04706f6f6c010200086f776e65722d31340205616c69636501b0ea010001038bd895ffbc318b0801bcf2010f0dc3bcc3b1c3ad2f63c3b864c3a9000100086f776e65722d3135047701b0ea0100010492d895ffbc31920801c3f2011003617578000100086f776e65722d313601d5bc0101b0ea01000105a0d895ffbc31a00801d1f20101d5bc01c03e046b657074da46";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn snapshot_bytes_are_the_version_1_format_exactly() {
    let table = table_with_one_of_everything();
    let bytes = table.snapshot();
    assert_eq!(hex(&bytes), GOLDEN);
    let restored = Table::restore(&bytes, Limits::default()).unwrap();
    assert_eq!(restored.snapshot(), bytes);
}

/// Snapshots that parse but contradict themselves, written with a mirror of the version-1
/// format: each is refused with a clear error, never restored and never a panic.
mod contradictions {
    use lockserver_core::snapshot::{SnapshotError, MAGIC, VERSION};
    use lockserver_core::{Limits, Table};
    use serde::Serialize;

    #[derive(Serialize, Clone)]
    struct Body {
        now_ms: u64,
        wall_ms: u64,
        next_token: u64,
        next_seq: u64,
        names: Vec<Name>,
        entries: Vec<Entry>,
        sessions: Vec<Session>,
    }

    #[derive(Serialize, Clone)]
    struct Name {
        name: String,
        semaphore_limit: u32,
        last_token: u64,
        delay_until: u64,
    }

    #[derive(Serialize, Clone)]
    struct Entry {
        id: u128,
        name: String,
        shared: bool,
        permits: u32,
        lock_delay_ms: u32,
        owner: String,
        holder: Holder,
        ttl_ms: Option<u64>,
        request: Option<(String, u64)>,
        state: State,
    }

    #[derive(Serialize, Clone)]
    #[allow(dead_code)]
    enum Holder {
        Anonymous,
        Session(u128),
    }

    #[derive(Serialize, Clone)]
    #[allow(dead_code)]
    enum State {
        Waiting { seq: u64 },
        Held { token: u64, granted_wall_ms: u64, granted_log_ms: u64, expires_at: Option<u64> },
    }

    #[derive(Serialize, Clone)]
    struct Session {
        id: u128,
        ttl_ms: u64,
        owner: String,
        deadline: u64,
    }

    fn name(text: &str, last_token: u64) -> Name {
        Name { name: text.into(), semaphore_limit: 0, last_token, delay_until: 0 }
    }

    fn held(id: u128, on: &str, token: u64, holder: Holder) -> Entry {
        Entry {
            id,
            name: on.into(),
            shared: false,
            permits: 1,
            lock_delay_ms: 0,
            owner: String::new(),
            holder,
            ttl_ms: None,
            request: None,
            state: State::Held { token, granted_wall_ms: 1, granted_log_ms: 1, expires_at: None },
        }
    }

    fn valid() -> Body {
        Body {
            now_ms: 10,
            wall_ms: 10,
            next_token: 3,
            next_seq: 0,
            names: vec![name("a", 1), name("b", 2)],
            entries: vec![held(1, "a", 1, Holder::Anonymous), held(2, "b", 2, Holder::Session(9))],
            sessions: vec![Session { id: 9, ttl_ms: 1_000, owner: "s".into(), deadline: 500 }],
        }
    }

    fn restore(body: &Body) -> Result<Table, SnapshotError> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend(postcard::to_allocvec(body).unwrap());
        Table::restore(&bytes, Limits::default())
    }

    fn refused(body: &Body) -> String {
        match restore(body) {
            Err(SnapshotError::Corrupt(what)) => what,
            Err(other) => panic!("expected a corrupt snapshot, got {other:?}"),
            Ok(_) => panic!("a contradictory snapshot was restored"),
        }
    }

    #[test]
    fn each_contradiction_is_refused_by_name() {
        let table = restore(&valid()).expect("the mirror writes the real format");
        assert_eq!(table.stats().holds, 2);

        let mut body = valid();
        body.sessions.clear();
        assert!(refused(&body).contains("unknown session"));

        let mut body = valid();
        body.names.push(name("c", 0));
        assert!(refused(&body).contains("nothing held"));

        let mut body = valid();
        body.entries[0].name = "zzz".into();
        assert!(refused(&body).contains("unknown name"));

        let mut body = valid();
        body.names.swap(0, 1);
        assert!(refused(&body).contains("out of order"));

        let mut body = valid();
        body.entries[1].id = 1;
        assert!(refused(&body).contains("share an id"));

        let mut body = valid();
        body.entries[1].state =
            State::Held { token: 1, granted_wall_ms: 1, granted_log_ms: 1, expires_at: None };
        assert!(refused(&body).contains("twice"), "{}", refused(&body));

        let mut body = valid();
        body.entries[0].state =
            State::Held { token: 0, granted_wall_ms: 1, granted_log_ms: 1, expires_at: None };
        assert!(refused(&body).contains("token of 0"));

        let mut body = valid();
        body.entries[0].ttl_ms = Some(0);
        assert!(refused(&body).contains("TTL of 0"));

        let mut body = valid();
        body.entries[0].lock_delay_ms = 70_000;
        assert!(refused(&body).contains("lock-delay"));

        // A semaphore (not a plain lock) with nothing on it.
        let mut body = valid();
        body.names.push(Name { semaphore_limit: 3, ..name("s", 0) });
        assert!(refused(&body).contains("nothing held"));

        // Order is checked across every kind of name, and a name stored twice is out of order.
        let mut body = valid();
        body.names.insert(0, Name { delay_until: 50, ..name("z", 0) });
        assert!(refused(&body).contains("out of order"));
        let mut body = valid();
        body.names.insert(1, Name { semaphore_limit: 2, ..name("a", 0) });
        assert!(refused(&body).contains("out of order"));
    }
}
