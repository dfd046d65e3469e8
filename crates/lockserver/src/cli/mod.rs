//! The command-line client: `lockserver lock|locks|release|status ...`.
//!
//! Layout:
//! - this file: the argument grammar (clap), the options every subcommand shares, the error
//!   type with its exit code, and the dispatch;
//! - [`lock`]: run a command while holding a lock (the `lost` signal kills it);
//! - [`locks`], [`release`], [`status`]: one file per plain-HTTP subcommand;
//! - [`api`]: the small HTTP helper those three share (credentials, error bodies);
//! - [`duration`]: `500ms` / `5s` / `2m` / `1h` / `0.5` on the command line.
//!
//! Exit codes (README "The `lockserver` command-line client"): the command's own for `lock`,
//! 1 a conflict (or `-E`) / nothing to release / not ready, 2 usage, connection and server
//! errors, 3 lock lost, 127 command not runnable, 128+N killed by / interrupted with signal N.

mod api;
mod duration;
mod lock;
mod locks;
mod release;
mod status;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Usage, connection and server errors.
pub(crate) const EXIT_ERROR: u8 = 2;

/// The first arguments that select the client instead of the server.
const SUBCOMMANDS: [&str; 4] = ["lock", "locks", "release", "status"];

/// Whether `lockserver FIRST ...` is a client subcommand (anything else runs the server).
pub(crate) fn is_subcommand(first: &OsString) -> bool {
    first.to_str().is_some_and(|first| SUBCOMMANDS.contains(&first))
}

#[derive(Parser, Debug)]
#[command(
    name = "lockserver",
    version,
    about = "Lockserver's command-line client (run `lockserver --help` for the server's options)",
    subcommand_required = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Lock(lock::LockArgs),
    Locks(locks::LocksArgs),
    Release(release::ReleaseArgs),
    Status(status::StatusArgs),
}

/// Where the server is and the client credential: every subcommand has these.
#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// The server: host:port or http://host:port.
    #[arg(
        long,
        env = "LOCKSERVER_ADDR",
        default_value = lockserver_client::DEFAULT_ADDR,
        value_name = "ADDR",
        value_parser = base_url
    )]
    addr: String,
    /// The client secret (sent as `Authorization: Bearer`).
    #[arg(long, env = "LOCKSERVER_SECRET", hide_env_values = true, value_name = "SECRET")]
    secret: Option<String>,
}

impl ServerArgs {
    /// The server's base URL, `http://host:port`.
    pub(crate) fn base(&self) -> &str {
        &self.addr
    }

    /// The client secret; an empty variable counts as none.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.secret.as_deref().filter(|secret| !secret.is_empty())
    }
}

/// The admin credential, for the routes that list or force-release every holder of a name.
#[derive(Args, Debug)]
pub(crate) struct AdminArgs {
    /// The admin secret, for listing every name and force-releasing a whole name [default:
    /// the client secret].
    #[arg(long, env = "LOCKSERVER_ADMIN_SECRET", hide_env_values = true, value_name = "SECRET")]
    admin_secret: Option<String>,
}

impl AdminArgs {
    /// The admin secret, falling back to the client secret.
    pub(crate) fn secret<'a>(&'a self, server: &'a ServerArgs) -> Option<&'a str> {
        self.admin_secret.as_deref().filter(|secret| !secret.is_empty()).or(server.secret())
    }
}

/// A subcommand that stopped early: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: u8,
    pub(crate) message: String,
}

impl CliError {
    /// A usage, connection or server error (exit 2).
    pub(crate) fn error(message: impl Into<String>) -> CliError {
        CliError { exit: EXIT_ERROR, message: message.into() }
    }

    pub(crate) fn with_exit(exit: u8, message: impl Into<String>) -> CliError {
        CliError { exit, message: message.into() }
    }
}

/// Runs `lockserver SUBCOMMAND ...` (`args` is the whole command line, program name first).
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // clap's own rendering, with our prefix instead of "error: "; --help and
            // --version land here too, with exit code 0.
            let text = err.render().to_string();
            if err.use_stderr() {
                eprint!("{}", text.replacen("error: ", "lockserver: ", 1));
            } else {
                print!("{text}");
            }
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_ERROR));
        }
    };
    // One thread is plenty for one lock or a few requests, and leaves the cores to COMMAND.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockserver: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Lock(args) => lock::run(args).await,
            Command::Locks(args) => locks::run(args).await,
            Command::Release(args) => release::run(args).await,
            Command::Status(args) => status::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("lockserver: {}", err.message);
            ExitCode::from(err.exit)
        }
    }
}

/// `host:port`, `http://host:port` or `http://host:port/` → `http://host:port` (the client
/// library's rule: no path, no TLS, port 8080 when absent).
fn base_url(addr: &str) -> Result<String, String> {
    lockserver_client::normalize_addr(addr).map_err(|err| match err {
        lockserver_client::LockError::InvalidArgument(message) => message,
        other => other.to_string(),
    })
}

pub(crate) use lockserver_client::encode_segment;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_client_subcommands_leave_the_server_alone() {
        for first in ["lock", "locks", "release", "status"] {
            assert!(is_subcommand(&first.into()), "{first}");
        }
        for first in ["--port", "serve", "Lock", "help", ""] {
            assert!(!is_subcommand(&first.into()), "{first}");
        }
    }

    #[test]
    fn addresses_normalize_to_a_base_url() {
        assert_eq!(base_url("127.0.0.1:9000").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(base_url("http://db.example:81/").unwrap(), "http://db.example:81");
        assert_eq!(base_url("locks.internal").unwrap(), "http://locks.internal:8080");
        assert_eq!(base_url("[::1]:7000").unwrap(), "http://[::1]:7000");
        assert!(base_url("https://x:1").unwrap_err().contains("TLS"));
        assert!(base_url("").is_err());
        assert!(base_url("http://x:1/prefix").is_err());
    }

    #[test]
    fn names_encode_as_one_segment() {
        assert_eq!(encode_segment("a/check"), "a%2Fcheck");
        assert_eq!(encode_segment("%"), "%25");
        assert_eq!(encode_segment("db-1_x.y~z"), "db-1_x.y~z");
        assert_eq!(encode_segment("ü"), "%C3%BC");
        assert_eq!(encode_segment("a b?#"), "a%20b%3F%23");
    }

    #[test]
    fn the_grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
