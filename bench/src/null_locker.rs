//! `locker-null`: a locker-protocol server that answers every request at once with success and
//! keeps no state. It is not a lock server; it shows the most cycles any locker server could
//! reach under lockbench's load client on this machine (one thread, like the original locker's
//! event loop), so the other locker rows can be read against that ceiling.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request: `u8 name length · u32 seq · u32 wait · u32 timeout · u8 action · name`.
const HEADER: usize = 14;

pub fn serve(port: u16) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("null-locker: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("null-locker: cannot listen on port {port}: {err}");
                return ExitCode::FAILURE;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(connection(stream))),
                Err(err) => eprintln!("null-locker: accept failed: {err}"),
            }
        }
    })
}

async fn connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut input = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut output = Vec::with_capacity(64);
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        input.extend_from_slice(&chunk[..read]);
        let mut used = 0;
        while input.len() - used >= HEADER {
            let frame = &input[used..];
            let len = HEADER + usize::from(frame[0]);
            if frame.len() < len {
                break;
            }
            output.extend_from_slice(&frame[1..5]);
            output.push(frame[13]);
            output.push(1);
            used += len;
        }
        input.drain(..used);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
    }
}
