//! Every frame's encoder (PROTOCOL.md §6), one function per frame, writing
//! straight into the output buffer, and the pieces of JSON text they are
//! written from. Members come in the order the examples of §6 show.
//!
//! The application frames' encoders return where they put the frame's
//! payload (a frame has at most one), so that the connection can bound its
//! nesting depth before the frame is signed or sealed.

use std::ops::Range;

use base64::Engine as _;
use serde_json::value::RawValue;

use super::B64;
use crate::config::{Extensions, Identity, Policy, SignAlg};
use crate::error::RemoteError;

/// Where an encoder put the frame's payload, if the frame has one.
pub(crate) type PayloadAt = Option<Range<usize>>;

/// What a client's `hello` says (§6.1).
pub(crate) struct Hello<'a> {
    /// The versions offered.
    pub(crate) versions: &'a [u64],
    /// The client's nonce.
    pub(crate) nonce: &'a [u8],
    /// Who the client is.
    pub(crate) identity: &'a Identity,
    /// The largest frame the client accepts.
    pub(crate) max_frame: u64,
    /// The client's signing policy.
    pub(crate) sign: Policy,
    /// The signing algorithms it offers, in its order of preference.
    pub(crate) sign_algs: &'a [SignAlg],
    /// The client's sealing policy.
    pub(crate) seal: Policy,
    /// The sealing algorithm it offers.
    pub(crate) seal_alg: &'a str,
    /// The extensions offered.
    pub(crate) extensions: Extensions,
    /// Whether the relay role is offered (PROTOCOL.md §18.1).
    pub(crate) relay: bool,
}

/// What a server's `challenge` says (§6.2).
pub(crate) struct Challenge<'a> {
    /// The version chosen.
    pub(crate) version: u64,
    /// The server's nonce.
    pub(crate) nonce: &'a [u8],
    /// Who the server is.
    pub(crate) identity: &'a Identity,
    /// The connection id the server assigned.
    pub(crate) conn: u64,
    /// The largest frame the server accepts.
    pub(crate) max_frame: u64,
    /// The signing algorithm chosen; `Some` exactly when signing is on.
    pub(crate) sign_alg: Option<SignAlg>,
    /// Whether sealing is on.
    pub(crate) seal: bool,
    /// The extensions accepted.
    pub(crate) extensions: Extensions,
    /// Whether the relay role is accepted.
    pub(crate) relay: bool,
}

/// `hello` (§6.1).
pub(crate) fn hello(o: &mut Vec<u8>, h: &Hello<'_>) {
    o.extend_from_slice(b"{\"t\":\"hello\",\"versions\":");
    push_u64_list(o, h.versions);
    push_nonce_and_identity(o, h.nonce, h.identity);
    push_u64_member(o, b",\"max_frame\":", h.max_frame);
    o.extend_from_slice(b",\"sign\":\"");
    o.extend_from_slice(h.sign.as_str().as_bytes());
    o.extend_from_slice(b"\",\"sign_alg\":");
    // A string for one algorithm (as every version of this implementation
    // accepts), a list for several.
    match h.sign_algs {
        [one] => push_str(o, one.as_str()),
        algs => push_str_list(o, algs.iter().map(|a| a.as_str())),
    }
    o.extend_from_slice(b",\"seal\":\"");
    o.extend_from_slice(h.seal.as_str().as_bytes());
    o.extend_from_slice(b"\",\"seal_alg\":\"");
    o.extend_from_slice(h.seal_alg.as_bytes());
    o.push(b'"');
    push_extensions_and_relay(o, h.extensions, h.relay);
    o.push(b'}');
}

/// `challenge` (§6.2).
pub(crate) fn challenge(o: &mut Vec<u8>, c: &Challenge<'_>) {
    o.extend_from_slice(b"{\"t\":\"challenge\",\"version\":");
    push_u64(o, c.version);
    push_nonce_and_identity(o, c.nonce, c.identity);
    push_u64_member(o, b",\"conn\":", c.conn);
    push_u64_member(o, b",\"max_frame\":", c.max_frame);
    o.extend_from_slice(b",\"sign\":");
    o.extend_from_slice(if c.sign_alg.is_some() {
        b"true"
    } else {
        b"false"
    });
    if let Some(alg) = c.sign_alg {
        o.extend_from_slice(b",\"sign_alg\":\"");
        o.extend_from_slice(alg.as_str().as_bytes());
        o.push(b'"');
    }
    o.extend_from_slice(b",\"seal\":");
    o.extend_from_slice(if c.seal { b"true" } else { b"false" });
    push_extensions_and_relay(o, c.extensions, c.relay);
    o.push(b'}');
}

/// `auth` (§6.3): the client's proof.
pub(crate) fn auth(o: &mut Vec<u8>, proof: &[u8]) {
    o.extend_from_slice(b"{\"t\":\"auth\",\"proof\":\"");
    push_b64(o, proof);
    o.extend_from_slice(b"\"}");
}

/// `ok` (§6.4): the server's proof.
pub(crate) fn ok(o: &mut Vec<u8>, proof: &[u8]) {
    o.extend_from_slice(b"{\"t\":\"ok\",\"proof\":\"");
    push_b64(o, proof);
    o.extend_from_slice(b"\"}");
}

/// `msg` (§6.5) with `body`, the payload.
pub(crate) fn msg(o: &mut Vec<u8>, body: &RawValue) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"msg\",\"d\":");
    push_body_and_end(o, body)
}

/// `req` (§6.6) with `body`, the payload.
pub(crate) fn req(o: &mut Vec<u8>, id: u64, body: &RawValue) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"req\",\"id\":");
    push_u64(o, id);
    o.extend_from_slice(b",\"d\":");
    push_body_and_end(o, body)
}

/// `res` (§6.7): a value (the payload) or an error (whose `data`, if it is
/// JSON, is the payload; other `data` is left out).
pub(crate) fn res(o: &mut Vec<u8>, id: u64, result: Result<&RawValue, &RemoteError>) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"res\",\"id\":");
    push_u64(o, id);
    res_outcome(o, result)
}

/// The members of `res` and `cres` after `id`, and the closing `}`.
fn res_outcome(o: &mut Vec<u8>, result: Result<&RawValue, &RemoteError>) -> PayloadAt {
    let mut payload = None;
    match result {
        Ok(v) => {
            o.extend_from_slice(b",\"d\":");
            payload = Some(push_json(o, v.get()));
        }
        Err(e) => {
            o.extend_from_slice(b",\"err\":{\"code\":");
            push_str(o, &e.code);
            o.extend_from_slice(b",\"message\":");
            push_str(o, &e.message);
            if let Some(d) = e
                .data
                .as_deref()
                .filter(|d| serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok())
            {
                o.extend_from_slice(b",\"data\":");
                payload = Some(push_json(o, d));
            }
            o.push(b'}');
        }
    }
    o.push(b'}');
    payload
}

/// `ping` (§6.8), with its data (an object, the payload) if any.
pub(crate) fn ping(o: &mut Vec<u8>, data: Option<&RawValue>) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"ping\"");
    let payload = data.map(|d| {
        o.extend_from_slice(b",\"d\":");
        push_json(o, d.get())
    });
    o.push(b'}');
    payload
}

/// `pong` (§6.9).
pub(crate) fn pong(o: &mut Vec<u8>) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"pong\"}");
    None
}

/// `close` (§6.10), with the versions we speak after a version mismatch.
pub(crate) fn close(
    o: &mut Vec<u8>,
    code: &str,
    reason: &str,
    versions: Option<&[u64]>,
) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"close\",\"code\":\"");
    o.extend_from_slice(code.as_bytes());
    o.extend_from_slice(b"\",\"reason\":");
    push_str(o, reason);
    if let Some(v) = versions {
        o.extend_from_slice(b",\"versions\":");
        push_u64_list(o, v);
    }
    o.push(b'}');
    None
}

/// What a relay's `join` says (PROTOCOL.md §18.3).
pub(crate) struct Join<'a> {
    /// The new client's id.
    pub(crate) c: u64,
    /// The identity it proved to the relay.
    pub(crate) identity: &'a Identity,
    /// Its address.
    pub(crate) addr: &'a str,
    /// The longest plain frame it accepts.
    pub(crate) max_frame: u64,
    /// The extensions on between it and the relay.
    pub(crate) extensions: Extensions,
}

/// `join` (§18.3).
pub(crate) fn join(o: &mut Vec<u8>, j: &Join<'_>) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"join\",\"c\":");
    push_u64(o, j.c);
    o.extend_from_slice(b",\"node\":");
    push_str(o, &j.identity.node);
    o.extend_from_slice(b",\"designation\":");
    push_str(o, &j.identity.designation);
    o.extend_from_slice(b",\"addr\":");
    push_str(o, j.addr);
    push_u64_member(o, b",\"max_frame\":", j.max_frame);
    push_extensions(o, j.extensions);
    o.push(b'}');
    None
}

/// `leave` (§18.3).
pub(crate) fn leave(o: &mut Vec<u8>, c: u64, code: &str, reason: &str) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"leave\",\"c\":");
    push_u64(o, c);
    o.extend_from_slice(b",\"code\":");
    push_str(o, code);
    o.extend_from_slice(b",\"reason\":");
    push_str(o, reason);
    o.push(b'}');
    None
}

/// `cmsg` (§18.3): a `msg` from or to client `c`.
pub(crate) fn cmsg(o: &mut Vec<u8>, c: u64, body: &RawValue) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"cmsg\",\"c\":");
    push_u64(o, c);
    o.extend_from_slice(b",\"d\":");
    push_body_and_end(o, body)
}

/// `creq` (§18.3): a `req` from or to client `c`.
pub(crate) fn creq(o: &mut Vec<u8>, c: u64, id: u64, body: &RawValue) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"creq\",\"c\":");
    push_u64(o, c);
    o.extend_from_slice(b",\"id\":");
    push_u64(o, id);
    o.extend_from_slice(b",\"d\":");
    push_body_and_end(o, body)
}

/// `cres` (§18.3): a `res` from or to client `c`.
pub(crate) fn cres(
    o: &mut Vec<u8>,
    c: u64,
    id: u64,
    result: Result<&RawValue, &RemoteError>,
) -> PayloadAt {
    o.extend_from_slice(b"{\"t\":\"cres\",\"c\":");
    push_u64(o, c);
    o.extend_from_slice(b",\"id\":");
    push_u64(o, id);
    res_outcome(o, result)
}

/// A data frame's payload `d` (its member name just written) and the
/// closing `}`; where the payload went.
fn push_body_and_end(o: &mut Vec<u8>, body: &RawValue) -> PayloadAt {
    let payload = push_json(o, body.get());
    o.push(b'}');
    Some(payload)
}

/// `,"nonce":…,"node":…,"designation":…`, as `hello` and `challenge` have
/// them.
fn push_nonce_and_identity(o: &mut Vec<u8>, nonce: &[u8], identity: &Identity) {
    o.extend_from_slice(b",\"nonce\":\"");
    push_b64(o, nonce);
    o.extend_from_slice(b"\",\"node\":");
    push_str(o, &identity.node);
    o.extend_from_slice(b",\"designation\":");
    push_str(o, &identity.designation);
}

/// Appends a member with a number: `key` (`,"name":`), then `v`.
fn push_u64_member(o: &mut Vec<u8>, key: &[u8], v: u64) {
    o.extend_from_slice(key);
    push_u64(o, v);
}

/// Appends JSON text to a frame and returns where it went. A raw `\n` in
/// valid JSON can only be insignificant whitespace (strings cannot hold raw
/// control characters), so it is replaced by a space: a non-compact payload
/// cannot break framing. Other bytes are copied as they are, so numbers,
/// escapes and strings reach the peer as the caller wrote them
/// (PROTOCOL.md §5).
fn push_json(o: &mut Vec<u8>, json: &str) -> Range<usize> {
    let start = o.len();
    o.extend_from_slice(json.as_bytes());
    let range = start..o.len();
    if memchr::memchr(b'\n', json.as_bytes()).is_some()
        && let Some(tail) = o.get_mut(range.clone())
    {
        for b in tail.iter_mut().filter(|b| **b == b'\n') {
            *b = b' ';
        }
    }
    range
}

/// Writes `,"ext":[…]` for a non-empty set (nothing for an empty one, so a
/// side without extensions writes exactly what a version 1 peer writes).
fn push_extensions(o: &mut Vec<u8>, ext: Extensions) {
    push_extensions_and_relay(o, ext, false);
}

/// [`push_extensions`], with the name `relay` after the others when
/// `relay` is set (PROTOCOL.md §18.1: a role, kept out of [`Extensions`]).
pub(crate) fn push_extensions_and_relay(o: &mut Vec<u8>, ext: Extensions, relay: bool) {
    if ext.is_empty() && !relay {
        return;
    }
    o.extend_from_slice(b",\"ext\":");
    let relay = relay.then_some(RELAY_EXTENSION);
    push_str_list(o, ext.iter().map(|e| e.as_str()).chain(relay));
}

/// The wire name of the relay role (PROTOCOL.md §18.1).
pub(crate) const RELAY_EXTENSION: &str = "relay";

/// Appends a JSON list of strings.
fn push_str_list<'a>(o: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    o.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            o.push(b',');
        }
        push_str(o, s);
    }
    o.push(b']');
}

/// Appends a JSON list of numbers.
fn push_u64_list(o: &mut Vec<u8>, v: &[u64]) {
    o.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        push_u64(o, *x);
    }
    o.push(b']');
}

/// Appends a JSON string literal (with escapes) to `out`.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends base64 of `bytes` (see [`B64`]).
pub(crate) fn push_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let n = B64
        .encode_slice(bytes, out.get_mut(start..).unwrap_or_default())
        .unwrap_or(0);
    out.truncate(start + n);
}

/// Appends `v` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}
