//! The systems under test: how each is found, started on loopback, watched (CPU, memory) and
//! stopped. Everything runs from a temporary directory that is removed afterwards.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Error;

/// Every system lockbench knows, in the order they are reported.
pub const ALL: &[&str] = &[
    "lockserver-http",
    "lockserver-http-mem",
    "lockserver-ws",
    "lockserver-locker",
    "lockserver-cluster3",
    "redis",
    "etcd",
    "etcd-cluster3",
    "pg",
    "lockserver-orig",
    "locker-orig",
    "locker-null",
];

/// Known systems whose Lockserver surface has not arrived yet (clustering).
const PENDING: &[&str] = &["lockserver-cluster3"];

/// The systems this version of Lockserver can be benchmarked on, in report order.
pub fn available() -> Vec<&'static str> {
    ALL.iter().copied().filter(|name| !PENDING.contains(name)).collect()
}

/// Whether `name` is this Lockserver (on any surface), as opposed to an anchor.
pub fn is_ours(name: &str) -> bool {
    name.starts_with("lockserver-") && name != "lockserver-orig"
}

/// Where the binaries live.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Our `lockserver` binary.
    pub lockserver: PathBuf,
    /// What `bench/setup.sh` installed (`bin/lockserver` is the original Lockserver).
    pub tools: PathBuf,
}

/// How to talk to a running system.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

#[derive(Clone, Debug)]
pub enum Protocol {
    Native,
    /// The streaming session (`GET /v1/session`, WebSocket).
    Stream,
    /// The locker binary TCP protocol (ours and the original's).
    Locker,
    Original {
        secret: String,
    },
    Etcd,
    Redis,
    Pg {
        user: String,
    },
}

/// Extra server options a workload needs.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    /// Lockserver's limits on holds and names, raised for the scale workload.
    pub max_holds: Option<u64>,
    /// Lockserver's limits on open connections and sessions, raised for the concurrent
    /// sessions of the scale workload.
    pub max_sessions: Option<usize>,
}

/// A started system; stopped (and its files removed) when dropped.
pub struct Running {
    pub name: String,
    pub endpoint: Endpoint,
    /// The process whose CPU and memory count (with its children, for PostgreSQL).
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
    /// The other members of a cluster; their CPU and memory count too.
    members: Vec<Running>,
}

impl Running {
    /// A started process, stopped (and `dir` removed) when the result is dropped: built right
    /// after the spawn, so a system that never gets ready is not left running.
    fn new(name: &str, endpoint: Endpoint, child: Child, dir: tempfile::TempDir) -> Running {
        Running {
            name: name.into(),
            endpoint,
            pid: child.id(),
            child,
            _dir: dir,
            members: Vec::new(),
        }
    }

    /// CPU seconds used so far by the system (every member, every process).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid) + self.members.iter().map(Running::cpu_seconds).sum::<f64>()
    }

    /// Resident memory of the system (every member), in KiB.
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid) + self.members.iter().map(Running::rss_kb).sum::<u64>()
    }

    /// Peak resident memory of the system's main processes, summed over members, in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        peak_rss_kb(self.pid) + self.members.iter().map(Running::peak_rss_kb).sum::<u64>()
    }

    /// The main process's open-file limit and how many files it has open.
    pub fn open_files(&self) -> Option<OpenFiles> {
        open_files(self.pid)
    }
}

/// A process's soft limit on open files (`RLIMIT_NOFILE`) and its open files.
#[derive(Clone, Copy, Debug)]
pub struct OpenFiles {
    pub limit: u64,
    pub open: u64,
}

/// Raises this process's soft limit on open files to its hard limit (raising the hard limit
/// needs CAP_SYS_RESOURCE). Every system lockbench starts inherits it. Returns the limit now
/// in force.
pub fn raise_fd_limit() -> Result<u64, Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|err| format!("getrlimit: {err}"))?;
    // An unlimited hard limit still stops at the kernel's per-process maximum.
    let ceiling = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if soft >= ceiling {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, ceiling, hard)
        .map_err(|err| format!("setrlimit NOFILE {ceiling}: {err}"))?;
    Ok(ceiling)
}

/// `pid`'s open-file limit (from /proc/PID/limits) and its open files (/proc/PID/fd).
pub fn open_files(pid: u32) -> Option<OpenFiles> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    let limit = match soft.split_whitespace().next()? {
        "unlimited" => u64::MAX,
        number => number.parse().ok()?,
    };
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(OpenFiles { limit, open })
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGINT first so servers shut down cleanly, then kill. SIGINT is PostgreSQL's fast
        // shutdown (SIGTERM, its smart shutdown, waits for every client to disconnect); Redis,
        // etcd and Lockserver shut down on it as on SIGTERM.
        let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir() -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix("lockbench-")
        .tempdir()
        .map_err(|err| format!("temp dir: {err}"))
}

/// Stdout or stderr of a system, to a file in its directory.
fn log_file(dir: &Path, file: &str) -> Result<Stdio, Error> {
    std::fs::File::create(dir.join(file)).map(Stdio::from).map_err(|err| format!("log file: {err}"))
}

/// Starts `name` and waits until it answers.
pub fn start(name: &str, paths: &Paths, tuning: &Tuning) -> Result<Running, Error> {
    let dir = temp_dir()?;
    let spawn_here = |command: Command| -> Result<Child, Error> {
        spawn(command, log_file(dir.path(), "stdout")?, log_file(dir.path(), "stderr")?, name)
    };
    match name {
        "lockserver-http" | "lockserver-http-mem" | "lockserver-ws" | "lockserver-locker" => {
            let ready = dir.path().join("ready");
            let mut command = Command::new(&paths.lockserver);
            command
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .args(["--port", "0", "--locker-port", "0", "--log-level", "warn", "--ready-file"])
                .arg(&ready)
                .arg("--data-dir")
                .arg(dir.path().join("data"));
            if name == "lockserver-http-mem" {
                command.arg("--in-memory");
            }
            if let Some(max) = tuning.max_holds {
                command.args(["--max-holds", &max.to_string(), "--max-names", &max.to_string()]);
            }
            if let Some(max) = tuning.max_sessions {
                let max = max.to_string();
                command.args(["--max-connections", &max, "--max-sessions", &max]);
            }
            let child = spawn_here(command)?;
            // The port is known once the server is ready (it binds port 0).
            let protocol = match name {
                "lockserver-ws" => Protocol::Stream,
                "lockserver-locker" => Protocol::Locker,
                _ => Protocol::Native,
            };
            let surface = if name == "lockserver-locker" { "locker=" } else { "http=" };
            let endpoint = Endpoint { addr: loopback(0), protocol };
            let mut running = Running::new(name, endpoint, child, dir);
            let text = wait_for_file(&ready, Duration::from_secs(60), name)?;
            running.endpoint.addr = text
                .lines()
                .find_map(|line| line.strip_prefix(surface))
                .and_then(|addr| addr.trim().parse().ok())
                .ok_or_else(|| format!("{name}: no {surface} line in its ready file"))?;
            Ok(running)
        }
        "lockserver-orig" => {
            let binary = paths.tools.join("bin/lockserver");
            require(&binary, "the original Lockserver (crate lockserver 0.1.3)")?;
            let port = free_port()?;
            let secret = format!("bench-{}", rand::random::<u32>());
            let mut command = Command::new(&binary);
            command.current_dir(dir.path()).env_clear().env("LOCKSERVER_SECRET", &secret).args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            let child = spawn_here(command)?;
            let endpoint =
                Endpoint { addr: loopback(port), protocol: Protocol::Original { secret } };
            let running = Running::new(name, endpoint, child, dir);
            wait_for_port(running.endpoint.addr, name)?;
            Ok(running)
        }
        "locker-orig" => {
            let package = paths.tools.join("node/node_modules/locker-server");
            require(&package, "the original locker (npm locker-server 0.1.3)")?;
            let port = free_port()?;
            let script = format!(
                "new (require({:?}))().listen({port}, '127.0.0.1')",
                package.display().to_string()
            );
            let mut command = Command::new(find_binary("node", &[])?);
            command.current_dir(dir.path()).args(["--no-deprecation", "-e", &script]);
            let child = spawn_here(command)?;
            let endpoint = Endpoint { addr: loopback(port), protocol: Protocol::Locker };
            let running = Running::new(name, endpoint, child, dir);
            wait_for_port(running.endpoint.addr, name)?;
            Ok(running)
        }
        "locker-null" => {
            let port = free_port()?;
            let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            command.current_dir(dir.path()).args(["null-locker", "--port", &port.to_string()]);
            let child = spawn_here(command)?;
            let endpoint = Endpoint { addr: loopback(port), protocol: Protocol::Locker };
            let running = Running::new(name, endpoint, child, dir);
            wait_for_port(running.endpoint.addr, name)?;
            Ok(running)
        }
        "redis" => {
            let binary = find_binary("redis-server", &[])?;
            let port = free_port()?;
            let mut command = Command::new(binary);
            command.current_dir(dir.path()).args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]);
            let child = spawn_here(command)?;
            let endpoint = Endpoint { addr: loopback(port), protocol: Protocol::Redis };
            let running = Running::new(name, endpoint, child, dir);
            wait_for_port(running.endpoint.addr, name)?;
            Ok(running)
        }
        "etcd" => start_etcd(dir, 1),
        "etcd-cluster3" => start_etcd(dir, 3),
        "pg" => start_pg(dir),
        other if ALL.contains(&other) => Err(format!("{other} is not available in this version")),
        other => Err(format!("unknown system {other}")),
    }
}

/// etcd with `size` members on loopback, each in its own directory; clients talk to the first.
fn start_etcd(dir: tempfile::TempDir, size: usize) -> Result<Running, Error> {
    let name = if size == 1 { "etcd".to_string() } else { format!("etcd-cluster{size}") };
    let binary = find_binary("etcd", &[])?;
    let ports: Vec<(u16, u16)> =
        (0..size).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_, Error>>()?;
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut dirs = vec![dir];
    for _ in 1..size {
        dirs.push(temp_dir()?);
    }
    let mut members = Vec::new();
    for (i, ((port, peer), dir)) in ports.iter().zip(dirs).enumerate() {
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(&binary);
        command
            .current_dir(dir.path())
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
            .args(["--log-level", "warn"]);
        let (stdout, stderr) = (log_file(dir.path(), "stdout")?, log_file(dir.path(), "stderr")?);
        let child = spawn(command, stdout, stderr, &name)?;
        let endpoint = Endpoint { addr: loopback(*port), protocol: Protocol::Etcd };
        members.push(Running::new(&name, endpoint, child, dir));
    }
    // Every member starts before any is waited for: a cluster forms only once all are up.
    for member in &members {
        wait_for_port(member.endpoint.addr, &name)?;
    }
    // A listening member may still have no leader; lock calls would stall until it has one.
    wait_for_etcd_leader(members[0].endpoint.addr, &name)?;
    let mut first = members.remove(0);
    first.members = members;
    Ok(first)
}

/// PostgreSQL in a fresh cluster: `initdb` then `postgres`, as the `postgres` user when we run
/// as root (PostgreSQL refuses to run as root).
fn start_pg(dir: tempfile::TempDir) -> Result<Running, Error> {
    let pg_bin =
        ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"];
    let initdb = find_binary("initdb", &pg_bin)?;
    let postgres = find_binary("postgres", &pg_bin)?;
    let data = dir.path().join("pg");
    let run_as = if is_root() { Some(postgres_user()?) } else { None };
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .map_err(|err| format!("chown the PostgreSQL directory: {err}"))?;
    }
    let as_user = |program: &Path| -> Command {
        match run_as {
            Some(_) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    };
    let user = "bench".to_string();
    let status = as_user(&initdb)
        .current_dir(dir.path())
        .arg("-D")
        .arg(&data)
        .args(["-U", &user, "--auth=trust", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| format!("initdb: {err}"))?;
    if !status.success() {
        return Err(format!("initdb failed ({status})"));
    }
    let port = free_port()?;
    let mut command = as_user(&postgres);
    command
        .current_dir(dir.path())
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.path().display()))
        .args(["-c", "max_connections=300"]);
    let log = std::fs::File::create(dir.path().join("postgres.log"))
        .map_err(|err| format!("log file: {err}"))?;
    if let Some((uid, gid)) = run_as {
        let _ = std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(uid), Some(gid));
    }
    let child = spawn(command, Stdio::null(), Stdio::from(log), "pg")?;
    let endpoint = Endpoint { addr: loopback(port), protocol: Protocol::Pg { user } };
    let mut running = Running::new("pg", endpoint, child, dir);
    wait_for_port(running.endpoint.addr, "pg")?;
    // With runuser in between, the server is runuser's child.
    if run_as.is_some() {
        running.pid = wait_for_child(running.pid, "pg")?;
    }
    Ok(running)
}

fn spawn(mut command: Command, stdout: Stdio, stderr: Stdio, name: &str) -> Result<Child, Error> {
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|err| format!("cannot start {name}: {err}"))
}

fn require(path: &Path, what: &str) -> Result<(), Error> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!("{what} is not installed at {}; run bench/setup.sh", path.display()))
    }
}

/// `program` on PATH, else in one of `extra`.
fn find_binary(program: &str, extra: &[&str]) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{program} is not installed; run bench/setup.sh"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port free at the time of asking.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("no free port: {err}"))
}

fn wait_for_port(addr: SocketAddr, name: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{name} did not listen on {addr} within 60 s"))
}

/// Until etcd's `/health` says healthy (it has a leader).
fn wait_for_etcd_leader(addr: SocketAddr, name: &str) -> Result<(), Error> {
    use std::io::{Read as _, Write as _};
    let healthy = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.contains(r#""health":"true""#))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if healthy().unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{name} had no leader within 60 s"))
}

fn wait_for_file(path: &Path, timeout: Duration, name: &str) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return Ok(text);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name} was not ready within {timeout:?}"))
}

/// The first child of `parent` (the server that `runuser` started).
fn wait_for_child(parent: u32, name: &str) -> Result<u32, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(pid) = children(parent).first() {
            return Ok(*pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name}: no server process under {parent}"))
}

fn is_root() -> bool {
    proc_status(std::process::id(), "Uid:")
        .and_then(|uids| uids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// The `postgres` account's uid and gid (the Debian package creates it).
fn postgres_user() -> Result<(u32, u32), Error> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|err| err.to_string())?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .ok_or_else(|| "running as root needs a postgres account; run bench/setup.sh".into())
}

fn proc_status(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(key).map(|rest| rest.trim().to_string()))
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if proc_stat(child).is_some_and(|stat| stat.ppid == pid) {
            found.push(child);
        }
    }
    found
}

/// `pid` and every process below it.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut index = 0;
    while index < all.len() {
        let below = children(all[index]);
        all.extend(below);
        index += 1;
    }
    all
}

struct Stat {
    ppid: u32,
    /// utime + stime, and cutime + cstime (children it has reaped: PostgreSQL's backends
    /// that have exited), in clock ticks.
    cpu_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    let mut cpu_ticks = 0;
    for index in 11..=14 {
        cpu_ticks += fields.get(index)?.parse::<u64>().ok()?;
    }
    Some(Stat { ppid: fields.get(1)?.parse().ok()?, cpu_ticks })
}

/// Linux reports process CPU time in USER_HZ ticks, 100 per second on every mainstream
/// architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by `pid` and its descendants, living or reaped.
fn cpu_seconds(pid: u32) -> f64 {
    tree(pid).into_iter().filter_map(proc_stat).map(|stat| stat.cpu_ticks).sum::<u64>() as f64
        / TICKS_PER_SECOND
}

/// Resident memory of `pid` and its descendants, in KiB.
fn rss_kb(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(|pid| kb(proc_status(pid, "VmRSS:"))).sum()
}

/// Peak resident memory of `pid` itself, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    kb(proc_status(pid, "VmHWM:")).unwrap_or(0)
}

fn kb(value: Option<String>) -> Option<u64> {
    value?.split_whitespace().next()?.parse().ok()
}
