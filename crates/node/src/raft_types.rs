//! The openraft type configuration: what a log entry carries and what applying it returns.

use std::io::Cursor;

use lockserver_core::{Command, CoreError, Ctx, Response};
use serde::{Deserialize, Serialize};

/// One command as it sits in the log: the proposer's log time and the command itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCmd {
    pub ctx: Ctx,
    pub command: Command,
}

/// What applying one log entry produced. Blank and membership entries produce `Nothing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Nothing,
    Command(Result<Response, CoreError>),
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
