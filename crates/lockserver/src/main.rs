//! `lockserver`: parses the configuration, sets up logging and runs the server library until
//! SIGINT or SIGTERM. Everything else lives in `lockserver-server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let config = match lockserver_server::Config::load(std::env::args_os(), &cwd) {
        Ok(config) => config,
        Err(lockserver_server::ConfigError::Flags(text)) => {
            // clap's own rendering: --help and --version land here too.
            let is_help = text.starts_with("Usage")
                || text.starts_with("Lockserver")
                || !text.contains("error:");
            if is_help {
                print!("{text}");
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
