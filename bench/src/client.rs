//! One client connection per benchmark client, speaking each system's own protocol the way its
//! usual client library does: raw HTTP/1.1 keep-alive for the HTTP systems, RESP for Redis,
//! the PostgreSQL wire protocol (tokio-postgres) for advisory locks, a WebSocket
//! (tokio-tungstenite) for Lockserver's streaming session.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::system::{Endpoint, Protocol};

pub type Error = String;

/// How long an acquire may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Try once.
    Try,
    /// Wait up to this long (on the server where the system can, else by retrying).
    For(Duration),
}

/// What an acquire got.
#[derive(Debug)]
pub enum Outcome {
    Granted(Grant),
    /// Held by someone else (a try) or the wait ran out.
    NotGranted,
}

/// What a release needs.
#[derive(Debug)]
pub enum Grant {
    /// Lockserver native: the hold's path.
    Native(String),
    /// Lockserver's streaming session: the hold id.
    Stream(String),
    /// The locker protocol: the lock's sequence.
    Locker(u32),
    /// The original Lockserver: released by name and owner.
    Original(String),
    /// etcd: the lock's key (base64, as the gateway gave it).
    Etcd(String),
    /// Redis: the name and this acquisition's unique value.
    Redis(String, String),
    /// PostgreSQL: the advisory key.
    Pg(i64),
}

/// The original Lockserver's blocking mode polls this often (its published clients).
const ORIGINAL_POLL: Duration = Duration::from_millis(200);
/// Redis clients retry a taken lock after a random delay in this range (ms), as Redis lock
/// libraries do; short, so Redis is measured at its best.
const REDIS_RETRY_MS: (u64, u64) = (1, 3);

const REDIS_RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

pub enum Client {
    Native { http: Http, ttl_ms: Option<u64> },
    Stream { ws: Ws, ttl_ms: Option<u64>, next_id: u64 },
    Locker { stream: TcpStream, ttl_ms: Option<u64>, next_seq: u32 },
    Original { http: Http, owner: String, secret: String },
    Etcd { http: Http, lease: String },
    Redis { conn: Resp, release_sha: String, ttl_ms: u64, next: u64, id: usize },
    Pg { client: tokio_postgres::Client, statements: PgStatements },
}

pub struct PgStatements {
    try_lock: tokio_postgres::Statement,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
}

impl Client {
    /// Connects client number `id`. `ttl_ms` bounds each hold where the system has leases.
    pub async fn connect(
        endpoint: &Endpoint,
        id: usize,
        ttl_ms: Option<u64>,
    ) -> Result<Client, Error> {
        match &endpoint.protocol {
            Protocol::Native => {
                Ok(Client::Native { http: Http::connect(endpoint.addr).await?, ttl_ms })
            }
            Protocol::Stream => {
                let url = format!("ws://{}/v1/session", endpoint.addr);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(url, Some(stream_config()), true)
                        .await
                        .map_err(|err| format!("WebSocket connect: {err}"))?;
                // A lease longer than any run: the session needs no pings meanwhile.
                let hello = r#"{"id":0,"op":"hello","ttl_ms":3600000}"#;
                let reply = stream_call(&mut ws, hello.to_string(), 0).await?;
                if !reply.contains(r#""ok":true"#) {
                    return Err(format!("hello answered {reply}"));
                }
                Ok(Client::Stream { ws, ttl_ms, next_id: 1 })
            }
            Protocol::Locker => {
                let stream = TcpStream::connect(endpoint.addr)
                    .await
                    .map_err(|err| format!("locker connect: {err}"))?;
                let _ = stream.set_nodelay(true);
                Ok(Client::Locker { stream, ttl_ms, next_seq: 0 })
            }
            Protocol::Original { secret } => Ok(Client::Original {
                http: Http::connect(endpoint.addr).await?,
                owner: format!("bench-{id}"),
                secret: secret.clone(),
            }),
            Protocol::Etcd => {
                let mut http = Http::connect(endpoint.addr).await?;
                let ttl_s = ttl_ms.map_or(3600, |ms| ms.div_ceil(1000).max(5));
                let body = format!(r#"{{"TTL":{ttl_s}}}"#);
                let (status, _, reply) = http.call("POST", "/v3/lease/grant", &[], &body).await?;
                let lease = json_field(&reply, "ID")
                    .filter(|_| status == 200)
                    .ok_or_else(|| format!("etcd lease grant answered {status}"))?;
                Ok(Client::Etcd { http, lease })
            }
            Protocol::Redis => {
                let mut conn = Resp::connect(endpoint.addr).await?;
                let release_sha = match conn.command(&["SCRIPT", "LOAD", REDIS_RELEASE]).await? {
                    Reply::Bulk(Some(sha)) => String::from_utf8_lossy(&sha).into_owned(),
                    other => return Err(format!("SCRIPT LOAD answered {other:?}")),
                };
                Ok(Client::Redis {
                    conn,
                    release_sha,
                    ttl_ms: ttl_ms.unwrap_or(30_000),
                    next: 0,
                    id,
                })
            }
            Protocol::Pg { user } => {
                let config = format!(
                    "host={} port={} user={user} dbname=postgres",
                    endpoint.addr.ip(),
                    endpoint.addr.port()
                );
                // A fresh server accepts connections a moment before it serves them
                // ("the database system is starting up"): retry that for a while.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let (client, connection) = loop {
                    match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
                        Ok(connected) => break connected,
                        Err(err)
                            if err.code()
                                == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)
                                && tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(err) => return Err(pg_err(err)),
                    }
                };
                tokio::spawn(connection);
                let prepare = |sql: &'static str| client.prepare(sql);
                let statements = PgStatements {
                    try_lock: prepare("SELECT pg_try_advisory_lock($1)").await.map_err(pg_err)?,
                    lock: prepare("SELECT pg_advisory_lock($1)").await.map_err(pg_err)?,
                    unlock: prepare("SELECT pg_advisory_unlock($1)").await.map_err(pg_err)?,
                };
                Ok(Client::Pg { client, statements })
            }
        }
    }

    pub async fn acquire(&mut self, name: &str, wait: Wait) -> Result<Outcome, Error> {
        match self {
            Client::Native { http, ttl_ms } => {
                let wait_ms = match wait {
                    Wait::Try => 0,
                    Wait::For(wait) => wait.as_millis() as u64,
                };
                let ttl = ttl_ms.map_or("null".to_string(), |ms| ms.to_string());
                let body = format!(r#"{{"wait_ms":{wait_ms},"ttl_ms":{ttl}}}"#);
                let path = format!("/v1/locks/{name}");
                let (status, location, _) = http.call("POST", &path, &[], &body).await?;
                match (status, location) {
                    (201, Some(location)) => Ok(Outcome::Granted(Grant::Native(location))),
                    (409 | 408, _) => Ok(Outcome::NotGranted),
                    (status, _) => Err(format!("acquire answered {status}")),
                }
            }
            Client::Stream { ws, ttl_ms, next_id } => {
                let wait_ms = match wait {
                    Wait::Try => 0,
                    Wait::For(wait) => wait.as_millis() as u64,
                };
                let ttl = ttl_ms.map_or("null".to_string(), |ms| ms.to_string());
                let id = *next_id;
                *next_id += 1;
                let request = format!(
                    r#"{{"id":{id},"op":"acquire","name":"{name}","wait_ms":{wait_ms},"ttl_ms":{ttl}}}"#
                );
                let reply = stream_call(ws, request, id).await?;
                if reply.contains(r#""ok":true"#) {
                    let hold_id = reply
                        .split_once(r#""hold_id":""#)
                        .and_then(|(_, rest)| rest.get(..32))
                        .ok_or_else(|| format!("a grant without hold_id: {reply}"))?;
                    Ok(Outcome::Granted(Grant::Stream(hold_id.to_string())))
                } else if reply.contains(r#""code":"locked""#)
                    || reply.contains(r#""code":"timeout""#)
                {
                    Ok(Outcome::NotGranted)
                } else {
                    Err(format!("acquire answered {reply}"))
                }
            }
            Client::Locker { stream, ttl_ms, next_seq } => {
                *next_seq += 1;
                let seq = *next_seq;
                let wait_ms = match wait {
                    Wait::Try => 0,
                    Wait::For(wait) => wait.as_millis().min(u128::from(u32::MAX)) as u32,
                };
                // The protocol has no "hold forever": a long maximum hold stands in for none.
                let timeout_ms = ttl_ms.map_or(3_600_000, |ms| ms.min(u64::from(u32::MAX))) as u32;
                let request = locker_frame(seq, wait_ms, timeout_ms, 1, name);
                let (action, result) = locker_call(stream, &request, seq).await?;
                match (action, result) {
                    (1, 1) => Ok(Outcome::Granted(Grant::Locker(seq))),
                    (1, 0) => Ok(Outcome::NotGranted),
                    other => Err(format!("locker lock answered {other:?}")),
                }
            }
            Client::Original { http, owner, secret } => {
                let body = format!(r#"{{"resource":"{name}","owner":"{owner}"}}"#);
                let headers = [("x-lockserver-secret", secret.as_str())];
                let deadline = match wait {
                    Wait::Try => None,
                    Wait::For(wait) => Some(tokio::time::Instant::now() + wait),
                };
                loop {
                    let (status, _, _) = http.call("POST", "/acquire", &headers, &body).await?;
                    match status {
                        200 => return Ok(Outcome::Granted(Grant::Original(name.to_string()))),
                        409 | 423 => {}
                        status => return Err(format!("acquire answered {status}")),
                    }
                    match deadline {
                        Some(deadline)
                            if tokio::time::Instant::now() + ORIGINAL_POLL < deadline =>
                        {
                            tokio::time::sleep(ORIGINAL_POLL).await
                        }
                        _ => return Ok(Outcome::NotGranted),
                    }
                }
            }
            Client::Etcd { http, lease } => {
                // The lock API always waits; a try is not part of what it offers.
                let body = format!(r#"{{"name":"{}","lease":"{lease}"}}"#, base64(name.as_bytes()));
                let call = http.call("POST", "/v3/lock/lock", &[], &body);
                let (status, _, reply) = match wait {
                    Wait::Try => call.await?,
                    Wait::For(wait) => match tokio::time::timeout(wait, call).await {
                        Ok(reply) => reply?,
                        Err(_) => return Err("etcd lock timed out (connection abandoned)".into()),
                    },
                };
                match json_field(&reply, "key") {
                    Some(key) if status == 200 => Ok(Outcome::Granted(Grant::Etcd(key))),
                    _ => Err(format!("etcd lock answered {status}")),
                }
            }
            Client::Redis { conn, ttl_ms, next, id, .. } => {
                *next += 1;
                let value = format!("{id}:{next}:{}", rand::random::<u64>());
                let ttl = ttl_ms.to_string();
                let deadline = match wait {
                    Wait::Try => None,
                    Wait::For(wait) => Some(tokio::time::Instant::now() + wait),
                };
                loop {
                    match conn.command(&["SET", name, &value, "NX", "PX", &ttl]).await? {
                        Reply::Status(_) => {
                            return Ok(Outcome::Granted(Grant::Redis(name.to_string(), value)))
                        }
                        Reply::Bulk(None) => {}
                        other => return Err(format!("SET answered {other:?}")),
                    }
                    let delay = Duration::from_micros(
                        rand::random::<u64>() % ((REDIS_RETRY_MS.1 - REDIS_RETRY_MS.0) * 1000)
                            + REDIS_RETRY_MS.0 * 1000,
                    );
                    match deadline {
                        Some(deadline) if tokio::time::Instant::now() + delay < deadline => {
                            tokio::time::sleep(delay).await
                        }
                        _ => return Ok(Outcome::NotGranted),
                    }
                }
            }
            Client::Pg { client, statements } => {
                let key = pg_key(name);
                let granted: bool = match wait {
                    Wait::Try => client
                        .query_one(&statements.try_lock, &[&key])
                        .await
                        .map_err(pg_err)?
                        .get(0),
                    Wait::For(_) => {
                        client.query_one(&statements.lock, &[&key]).await.map_err(pg_err)?;
                        true
                    }
                };
                Ok(if granted { Outcome::Granted(Grant::Pg(key)) } else { Outcome::NotGranted })
            }
        }
    }

    pub async fn release(&mut self, grant: Grant) -> Result<(), Error> {
        match (self, grant) {
            (Client::Native { http, .. }, Grant::Native(path)) => {
                match http.call("DELETE", &path, &[], "").await?.0 {
                    204 => Ok(()),
                    status => Err(format!("release answered {status}")),
                }
            }
            (Client::Stream { ws, next_id, .. }, Grant::Stream(hold_id)) => {
                let id = *next_id;
                *next_id += 1;
                let request = format!(r#"{{"id":{id},"op":"release","hold_id":"{hold_id}"}}"#);
                let reply = stream_call(ws, request, id).await?;
                if reply.contains(r#""ok":true"#) {
                    Ok(())
                } else {
                    Err(format!("release answered {reply}"))
                }
            }
            (Client::Locker { stream, .. }, Grant::Locker(seq)) => {
                let request = locker_frame(seq, 0, 0, 0, "");
                match locker_call(stream, &request, seq).await? {
                    (0, 1) => Ok(()),
                    other => Err(format!("locker unlock answered {other:?}")),
                }
            }
            (Client::Original { http, owner, secret }, Grant::Original(name)) => {
                let body = format!(r#"{{"resource":"{name}","owner":"{owner}"}}"#);
                let headers = [("x-lockserver-secret", secret.as_str())];
                match http.call("POST", "/release", &headers, &body).await?.0 {
                    200 => Ok(()),
                    status => Err(format!("release answered {status}")),
                }
            }
            (Client::Etcd { http, .. }, Grant::Etcd(key)) => {
                let body = format!(r#"{{"key":"{key}"}}"#);
                match http.call("POST", "/v3/lock/unlock", &[], &body).await?.0 {
                    200 => Ok(()),
                    status => Err(format!("etcd unlock answered {status}")),
                }
            }
            (Client::Redis { conn, release_sha, .. }, Grant::Redis(name, value)) => {
                match conn.command(&["EVALSHA", release_sha, "1", &name, &value]).await? {
                    Reply::Integer(1) => Ok(()),
                    other => Err(format!("release answered {other:?} (the lock had expired)")),
                }
            }
            (Client::Pg { client, statements }, Grant::Pg(key)) => {
                let released: bool =
                    client.query_one(&statements.unlock, &[&key]).await.map_err(pg_err)?.get(0);
                if released {
                    Ok(())
                } else {
                    Err("pg_advisory_unlock found no lock".into())
                }
            }
            _ => Err("a grant released through another system's client".into()),
        }
    }
}

/// One locker request: `u8 L` · `u32 seq` · `u32 wait` · `u32 timeout` · `u8 action` · name.
fn locker_frame(seq: u32, wait_ms: u32, timeout_ms: u32, action: u8, name: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + name.len());
    frame.push(name.len() as u8);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&wait_ms.to_le_bytes());
    frame.extend_from_slice(&timeout_ms.to_le_bytes());
    frame.push(action);
    frame.extend_from_slice(name.as_bytes());
    frame
}

/// Sends a locker request and reads 6-byte replies until the one for `seq`.
async fn locker_call(stream: &mut TcpStream, request: &[u8], seq: u32) -> Result<(u8, u8), Error> {
    stream.write_all(request).await.map_err(|err| format!("locker write: {err}"))?;
    loop {
        let mut reply = [0u8; 6];
        stream.read_exact(&mut reply).await.map_err(|err| format!("locker read: {err}"))?;
        if u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) == seq {
            return Ok((reply[4], reply[5]));
        }
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

fn stream_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    // A small read buffer: tungstenite zero-fills all of it before every read.
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A streaming session held open by `ping` ops, as a long-lived client holds one (the
/// concurrent sessions of `scale`).
pub struct KeepaliveSession {
    ws: Ws,
    next_id: u64,
}

impl KeepaliveSession {
    /// Connects from `source`, then `hello` with a `ttl_ms` lease. The socket is bound to
    /// `source` before it connects, so the kernel picks its port among that address's own
    /// ephemeral ports: each loopback source address adds a full range.
    pub async fn open(
        server: SocketAddr,
        source: IpAddr,
        ttl_ms: u64,
    ) -> Result<KeepaliveSession, Error> {
        let socket = TcpSocket::new_v4().map_err(|err| format!("socket: {err}"))?;
        socket.bind(SocketAddr::new(source, 0)).map_err(|err| format!("bind {source}: {err}"))?;
        let stream = socket
            .connect(server)
            .await
            .map_err(|err| format!("connect {server} from {source}: {err}"))?;
        let _ = stream.set_nodelay(true);
        let url = format!("ws://{server}/v1/session");
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
            Some(stream_config()),
        )
        .await
        .map_err(|err| format!("WebSocket upgrade: {err}"))?;
        let hello = format!(r#"{{"id":0,"op":"hello","ttl_ms":{ttl_ms}}}"#);
        let reply = stream_call(&mut ws, hello, 0).await?;
        if !reply.contains(r#""ok":true"#) {
            return Err(format!("hello answered {reply}"));
        }
        Ok(KeepaliveSession { ws, next_id: 1 })
    }

    /// Reads until `deadline`, so the server's heartbeat pings are answered (tungstenite
    /// queues the pong and sends it on the next read). Fails if the connection ends.
    pub async fn idle_until(&mut self, deadline: tokio::time::Instant) -> Result<(), Error> {
        use futures_util::StreamExt;
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                frame = self.ws.next() => match frame {
                    // Control frames, or an event for a hold this session never takes.
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(format!("WebSocket read: {err}")),
                    None => return Err("the server closed the WebSocket".into()),
                },
            }
        }
    }

    /// A `ping` op: renews the session's lease, answered once that is committed.
    pub async fn ping(&mut self) -> Result<(), Error> {
        let id = self.next_id;
        self.next_id += 1;
        let reply = stream_call(&mut self.ws, format!(r#"{{"id":{id},"op":"ping"}}"#), id).await?;
        if reply.contains(r#""ok":true"#) {
            Ok(())
        } else {
            Err(format!("ping answered {reply}"))
        }
    }

    /// A clean close, which ends the session at once on the server.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Sends one request on the stream and reads until its reply (the only one outstanding:
/// each benchmark client waits for one answer at a time, as with the other systems).
async fn stream_call(ws: &mut Ws, request: String, id: u64) -> Result<String, Error> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(request)).await.map_err(|err| format!("WebSocket send: {err}"))?;
    let prefix = format!(r#"{{"id":{id},"#);
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().starts_with(&prefix) => {
                return Ok(text.as_str().to_string())
            }
            // Events (a lost hold) and control frames: not what this client waits for.
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(format!("WebSocket read: {err}")),
            None => return Err("the server closed the WebSocket".into()),
        }
    }
}

fn pg_err(err: tokio_postgres::Error) -> Error {
    match err.as_db_error() {
        Some(db) => format!("pg: {} ({})", db.message(), db.code().code()),
        None => format!("pg: {err}"),
    }
}

/// A stable 64-bit key for a name (FNV-1a).
pub fn pg_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// Standard base64 with padding (etcd's JSON gateway wants keys that way).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A string field of a JSON object body.
fn json_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

/// One HTTP/1.1 keep-alive connection. The load comes from one client thread, so its own
/// cost per request counts against every system: requests are written into one reused buffer.
pub struct Http {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

impl Http {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Http, Error> {
        let stream =
            TcpStream::connect(addr).await.map_err(|err| format!("connect {addr}: {err}"))?;
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        Ok(Http {
            stream,
            host: addr.to_string(),
            request: Vec::with_capacity(512),
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends one request, reads its response: status, Location, body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, Option<String>, Vec<u8>), Error> {
        use std::io::Write as _;
        let request = &mut self.request;
        request.clear();
        let _ = write!(request, "{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        if !body.is_empty() {
            request.extend_from_slice(b"content-type: application/json\r\n");
        }
        let _ = write!(request, "content-length: {}\r\n\r\n{body}", body.len());
        self.stream.write_all(request).await.map_err(|err| err.to_string())?;
        loop {
            if let Some(parsed) = parse_response(&self.buffer)? {
                let (status, location, body_range, used) = parsed;
                let body = self.buffer[body_range].to_vec();
                self.buffer.drain(..used);
                return Ok((status, location, body));
            }
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk).await.map_err(|err| err.to_string())?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

type Parsed = (u16, Option<String>, std::ops::Range<usize>, usize);

/// A complete response at the start of `buffer`, if there is one.
fn parse_response(buffer: &[u8]) -> Result<Option<Parsed>, Error> {
    let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| "a non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("a malformed status line")?;
    let mut length = 0;
    let mut location = None;
    for line in lines {
        let Some((key, value)) = line.split_once(':') else { continue };
        if key.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| "a malformed content-length")?;
        } else if key.eq_ignore_ascii_case("location") {
            location = Some(value.trim().to_string());
        } else if key.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        }
    }
    let start = head_end + 4;
    let total = start + length;
    Ok((buffer.len() >= total).then_some((status, location, start..total, total)))
}

/// A RESP (Redis) connection.
pub struct Resp {
    stream: TcpStream,
    /// The command being sent (reused).
    request: Vec<u8>,
    buffer: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Resp {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Resp, Error> {
        let stream =
            TcpStream::connect(addr).await.map_err(|err| format!("connect {addr}: {err}"))?;
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        Ok(Resp { stream, request: Vec::with_capacity(256), buffer: Vec::with_capacity(1024) })
    }

    pub async fn command(&mut self, args: &[&str]) -> Result<Reply, Error> {
        use std::io::Write as _;
        let out = &mut self.request;
        out.clear();
        let _ = write!(out, "*{}\r\n", args.len());
        for arg in args {
            let _ = write!(out, "${}\r\n{arg}\r\n", arg.len());
        }
        self.stream.write_all(out).await.map_err(|err| err.to_string())?;
        loop {
            if let Some((reply, used)) = parse_reply(&self.buffer)? {
                self.buffer.drain(..used);
                return match reply {
                    Reply::Error(text) => Err(format!("redis: {text}")),
                    reply => Ok(reply),
                };
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await.map_err(|err| err.to_string())?;
            if read == 0 {
                return Err("redis closed the connection".into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// One complete reply at the start of `buffer` and its length, if there is one.
fn parse_reply(buffer: &[u8]) -> Result<Option<(Reply, usize)>, Error> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buffer[1..line_end]).map_err(|_| "a non-UTF-8 reply")?;
    let after = line_end + 2;
    let number = || line.parse::<i64>().map_err(|_| format!("a malformed reply line {line:?}"));
    match buffer.first() {
        Some(b'+') => Ok(Some((Reply::Status(line.to_string()), after))),
        Some(b'-') => Ok(Some((Reply::Error(line.to_string()), after))),
        Some(b':') => Ok(Some((Reply::Integer(number()?), after))),
        Some(b'$') => {
            let length = number()?;
            if length < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let end = after + length as usize;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Reply::Bulk(Some(buffer[after..end].to_vec())), end + 2)))
        }
        Some(b'*') => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..count {
                match parse_reply(&buffer[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err("an unknown RESP reply type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hot-lock"), "aG90LWxvY2s=");
    }

    #[test]
    fn resp_replies_parse_whole_or_not_at_all() {
        assert_eq!(parse_reply(b"+OK\r\n").unwrap(), Some((Reply::Status("OK".into()), 5)));
        assert_eq!(parse_reply(b"$-1\r\n").unwrap(), Some((Reply::Bulk(None), 5)));
        assert_eq!(parse_reply(b":1\r\n").unwrap(), Some((Reply::Integer(1), 4)));
        assert_eq!(parse_reply(b"$3\r\nab").unwrap(), None);
        assert_eq!(
            parse_reply(b"$3\r\nabc\r\n").unwrap(),
            Some((Reply::Bulk(Some(b"abc".to_vec())), 9))
        );
        assert_eq!(
            parse_reply(b"*2\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Some((
                Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(Some(b"x".to_vec()))])),
                15
            ))
        );
        assert!(parse_reply(b"?x\r\n").is_err());
    }

    #[test]
    fn http_responses_parse_with_their_body() {
        let raw =
            b"HTTP/1.1 201 Created\r\nLocation: /v1/locks/a/1\r\ncontent-length: 2\r\n\r\n{}rest";
        let (status, location, body, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(
            (status, location.as_deref(), &raw[body], used),
            (201, Some("/v1/locks/a/1"), &b"{}"[..], raw.len() - 4)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").unwrap(),
            None
        );
    }

    #[test]
    fn pg_keys_are_stable() {
        assert_eq!(pg_key("a"), pg_key("a"));
        assert_ne!(pg_key("a"), pg_key("b"));
        assert_eq!(pg_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
    }
}
