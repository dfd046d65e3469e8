//! `lockserver status [--json]`: is the server up (`/healthz`), ready (`/readyz`), and what
//! does it say about the cluster (`/v1/cluster`, where served).

use clap::Args;
use serde_json::{json, Value};

use super::api::{plain, Api, Credential};
use super::{CliError, ServerArgs};

/// The server is up but cannot serve writes.
const EXIT_NOT_READY: u8 = 1;

/// Show whether the server is up and ready, and its node and cluster figures. Exit 0 when
/// ready, 1 when up but not ready, 2 when unreachable.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// The fields of `GET /v1/cluster` shown, in order, with their labels.
const CLUSTER_FIELDS: [(&str, &str); 4] = [
    ("node_id", "node id"),
    ("leader", "leader"),
    ("term", "term"),
    ("commit_index", "commit index"),
];

pub(crate) async fn run(args: StatusArgs) -> Result<u8, CliError> {
    let api = Api::new(&args.server, None)?;
    let health = api.get("/healthz", &[], Credential::None).await?;
    if !health.is_success() {
        return Err(CliError::error(format!(
            "the server at {} is not healthy: {}",
            api.base(),
            health.message()
        )));
    }
    let ready = api.get("/readyz", &[], Credential::None).await?;
    let not_ready_reason = (!ready.is_success()).then(|| ready.message());
    let cluster = api.get("/v1/cluster", &[], Credential::Client).await?;
    // The cluster figures, or why there are none (an older server has no such route).
    let (cluster, cluster_note): (Option<Value>, Option<String>) = match cluster.status {
        200 => match serde_json::from_str::<Value>(&cluster.text) {
            Ok(value) => (Some(value), None),
            Err(err) => (None, Some(format!("unreadable answer ({err})"))),
        },
        404 => (None, Some("not served by this server".into())),
        401 | 403 => {
            (None, Some(format!("needs the client secret (--secret): {}", cluster.message())))
        }
        _ => (None, Some(cluster.message())),
    };
    if args.json {
        let report = json!({
            "address": api.base(),
            "up": true,
            "ready": not_ready_reason.is_none(),
            "not_ready_reason": not_ready_reason,
            "cluster": cluster,
            "cluster_error": cluster_note,
        });
        println!("{report}");
    } else {
        println!("address:       {}", api.base());
        println!("up:            yes");
        match &not_ready_reason {
            None => println!("ready:         yes"),
            Some(reason) => println!("ready:         no ({reason})"),
        }
        match (&cluster, &cluster_note) {
            (Some(cluster), _) => {
                for (key, label) in CLUSTER_FIELDS {
                    println!("{:<15}{}", format!("{label}:"), plain(&cluster[key]));
                }
            }
            (None, Some(note)) => println!("cluster:       {note}"),
            (None, None) => {}
        }
    }
    Ok(if not_ready_reason.is_none() { 0 } else { EXIT_NOT_READY })
}
