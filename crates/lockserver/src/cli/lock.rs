//! `lockserver lock [options] NAME -- COMMAND [ARGS...]`: hold a lock while COMMAND runs, in
//! the spirit of flock(1), `etcdctl lock` and `consul lock`.
//!
//! The lock is held by a streaming session (the client library's default transport), so the
//! server frees it within `--ttl` if this process dies. COMMAND runs in its own process group;
//! when the lock is lost (the server's `lost` event, or the client's local lease deadline),
//! the whole group gets SIGTERM and, `--kill-grace` later, SIGKILL. The client is built with
//! `lease_margin(kill_grace)`, so its lost signal fires `kill_grace` before its local deadline,
//! which is itself before the server's: the group is dead before the server could give the
//! lock to anyone else.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use lockserver_client::{Client, Handle, LockError, LostSignal};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::duration::{format_duration, parse_duration};
use super::{CliError, ServerArgs};

/// The lock was lost while COMMAND ran; COMMAND was killed.
const EXIT_LOST: u8 = 3;
/// COMMAND could not be started (as a shell says for "command not found").
const EXIT_SPAWN_FAILED: u8 = 127;
/// How long the process group may take to vanish after SIGKILL before we stop watching.
const AFTER_KILL: Duration = Duration::from_secs(2);
/// How often we look whether the process group is gone (there is no event for it).
const GROUP_POLL: Duration = Duration::from_millis(10);

/// Run COMMAND while holding the lock NAME, then release it; exit with COMMAND's exit code.
///
/// Exit codes: COMMAND's own; 1 (or -E) when the lock is held (-n, or -w ran out); 2 on
/// usage, connection or server errors; 3 when the lock was lost and COMMAND killed; 127 when
/// COMMAND cannot be run; 128+N when COMMAND was killed by signal N; 129/130/143 when this
/// process got SIGHUP/SIGINT/SIGTERM (COMMAND is stopped first). COMMAND gets LOCKSERVER_TOKEN
/// (the fencing token), LOCKSERVER_HOLD_ID and LOCKSERVER_LOCK_NAME.
#[derive(Args, Debug)]
#[command(after_help = "Example: lockserver lock -w 30s nightly-report -- ./make-report.sh")]
pub(crate) struct LockArgs {
    /// Do not wait: if the lock is held, exit with the conflict exit code.
    #[arg(short = 'n', long, conflicts_with = "wait")]
    nonblock: bool,
    /// Wait at most this long (500ms, 5s, 2m, 1h, or seconds); then exit with the conflict
    /// exit code [default: no deadline].
    #[arg(short = 'w', long, value_name = "DURATION", value_parser = parse_duration)]
    wait: Option<Duration>,
    /// The exit code when the lock is held (-n) or the wait runs out (-w).
    #[arg(short = 'E', long, value_name = "CODE", default_value_t = 1)]
    conflict_exit_code: u8,
    /// Take the lock in shared (reader) mode: shared holders run together.
    #[arg(short = 's', long, conflicts_with = "slots")]
    shared: bool,
    /// Take one ticket of a semaphore with N slots instead of a lock.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
    /// The session's TTL: how soon the server frees the lock if this process dies.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long COMMAND's process group has between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    kill_grace: Duration,
    /// The lock's name.
    name: String,
    /// The command to run while holding the lock, and its arguments (after `--`).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn run(args: LockArgs) -> Result<u8, CliError> {
    check_timing(args.ttl, args.kill_grace)?;
    // Listening from the start, so a Ctrl-C while waiting withdraws the wait cleanly.
    let mut signals = Signals::new()?;
    let mut builder = Client::builder()
        .addr(args.server.base())
        .owner(format!("lockserver-cli:{}", std::process::id()))
        .session_ttl(args.ttl)
        .lease_margin(args.kill_grace);
    if let Some(secret) = args.server.secret() {
        builder = builder.secret(secret);
    }
    let client = builder.build().map_err(|err| CliError::error(err.to_string()))?;

    let handle = tokio::select! {
        result = acquire(&client, &args) => result,
        received = signals.recv() => {
            // Dropping the acquire withdrew it; closing ends the session at once.
            client.close().await;
            eprintln!("lockserver: {} while waiting for {}", received.name(), args.name);
            return Ok(received.exit_code());
        }
    };
    let handle = match handle {
        Ok(handle) => handle,
        Err(err) => {
            client.close().await;
            return Err(acquire_error(&args, err));
        }
    };
    let result = hold_while_running(&args, &handle, &mut signals).await;
    finish(&client, handle, &args.name).await;
    result
}

/// `--kill-grace` comes off the lease, which is renewed every third of the TTL: leave the
/// renewals room, or the lock would count as lost between two of them.
fn check_timing(ttl: Duration, kill_grace: Duration) -> Result<(), CliError> {
    if ttl.is_zero() {
        return Err(CliError::error("--ttl must be more than 0"));
    }
    if kill_grace > ttl / 2 {
        return Err(CliError::error(format!(
            "--kill-grace ({}) must be at most half of --ttl ({}): the command is stopped that \
             long before the lease could end",
            format_duration(kill_grace),
            format_duration(ttl)
        )));
    }
    Ok(())
}

async fn acquire(client: &Client, args: &LockArgs) -> Result<Handle, LockError> {
    // A bounded wait is bounded on the client too: the library gives up (and withdraws the
    // request) at the wait + its connect timeout if the server stops answering.
    let timeout = if args.nonblock { Some(Duration::ZERO) } else { args.wait };
    match (args.slots, args.shared) {
        (Some(slots), _) => client.semaphore(args.name.as_str(), slots).acquire(timeout).await,
        (None, true) => client.rw_lock(args.name.as_str()).acquire_read(timeout).await,
        (None, false) => client.lock(args.name.as_str()).acquire(timeout).await,
    }
}

fn acquire_error(args: &LockArgs, err: LockError) -> CliError {
    let name = &args.name;
    match err {
        LockError::Locked => CliError::with_exit(
            args.conflict_exit_code,
            format!("{name} is held by someone else; not running the command"),
        ),
        LockError::Timeout(waited) => CliError::with_exit(
            args.conflict_exit_code,
            format!(
                "{name} is still held after waiting {}; not running the command",
                format_duration(waited)
            ),
        ),
        LockError::Auth(_) => CliError::error(format!(
            "cannot lock {name}: {err} (give the client secret with --secret or \
             LOCKSERVER_SECRET)"
        )),
        LockError::Connection(_) => {
            CliError::error(format!("cannot lock {name} at {}: {err}", args.server.base()))
        }
        err => CliError::error(format!("cannot lock {name}: {err}")),
    }
}

/// Runs COMMAND while `handle` holds the lock; returns the exit code. Every way out leaves
/// COMMAND's process group stopped, except COMMAND's own exit (its background processes, if
/// any, are left alone, as a shell would).
async fn hold_while_running(
    args: &LockArgs,
    handle: &Handle,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let mut lost = handle.lost();
    if let Some(reason) = lost.reason() {
        return Err(CliError::with_exit(
            EXIT_LOST,
            format!("lock {} lost ({reason}) before the command started", args.name),
        ));
    }
    let mut child = spawn(args, handle)?;
    let Some(group) = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw) else {
        // Only a child that was already reaped has no id, and nothing has reaped it.
        return Err(CliError::error("the command's process id is unknown"));
    };
    let outcome = tokio::select! {
        // A loss is looked at first: if COMMAND ended at the same moment, we cannot tell
        // whether it finished under the lock.
        biased;
        reason = wait_lost(&mut lost) => Outcome::Lost(reason),
        status = child.wait() => Outcome::Exited(status),
        received = signals.recv() => Outcome::Signalled(received),
    };
    match outcome {
        Outcome::Exited(Ok(status)) => Ok(exit_code_of(status)),
        Outcome::Exited(Err(err)) => {
            Err(CliError::error(format!("cannot wait for the command: {err}")))
        }
        Outcome::Lost(reason) => {
            let stopped = stop_group(&mut child, group, args.kill_grace).await;
            let still = if stopped { "" } else { " (some of its processes are still exiting)" };
            Err(CliError::with_exit(
                EXIT_LOST,
                format!("lock {} lost ({reason}); killed the command{still}", args.name),
            ))
        }
        Outcome::Signalled(received) => {
            stop_group(&mut child, group, args.kill_grace).await;
            Ok(received.exit_code())
        }
    }
}

enum Outcome {
    Exited(std::io::Result<ExitStatus>),
    Lost(String),
    Signalled(Received),
}

/// Waits until the hold is lost; its reason as text. The signal only ends without a loss
/// when the hold is released, which nobody does while COMMAND runs: treat it as lost.
async fn wait_lost(lost: &mut LostSignal) -> String {
    match lost.wait().await {
        Some(reason) => reason.to_string(),
        None => "the client stopped watching it".into(),
    }
}

fn spawn(args: &LockArgs, handle: &Handle) -> Result<Child, CliError> {
    let (program, rest) = match args.command.split_first() {
        Some(split) => split,
        None => return Err(CliError::error("no command given")),
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env("LOCKSERVER_TOKEN", handle.token().0.to_string())
        .env("LOCKSERVER_HOLD_ID", handle.hold_id())
        .env("LOCKSERVER_LOCK_NAME", handle.name())
        // Its own group, so a loss can stop everything COMMAND started, grandchildren too.
        .process_group(0);
    command.spawn().map_err(|err| {
        CliError::with_exit(
            EXIT_SPAWN_FAILED,
            format!("cannot run {}: {err}", program.to_string_lossy()),
        )
    })
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
fn exit_code_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(u8::MAX);
    }
    let signal = status.signal().unwrap_or(0);
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// SIGTERM to the whole group, SIGKILL after `grace` if anything of it is left. Returns
/// whether the group is gone.
async fn stop_group(child: &mut Child, group: Pid, grace: Duration) -> bool {
    let _ = killpg(group, Signal::SIGTERM);
    if group_gone_within(child, group, grace).await {
        return true;
    }
    let _ = killpg(group, Signal::SIGKILL);
    group_gone_within(child, group, AFTER_KILL).await
}

/// Polls until no process of `group` is left, at most `within`. COMMAND itself is reaped on
/// the way (its zombie would count as a member); grandchildren are reaped by init.
async fn group_gone_within(child: &mut Child, group: Pid, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let _ = child.try_wait();
        if killpg(group, None) == Err(Errno::ESRCH) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// Gives the hold back and ends the session. A failed release needs no retry: closing the
/// session releases it too, and failing that the server does when the session's TTL ends.
async fn finish(client: &Client, handle: Handle, name: &str) {
    if !handle.is_lost() {
        match handle.release().await {
            Ok(()) | Err(LockError::Lost(_)) => {}
            Err(err) => eprintln!(
                "lockserver: could not confirm the release of {name} ({err}); the server frees \
                 it when the session ends"
            ),
        }
    }
    client.close().await;
}

/// The signals that stop this process (and so COMMAND): Ctrl-C, `kill`, a closed terminal.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[derive(Clone, Copy, Debug)]
enum Received {
    Interrupt,
    Terminate,
    Hangup,
}

impl Received {
    fn signal(self) -> Signal {
        match self {
            Received::Interrupt => Signal::SIGINT,
            Received::Terminate => Signal::SIGTERM,
            Received::Hangup => Signal::SIGHUP,
        }
    }

    fn name(self) -> &'static str {
        self.signal().as_str()
    }

    /// 128 + the signal, as a shell reports a process it stopped.
    fn exit_code(self) -> u8 {
        u8::try_from(128 + self.signal() as i32).unwrap_or(u8::MAX)
    }
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|err| CliError::error(format!("cannot handle signals: {err}")))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.interrupt.recv() => Received::Interrupt,
            _ = self.terminate.recv() => Received::Terminate,
            _ = self.hangup.recv() => Received::Hangup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code_of(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137, "killed by SIGKILL");
        assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143, "killed by SIGTERM");
        assert_eq!(Received::Interrupt.exit_code(), 130);
        assert_eq!(Received::Terminate.exit_code(), 143);
        assert_eq!(Received::Hangup.exit_code(), 129);
    }

    #[test]
    fn the_kill_grace_must_leave_the_lease_room() {
        let s = Duration::from_secs;
        assert!(check_timing(s(10), s(1)).is_ok());
        assert!(check_timing(s(10), s(5)).is_ok());
        assert!(check_timing(s(10), Duration::ZERO).is_ok());
        let error = check_timing(s(10), s(6)).unwrap_err();
        assert!(error.message.contains("half of --ttl (10s)"), "{}", error.message);
        assert!(check_timing(Duration::ZERO, Duration::ZERO).is_err());
    }
}
