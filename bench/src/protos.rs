//! The two wire stacks driven by the same I/O loops ([`crate::load`]):
//!
//! - **raw**: the same NDJSON frames jsonlink sends (`{"t":"msg","d":…}`,
//!   `{"t":"req","id":N,"d":…}`, `{"t":"res","id":N,"d":…}`), with no
//!   protocol at all: lines split with memchr, each parsed with serde_json
//!   into a small envelope struct whose body is an owned `Box<RawValue>`
//!   (the same validation and copy jsonlink's `RawJson` costs), request ids
//!   correlated in a `HashMap<u64, Instant>`.
//! - **core**: [`jsonlink_proto::Connection`] fed by a hand-written loop
//!   (handshake, optional signing/sealing, request table, timers).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Side};
use serde_json::value::RawValue;

/// Responses completed by one input: (request id, body).
pub(crate) type Done = Vec<(u64, Box<RawValue>)>;

/// Client half of a stack, sans-IO: commands append bytes to `out`.
pub(crate) trait ClientProto {
    /// Queues a fire-and-forget message.
    fn send_msg(&mut self, body: &RawValue, out: &mut Vec<u8>);
    /// Queues a request; returns its id.
    fn request(&mut self, now: Instant, body: &RawValue, out: &mut Vec<u8>) -> u64;
    /// Moves queued bytes into `out` (for stacks that buffer internally).
    fn flush(&mut self, out: &mut Vec<u8>);
    /// Feeds received bytes; completed responses are pushed to `done`.
    fn input(&mut self, now: Instant, data: &[u8], out: &mut Vec<u8>, done: &mut Done);
}

/// Server half of a stack: counts messages, echoes requests, answers
/// `{"op":"count"}` with `{"count":N}`.
pub(crate) trait ServerProto {
    /// Feeds received bytes; answers go to `out`. False once closed.
    fn input(&mut self, now: Instant, data: &[u8], out: &mut Vec<u8>) -> bool;
    /// The next timer deadline, if any.
    fn deadline(&self) -> Option<Instant>;
    /// Fires due timers. False once closed.
    fn timeout(&mut self, now: Instant, out: &mut Vec<u8>) -> bool;
}

fn is_count(d: &RawValue) -> bool {
    d.get().starts_with(r#"{"op":"count""#)
}

// ------------------------------------------------------------------- raw

#[derive(serde::Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow)]
    t: &'a str,
    #[serde(default)]
    id: Option<u64>,
    d: Box<RawValue>,
}

/// Splits input into lines, keeping a partial tail.
#[derive(Default)]
struct Lines {
    tail: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8])) {
        if !self.tail.is_empty() {
            match memchr::memchr(b'\n', data) {
                None => {
                    self.tail.extend_from_slice(data);
                    return;
                }
                Some(i) => {
                    self.tail.extend_from_slice(&data[..i]);
                    f(&self.tail);
                    self.tail.clear();
                    data = &data[i + 1..];
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', data) {
            f(&data[..i]);
            data = &data[i + 1..];
        }
        self.tail.extend_from_slice(data);
    }
}

/// Raw NDJSON client.
#[derive(Default)]
pub(crate) struct RawClient {
    lines: Lines,
    next_id: u64,
    pending: HashMap<u64, Instant>,
}

impl ClientProto for RawClient {
    fn send_msg(&mut self, body: &RawValue, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"t":"msg","d":"#);
        out.extend_from_slice(body.get().as_bytes());
        out.extend_from_slice(b"}\n");
    }

    fn request(&mut self, now: Instant, body: &RawValue, out: &mut Vec<u8>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert(id, now);
        let _ = write!(out, r#"{{"t":"req","id":{id},"d":"#);
        out.extend_from_slice(body.get().as_bytes());
        out.extend_from_slice(b"}\n");
        id
    }

    fn flush(&mut self, _out: &mut Vec<u8>) {}

    fn input(&mut self, _now: Instant, data: &[u8], _out: &mut Vec<u8>, done: &mut Done) {
        let pending = &mut self.pending;
        self.lines.feed(data, |line| {
            let Ok(f) = serde_json::from_slice::<RawFrame<'_>>(line) else {
                return;
            };
            if f.t == "res"
                && let Some(id) = f.id
                && pending.remove(&id).is_some()
            {
                done.push((id, f.d));
            }
        });
    }
}

/// Raw NDJSON server.
#[derive(Default)]
pub(crate) struct RawServer {
    lines: Lines,
    count: u64,
}

impl ServerProto for RawServer {
    fn input(&mut self, _now: Instant, data: &[u8], out: &mut Vec<u8>) -> bool {
        let count = &mut self.count;
        self.lines.feed(data, |line| {
            let Ok(f) = serde_json::from_slice::<RawFrame<'_>>(line) else {
                return;
            };
            match (f.t, f.id) {
                ("msg", _) => *count += 1,
                ("req", Some(id)) => {
                    let _ = write!(out, r#"{{"t":"res","id":{id},"d":"#);
                    if is_count(&f.d) {
                        let _ = write!(out, r#"{{"count":{count}}}"#);
                    } else {
                        out.extend_from_slice(f.d.get().as_bytes());
                    }
                    out.extend_from_slice(b"}\n");
                }
                _ => {}
            }
        });
        true
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn timeout(&mut self, _now: Instant, _out: &mut Vec<u8>) -> bool {
        true
    }
}

// ------------------------------------------------------------------ core

/// A jsonlink core connection on the client side, authenticated.
pub(crate) struct CoreClient {
    pub(crate) conn: Connection,
}

impl CoreClient {
    /// A fresh client connection (its `hello` is queued).
    pub(crate) fn new(config: Arc<Config>, now: Instant, channel_binding: Vec<u8>) -> Self {
        let params = ConnectionParams {
            channel_binding,
            connection_id: 0,
        };
        Self {
            conn: Connection::new(config, Side::Client, now, params),
        }
    }
}

impl ClientProto for CoreClient {
    fn send_msg(&mut self, body: &RawValue, _out: &mut Vec<u8>) {
        self.conn.send(body).expect("send");
    }

    fn request(&mut self, now: Instant, body: &RawValue, _out: &mut Vec<u8>) -> u64 {
        self.conn.request(now, body, None).expect("request").0
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        self.conn.poll_transmit(out);
    }

    fn input(&mut self, now: Instant, data: &[u8], out: &mut Vec<u8>, done: &mut Done) {
        self.conn.handle_input(now, data);
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Response { id, body } => done.push((id.0, body.into_raw())),
                Event::Closed(r) => panic!("link closed: {r:?}"),
                Event::RequestFailed { id, error } => panic!("request {id} failed: {error:?}"),
                _ => {}
            }
        }
        self.conn.poll_transmit(out);
    }
}

/// A jsonlink core connection on the server side.
pub(crate) struct CoreServer {
    conn: Connection,
    count: u64,
}

impl CoreServer {
    pub(crate) fn new(
        config: Arc<Config>,
        now: Instant,
        channel_binding: Vec<u8>,
        connection_id: u64,
    ) -> Self {
        let params = ConnectionParams {
            channel_binding,
            connection_id,
        };
        Self {
            conn: Connection::new(config, Side::Server, now, params),
            count: 0,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) -> bool {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Message { .. } => self.count += 1,
                Event::Request { id, op, body } => {
                    let r = if op.as_deref() == Some("count") {
                        let c = RawValue::from_string(format!(r#"{{"count":{}}}"#, self.count))
                            .expect("valid JSON");
                        self.conn.respond(id, Ok(&c))
                    } else {
                        self.conn.respond(id, Ok(body.raw()))
                    };
                    r.expect("respond");
                }
                _ => {}
            }
        }
        self.conn.poll_transmit(out);
        !self.conn.is_closed()
    }
}

impl ServerProto for CoreServer {
    fn input(&mut self, now: Instant, data: &[u8], out: &mut Vec<u8>) -> bool {
        self.conn.handle_input(now, data);
        self.drain(out)
    }

    fn deadline(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    fn timeout(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        self.conn.handle_timeout(now);
        self.drain(out)
    }
}
