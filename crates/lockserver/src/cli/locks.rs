//! `lockserver locks [--json] [--prefix P] [NAME]`: every name in use (the admin listing,
//! all pages), or one name (the client route, no admin secret).

use std::time::Duration;

use clap::Args;
use lockserver_proto::{AdminLocks, AdminName, Hold, Kind, LockMode, NameState};

use super::api::{Api, Credential};
use super::duration::format_duration;
use super::{encode_segment, AdminArgs, CliError, ServerArgs};

/// Names per page of the admin listing (the server's maximum).
const PAGE: &str = "1000";

/// List names in use with their holders and waiters. Without NAME: every name (needs the admin
/// secret); with NAME: that name only (the client secret is enough).
#[derive(Args, Debug)]
pub(crate) struct LocksArgs {
    /// Show only this name.
    name: Option<String>,
    /// Only the names that start with this.
    #[arg(long, value_name = "PREFIX", conflicts_with = "name")]
    prefix: Option<String>,
    /// Print JSON on stdout: the array of every name (without NAME), or the name's state.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    admin: AdminArgs,
}

pub(crate) async fn run(args: LocksArgs) -> Result<u8, CliError> {
    let api = Api::new(&args.server, Some(&args.admin))?;
    match &args.name {
        Some(name) => {
            let state = name_state(&api, name).await?;
            if args.json {
                println!("{}", to_json(&state)?);
            } else {
                print_table(&rows_of_name(&state));
            }
        }
        None => {
            let names = every_name(&api, args.prefix.as_deref()).await?;
            if args.json {
                println!("{}", to_json(&names)?);
            } else if names.is_empty() {
                println!("no names in use");
            } else {
                let rows: Vec<Row> = names.iter().flat_map(rows_of_admin_name).collect();
                print_table(&rows);
            }
        }
    }
    Ok(0)
}

/// `GET /v1/locks/{name}`: the server answers for a semaphore's name on this route too, with
/// `"kind": "semaphore"`.
async fn name_state(api: &Api, name: &str) -> Result<NameState, CliError> {
    let what = format!("showing {name}");
    let path = format!("/v1/locks/{}", encode_segment(name));
    let reply = api.get(&path, &[], Credential::Client).await?;
    if !reply.is_success() {
        return Err(api.refused(&what, &reply, Credential::Client));
    }
    reply.json(&what)
}

/// Every page of `GET /v1/admin/locks`, following the `next` cursor.
async fn every_name(api: &Api, prefix: Option<&str>) -> Result<Vec<AdminName>, CliError> {
    let what = "listing every lock";
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", PAGE)];
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix));
        }
        if let Some(after) = &after {
            query.push(("after", after.as_str()));
        }
        let reply = api.get("/v1/admin/locks", &query, Credential::Admin).await?;
        if !reply.is_success() {
            return Err(api.refused(what, &reply, Credential::Admin));
        }
        let page: AdminLocks = reply.json(what)?;
        names.extend(page.locks);
        match page.next {
            Some(next) if after.as_deref() == Some(next.as_str()) => {
                return Err(CliError::error(format!(
                    "{what}: the server returned the same page cursor twice ({next:?})"
                )));
            }
            Some(next) => after = Some(next),
            None => return Ok(names),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|err| CliError::error(format!("cannot print JSON: {err}")))
}

/// One line of the table: a holder of a name, or the name alone when nobody holds it.
#[derive(Debug)]
struct Row {
    name: String,
    kind: String,
    owner: String,
    hold_id: String,
    token: String,
    expires: String,
    waiters: String,
}

const HEADER: [&str; 7] = ["NAME", "KIND", "OWNER", "HOLD ID", "TOKEN", "EXPIRES", "WAITERS"];

impl Row {
    fn cells(&self) -> [&str; 7] {
        [
            &self.name,
            &self.kind,
            &self.owner,
            &self.hold_id,
            &self.token,
            &self.expires,
            &self.waiters,
        ]
    }
}

fn rows_of_admin_name(name: &AdminName) -> Vec<Row> {
    rows(&name.name, name.kind, name.limit, &name.holders, name.waiters.len())
}

fn rows_of_name(state: &NameState) -> Vec<Row> {
    let waiters = usize::try_from(state.waiters).unwrap_or(usize::MAX);
    rows(&state.name, state.kind, state.limit, &state.holders, waiters)
}

fn rows(name: &str, kind: Kind, limit: Option<u32>, holders: &[Hold], waiters: usize) -> Vec<Row> {
    let waiters = waiters.to_string();
    if holders.is_empty() {
        let kind = match (kind, limit) {
            (Kind::Semaphore, Some(limit)) => format!("semaphore (limit {limit})"),
            (Kind::Semaphore, None) => "semaphore".to_string(),
            (Kind::Lock, _) => "lock".to_string(),
        };
        let none = || "-".to_string();
        return vec![Row {
            name: name.to_string(),
            kind,
            owner: none(),
            hold_id: none(),
            token: none(),
            expires: none(),
            waiters,
        }];
    }
    let mut rows = Vec::with_capacity(holders.len());
    for hold in holders {
        rows.push(Row {
            name: name.to_string(),
            kind: hold_kind(hold),
            owner: if hold.owner.is_empty() { "-".into() } else { hold.owner.clone() },
            hold_id: hold.hold_id.clone(),
            token: hold.token.to_string(),
            expires: expires(hold),
            waiters: waiters.clone(),
        });
    }
    rows
}

fn hold_kind(hold: &Hold) -> String {
    match (hold.kind, hold.mode, hold.limit) {
        (Kind::Lock, Some(LockMode::Shared), _) => "lock (shared)".into(),
        (Kind::Lock, _, _) => "lock".into(),
        (Kind::Semaphore, _, Some(limit)) => format!("semaphore ({} of {limit})", hold.permits),
        (Kind::Semaphore, _, None) => format!("semaphore ({})", hold.permits),
    }
}

fn expires(hold: &Hold) -> String {
    match (hold.expires_in_ms, &hold.session) {
        (Some(ms), _) => format!("in {}", format_duration(Duration::from_millis(ms))),
        // A session's hold lives as long as the session's keepalives.
        (None, Some(_)) => "with session".into(),
        (None, None) => "never".into(),
    }
}

fn print_table(rows: &[Row]) {
    let mut widths = HEADER.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.cells()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", text.trim_end());
    };
    line(HEADER);
    for row in rows {
        line(row.cells());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(kind: Kind, mode: Option<LockMode>, expires_in_ms: Option<u64>) -> Hold {
        Hold {
            name: "db".into(),
            hold_id: "h1".into(),
            kind,
            mode,
            permits: 1,
            limit: (kind == Kind::Semaphore).then_some(3),
            owner: "w1".into(),
            session: None,
            token: 42,
            granted_at_ms: 0,
            expires_in_ms,
        }
    }

    #[test]
    fn a_free_name_is_one_row_of_dashes() {
        let rows = rows("db", Kind::Semaphore, Some(4), &[], 2);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cells(), ["db", "semaphore (limit 4)", "-", "-", "-", "-", "2"]);
    }

    #[test]
    fn every_holder_is_a_row() {
        let holders = [
            hold(Kind::Lock, Some(LockMode::Shared), Some(9_840)),
            hold(Kind::Lock, Some(LockMode::Shared), None),
        ];
        let rows = rows("db", Kind::Lock, None, &holders, 0);
        assert_eq!(rows[0].cells(), ["db", "lock (shared)", "w1", "h1", "42", "in 9.8s", "0"]);
        assert_eq!(rows[1].expires, "never");
        let ticket = hold(Kind::Semaphore, None, None);
        assert_eq!(hold_kind(&ticket), "semaphore (1 of 3)");
        let of_session = Hold { session: Some("s1".into()), ..ticket };
        assert_eq!(expires(&of_session), "with session");
    }
}
