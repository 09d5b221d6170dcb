//! The `relay` body: operations on a relay connection (PROTOCOL.md §18), a
//! [`Pair`] whose client is a relay, read from the input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use std::time::Instant;

use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    ClientId, CloseCode, Config, Event, Extensions, Identity, PeerRequestId, RemoteError, Secret,
    SendError,
};
use serde_json::value::RawValue;

use crate::input::{Input, policy, small_limits};
use crate::rules::check_event_order;
use crate::{MAX_OPS, SEED, SETTLE};

/// What the body knows of one side.
#[derive(Default)]
struct Side {
    name: &'static str,
    authenticated: bool,
    closed: bool,
    /// Our relayed requests, (client, id) → times resolved.
    issued: BTreeMap<(u64, u64), u32>,
    /// Clients this side knew (relay: joined; server: `Joined`) and how
    /// often each `Left`.
    known: BTreeMap<u64, u32>,
    /// The peer's relayed requests held, oldest first.
    open: Vec<(ClientId, PeerRequestId)>,
}

impl Side {
    fn live(&self, pick: u8) -> Option<ClientId> {
        let live: Vec<u64> = self
            .known
            .iter()
            .filter(|(_, left)| **left == 0)
            .map(|(c, _)| *c)
            .collect();
        live.get(usize::from(pick) % live.len().max(1))
            .copied()
            .map(ClientId)
    }

    fn on_event(&mut self, ev: Event, relay_joined: &BTreeSet<u64>, clean: bool) {
        let name = self.name;
        let closed = self
            .closed
            .then_some(&jsonlink_proto::CloseReason::UnexpectedEof);
        check_event_order(name, self.authenticated, closed, &ev);
        let client_event = |c: &ClientId, known: &BTreeMap<u64, u32>| {
            assert_eq!(
                known.get(&c.0),
                Some(&0),
                "{name}: an event for client {c} that is not live: {ev:?}"
            );
        };
        match &ev {
            Event::Authenticated(a) => {
                assert!(a.relay, "{name}: not a relay connection");
                self.authenticated = true;
            }
            Event::Joined(j) => {
                assert_eq!(name, "server", "Joined at the relay");
                assert!(
                    !self.known.contains_key(&j.client.0),
                    "{name}: client {} joined twice",
                    j.client
                );
                if clean {
                    assert!(
                        relay_joined.contains(&j.client.0),
                        "{name}: Joined {} that the relay never joined",
                        j.client
                    );
                }
                self.known.insert(j.client.0, 0);
            }
            Event::ClientMessage { client, .. } => client_event(client, &self.known),
            Event::ClientRequest { client, id, .. } => {
                client_event(client, &self.known);
                assert!(
                    !self.open.contains(&(*client, *id)),
                    "{name}: request {id} of {client} twice in flight"
                );
                self.open.push((*client, *id));
            }
            Event::ClientResponse { client, id, .. }
            | Event::ClientRequestFailed { client, id, .. } => {
                client_event(client, &self.known);
                let n = self.issued.get_mut(&(client.0, id.0));
                let n = n.unwrap_or_else(|| panic!("{name}: outcome of {client}/{id}, never sent"));
                *n += 1;
                assert_eq!(*n, 1, "{name}: {client}/{id} resolved twice");
            }
            Event::ClientClosing { client, .. } => {
                assert_eq!(name, "relay", "ClientClosing at the server");
                client_event(client, &self.known);
            }
            Event::Left { client, .. } => {
                let n = self.known.get_mut(&client.0);
                let n = n.unwrap_or_else(|| panic!("{name}: Left for {client}, never known"));
                *n += 1;
                assert_eq!(*n, 1, "{name}: {client} left twice");
                // Every request of ours for it resolved before it.
                for ((c, id), r) in &self.issued {
                    assert!(
                        *c != client.0 || *r == 1,
                        "{name}: {client}/{id} unresolved at its Left"
                    );
                }
                self.open.retain(|(c, _)| c != client);
            }
            Event::Closed(_) => {
                for (c, left) in &self.known {
                    assert_eq!(*left, 1, "{name}: Closed before {c} left");
                }
                self.closed = true;
                self.open.clear();
            }
            Event::Message { .. }
            | Event::Request { .. }
            | Event::Response { .. }
            | Event::RequestFailed { .. }
            | Event::Ping { .. }
            | Event::Pong
            | Event::SendUnblocked => {}
            other => panic!("{name}: an event this body does not know: {other:?}"),
        }
    }
}

fn harvest(pair: &mut Pair, sides: &mut [Side; 2], clean: bool) {
    let joined: BTreeSet<u64> = sides[0].known.keys().copied().collect();
    for (i, who) in [Who::Client, Who::Server].into_iter().enumerate() {
        let p = pair.peer(who);
        let mut events = p.take_events();
        while let Some(e) = p.conn.poll_event() {
            events.push(e);
        }
        for e in events {
            sides[i].on_event(e, &joined, clean);
        }
        let live = sides[i].known.values().filter(|l| **l == 0).count();
        if !sides[i].closed {
            assert_eq!(
                p.conn.relayed_clients(),
                live,
                "{}: relayed_clients vs events",
                sides[i].name
            );
        }
    }
}

fn relay_config(b: u8) -> (Config, Config) {
    let secret = Secret::from_bytes(vec![0x52; 32]).unwrap_or_else(|_| unreachable!());
    let mut relay = client_config(SEED);
    relay.relay = true;
    relay.secret = secret.clone();
    relay.signing = policy(b);
    relay.encryption = policy(b >> 2);
    let mut server = server_config(SEED);
    server.relay_secrets = vec![secret];
    if b & 0x10 != 0 {
        small_limits(&mut relay);
        small_limits(&mut server);
        server.max_relayed_incoming = 4;
    }
    if b & 0x20 != 0 {
        server.max_relayed_clients = 2;
    }
    relay.keepalive = None;
    server.keepalive = None;
    (relay, server)
}

/// One relayed frame, as a peer might write it (forged or not): `join`,
/// `leave`, `cmsg`, `creq`, `cres` (a value or an error), for client `c`.
fn template(kind: u8, c: u8, id: u8, body: &RawValue) -> Vec<u8> {
    let d = body.get();
    let line = match kind % 7 {
        0 => format!(
            r#"{{"t":"join","c":{c},"node":"n","designation":"d","addr":"127.0.0.1:{id}","max_frame":{}}}"#,
            256 + u32::from(id) * 8
        ),
        1 => format!(r#"{{"t":"leave","c":{c},"code":"normal","reason":"r"}}"#),
        2 => format!(r#"{{"t":"cmsg","c":{c},"d":{d}}}"#),
        3 => format!(r#"{{"t":"creq","c":{c},"id":{id},"d":{d}}}"#),
        4 => format!(r#"{{"t":"cres","c":{c},"id":{id},"d":{d}}}"#),
        5 => format!(r#"{{"t":"cres","c":{c},"id":{id},"err":{{"code":"x","message":"y"}}}}"#),
        _ => format!(r#"{{"t":"leave","c":{c},"code":"gone","reason":"r","c":{id}}}"#),
    };
    let mut v = line.into_bytes();
    v.push(b'\n');
    v
}

/// Interprets the input as operations on a relay connection: joins,
/// leaves from either side (graceful or not), relayed requests both ways,
/// answers, messages, time, injected relay frames (forged ones included)
/// and raw bytes, closes, cuts and stuck readers. After each: every
/// relayed request resolves at most once, no event names a client that is
/// not live, each client leaves at most once and only after its requests
/// resolved, `Closed` comes last and after every client left, and the
/// count of live clients matches the events. At the end, after closing
/// both sides and passing every deadline, each request has resolved and
/// each client left exactly once.
///
/// Layout: `cfg: u8` (bits 0–1 the relay's signing policy, 2–3 its
/// sealing policy, 4 small limits, 5 a server limit of 2 relayed
/// clients), then up to 256 operations, one byte (bit 7 picks the server,
/// bits 0–3 the operation) plus arguments: 0 join(ext, max_frame u16),
/// 1 leave(pick, code), 2 forward(pick, id, body) (relay), 3 request(pick,
/// body, timeout ×100 ms) (server), 4 answer(pick, value or error),
/// 5 message(pick, body), 6 advance(×100 ms), 7 drive (must settle),
/// 8 inject a relay frame(kind, c, id, body) into the other side, 9 inject
/// bytes, 10 close, 11 cut, 12 toggle reading, 13–15 one step.
pub fn relay(base: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let (rcfg, scfg) = relay_config(input.byte());
    let mut pair = Pair::new(base, rcfg.clone(), scfg.clone(), Vec::new(), Vec::new());
    let mut sides = [
        Side {
            name: "relay",
            ..Side::default()
        },
        Side {
            name: "server",
            ..Side::default()
        },
    ];
    let mut clean = true;
    assert!(pair.drive_bounded(SETTLE), "handshake did not settle");
    harvest(&mut pair, &mut sides, clean);
    if !sides[0].authenticated {
        // Policies that cannot agree: nothing relayed to check.
        return;
    }
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = input.byte();
        let (who, i) = if op & 0x80 != 0 {
            (Who::Server, 1)
        } else {
            (Who::Client, 0)
        };
        let other = if i == 0 { Who::Server } else { Who::Client };
        let now = pair.now;
        match op & 0x0f {
            0 => {
                let ext = if input.byte() & 1 == 0 {
                    Extensions::ALL
                } else {
                    Extensions::NONE
                };
                let max_frame = usize::from(input.u16());
                let n = sides[0].known.len();
                let r = pair.client.conn.join(
                    &Identity::new(format!("n{n}"), "app"),
                    "127.0.0.1:1",
                    max_frame,
                    ext,
                );
                match r {
                    Ok(c) => {
                        assert!(
                            sides[0].known.keys().all(|k| *k < c.0),
                            "join ids must increase"
                        );
                        sides[0].known.insert(c.0, 0);
                    }
                    Err(SendError::InvalidJoin(_)) => assert!(max_frame < 512),
                    Err(_) => {}
                }
            }
            1 => {
                let pick = input.byte();
                let code = match input.byte() % 4 {
                    0 => CloseCode::Normal,
                    1 => CloseCode::Gone,
                    2 => CloseCode::Refused,
                    _ => CloseCode::Other("x".into()),
                };
                if let Some(c) = sides[i].live(pick) {
                    let _ = pair.peer(who).conn.leave(now, c, code, "fuzz");
                }
            }
            2 => {
                let pick = input.byte();
                let id = u64::from(input.byte());
                let body = input.body();
                if let Some(c) = sides[0].live(pick)
                    && pair
                        .client
                        .conn
                        .client_forward(c, PeerRequestId(id), &body)
                        .is_ok()
                {
                    let fresh = sides[0].issued.insert((c.0, id), 0);
                    assert!(
                        fresh.is_none_or(|n| n == 1),
                        "forward {c}/{id} accepted while in flight"
                    );
                }
            }
            3 => {
                let pick = input.byte();
                let body = input.body();
                let timeout = Duration::from_millis(u64::from(input.byte()) * 100);
                if let Some(c) = sides[1].live(pick)
                    && let Ok(id) = pair
                        .server
                        .conn
                        .client_request(now, c, &body, Some(timeout))
                {
                    let fresh = sides[1].issued.insert((c.0, id.0), 0);
                    assert!(fresh.is_none(), "server request id {c}/{id} reused");
                }
            }
            4 => {
                let pick = usize::from(input.byte());
                let ok = input.byte() & 1 == 0;
                let body = input.body();
                let side = &mut sides[i];
                if !side.open.is_empty() {
                    let (c, id) = side.open.remove(pick % side.open.len());
                    let err = RemoteError::new("x", "y");
                    let result = if ok { Ok(&*body) } else { Err(&err) };
                    match pair.peer(who).conn.client_respond(c, id, result) {
                        Ok(()) | Err(SendError::ResponseTooLarge { .. }) => {}
                        // Not answerable now: keep it for later.
                        Err(SendError::Blocked) => side.open.push((c, id)),
                        Err(_) => {}
                    }
                }
            }
            5 => {
                let pick = input.byte();
                let body = input.body();
                if let Some(c) = sides[i].live(pick) {
                    let _ = pair.peer(who).conn.client_send(c, &body);
                }
            }
            6 => pair.advance(Duration::from_millis(u64::from(input.byte()) * 100)),
            7 => assert!(pair.drive_bounded(SETTLE), "the pair is stuck"),
            8 => {
                let (kind, c, id) = (input.byte(), input.byte(), input.byte());
                let body = input.body();
                pair.inject(other, &template(kind, c, id, &body));
                clean = false;
            }
            9 => {
                let n = usize::from(input.byte());
                let bytes = input.take(n).to_vec();
                pair.inject(other, &bytes);
                clean = false;
            }
            10 => pair.peer(who).conn.close(now, "fuzz"),
            11 => pair.cut(who),
            12 => {
                let p = pair.peer(who);
                p.reading = !p.reading;
            }
            _ => {
                pair.step();
            }
        }
        harvest(&mut pair, &mut sides, clean);
    }

    // The end: everyone reads again, both close, every deadline passes;
    // a side that does not drain by then ends with the transport.
    pair.client.reading = true;
    pair.server.reading = true;
    let now = pair.now;
    pair.client.conn.close(now, "fuzz: done");
    pair.server.conn.close(now, "fuzz: done");
    assert!(
        pair.drive_bounded(SETTLE),
        "the pair is stuck while closing"
    );
    harvest(&mut pair, &mut sides, clean);
    let horizon = rcfg.close_timeout.max(scfg.close_timeout) + Duration::from_secs(1);
    pair.advance(horizon);
    harvest(&mut pair, &mut sides, clean);
    for (side, conn) in sides.iter().zip([&pair.client.conn, &pair.server.conn]) {
        let name = side.name;
        assert!(
            conn.is_closed() && side.closed,
            "{name}: open after close and every deadline"
        );
        for (k, n) in &side.issued {
            assert_eq!(*n, 1, "{name}: request {k:?} resolved {n} times");
        }
        for (c, n) in &side.known {
            assert_eq!(*n, 1, "{name}: client {c} left {n} times");
        }
    }
}
