//! Helpers shared by the core's integration tests.

use std::sync::Arc;

use lockserver_core::*;

/// `holds` try-acquires of exclusive locks with a 60 s TTL on the names `resource-00000000`,
/// `resource-00000001`, … (ascending), all with one shared owner label.
pub fn held_lock_commands(holds: usize) -> Vec<Command> {
    let owner: Arc<str> = Arc::from("worker-1");
    (0..holds)
        .map(|i| {
            Command::Acquire(Acquire {
                hold_id: HoldId::from_u128((i as u128 + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced),
                name: LockName::new(&format!("resource-{i:08}")).unwrap(),
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
        .collect()
}
