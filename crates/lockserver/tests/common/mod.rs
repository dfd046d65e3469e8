//! Test harness: starts the real `lockserver` binary on port 0 with a temporary data
//! directory, waits for its start-up line (never a fixed sleep), and talks to it over HTTP.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod backend_suite;
pub mod pg;
pub mod redis_servers;
pub mod stream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lockserver");

/// How a test starts the server.
#[derive(Default, Clone)]
pub struct Start {
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// Working directory (for `.env`); a fresh temporary one when absent.
    pub cwd: Option<PathBuf>,
    /// Reuse a data directory (restarts); a fresh one under the temp dir when absent.
    pub data_dir: Option<PathBuf>,
}

impl Start {
    pub fn args(args: &[&str]) -> Start {
        Start { args: args.iter().map(|a| a.to_string()).collect(), ..Start::default() }
    }

    pub fn env(mut self, key: &str, value: &str) -> Start {
        self.envs.push((key.into(), value.into()));
        self
    }
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    pub startup_line: String,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
    pub client: Client,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(Start::args(args))
    }

    pub fn start_with(start: Start) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = start.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        let cwd = start.cwd.clone().unwrap_or_else(|| dir.path().to_path_buf());
        let stderr_path = dir.path().join("stderr.log");
        let mut command = Command::new(BIN);
        command
            .args(["--port", "0", "--locker-port", "0", "--data-dir"])
            .arg(&data_dir)
            .args(&start.args)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
        for key in clean_env_keys() {
            command.env_remove(key);
        }
        for (key, value) in &start.envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn lockserver");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let startup_line = loop {
            match lines_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("lockserver listening ") => break line,
                Ok(_) => continue,
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "lockserver exited with {status} before it was ready:\n{}",
                            std::fs::read_to_string(&stderr_path).unwrap_or_default()
                        );
                    }
                    assert!(Instant::now() < deadline, "lockserver did not start in 30 s");
                }
            }
        };
        let addr: SocketAddr = field(&startup_line, "http").parse().expect("http address");
        Server {
            child,
            addr,
            base: format!("http://{addr}"),
            startup_line,
            data_dir,
            stderr_path,
            client: Client::new(format!("http://{addr}")),
            dir,
        }
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no goodbye. Returns the temporary directory that holds the data
    /// directory (keep it alive for the restart) and the data directory's path.
    pub fn kill_9(mut self) -> (tempfile::TempDir, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (dir, self.data_dir.clone())
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        assert!(status.expect("kill").success());
    }

    /// Waits for the process to exit (after `terminate`), with a deadline.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "lockserver did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Variables of the developer's shell that would change the server under test.
fn clean_env_keys() -> Vec<String> {
    std::env::vars().map(|(key, _)| key).filter(|key| key.starts_with("LOCKSERVER_")).collect()
}

/// The value of `key=value` in the start-up line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    let start =
        line.find(&prefix).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + prefix.len();
    if key == "data_dir" {
        return &line[start..];
    }
    line[start..].split(' ').next().unwrap_or("")
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn hold_id(&self) -> String {
        self.body["hold_id"].as_str().expect("hold_id").to_string()
    }

    pub fn token(&self) -> u64 {
        self.body["token"].as_u64().expect("token")
    }

    /// Asserts an API.md error: status, code, JSON content type.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.header("content-type"), "application/json", "{self:?}");
        assert!(self.body["error"]["message"].is_string(), "{self:?}");
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    secret: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Client {
        let http = reqwest::Client::builder().no_proxy().build().expect("reqwest client");
        Client { base, http, secret: None }
    }

    /// The same client, sending `Authorization: Bearer <secret>`.
    pub fn with_secret(&self, secret: &str) -> Client {
        Client { secret: Some(secret.to_string()), ..self.clone() }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(secret) = &self.secret {
            request = request.header("authorization", format!("Bearer {secret}"));
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Some(&body.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None).await
    }

    /// `POST /v1/locks/{name}` with `body`; `name` is given already encoded.
    pub async fn lock(&self, encoded_name: &str, body: Value) -> Resp {
        self.post(&format!("/v1/locks/{encoded_name}"), body).await
    }

    pub async fn waiters(&self, kind: &str, encoded_name: &str) -> u64 {
        let view = self.get(&format!("/v1/{kind}/{encoded_name}")).await;
        assert_eq!(view.status, 200, "{view:?}");
        view.body["waiters"].as_u64().expect("waiters")
    }

    /// Polls (every 10 ms, at most 10 s) until the name has `count` waiters.
    pub async fn until_waiters(&self, kind: &str, encoded_name: &str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.waiters(kind, encoded_name).await;
            if now == count {
                return;
            }
            assert!(Instant::now() < deadline, "{encoded_name}: {now} waiters, expected {count}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until `GET path` answers `status`; returns the time it took.
    pub async fn until_status(&self, path: &str, status: u16, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let now = self.get(path).await.status;
            if now == status {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "{path}: still {now}, expected {status}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A raw HTTP/1.1 request on its own TCP connection (for disconnect tests). The caller drops
/// the stream to disconnect.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write request");
    stream
}

/// Reads one whole response (up to its end or the connection's) from a raw stream.
pub async fn read_raw_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap_or(0);
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if buffer.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}
