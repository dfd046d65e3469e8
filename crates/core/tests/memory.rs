//! What a held lock costs: tens of thousands of exclusive holds with a TTL and no waiters, measured with a
//! counting allocator, minus the bytes of each name and owner label.

use std::alloc::System;
use std::sync::Arc;

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
    let names: Vec<LockName> =
        (0..holds).map(|i| LockName::new(&format!("resource-{i:08}")).unwrap()).collect();
    let owner: Arc<str> = Arc::from("worker-1");
    let commands: Vec<Command> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Command::Acquire(Acquire {
                hold_id: HoldId::from_u128((i as u128 + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced),
                name: name.clone(),
                want: Want::Lock(Mode::Exclusive),
                owner: owner.clone(),
                holder: Holder::Anonymous,
                wait: Wait::Try,
                ttl_ms: Some(60_000),
                lock_delay_ms: 0,
                request_id: None,
                origin: Origin { boot: NodeEpoch { node: 1, epoch: 1 }, via: Via::Request(1) },
            })
        })
        .collect();
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
