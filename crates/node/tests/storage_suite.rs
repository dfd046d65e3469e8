//! openraft's own storage test suite over our log store and state machine, durable (segment
//! log + files in a temporary directory) and in memory.

use lockserver_core::{Limits, NodeEpoch};
use lockserver_node::raft_types::{StorageError, TypeConfig};
use lockserver_node::router::Router;
use lockserver_node::state_machine::{Machine, MachineConfig, StateMachine};
use lockserver_node::storage::log_store::{AppliedIndex, LogStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;
use tokio::sync::{mpsc, watch};

struct Builder {
    durable: bool,
}

fn machine(data_dir: Option<std::path::PathBuf>, applied: AppliedIndex) -> StateMachine {
    let (next_deadline, _) = watch::channel(None);
    let (undeliverable, _) = mpsc::unbounded_channel();
    let machine = Machine::open(MachineConfig {
        limits: Limits::default(),
        boot: NodeEpoch { node: 1, epoch: 1 },
        router: Router::default(),
        next_deadline,
        undeliverable,
        tokens: None,
        data_dir,
        applied,
    })
    .expect("machine");
    StateMachine { machine }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        if !self.durable {
            return Ok((dir, LogStore::in_memory(), machine(None, AppliedIndex::default())));
        }
        let applied = AppliedIndex::default();
        let log = LogStore::open(dir.path(), applied.clone())
            .map_err(|err| StorageIOError::read(&err))?;
        let machine = machine(Some(dir.path().to_path_buf()), applied);
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite_durable() {
    Suite::test_all(Builder { durable: true }).unwrap();
}

#[test]
fn openraft_storage_suite_in_memory() {
    Suite::test_all(Builder { durable: false }).unwrap();
}
