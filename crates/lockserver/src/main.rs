//! `lockserver`: the server, or with `lock`, `locks`, `release` or `status` first, the
//! command-line client ([`cli`]).
//!
//! As a server it parses the configuration, sets up logging and runs the server library until
//! SIGINT or SIGTERM; everything else lives in `lockserver-server`.

mod cli;

use std::ffi::OsString;
use std::process::ExitCode;

/// Shown under the server's `--help`, which the server crate renders.
const CLIENT_HELP: &str = "\nClient commands (each has its own --help):\n  \
    lockserver lock [OPTIONS] NAME -- COMMAND [ARGS...]   run COMMAND while holding a lock\n  \
    lockserver locks [--json] [--prefix P] [NAME]         list names, holders and waiters\n  \
    lockserver release NAME [HOLD_ID]                     release a hold, or force-release a name\n  \
    lockserver status [--json]                            is the server up and ready\n";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(cli::is_subcommand) {
        return cli::main(args);
    }
    serve(args)
}

fn serve(args: Vec<OsString>) -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let config = match lockserver_server::Config::load(args, &cwd) {
        Ok(config) => config,
        Err(lockserver_server::ConfigError::Flags(text)) => {
            // clap's own rendering: --help and --version land here too.
            let is_help = text.starts_with("Usage")
                || text.starts_with("Lockserver")
                || !text.contains("error:");
            if is_help {
                print!("{text}");
                if text.contains("Usage:") {
                    print!("{CLIENT_HELP}");
                }
                return ExitCode::SUCCESS;
            }
            eprint!("{text}");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("lockserver: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = lockserver_server::init_tracing(&config) {
        eprintln!("lockserver: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockserver: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lockserver_server::run(config, lockserver_server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lockserver: {err}");
            ExitCode::FAILURE
        }
    }
}
