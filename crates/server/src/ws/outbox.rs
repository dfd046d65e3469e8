//! The outgoing side of a streaming connection: a queue of frames and the task that writes it.
//!
//! The session pushes frames; the writer task writes them in order and removes each batch only
//! once it is flushed to the socket, so whatever is still queued when the connection fails was
//! not written and is replayed on resume. A frame carrying a [`Written`] ticket (a `lost`
//! event) drops it once flushed; a frame carrying a [`WrittenBefore`] (a grant) is written only
//! after that has passed, bounded by [`LOST_FIRST_BOUND`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use lockserver_node::{Written, WrittenBefore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::http::locks::LOST_FIRST_BOUND;

/// Most frames the writer takes per flush.
const BATCH: usize = 64;

/// One frame on its way out.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) frame: OutFrame,
    /// For a `lost` event: dropped once the event is on the socket.
    pub(crate) written: Option<Written>,
    /// For a grant: written only once the name's previous holders' `lost` events are.
    pub(crate) after: Option<WrittenBefore>,
}

#[derive(Clone, Debug)]
pub(crate) enum OutFrame {
    Text(Utf8Bytes),
    /// A heartbeat ping; never replayed on another connection.
    Ping,
}

impl Out {
    pub(crate) fn text(text: String) -> Out {
        Out { frame: OutFrame::Text(text.into()), written: None, after: None }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.frame {
            OutFrame::Text(text) => text.as_str().len(),
            OutFrame::Ping => 0,
        }
    }

    pub(crate) fn is_ping(&self) -> bool {
        matches!(self.frame, OutFrame::Ping)
    }
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Out>,
    bytes: usize,
    stop: Option<Stop>,
}

#[derive(Debug)]
struct Stop {
    close: Option<CloseFrame>,
    /// Write everything queued before the close frame (a clean end), or stop at once and
    /// leave the rest queued (for replay on another connection).
    drain: bool,
}

/// The queue of one connection and its writer task.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    writer: JoinHandle<()>,
    writer_done: bool,
}

impl Outbox {
    /// Starts the writer for `sink` on the current runtime.
    pub(crate) fn start(sink: SplitSink<WebSocket, Message>) -> Outbox {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Notify::new());
        let writer = tokio::spawn(write_loop(sink, queue.clone(), wake.clone()));
        Outbox { queue, wake, writer, writer_done: false }
    }

    pub(crate) fn push(&self, out: Out) {
        {
            let mut queue = lock(&self.queue);
            queue.bytes += out.len();
            queue.frames.push_back(out);
        }
        self.wake.notify_one();
    }

    /// Bytes queued and not yet flushed to the socket.
    pub(crate) fn bytes(&self) -> usize {
        lock(&self.queue).bytes
    }

    /// Resolves when the writer has stopped by itself: the socket failed.
    pub(crate) async fn failed(&mut self) {
        if self.writer_done {
            return std::future::pending().await;
        }
        let _ = (&mut self.writer).await;
        self.writer_done = true;
    }

    /// Stops the writer: with `drain`, everything queued is written first; then `close` is
    /// sent. Gives up on the socket after `bound`. Returns the frames that were not written.
    pub(crate) async fn stop(
        mut self,
        close: Option<CloseFrame>,
        drain: bool,
        bound: Duration,
    ) -> VecDeque<Out> {
        lock(&self.queue).stop = Some(Stop { close, drain });
        self.wake.notify_one();
        if !self.writer_done && tokio::time::timeout(bound, &mut self.writer).await.is_err() {
            self.writer.abort();
            let _ = (&mut self.writer).await;
        }
        let mut queue = lock(&self.queue);
        queue.bytes = 0;
        std::mem::take(&mut queue.frames)
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Flushes the sink; then the `count` frames at the front of the queue are written: they leave
/// it (dropping their `Written` tickets).
async fn flush(
    sink: &mut SplitSink<WebSocket, Message>,
    queue: &Mutex<Queue>,
    count: &mut usize,
) -> Result<(), ()> {
    if let Err(err) = sink.flush().await {
        tracing::debug!(error = %err, "streaming connection write failed");
        return Err(());
    }
    let written: Vec<Out> = {
        let mut queue = lock(queue);
        let written: Vec<Out> = queue.frames.drain(..*count).collect();
        queue.bytes -= written.iter().map(Out::len).sum::<usize>();
        written
    };
    *count = 0;
    drop(written);
    Ok(())
}

enum Step {
    Wait,
    Write(Vec<(OutFrame, Option<WrittenBefore>)>),
    Close(Option<CloseFrame>),
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
) {
    loop {
        let step = {
            let mut queue = lock(&queue);
            let stopping_now = queue.stop.as_ref().is_some_and(|stop| !stop.drain);
            if queue.frames.is_empty() || stopping_now {
                match queue.stop.take() {
                    Some(stop) => Step::Close(stop.close),
                    None => Step::Wait,
                }
            } else {
                // Copies (cheap: shared bytes); the frames leave the queue once flushed.
                let count = queue.frames.len().min(BATCH);
                Step::Write(
                    queue
                        .frames
                        .iter_mut()
                        .take(count)
                        .map(|out| (out.frame.clone(), out.after.take()))
                        .collect(),
                )
            }
        };
        match step {
            Step::Wait => wake.notified().await,
            Step::Write(batch) => {
                // Frames fed since the last flush; each flush removes them from the queue,
                // which drops their `Written` tickets.
                let mut unflushed = 0;
                for (frame, after) in batch {
                    if let Some(after) = after.filter(|after| !after.is_passed()) {
                        // What is fed goes out (and its tickets are released) before waiting:
                        // two streams may each hold the other's `lost` event.
                        if flush(&mut sink, &queue, &mut unflushed).await.is_err() {
                            return;
                        }
                        let _ = tokio::time::timeout(LOST_FIRST_BOUND, after.passed()).await;
                    }
                    let message = match frame {
                        OutFrame::Text(text) => Message::Text(text),
                        OutFrame::Ping => Message::Ping(bytes::Bytes::new()),
                    };
                    if let Err(err) = sink.feed(message).await {
                        tracing::debug!(error = %err, "streaming connection write failed");
                        return;
                    }
                    unflushed += 1;
                }
                if flush(&mut sink, &queue, &mut unflushed).await.is_err() {
                    return;
                }
            }
            Step::Close(close) => {
                if let Some(frame) = close {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                let _ = sink.close().await;
                return;
            }
        }
    }
}
