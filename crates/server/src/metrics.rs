//! Counters for `/metrics` (Prometheus text format). They carry no lock names, owners or ids:
//! `/metrics` needs no credential.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use lockserver_core::{CoreError, TableStats, WaitEnd};
use lockserver_node::NodeStats;

/// Process-wide counters; relaxed atomics, since each is read on its own.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: [AtomicU64; 5],
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    granted_at_once: AtomicU64,
    granted_after_wait: AtomicU64,
    queued: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
    refused_locked: AtomicU64,
    refused_limit: AtomicU64,
    refused_other: AtomicU64,
}

impl Metrics {
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn granted_at_once(&self) {
        self.granted_at_once.fetch_add(1, Relaxed);
    }

    pub(crate) fn granted_after_wait(&self) {
        self.granted_after_wait.fetch_add(1, Relaxed);
    }

    pub(crate) fn queued(&self) {
        self.queued.fetch_add(1, Relaxed);
    }

    pub(crate) fn wait_ended(&self, reason: WaitEnd) {
        match reason {
            WaitEnd::Timeout => self.timeouts.fetch_add(1, Relaxed),
            _ => self.cancelled.fetch_add(1, Relaxed),
        };
    }

    pub(crate) fn acquire_refused(&self, error: &CoreError) {
        match error {
            CoreError::Locked(_) => self.refused_locked.fetch_add(1, Relaxed),
            CoreError::LimitExceeded(_) => self.refused_limit.fetch_add(1, Relaxed),
            _ => self.refused_other.fetch_add(1, Relaxed),
        };
    }

    /// The exposition text, with the table's counts.
    pub(crate) fn render(&self, table: TableStats, node: NodeStats, streams: usize) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, kind: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let responses: Vec<(String, u64)> = (0..5)
            .map(|i| (format!("{{class=\"{}xx\"}}", i + 1), self.responses[i].load(Relaxed)))
            .collect();
        let responses: Vec<(&str, u64)> =
            responses.iter().map(|(labels, value)| (labels.as_str(), *value)).collect();
        counter(
            "lockserver_http_responses_total",
            "HTTP responses by status class.",
            "counter",
            &responses,
        );
        counter(
            "lockserver_http_connections_open",
            "Open HTTP connections.",
            "gauge",
            &[("", self.connections_open.load(Relaxed))],
        );
        counter(
            "lockserver_http_connections_total",
            "HTTP connections accepted.",
            "counter",
            &[("", self.connections_total.load(Relaxed))],
        );
        counter(
            "lockserver_http_connections_refused_total",
            "HTTP connections refused at the connection limit.",
            "counter",
            &[("", self.connections_refused.load(Relaxed))],
        );
        counter(
            "lockserver_acquires_total",
            "Acquires (HTTP and streaming) by outcome.",
            "counter",
            &[
                ("{outcome=\"granted\"}", self.granted_at_once.load(Relaxed)),
                ("{outcome=\"granted_after_wait\"}", self.granted_after_wait.load(Relaxed)),
                ("{outcome=\"timeout\"}", self.timeouts.load(Relaxed)),
                ("{outcome=\"cancelled\"}", self.cancelled.load(Relaxed)),
                ("{outcome=\"locked\"}", self.refused_locked.load(Relaxed)),
                ("{outcome=\"limit_exceeded\"}", self.refused_limit.load(Relaxed)),
                ("{outcome=\"refused\"}", self.refused_other.load(Relaxed)),
            ],
        );
        counter(
            "lockserver_acquires_queued_total",
            "Acquires (HTTP and streaming) that had to wait.",
            "counter",
            &[("", self.queued.load(Relaxed))],
        );
        counter("lockserver_names", "Names in use.", "gauge", &[("", table.names as u64)]);
        counter("lockserver_holds", "Live holds.", "gauge", &[("", table.holds as u64)]);
        counter("lockserver_waiters", "Waiting acquires.", "gauge", &[("", table.waiters as u64)]);
        counter("lockserver_sessions", "Live sessions.", "gauge", &[("", table.sessions as u64)]);
        counter(
            "lockserver_stream_sessions",
            "Streaming sessions this node runs: attached to a connection, or waiting for a resume.",
            "gauge",
            &[("", streams as u64)],
        );
        counter(
            "lockserver_next_fencing_token",
            "The token the next grant will carry.",
            "gauge",
            &[("", table.next_token)],
        );
        counter(
            "lockserver_log_syncs_total",
            "fdatasyncs of the log (one covers a log entry of many commands, or several queued appends).",
            "counter",
            &[("", node.log_syncs)],
        );
        counter(
            "lockserver_log_appends_total",
            "Log appends made durable.",
            "counter",
            &[("", node.log_appends)],
        );
        counter(
            "lockserver_log_entries_total",
            "Log entries made durable.",
            "counter",
            &[("", node.log_records)],
        );
        counter(
            "lockserver_commands_total",
            "Commands proposed to the log.",
            "counter",
            &[("", node.commands)],
        );
        counter(
            "lockserver_command_entries_total",
            "Log entries carrying commands (commands that arrive together share one).",
            "counter",
            &[("", node.command_entries)],
        );
        counter(
            "lockserver_keepalives_total",
            "Session keepalives.",
            "counter",
            &[("", node.keepalives)],
        );
        counter(
            "lockserver_keepalive_commands_total",
            "KeepAlive commands (each carries every keepalive that arrived meanwhile).",
            "counter",
            &[("", node.keepalive_commands)],
        );
        counter(
            "lockserver_snapshots_total",
            "Snapshots of the lock table built.",
            "counter",
            &[("", node.snapshots_built)],
        );
        counter(
            "lockserver_log_applied_index",
            "Index of the last log entry applied to the lock table.",
            "gauge",
            &[("", node.last_applied)],
        );
        out
    }
}
