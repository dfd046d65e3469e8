//! The Lockserver lock table: a pure, deterministic state machine.
//!
//! No clock, no I/O, no randomness, no threads: time arrives in every command's [`Ctx`], ids
//! arrive in the command, and `apply` returns the response plus the effects the server carries
//! out. Replaying the same commands from the same snapshot gives the same table, byte for byte.
//!
//! # Layout
//! - [`name`]: `LockName`, validated once.
//! - [`ids`]: hold and session ids, fencing tokens, origins (who waits) and holders (who holds).
//! - [`command`]: the commands and their arguments; [`effect`]: responses and effects.
//! - [`table`]: the table and `apply`, one file per group of commands, expiry in `expiry.rs`.
//! - [`snapshot`]: the versioned, deterministic snapshot format.
//! - [`invariants`]: checks of the table's rules, used by tests and `debug_assert!`.

pub mod command;
pub mod effect;
pub mod error;
pub mod ids;
pub mod invariants;
pub mod name;
pub mod snapshot;
pub mod table;

pub use command::{
    Acquire, Command, Ctx, Mode, ReleaseReason, RequestScope, TtlChange, Wait, Want,
};
pub use effect::{Effect, HoldView, Kind, LostReason, Response, SessionEnd, WaitEnd};
pub use error::CoreError;
pub use ids::{
    owner_label, FencingToken, HoldId, Holder, NodeEpoch, Origin, SessionId, Via, MAX_TOKEN,
};
pub use name::LockName;
pub use snapshot::SnapshotError;
pub use table::{Limits, NameView, SessionView, Table, TableStats, WaiterView};
