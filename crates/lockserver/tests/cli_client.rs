//! The command-line client (`lockserver lock|locks|release|status`) against the real server:
//! exit codes, what COMMAND sees, conflicts and waits, shared locks and semaphores, a lost
//! lock killing COMMAND's whole process group, signals, listing and releasing, status.
//!
//! Every wait is on an event (a file COMMAND writes, the server's view of a name, a process
//! exiting), polled with a deadline; no fixed sleeps.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, BIN};
use serde_json::{json, Value};

const ADMIN: &str = "cli-admin-secret";

/// `lockserver SUBCOMMAND --addr ADDR ARGS...` in `dir`, without the developer's
/// `LOCKSERVER_*` variables.
fn cli(addr: &str, dir: &Path, subcommand: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg(subcommand).args(["--addr", addr]).args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("LOCKSERVER_") {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

fn run(addr: &str, dir: &Path, subcommand: &str, args: &[&str]) -> Output {
    cli(addr, dir, subcommand, args).output().expect("run the CLI")
}

/// Starts the CLI in the background with its output captured in files of `dir`.
fn spawn(addr: &str, dir: &Path, subcommand: &str, args: &[&str], tag: &str) -> Running {
    let stdout = std::fs::File::create(dir.join(format!("{tag}.stdout"))).expect("stdout file");
    let stderr = std::fs::File::create(dir.join(format!("{tag}.stderr"))).expect("stderr file");
    let child =
        cli(addr, dir, subcommand, args).stdout(stdout).stderr(stderr).spawn().expect("spawn");
    Running { child, stderr: dir.join(format!("{tag}.stderr")) }
}

/// A CLI process running in the background; killed if the test ends first.
struct Running {
    child: Child,
    stderr: PathBuf,
}

impl Running {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    /// Waits (at most `within`) for the CLI to exit; its exit code.
    async fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or_else(|| panic!("killed by a signal: {status}"));
            }
            assert!(Instant::now() < deadline, "the CLI did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits for COMMAND to write a whole line to `file`; returns its content.
async fn file_line(file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if text.ends_with('\n') {
                return text.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "{} was not written", file.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for COMMAND to create `file` (it may stay empty).
async fn file_created(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !file.exists() {
        assert!(Instant::now() < deadline, "{} was not created", file.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn is_gone(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).unwrap_or("");
    state.starts_with('Z') || state.starts_with('X')
}

async fn until_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /v1/locks/{name}` (`encoded` already percent-encoded).
async fn name_state(server: &Server, encoded: &str) -> Value {
    let view = server.client.get(&format!("/v1/locks/{encoded}")).await;
    assert_eq!(view.status, 200, "{view:?}");
    view.body
}

async fn holders(server: &Server, encoded: &str) -> Vec<Value> {
    name_state(server, encoded).await["holders"].as_array().expect("holders").clone()
}

/// A port nothing listens on (bound, then closed).
fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    addr
}

/// A shell line that records its pid and a background grandchild's, then waits for it.
const WITH_GRANDCHILD: &str = "echo $$ > pid; sleep 100 & echo $! > grandchild; wait";

/// A shell line that records that it started and runs until `go` exists.
fn until_go(started: &str) -> String {
    format!("touch {started}; while [ ! -e go ]; do sleep 0.01; done")
}

// ----- lock ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_exit_code_is_the_commands_and_it_sees_token_hold_id_and_name() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let script = "printf '%s %s %s\\n' \"$LOCKSERVER_TOKEN\" \"$LOCKSERVER_HOLD_ID\" \
                  \"$LOCKSERVER_LOCK_NAME\" > env; while [ ! -e go ]; do sleep 0.01; done; exit 7";
    let mut cli =
        spawn(&addr, dir.path(), "lock", &["jobs/nightly run", "--", "sh", "-c", script], "a");
    let seen = file_line(&dir.path().join("env")).await;
    let held = holders(&server, "jobs%2Fnightly%20run").await;
    assert_eq!(held.len(), 1, "{held:?}");
    let (token, rest) = seen.split_once(' ').expect("three fields");
    let (hold_id, name) = rest.split_once(' ').expect("three fields");
    assert_eq!(hold_id, held[0]["hold_id"], "the hold the server shows while COMMAND runs");
    assert_eq!(token.parse::<u64>().expect("a numeric token"), held[0]["token"]);
    assert_eq!(name, "jobs/nightly run");
    assert!(held[0]["owner"].as_str().unwrap().starts_with("lockserver-cli:"), "{held:?}");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(cli.exit_code(Duration::from_secs(10)).await, 7, "{}", cli.stderr());
}

#[tokio::test]
async fn the_lock_is_released_when_the_command_exits() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    for (exit, expected) in [("exit 0", 0), ("exit 1", 1)] {
        let script = format!("echo $LOCKSERVER_TOKEN > token; {exit}");
        let output = run(&addr, dir.path(), "lock", &["db", "--", "sh", "-c", &script]);
        assert_eq!(code(&output), expected, "{exit}: {}", stderr(&output));
        assert!(file_line(&dir.path().join("token")).await.parse::<u64>().is_ok(), "it ran");
        assert_eq!(holders(&server, "db").await, Vec::<Value>::new(), "{exit}: released");
        std::fs::remove_file(dir.path().join("token")).unwrap();
    }
    // The next holder gets it at once.
    assert_eq!(server.client.lock("db", json!({})).await.status, 201);
}

/// Takes and releases `other` over HTTP: its token.
async fn a_token(server: &Server) -> u64 {
    let held = server.client.lock("other", json!({})).await;
    assert_eq!(held.status, 201, "{held:?}");
    assert_eq!(server.client.delete(held.header("location")).await.status, 204);
    held.token()
}

#[tokio::test]
async fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output =
        run(&server.addr.to_string(), dir.path(), "lock", &["db", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&output), 137, "{}", stderr(&output));
    assert_eq!(holders(&server, "db").await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_command_that_cannot_run_exits_127_and_releases() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let before = a_token(&server).await;
    let output =
        run(&server.addr.to_string(), dir.path(), "lock", &["db", "--", "./no-such-program"]);
    assert_eq!(code(&output), 127);
    let message = stderr(&output);
    assert!(message.starts_with("lockserver: cannot run ./no-such-program"), "{message}");
    assert_eq!(holders(&server, "db").await, Vec::<Value>::new(), "released");
    // Tokens rise with every grant: one more in between means the CLI was granted the lock.
    assert!(a_token(&server).await > before + 1, "the lock was taken before the spawn");
}

#[tokio::test]
async fn nonblock_on_a_held_lock_exits_with_the_conflict_code_and_never_runs_the_command() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    assert_eq!(server.client.lock("db", json!({"ttl_ms": null})).await.status, 201);
    let output = run(&addr, dir.path(), "lock", &["-n", "db", "--", "touch", "ran"]);
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).starts_with("lockserver: db is held"), "{}", stderr(&output));
    let output = run(&addr, dir.path(), "lock", &["-n", "-E", "42", "db", "--", "touch", "ran"]);
    assert_eq!(code(&output), 42);
    assert!(!dir.path().join("ran").exists(), "the command never ran");
    assert_eq!(holders(&server, "db").await.len(), 1, "the other holder keeps it");
}

#[tokio::test]
async fn wait_gives_up_after_the_duration_and_never_early() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(server.client.lock("db", json!({"ttl_ms": null})).await.status, 201);
    let started = Instant::now();
    let output = run(
        &server.addr.to_string(),
        dir.path(),
        "lock",
        &["-w", "300ms", "db", "--", "touch", "ran"],
    );
    let took = started.elapsed();
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(took >= Duration::from_millis(300), "gave up early, after {took:?}");
    assert!(took < Duration::from_secs(5), "gave up late, after {took:?}");
    assert!(stderr(&output).contains("still held after waiting 300ms"), "{}", stderr(&output));
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test]
async fn a_waiting_cli_gets_the_lock_when_it_is_released() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let held = server.client.lock("db", json!({"ttl_ms": null})).await;
    let mut cli =
        spawn(&server.addr.to_string(), dir.path(), "lock", &["db", "--", "touch", "ran"], "w");
    server.client.until_waiters("locks", "db", 1).await;
    assert!(!dir.path().join("ran").exists(), "it waits");
    assert_eq!(server.client.delete(held.header("location")).await.status, 204);
    assert_eq!(cli.exit_code(Duration::from_secs(10)).await, 0, "{}", cli.stderr());
    assert!(dir.path().join("ran").exists());
}

#[tokio::test]
async fn shared_holders_run_together_and_keep_a_writer_out() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let mut readers = Vec::new();
    for reader in ["r1", "r2"] {
        let script = until_go(reader);
        readers.push(spawn(
            &addr,
            dir.path(),
            "lock",
            &["--shared", "db", "--", "sh", "-c", &script],
            reader,
        ));
    }
    file_created(&dir.path().join("r1")).await;
    file_created(&dir.path().join("r2")).await;
    let held = holders(&server, "db").await;
    assert_eq!(held.len(), 2, "both readers hold at once: {held:?}");
    assert!(held.iter().all(|hold| hold["mode"] == "shared"), "{held:?}");
    let writer = run(&addr, dir.path(), "lock", &["-n", "db", "--", "touch", "wrote"]);
    assert_eq!(code(&writer), 1, "{}", stderr(&writer));
    assert!(!dir.path().join("wrote").exists());
    std::fs::write(dir.path().join("go"), "").unwrap();
    for reader in &mut readers {
        assert_eq!(reader.exit_code(Duration::from_secs(10)).await, 0, "{}", reader.stderr());
    }
    assert_eq!(holders(&server, "db").await, Vec::<Value>::new());
}

#[tokio::test]
async fn slots_admit_that_many_commands_and_refuse_one_more() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let mut holders_running = Vec::new();
    for ticket in ["t1", "t2"] {
        let script = until_go(ticket);
        let args = ["--slots", "2", "pool", "--", "sh", "-c", &script];
        holders_running.push(spawn(&addr, dir.path(), "lock", &args, ticket));
    }
    file_created(&dir.path().join("t1")).await;
    file_created(&dir.path().join("t2")).await;
    let state = name_state(&server, "pool").await;
    assert_eq!(state["kind"], "semaphore", "{state}");
    assert_eq!(state["holders"].as_array().unwrap().len(), 2, "{state}");
    let third =
        run(&addr, dir.path(), "lock", &["-n", "--slots", "2", "pool", "--", "touch", "t3"]);
    assert_eq!(code(&third), 1, "{}", stderr(&third));
    assert!(!dir.path().join("t3").exists());
    std::fs::write(dir.path().join("go"), "").unwrap();
    for running in &mut holders_running {
        assert_eq!(running.exit_code(Duration::from_secs(10)).await, 0, "{}", running.stderr());
    }
}

#[tokio::test]
async fn a_lost_lock_kills_the_command_and_its_grandchildren_and_exits_3() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--kill-grace", "5s", "db", "--", "sh", "-c", WITH_GRANDCHILD];
    let mut cli = spawn(&server.addr.to_string(), dir.path(), "lock", &args, "lost");
    let child: i32 = file_line(&dir.path().join("pid")).await.parse().unwrap();
    let grandchild: i32 = file_line(&dir.path().join("grandchild")).await.parse().unwrap();
    assert!(!is_gone(child) && !is_gone(grandchild));
    let admin = server.client.with_secret(ADMIN);
    assert_eq!(admin.delete("/v1/admin/locks/db").await.status, 204);
    // SIGTERM ends both at once: well inside the 5 s grace before SIGKILL.
    assert_eq!(cli.exit_code(Duration::from_secs(4)).await, 3, "{}", cli.stderr());
    assert_eq!(
        cli.stderr().trim(),
        "lockserver: lock db lost (force-released by an administrator); killed the command"
    );
    until_gone(child, Duration::from_secs(2)).await;
    until_gone(grandchild, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' TERM; echo $$ > pid; while :; do sleep 0.05; done";
    let args = ["--kill-grace", "300ms", "db", "--", "sh", "-c", script];
    let mut cli = spawn(&server.addr.to_string(), dir.path(), "lock", &args, "stubborn");
    let child: i32 = file_line(&dir.path().join("pid")).await.parse().unwrap();
    let admin = server.client.with_secret(ADMIN);
    let released = Instant::now();
    assert_eq!(admin.delete("/v1/admin/locks/db").await.status, 204);
    assert_eq!(cli.exit_code(Duration::from_secs(10)).await, 3, "{}", cli.stderr());
    let took = released.elapsed();
    assert!(took >= Duration::from_millis(300), "SIGKILL came before the grace: {took:?}");
    assert!(is_gone(child), "the shell that ignored SIGTERM is dead");
}

#[tokio::test]
async fn the_local_lease_deadline_kills_the_command_before_the_lease_could_end() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // COMMAND ignores SIGTERM, so it dies only at SIGKILL, the whole grace after the lost
    // signal: only a lost signal that fires the grace early gets it killed in time.
    let script = format!("trap '' TERM; {WITH_GRANDCHILD}");
    let args = ["--ttl", "10s", "--kill-grace", "4s", "db", "--", "sh", "-c", &script];
    let mut cli = spawn(&server.addr.to_string(), dir.path(), "lock", &args, "deadline");
    let child: i32 = file_line(&dir.path().join("pid")).await.parse().unwrap();
    let grandchild: i32 = file_line(&dir.path().join("grandchild")).await.parse().unwrap();
    // A frozen server renews nothing: the client must stop trusting its lease on its own.
    let server_pid = i32::try_from(server.pid()).unwrap();
    let frozen = Instant::now();
    send_signal(server_pid, "STOP");
    until_gone(child, Duration::from_secs(20)).await;
    let took = frozen.elapsed();
    let code = cli.exit_code(Duration::from_secs(10)).await;
    send_signal(server_pid, "CONT");
    // Every lease the frozen server granted was asked for before it froze, so none lasts past
    // freeze + TTL: the command must be dead by then (300 ms allowed for polling and a busy
    // machine). A lost signal that did not fire the grace early would have it die 10.5 to
    // 13.9 s after the freeze.
    assert!(
        took < Duration::from_millis(10_300),
        "the command still ran {took:?} after the freeze"
    );
    assert_eq!(code, 3, "{}", cli.stderr());
    let message = cli.stderr();
    assert!(message.contains("lock db lost (local lease deadline passed)"), "{message}");
    assert!(is_gone(grandchild), "the whole group is dead when the CLI exits");
}

#[tokio::test]
async fn a_server_that_stops_answering_cannot_stall_a_bounded_wait() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(server.client.lock("db", json!({"ttl_ms": null})).await.status, 201);
    let args = ["-w", "300ms", "db", "--", "touch", "ran"];
    let mut cli = spawn(&server.addr.to_string(), dir.path(), "lock", &args, "stalled");
    server.client.until_waiters("locks", "db", 1).await;
    let server_pid = i32::try_from(server.pid()).unwrap();
    send_signal(server_pid, "STOP");
    // 300 ms + 5 s for the answer, + up to 2 s for the session's close to be acknowledged.
    let code = cli.exit_code(Duration::from_secs(15)).await;
    send_signal(server_pid, "CONT");
    assert_eq!(code, 2, "the outcome is unknown, not a conflict: {}", cli.stderr());
    let message = cli.stderr();
    assert!(message.contains("no answer from the server within 5.3s"), "{message}");
    assert!(message.contains("outcome unknown"), "{message}");
    assert!(!dir.path().join("ran").exists());
}

fn send_signal(pid: i32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(status.expect("kill").success(), "kill -{signal} {pid}");
}

#[tokio::test]
async fn sigint_and_sigterm_stop_the_command_release_and_exit_128_plus_the_signal() {
    let server = Server::start(&[]);
    for (signal, expected) in [("INT", 130), ("TERM", 143)] {
        let dir = tempfile::tempdir().unwrap();
        let args = ["db", "--", "sh", "-c", WITH_GRANDCHILD];
        let mut cli = spawn(&server.addr.to_string(), dir.path(), "lock", &args, "signalled");
        let child: i32 = file_line(&dir.path().join("pid")).await.parse().unwrap();
        let grandchild: i32 = file_line(&dir.path().join("grandchild")).await.parse().unwrap();
        assert_eq!(holders(&server, "db").await.len(), 1);
        cli.signal(signal);
        assert_eq!(cli.exit_code(Duration::from_secs(10)).await, expected, "{}", cli.stderr());
        assert!(is_gone(child), "SIG{signal}: the command was stopped");
        until_gone(grandchild, Duration::from_secs(2)).await;
        assert_eq!(holders(&server, "db").await, Vec::<Value>::new(), "SIG{signal}: released");
    }
}

#[tokio::test]
async fn sigint_while_waiting_withdraws_the_wait() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(server.client.lock("db", json!({"ttl_ms": null})).await.status, 201);
    let mut cli =
        spawn(&server.addr.to_string(), dir.path(), "lock", &["db", "--", "touch", "ran"], "i");
    server.client.until_waiters("locks", "db", 1).await;
    cli.signal("INT");
    assert_eq!(cli.exit_code(Duration::from_secs(10)).await, 130, "{}", cli.stderr());
    server.client.until_waiters("locks", "db", 0).await;
    assert!(!dir.path().join("ran").exists());
}

// ----- locks, release, status ---------------------------------------------------------------

#[tokio::test]
async fn locks_lists_holds_and_release_frees_them() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let held = server.client.lock("app%2Fdb", json!({"owner": "w1", "ttl_ms": null})).await;
    assert_eq!(held.status, 201, "{held:?}");
    let hold_id = held.hold_id();

    let listing = run(&addr, dir.path(), "locks", &["--json", "--admin-secret", ADMIN]);
    assert_eq!(code(&listing), 0, "{}", stderr(&listing));
    let names: Value = serde_json::from_str(&stdout(&listing)).expect("one JSON array");
    assert_eq!(names.as_array().unwrap().len(), 1, "{names}");
    assert_eq!(names[0]["name"], "app/db");
    assert_eq!(names[0]["holders"][0]["hold_id"], hold_id.as_str());

    let table = run(&addr, dir.path(), "locks", &["--admin-secret", ADMIN]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("app/db") && text.contains(&hold_id) && text.contains("w1"), "{text}");

    // Without the admin secret the listing says what it needs.
    let refused = run(&addr, dir.path(), "locks", &[]);
    assert_eq!(code(&refused), 2);
    assert!(stderr(&refused).starts_with("lockserver: "), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("needs the admin secret"), "{}", stderr(&refused));

    // One name needs no admin secret.
    let one = run(&addr, dir.path(), "locks", &["app/db", "--json"]);
    assert_eq!(code(&one), 0, "{}", stderr(&one));
    let state: Value = serde_json::from_str(&stdout(&one)).expect("the name's state");
    assert_eq!(state["holders"][0]["hold_id"], hold_id.as_str());
    let one_table = run(&addr, dir.path(), "locks", &["app/db"]);
    assert!(stdout(&one_table).contains(&hold_id), "{}", stdout(&one_table));

    let released = run(&addr, dir.path(), "release", &["app/db", &hold_id]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert_eq!(holders(&server, "app%2Fdb").await, Vec::<Value>::new());
    let again = run(&addr, dir.path(), "release", &["app/db", &hold_id]);
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("no such hold"), "{}", stderr(&again));
}

#[tokio::test]
async fn release_finds_a_semaphore_hold_and_force_releases_a_name() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let ticket =
        server.client.post("/v1/semaphores/pool", json!({"limit": 2, "ttl_ms": null})).await;
    assert_eq!(ticket.status, 201, "{ticket:?}");
    let released = run(&addr, dir.path(), "release", &["pool", &ticket.hold_id()]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert_eq!(holders(&server, "pool").await, Vec::<Value>::new());

    for _ in 0..2 {
        assert_eq!(
            server.client.lock("db", json!({"mode": "shared", "ttl_ms": null})).await.status,
            201
        );
    }
    let refused = run(&addr, dir.path(), "release", &["db"]);
    assert_eq!(code(&refused), 2);
    assert!(stderr(&refused).contains("needs the admin secret"), "{}", stderr(&refused));
    let forced = run(&addr, dir.path(), "release", &["db", "--admin-secret", ADMIN]);
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert_eq!(holders(&server, "db").await, Vec::<Value>::new());
    let nothing = run(&addr, dir.path(), "release", &["db", "--admin-secret", ADMIN]);
    assert_eq!(code(&nothing), 1);
    assert!(stderr(&nothing).contains("nothing holds or waits on db"), "{}", stderr(&nothing));
}

#[tokio::test]
async fn locks_follows_the_page_cursor_to_the_last_name() {
    let server = Server::start(&["--in-memory", "--admin-secret", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    // More than one page (1000 names) under the prefix, and one name outside it.
    let count = 1_005;
    for index in 0..count {
        let held = server.client.lock(&format!("page%2F{index:04}"), json!({})).await;
        assert_eq!(held.status, 201, "{held:?}");
    }
    assert_eq!(server.client.lock("other", json!({})).await.status, 201);
    let listing = run(
        &server.addr.to_string(),
        dir.path(),
        "locks",
        &["--json", "--prefix", "page/", "--admin-secret", ADMIN],
    );
    assert_eq!(code(&listing), 0, "{}", stderr(&listing));
    let names: Vec<Value> = serde_json::from_str(&stdout(&listing)).expect("one JSON array");
    assert_eq!(names.len(), count);
    assert_eq!(names[0]["name"], "page/0000");
    assert_eq!(names[count - 1]["name"], format!("page/{:04}", count - 1));
}

#[tokio::test]
async fn status_reports_a_ready_server_and_an_unreachable_one() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output = run(&server.addr.to_string(), dir.path(), "status", &[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(&format!("address:       http://{}", server.addr)), "{text}");
    assert!(text.contains("ready:         yes"), "{text}");

    let json_output = run(&server.addr.to_string(), dir.path(), "status", &["--json"]);
    let report: Value = serde_json::from_str(&stdout(&json_output)).expect("one JSON object");
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["address"], format!("http://{}", server.addr));

    let dead = run(&dead_addr(), dir.path(), "status", &[]);
    assert_eq!(code(&dead), 2);
    assert!(
        stderr(&dead).starts_with("lockserver: cannot reach the server at"),
        "{}",
        stderr(&dead)
    );
}

// ----- bad input ----------------------------------------------------------------------------

#[tokio::test]
async fn bad_durations_and_unreachable_servers_exit_2_with_a_message() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    for args in [
        ["-w", "5x", "db", "--", "touch", "ran"],
        ["--ttl", "soon", "db", "--", "touch", "ran"],
        ["--kill-grace", "1e3", "db", "--", "touch", "ran"],
    ] {
        let output = run(&addr, dir.path(), "lock", &args);
        assert_eq!(code(&output), 2, "{args:?}");
        let message = stderr(&output);
        assert!(message.starts_with("lockserver: invalid value"), "{args:?}: {message}");
        assert!(message.contains(args[1]) && message.contains("bad duration"), "{message}");
    }
    let too_long_grace = run(
        &addr,
        dir.path(),
        "lock",
        &["--ttl", "2s", "--kill-grace", "1.5s", "db", "--", "true"],
    );
    assert_eq!(code(&too_long_grace), 2);
    assert!(
        stderr(&too_long_grace).contains("at most half of --ttl"),
        "{}",
        stderr(&too_long_grace)
    );

    let unreachable = run(&dead_addr(), dir.path(), "lock", &["db", "--", "touch", "ran"]);
    assert_eq!(code(&unreachable), 2);
    let message = stderr(&unreachable);
    assert!(message.starts_with("lockserver: cannot lock db at http://127.0.0.1:"), "{message}");
    assert!(message.contains("outcome unknown"), "{message}");
    assert!(!dir.path().join("ran").exists(), "nothing ran anywhere");
    assert_eq!(holders(&server, "db").await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_missing_secret_is_named_in_the_message() {
    let server = Server::start(&["--secret", "client-secret"]);
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let refused = run(&addr, dir.path(), "lock", &["db", "--", "touch", "ran"]);
    assert_eq!(code(&refused), 2);
    assert!(stderr(&refused).contains("--secret"), "{}", stderr(&refused));
    assert!(!dir.path().join("ran").exists());
    let allowed = cli(&addr, dir.path(), "lock", &["db", "--", "touch", "ran"])
        .env("LOCKSERVER_SECRET", "client-secret")
        .output()
        .unwrap();
    assert_eq!(code(&allowed), 0, "{}", stderr(&allowed));
    assert!(dir.path().join("ran").exists());
}
