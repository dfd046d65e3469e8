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
