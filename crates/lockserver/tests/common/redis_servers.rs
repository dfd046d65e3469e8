//! Real `redis-server` processes for the Redis backend's tests: each on a free port with its
//! own directory, ready once it answers `PING` as the process we started (polled with a
//! deadline, never a fixed sleep), killed (SIGKILL) on drop. A tiny RESP client lets tests look
//! at the server directly (keys, command counts, subscribers).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "redis-server is not installed: the Redis backend's tests start \
     their own servers. Install it (Debian/Ubuntu: `apt-get install redis-server`; \
     scripts/test-all.sh does this) and run the tests again";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// An in-memory server: no RDB snapshots, no append-only file.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"])
    }

    /// A server that writes every command to its append-only file before answering.
    pub fn start_durable() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A server with these extra arguments (after `--port`, `--bind`, `--save ''`, `--dir`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        match Command::new("redis-server").arg("--version").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!("{INSTALL_HINT} (`redis-server --version` failed: {output:?})"),
            Err(err) => panic!("{INSTALL_HINT} ({err})"),
        }
        let mut dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("redis.log");
        // The free port can be taken by someone else before the server binds it: try again.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| panic!("{INSTALL_HINT} ({err})"));
            let mut server = RedisServer { child: Some(child), port, dir };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            server.kill_9();
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
        }
        panic!(
            "redis-server did not start on any of 5 free ports:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Polls until the server answers as our process; `false` if the process exited first
    /// (the port was taken).
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(Resp::Simple(pong)) = self.try_command(&["PING"]) {
                if pong == "PONG" {
                    let ours = self.info_field("server", "process_id");
                    return ours == Some(pid.to_string());
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} not ready in {within:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server is gone at once, with whatever it held.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command and reads its reply (panics on a connection failure).
    pub fn command(&self, args: &[&str]) -> Resp {
        self.try_command(args)
            .unwrap_or_else(|err| panic!("redis on port {}: {args:?}: {err}", self.port))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Resp> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        read_reply(&mut BufReader::new(stream))
    }

    /// `field` of the `INFO section` answer.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let Ok(Resp::Bulk(Some(info))) = self.try_command(&["INFO", section]) else { return None };
        info.lines().find_map(|line| {
            line.strip_prefix(field)?.strip_prefix(':').map(|value| value.trim().to_string())
        })
    }

    /// How often `command` has run on this server (also from inside scripts).
    pub fn calls(&self, command: &str) -> u64 {
        let Some(stats) = self.info_field("commandstats", &format!("cmdstat_{command}")) else {
            return 0;
        };
        stats
            .split(',')
            .find_map(|part| part.strip_prefix("calls=")?.parse().ok())
            .unwrap_or_default()
    }

    /// The number of keys in the database.
    pub fn dbsize(&self) -> i64 {
        match self.command(&["DBSIZE"]) {
            Resp::Int(count) => count,
            other => panic!("DBSIZE answered {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A RESP reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Resp>),
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let bad =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let length: i64 = rest.parse().map_err(|_| bad())?;
            if length < 0 {
                Resp::Bulk(None)
            } else {
                let mut data = vec![0; usize::try_from(length).map_err(|_| bad())? + 2];
                reader.read_exact(&mut data)?;
                data.truncate(data.len() - 2);
                Resp::Bulk(Some(String::from_utf8_lossy(&data).into_owned()))
            }
        }
        "*" => {
            let count: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                items.push(read_reply(reader)?);
            }
            Resp::Array(items)
        }
        _ => return Err(bad()),
    })
}
