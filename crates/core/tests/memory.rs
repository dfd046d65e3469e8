//! What a held lock costs: tens of thousands of exclusive holds with a TTL and no waiters, measured with a
//! counting allocator, minus the bytes of each name and owner label.

use std::alloc::System;

mod common;

use lockserver_core::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_held_lock_costs_well_under_300_bytes_beyond_name_and_owner() {
    // 60,000 sits just past a hash-map growth (its emptiest), 100,000 just before the next.
    // Names arrive in ascending order, which leaves the B-trees' nodes about half full: the
    // worst case for the name and deadline indexes.
    for holds in [60_000, 100_000] {
        let per_hold = bytes_per_held_lock(holds);
        println!("{holds} holds: {per_hold:.1} bytes per held lock beyond its name and owner");
        assert!(per_hold < 280.0, "{holds} holds: {per_hold:.1} bytes per held lock");
    }
}

fn bytes_per_held_lock(holds: usize) -> f64 {
    let commands = common::held_lock_commands(holds);
    let mut effects = Vec::with_capacity(4);
    let region = Region::new(GLOBAL);
    let mut table = Table::default();
    // Cloned, not consumed: freeing the command list inside the region would be counted
    // against the table and hide ~180 bytes per hold.
    for command in commands.iter().cloned() {
        let response = table.apply(Ctx { now_ms: 1, wall_ms: 1 }, command, &mut effects);
        assert!(matches!(response, Ok(Response::Granted { .. })));
        effects.clear();
    }
    let stats = region.change();
    drop(commands);
    // Names and the owner label were allocated before the region: all that is counted here is
    // the table's own structure.
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    assert_eq!(table.stats().holds, holds);
    drop(table);
    live as f64 / holds as f64
}
