//! `lockserver release NAME [HOLD_ID]`: release one hold (client secret), or force-release
//! every holder and waiter of a name (admin secret).

use clap::Args;

use super::api::{Api, Credential};
use super::{encode_segment, AdminArgs, CliError, ServerArgs};

/// Nothing to release.
const EXIT_NOT_FOUND: u8 = 1;

/// Release one hold of NAME by its HOLD_ID; without HOLD_ID, force-release the whole name:
/// every holder loses it (reason `admin`) and every waiter is cancelled (needs the admin
/// secret). Exit 0 when released, 1 when there was nothing to release, 2 on other errors.
#[derive(Args, Debug)]
pub(crate) struct ReleaseArgs {
    /// The lock's or semaphore's name.
    name: String,
    /// The hold to release (see `lockserver locks NAME`).
    hold_id: Option<String>,
    /// After a force-release, keep the name from everyone for its holders' lock-delay.
    #[arg(long, conflicts_with = "hold_id")]
    lock_delay: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    admin: AdminArgs,
}

pub(crate) async fn run(args: ReleaseArgs) -> Result<u8, CliError> {
    let api = Api::new(&args.server, Some(&args.admin))?;
    match &args.hold_id {
        Some(hold_id) => release_hold(&api, &args.name, hold_id).await,
        None => force_release(&api, &args.name, args.lock_delay).await,
    }
}

/// `DELETE /v1/locks/{name}/{hold_id}`, then the semaphore route: the server answers 404 for
/// a hold of the other kind, so a 404 on the first says nothing yet.
async fn release_hold(api: &Api, name: &str, hold_id: &str) -> Result<u8, CliError> {
    let what = format!("releasing hold {hold_id} of {name}");
    for route in ["locks", "semaphores"] {
        let path = format!("/v1/{route}/{}/{}", encode_segment(name), encode_segment(hold_id));
        let reply = api.delete(&path, &[], Credential::Client).await?;
        match reply.status {
            204 => return Ok(0),
            404 => continue,
            _ => return Err(api.refused(&what, &reply, Credential::Client)),
        }
    }
    Err(CliError::with_exit(
        EXIT_NOT_FOUND,
        format!("no such hold: {name} has no live hold or waiter with id {hold_id}"),
    ))
}

/// `DELETE /v1/admin/locks/{name}[?lock_delay=true]`.
async fn force_release(api: &Api, name: &str, lock_delay: bool) -> Result<u8, CliError> {
    let what = format!("force-releasing {name}");
    let path = format!("/v1/admin/locks/{}", encode_segment(name));
    let query: &[(&str, &str)] = if lock_delay { &[("lock_delay", "true")] } else { &[] };
    let reply = api.delete(&path, query, Credential::Admin).await?;
    match reply.status {
        204 => Ok(0),
        404 if reply.code() == Some(lockserver_proto::ErrorCode::NotFound) => {
            Err(CliError::with_exit(EXIT_NOT_FOUND, format!("nothing holds or waits on {name}")))
        }
        _ => Err(api.refused(&what, &reply, Credential::Admin)),
    }
}
