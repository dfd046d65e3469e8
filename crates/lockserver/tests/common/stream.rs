//! Streaming-session clients for tests: [`Ws`] over tokio-tungstenite (answers pings like any
//! client), and [`RawWs`], a hand-rolled one that never answers pings and can stop reading,
//! for half-open and slow-reader tests.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one frame before it fails.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

pub struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Replies read while looking for another one, by id.
    replies: HashMap<u64, Value>,
    /// Events (and id-less replies) read while looking for something else.
    pub events: VecDeque<Value>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Close {
        code: u16,
        reason: String,
    },
    /// The socket ended without a close frame.
    Eof,
}

impl Ws {
    pub async fn connect(addr: SocketAddr) -> Ws {
        Ws::connect_with(addr, None).await.expect("WebSocket upgrade")
    }

    /// Connects with an optional bearer secret; `Err` carries the refused upgrade's status
    /// and body.
    pub async fn connect_with(addr: SocketAddr, secret: Option<&str>) -> Result<Ws, (u16, String)> {
        let mut request = format!("ws://{addr}/v1/session").into_client_request().unwrap();
        if let Some(secret) = secret {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => {
                Ok(Ws { socket, next_id: 1, replies: HashMap::new(), events: VecDeque::new() })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|body| String::from_utf8_lossy(body).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(err) => panic!("connect: {err}"),
        }
    }

    /// Sends one text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    /// Sends `request` with the next id; returns the id.
    pub async fn send(&mut self, mut request: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(&request.to_string()).await;
        id
    }

    /// Sends and waits for the reply.
    pub async fn call(&mut self, request: Value) -> Value {
        let id = self.send(request).await;
        self.reply(id).await
    }

    pub async fn hello(&mut self, fields: Value) -> Value {
        let mut request = json!({"op": "hello"});
        for (key, value) in fields.as_object().expect("an object").iter() {
            request[key] = value.clone();
        }
        self.call(request).await
    }

    /// The next frame that is a JSON text; `None` when the connection ended.
    async fn next_json(&mut self) -> Result<Value, Ended> {
        loop {
            let frame = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("a frame within the wait");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str()).expect("JSON frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Err(Ended::Close { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Eof),
            }
        }
    }

    /// Waits for the reply to `id`, keeping whatever else arrives.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(reply) = self.replies.remove(&id) {
            return reply;
        }
        loop {
            let value = self.next_json().await.unwrap_or_else(|end| {
                panic!("connection ended ({end:?}) while waiting for the reply to {id}")
            });
            match value["id"].as_u64() {
                Some(got) if got == id => return value,
                Some(got) => {
                    self.replies.insert(got, value);
                }
                None => self.events.push_back(value),
            }
        }
    }

    /// Whether the reply to `id` has already been read.
    pub fn has_reply(&self, id: u64) -> bool {
        self.replies.contains_key(&id)
    }

    /// The next event (or id-less reply), keeping replies that arrive first.
    pub async fn event(&mut self) -> Value {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        loop {
            let value = self.next_json().await.unwrap_or_else(|end| {
                panic!("connection ended ({end:?}) while waiting for an event")
            });
            match value["id"].as_u64() {
                Some(got) => {
                    self.replies.insert(got, value);
                }
                None => return value,
            }
        }
    }

    /// Reads until the server ends the connection; returns how.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match self.next_json().await {
                Ok(Value::Object(value)) => {
                    let value = Value::Object(value);
                    match value["id"].as_u64() {
                        Some(id) => {
                            self.replies.insert(id, value);
                        }
                        None => self.events.push_back(value),
                    }
                }
                Ok(_) => {}
                Err(end) => return end,
            }
        }
    }

    /// A clean close by the client (voluntary end of the session).
    pub async fn close(mut self) {
        self.socket.close(None).await.expect("close");
        // Read until the server's close answer, so the close is complete.
        while let Ok(Some(frame)) = tokio::time::timeout(FRAME_WAIT, self.socket.next()).await {
            if frame.is_err() {
                break;
            }
        }
    }

    /// An abrupt drop: the TCP connection closes without a WebSocket close frame.
    pub fn drop_abruptly(self) {
        drop(self.socket);
    }
}

/// The `hold` of an ok acquire reply.
pub fn hold(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "{reply}");
    &reply["hold"]
}

/// The error code of a failed reply.
pub fn code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"]["code"].as_str().expect("an error code")
}

/// Waits (polling every 10 ms, at most `within`) until `check` is true.
pub async fn until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hand-rolled WebSocket client: it never answers pings, and reads only when asked.
pub struct RawWs {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

/// One frame from the server.
#[derive(Debug)]
pub enum RawFrame {
    Text(String),
    Ping,
    Close { code: u16, reason: String },
    Other(u8),
}

impl RawWs {
    /// Upgrades `stream` (already connected; e.g. with a small receive buffer).
    pub async fn upgrade(mut stream: TcpStream, addr: SocketAddr) -> RawWs {
        let request = format!(
            "GET /v1/session HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\n\
             connection: upgrade\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade request");
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            let read = stream.read(&mut chunk).await.expect("upgrade response");
            assert!(read > 0, "the server closed during the upgrade");
            buffer.extend_from_slice(&chunk[..read]);
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawWs { stream, buffer: buffer[head_end..].to_vec() }
    }

    pub async fn connect(addr: SocketAddr) -> RawWs {
        RawWs::upgrade(TcpStream::connect(addr).await.expect("connect"), addr).await
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len if len <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("send frame");
    }

    /// The next frame; `None` at the end of the stream (or a reset).
    pub async fn frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let read = tokio::time::timeout(FRAME_WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame within the wait")
                .unwrap_or(0);
            if read == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

fn parse_frame(bytes: &[u8]) -> Option<(RawFrame, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let opcode = bytes[0] & 0x0f;
    let (len, mut at) = match bytes[1] & 0x7f {
        126 => (u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize, 10),
        len => (len as usize, 2),
    };
    let payload = bytes.get(at..at + len)?;
    at += len;
    let frame = match opcode {
        0x1 => RawFrame::Text(String::from_utf8_lossy(payload).into_owned()),
        0x8 => {
            let code = payload.get(..2).map_or(1005, |code| u16::from_be_bytes([code[0], code[1]]));
            let reason = payload
                .get(2..)
                .map_or(String::new(), |reason| String::from_utf8_lossy(reason).into_owned());
            RawFrame::Close { code, reason }
        }
        0x9 => RawFrame::Ping,
        other => RawFrame::Other(other),
    };
    Some((frame, at))
}
