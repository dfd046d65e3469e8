//! Helpers shared by the node's integration tests.

use std::sync::Arc;

use lockserver_core::*;
use lockserver_node::Node;

/// A try-acquire of an exclusive lock on `name` with no expiry, as one HTTP request would
/// make it on `node`.
pub fn acquire(node: &Node, name: &str, hold: u128, owner: &str) -> Command {
    Command::Acquire(Acquire {
        hold_id: HoldId::from_u128(hold),
        name: LockName::new(name).unwrap(),
        want: Want::Lock(Mode::Exclusive),
        owner: Arc::from(owner),
        holder: Holder::Anonymous,
        wait: Wait::Try,
        ttl_ms: None,
        lock_delay_ms: 0,
        request_id: None,
        origin: Origin { boot: node.boot(), via: Via::Request(0) },
    })
}

/// Every name with its holders as (hold id, token), in name order.
pub async fn holders(node: &Node) -> Vec<(String, Vec<(HoldId, u64)>)> {
    node.read(|table, now| {
        let (names, next) = table.list("", None, 10_000, now);
        assert!(next.is_none());
        names
            .into_iter()
            .map(|view| {
                let holds = view.holders.iter().map(|h| (h.hold_id, h.token.0)).collect();
                (view.name.as_str().to_string(), holds)
            })
            .collect()
    })
    .await
    .unwrap()
}
