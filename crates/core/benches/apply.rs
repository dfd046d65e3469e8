//! Apply throughput of the lock table: uncontended acquire+release pairs, and a hot-lock handoff
//! with 10 and 1,000 waiters (its cost must not grow with the queue).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lockserver_core::*;

const BOOT: NodeEpoch = NodeEpoch { node: 1, epoch: 1 };

fn acquire(id: u128, name: &LockName, wait: Wait) -> Command {
    Command::Acquire(Acquire {
        hold_id: HoldId::from_u128(id),
        name: name.clone(),
        want: Want::Lock(Mode::Exclusive),
        owner: Arc::from("bench"),
        holder: Holder::Anonymous,
        wait,
        ttl_ms: Some(60_000),
        lock_delay_ms: 0,
        request_id: None,
        origin: Origin { boot: BOOT, via: Via::Request(id as u64) },
    })
}

fn uncontended(c: &mut Criterion) {
    let names: Vec<LockName> =
        (0..1_000).map(|i| LockName::new(&format!("resource-{i}")).unwrap()).collect();
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("acquire+release pair", |b| {
        let mut table = Table::default();
        let mut effects = Vec::new();
        let mut id: u128 = 1 << 64;
        let mut now = 0;
        b.iter(|| {
            id += 0x9e37_79b9_7f4a_7c15;
            now += 1;
            let ctx = Ctx { now_ms: now / 64, wall_ms: 0 };
            let name = &names[(now % 1_000) as usize];
            table.apply(ctx, acquire(id, name, Wait::Try), &mut effects).unwrap();
            let release =
                Command::Release { hold_id: HoldId::from_u128(id), reason: ReleaseReason::Client };
            table.apply(ctx, release, &mut effects).unwrap();
            effects.clear();
        });
    });
    group.finish();
}

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot handoff");
    group.throughput(Throughput::Elements(1));
    for waiters in [10u128, 1_000] {
        group.bench_function(format!("{waiters} waiters"), |b| {
            let name = LockName::new("hot").unwrap();
            let mut table = Table::default();
            let mut effects = Vec::new();
            let ctx = Ctx { now_ms: 1, wall_ms: 0 };
            for id in 1..=waiters + 1 {
                table.apply(ctx, acquire(id, &name, Wait::Forever), &mut effects).unwrap();
            }
            let mut holder = 1u128;
            let mut next = waiters + 2;
            b.iter_batched(
                || (),
                |()| {
                    effects.clear();
                    let release = Command::Release {
                        hold_id: HoldId::from_u128(holder),
                        reason: ReleaseReason::Client,
                    };
                    table.apply(ctx, release, &mut effects).unwrap();
                    let Some(Effect::Granted { hold, .. }) = effects.first() else {
                        panic!("the head waiter is granted")
                    };
                    holder = hold.hold_id.as_u128();
                    table.apply(ctx, acquire(next, &name, Wait::Forever), &mut effects).unwrap();
                    next += 1;
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended, handoff);
criterion_main!(benches);
