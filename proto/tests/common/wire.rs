//! What goes over the wire: JSON values to send, a peer's output taken
//! straight from its connection, bytes fed or rewritten on the way.

use std::time::Duration;

use jsonlink_proto::testing::{Pair, Peer, Who};
use jsonlink_proto::{Connection, PeerRequestId, RequestId};
use serde_json::value::RawValue;

use super::last_request;

/// A JSON value from its text.
pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// Everything `p`'s connection has to write now, taken from it (so the
/// other side never gets it).
pub fn take_output(p: &mut Peer) -> Vec<u8> {
    let mut out = Vec::new();
    p.conn.poll_transmit(&mut out);
    out
}

/// [`take_output`] as text.
pub fn take_output_text(p: &mut Peer) -> String {
    String::from_utf8(take_output(p)).unwrap()
}

/// The bytes the client writes for `commands`, taken off the wire.
pub fn client_writes(p: &mut Pair, commands: impl FnOnce(&mut Connection)) -> Vec<u8> {
    commands(&mut p.client.conn);
    take_output(&mut p.client)
}

/// Feeds `frame` and its `\n` to `who`, as if the other side had sent it.
pub fn inject_line(p: &mut Pair, who: Who, frame: &str) {
    p.inject(who, format!("{frame}\n").as_bytes());
}

/// Rewrites `who`'s bytes on their way to the other side, as text.
pub fn rewrite(p: &mut Pair, who: Who, mut edit: impl FnMut(&str) -> String + 'static) {
    p.tamper(who, move |bytes| {
        *bytes = edit(std::str::from_utf8(bytes).unwrap()).into_bytes();
    });
}

/// The value of the first string member `name` in `text` (a frame or a
/// run of them), as written.
pub fn string_member<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split(&format!(r#""{name}":""#))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
}

/// Everything `p` wrote while recording (`Pair::record`), as text.
pub fn log_text(p: &Peer) -> String {
    String::from_utf8(p.log.clone().unwrap()).unwrap()
}

/// The lines of recorded or taken output (each must end in `\n`).
pub fn lines(output: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(output).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output ends in a newline: {text}"
    );
    text.lines().map(str::to_owned).collect()
}

/// A request sent by one side and delivered to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Its id at the sender (what its resolution names).
    pub id: RequestId,
    /// Its id at the receiver (what the answer names).
    pub peer_id: PeerRequestId,
}

/// `from` sends a request with `body` and no timeout of its own (the pair
/// does not deliver it yet): its id.
pub fn send_request(p: &mut Pair, from: Who, body: &str) -> RequestId {
    let now = p.now;
    p.peer(from).conn.request(now, &raw(body), None).unwrap()
}

/// `from` sends a request with `body` that times out after `timeout` (the
/// pair does not deliver it yet): its id.
pub fn send_request_within(p: &mut Pair, from: Who, body: &str, timeout: Duration) -> RequestId {
    let now = p.now;
    p.peer(from)
        .conn
        .request(now, &raw(body), Some(timeout))
        .unwrap()
}

/// `from` sends a request with `body` (no timeout of its own) and the pair
/// delivers it.
pub fn deliver_request(p: &mut Pair, from: Who, body: &str) -> Delivered {
    let id = send_request(p, from, body);
    p.drive();
    let to = match from {
        Who::Client => &p.server,
        Who::Server => &p.client,
    };
    Delivered {
        id,
        peer_id: last_request(to),
    }
}
