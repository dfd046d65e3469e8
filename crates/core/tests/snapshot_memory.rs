//! Writing and reading a snapshot of a large table costs no per-hold allocations beyond the
//! table itself: no owned copy of the table is built on the way out, names and owner labels
//! are shared on the way in. Measured with a counting allocator (one test in this binary, so no
//! other test allocates meanwhile).

use std::alloc::System;

mod common;

use lockserver_core::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn table_of(holds: usize) -> Table {
    let mut table = Table::default();
    let mut effects = Vec::new();
    for command in common::held_lock_commands(holds) {
        let response = table.apply(Ctx { now_ms: 1, wall_ms: 1 }, command, &mut effects);
        assert!(matches!(response, Ok(Response::Granted { .. })));
        effects.clear();
    }
    table
}

#[test]
fn snapshots_allocate_nothing_per_hold_beyond_the_table() {
    let holds = 50_000;
    let region = Region::new(GLOBAL);
    let table = table_of(holds);
    let built = region.change();
    let live_per_hold =
        (built.bytes_allocated as i64 - built.bytes_deallocated as i64) as f64 / holds as f64;
    println!("built live: {live_per_hold:.1} bytes per held lock (names included)");

    let region = Region::new(GLOBAL);
    let bytes = table.snapshot();
    let out = region.change();
    // The output buffer (and its growth) and the sorted id list: a handful of allocations.
    assert!(out.allocations + out.reallocations < 64, "snapshot made {out:?} for {holds} holds");
    let peak_bound = 3 * bytes.len() + 32 * holds;
    assert!(out.bytes_allocated < peak_bound, "snapshot allocated {} bytes", out.bytes_allocated);

    let region = Region::new(GLOBAL);
    let restored = Table::restore(&bytes, Limits::default()).unwrap();
    let live = region.change();
    let kept = live.bytes_allocated as i64 - live.bytes_deallocated as i64;
    drop(restored);
    // The restored table keeps what the table built live keeps: one allocation per name shared
    // by its entry, one owner label shared by every hold that carries it.
    let per_hold = kept as f64 / holds as f64;
    let transient = live.bytes_allocated as f64 / holds as f64 - per_hold;
    println!("restored: {per_hold:.1} bytes per held lock (names included), {transient:.1} more while reading");
    // Read item by item: nothing like an owned copy of the body (well over 100 bytes per hold)
    // exists while restoring; what does is a list of the plain names (24 bytes each) and the
    // invariant check's set of tokens.
    assert!(transient < 48.0, "restore allocated {transient:.1} bytes per hold beyond the table");
    assert!(per_hold <= live_per_hold + 1.0, "restored {per_hold:.1} vs {live_per_hold:.1} bytes");

    // A list length far beyond the body (a corrupt count) is refused without first reserving
    // room for it: restore never allocates much more than the snapshot it reads.
    for list in 0..3 {
        let mut body = postcard::to_allocvec(&(10u64, 10u64, 3u64, 0u64)).unwrap();
        body.extend(std::iter::repeat_n(0u8, list)); // empty lists before the corrupt one
                                                     // A million items claimed (postcard believes a count up to the bytes left), then junk.
        body.extend(postcard::to_allocvec(&1_000_000u32).unwrap());
        body.extend(std::iter::repeat_n(0xffu8, 1_100_000));
        let mut bytes = lockserver_core::snapshot::MAGIC.to_vec();
        bytes.extend_from_slice(&lockserver_core::snapshot::VERSION.to_le_bytes());
        bytes.extend(body);
        let region = Region::new(GLOBAL);
        let restored = Table::restore(&bytes, Limits::default());
        let used = region.change();
        assert!(matches!(restored, Err(SnapshotError::Corrupt(_))), "list {list}");
        // Uncapped, the names list alone would reserve 24 MB for the claimed million.
        let most = 2 * bytes.len();
        assert!(used.bytes_allocated < most, "list {list}: {} bytes", used.bytes_allocated);
    }
}
