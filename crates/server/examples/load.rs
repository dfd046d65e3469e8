//! A tiny load client: acquire+release cycles per second over HTTP/1.1 keep-alive, one name
//! per connection (no contention), against our native API or the original Lockserver's
//! `POST /acquire` + `POST /release`. Not a benchmark harness (that is lockbench); it exists
//! so the figures in the issue notes can be reproduced.
//!
//! ```text
//! cargo run --release -p lockserver-server --example load -- \
//!     --addr 127.0.0.1:8080 --api native --connections 64 --seconds 5 --secret s [--ttl-ms 30000]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Native,
    Original,
    /// Two `GET /healthz` per cycle: the HTTP stack alone, for comparison.
    Health,
}

struct Options {
    addr: SocketAddr,
    api: Api,
    connections: usize,
    seconds: u64,
    secret: String,
    /// Native acquires: this TTL, or none (`null`, like the original's acquire without
    /// `expire`).
    ttl_ms: Option<u64>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:8080".parse().map_err(|_| "addr")?,
        api: Api::Native,
        connections: 64,
        seconds: 5,
        secret: String::new(),
        ttl_ms: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => options.addr = value.parse().map_err(|_| "bad --addr")?,
            "--api" => {
                options.api = match value.as_str() {
                    "native" => Api::Native,
                    "original" => Api::Original,
                    "health" => Api::Health,
                    _ => return Err("--api native|original".into()),
                }
            }
            "--connections" => {
                options.connections = value.parse().map_err(|_| "bad --connections")?
            }
            "--seconds" => options.seconds = value.parse().map_err(|_| "bad --seconds")?,
            "--secret" => options.secret = value,
            "--ttl-ms" => options.ttl_ms = Some(value.parse().map_err(|_| "bad --ttl-ms")?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends one request and reads one response; returns (status, Location header).
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Option<String>)> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((status, location, used)) = parse_response(&self.buffer) {
                self.buffer.drain(..used);
                return Ok((status, location));
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// A complete response at the start of `buffer`: status, Location, bytes used.
fn parse_response(buffer: &[u8]) -> Option<(u16, Option<String>, usize)> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    let mut location = None;
    for line in lines {
        let (key, value) = line.split_once(':')?;
        if key.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        } else if key.eq_ignore_ascii_case("location") {
            location = Some(value.trim().to_string());
        }
    }
    let total = head_end + 4 + length;
    (buffer.len() >= total).then_some((status, location, total))
}

fn request(method: &str, path: &str, body: &str, options: &Options) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         x-lockserver-secret: {}\r\ncontent-length: {}\r\n\r\n{body}",
        options.addr,
        options.secret,
        body.len()
    )
    .into_bytes()
}

async fn worker(
    index: usize,
    options: Arc<Options>,
    stop: Arc<AtomicBool>,
    cycles: Arc<AtomicU64>,
) -> Result<(), String> {
    let stream = TcpStream::connect(options.addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut connection = Connection { stream, buffer: Vec::with_capacity(8192) };
    let name = format!("load-{index}");
    let (acquire, release_original) = match options.api {
        Api::Native => {
            let body = match options.ttl_ms {
                Some(ttl_ms) => format!(r#"{{"ttl_ms":{ttl_ms}}}"#),
                None => r#"{"ttl_ms":null}"#.to_string(),
            };
            (request("POST", &format!("/v1/locks/{name}"), &body, &options), None)
        }
        Api::Health => {
            let get = request("GET", "/healthz", "", &options);
            (get.clone(), Some(get))
        }
        Api::Original => {
            let body = format!(r#"{{"resource":"{name}","owner":"o{index}"}}"#);
            (
                request("POST", "/acquire", &body, &options),
                Some(request("POST", "/release", &body, &options)),
            )
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let (status, location) = connection.call(&acquire).await.map_err(|e| e.to_string())?;
        let expected = if options.api == Api::Native { 201 } else { 200 };
        if status != expected {
            return Err(format!("acquire answered {status}"));
        }
        let release = match (&release_original, location) {
            (Some(release), _) => release.clone(),
            (None, Some(location)) => request("DELETE", &location, "", &options),
            (None, None) => return Err("no Location on 201".into()),
        };
        let (status, _) = connection.call(&release).await.map_err(|e| e.to_string())?;
        if status != 204 && status != 200 {
            return Err(format!("release answered {status}"));
        }
        cycles.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(options) => Arc::new(options),
        Err(err) => {
            eprintln!("load: {err}");
            std::process::exit(2);
        }
    };
    // One client thread, so the server under test keeps most of a 2-core machine.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        eprintln!("load: cannot start a runtime");
        std::process::exit(1);
    };
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for index in 0..options.connections {
            tasks.push(tokio::spawn(worker(index, options.clone(), stop.clone(), cycles.clone())));
        }
        // Warm-up second, then measure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start_count = cycles.load(Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(options.seconds)).await;
        let done = cycles.load(Ordering::Relaxed) - start_count;
        let rate = done as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("load: worker failed: {err}"),
                Err(err) => eprintln!("load: worker panicked: {err}"),
            }
        }
        println!("{rate:.0}");
    });
}
