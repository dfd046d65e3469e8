//! A real PostgreSQL for the tests: a fresh cluster (`initdb`) in a temporary directory,
//! started on a free port, ready when `pg_isready` says so (polled with a deadline), and
//! stopped when dropped. PostgreSQL refuses to run as root, so under root (as the tests run
//! here) both programs run as the `postgres` user through `runuser`.
//!
//! A machine without PostgreSQL fails the test with how to install it; it is never skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Pg {
    /// `runuser` (under root) or the postmaster itself.
    child: Child,
    data: PathBuf,
    pub port: u16,
    stopped: bool,
    _dir: tempfile::TempDir,
}

impl Pg {
    /// Starts a fresh cluster (a few hundred ms). Panics with the reason when it cannot.
    pub fn start() -> Pg {
        let bin = postgres_bin_dir();
        let run_as = if running_as_root() { Some(postgres_account()) } else { None };
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let status = as_postgres(run_as.is_some(), &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        // A port free when asked can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("log file");
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown the log");
            }
            let mut child = as_postgres(run_as.is_some(), &bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file))
                .spawn()
                .expect("start postgres");
            if wait_ready(&mut child, &bin, &data, port, &log) {
                return Pg { child, data, port, stopped: false, _dir: dir };
            }
        }
        panic!("postgres did not start on any of 3 ports:\n{}", log_tail(&log));
    }

    /// A libpq-style connection string for the `postgres` superuser (trust auth).
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// Stops the server now: a fast shutdown (SIGINT to the postmaster), which ends every
    /// session at once (SIGTERM's smart shutdown would wait for the clients to leave).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(pid) = postmaster_pid(&self.data) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still there: immediate shutdown, then the process we started.
        if let Some(pid) = postmaster_pid(&self.data) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The postmaster's pid (the first line of `postmaster.pid`), not runuser's.
fn postmaster_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// `true` once the server accepts connections; `false` if it exited (a taken port).
fn wait_ready(child: &mut Child, bin: &Path, data: &Path, port: u16, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            eprintln!("postgres exited at start-up:\n{}", log_tail(log));
            return false;
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        if ready {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(pid) = postmaster_pid(data) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
    }
    let _ = child.kill();
    panic!("postgres was not ready within 30 s:\n{}", log_tail(log));
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_postgres(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `postgres` on PATH.
fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): \
         install it with `apt-get install -y postgresql` (scripts/test-all.sh does)"
    );
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// The `postgres` account's uid and gid (the Debian package creates it).
fn postgres_account() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .expect("running as root needs a `postgres` account: apt-get install -y postgresql")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
