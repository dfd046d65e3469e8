//! The openraft type configuration: what a log entry carries and what applying it returns.

use std::io::Cursor;

use lockserver_core::{Command, CoreError, Ctx, Response};
use serde::{Deserialize, Serialize};

/// One log entry's commands: the log time they were proposed at and the commands, applied in
/// order. Proposals that arrive while the previous entry is being made durable share the next
/// entry (group commit above openraft, which appends and flushes one entry at a time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCmd {
    pub ctx: Ctx,
    pub commands: Vec<Command>,
}

/// What applying one log entry produced: one answer per command. Blank and membership entries
/// produce `Nothing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Nothing,
    Commands(Vec<Result<Response, CoreError>>),
}

openraft::declare_raft_types!(
    /// Lockserver's raft: u64 node ids, log entries are [`LogCmd`], snapshots are bytes.
    pub TypeConfig:
        D = LogCmd,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
