//! A link's transport: its TLS stream, read into a buffer shared by the
//! thread's links, written from a buffer the core fills, and closed within
//! the linger time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use jsonlink_proto::Connection;

use crate::runtime::BoxStream;

thread_local! {
    /// The read buffer, one per thread rather than one per link: a driver
    /// reads into it and hands the bytes to its core in the same call (the
    /// core copies only a partial line), so an idle link holds no read
    /// buffer. Sized by [`LinkOptions::read_buffer`](crate::LinkOptions::read_buffer);
    /// it lives as long as the thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes per round before the driver turns to other work.
const WRITES_PER_ROUND: usize = 64;

/// Whether the stream can still carry bytes.
enum Stream {
    /// Open; `unflushed` once bytes were written and not flushed yet.
    Open { stream: BoxStream, unflushed: bool },
    /// Closed, or dropped after a write failed: what the core still has
    /// to send is discarded.
    Gone,
}

/// The TLS stream and the bytes on their way to it.
pub(super) struct Transport {
    stream: Stream,
    /// What the core gave to send; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
}

impl Transport {
    pub(super) fn new(stream: BoxStream) -> Self {
        Self {
            stream: Stream::Open {
                stream,
                unflushed: false,
            },
            wbuf: Vec::new(),
            wpos: 0,
        }
    }

    /// One read of at most `size` bytes, handed to the core at once (end of
    /// stream and read errors as `handle_eof`); whether anything happened.
    pub(super) fn read(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        conn: &mut Connection,
        size: usize,
    ) -> bool {
        let Stream::Open { stream, .. } = &mut self.stream else {
            return false;
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => read_into(stream, cx, now, conn, &mut buf, size),
            // Only if a read ever ran inside another, which nothing does.
            Err(_) => read_into(stream, cx, now, conn, &mut Vec::new(), size),
        })
    }

    /// Writes what the core has to send, then flushes; a failed write ends
    /// the stream (`handle_eof`). Whether anything happened.
    pub(super) fn write(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        conn: &mut Connection,
    ) -> bool {
        let Stream::Open { stream, unflushed } = &mut self.stream else {
            // Nowhere to write: discard, so the core's buffer cannot grow.
            self.wbuf.clear();
            self.wpos = 0;
            let discarded = conn.poll_transmit(&mut self.wbuf) > 0;
            self.wbuf.clear();
            return discarded;
        };
        let mut progress = false;
        let mut failed = None;
        for _ in 0..WRITES_PER_ROUND {
            if self.wpos >= self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                if conn.poll_transmit(&mut self.wbuf) == 0 {
                    break;
                }
                *unflushed = true;
                progress = true;
            }
            let Some(chunk) = self.wbuf.get(self.wpos..) else {
                break;
            };
            match Pin::new(&mut **stream).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) => {
                    failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    progress = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Poll::Pending => break,
            }
        }
        if failed.is_none() && *unflushed && self.wpos >= self.wbuf.len() {
            match Pin::new(&mut **stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    *unflushed = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => failed = Some(e),
                Poll::Pending => {}
            }
        }
        if let Some(e) = failed {
            tracing::debug!(error = %e, "write failed");
            self.stream = Stream::Gone;
            self.wbuf.clear();
            self.wpos = 0;
            conn.handle_eof(now);
            progress = true;
        }
        progress
    }

    /// After the core closed: once the last bytes are written and flushed,
    /// closes the stream; `over` (the linger time is up) drops it as it
    /// is. Whether the stream is gone.
    pub(super) fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Connection,
        over: bool,
    ) -> bool {
        if let Stream::Open { stream, unflushed } = &mut self.stream {
            let flushed = self.wpos >= self.wbuf.len() && !*unflushed && conn.outbound_len() == 0;
            if !flushed && !over {
                return false;
            }
            if !over && Pin::new(&mut **stream).poll_close(cx).is_pending() {
                return false;
            }
            self.stream = Stream::Gone;
        }
        true
    }
}

/// One read into `buf` (grown to `size` once), handed to the core at
/// once: the core keeps only what it needs (a partial line), so the
/// buffer can be shared by every link of the thread.
fn read_into(
    stream: &mut BoxStream,
    cx: &mut Context<'_>,
    now: Instant,
    conn: &mut Connection,
    buf: &mut Vec<u8>,
    size: usize,
) -> bool {
    if buf.len() < size {
        buf.resize(size, 0);
    }
    let Some(buf) = buf.get_mut(..size) else {
        return false;
    };
    let r = loop {
        match Pin::new(&mut **stream).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match r {
        Poll::Pending => false,
        Poll::Ready(Ok(0)) => {
            tracing::debug!("end of stream");
            conn.handle_eof(now);
            true
        }
        Poll::Ready(Ok(n)) => {
            if let Some(data) = buf.get(..n) {
                conn.handle_input(now, data);
            }
            true
        }
        Poll::Ready(Err(e)) => {
            tracing::debug!(error = %e, "read failed");
            conn.handle_eof(now);
            true
        }
    }
}
