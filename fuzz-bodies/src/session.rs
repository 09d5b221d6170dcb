//! The `session` body: operations on a [`Pair`] read from the input.

use std::time::{Duration, Instant};

use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{Config, Connection, PeerRequestId, RemoteError, SendError};
use serde_json::value::RawValue;

use crate::book::{Answer, Book, Sent, harvest};
use crate::input::{Input, policy, small_limits};
use crate::{MAX_OPS, SEED, SETTLE};

/// State a command must leave untouched when it fails.
fn snapshot(c: &Connection) -> (usize, usize, usize, u64) {
    (
        c.outbound_len(),
        c.requests_in_flight(),
        c.incoming_in_flight(),
        c.stats().frames_out,
    )
}

fn after_command<T>(
    who: Who,
    c: &Connection,
    before: (usize, usize, usize, u64),
    r: &Result<T, SendError>,
    book: &mut Book,
) {
    // A too-large answer is replaced, not refused: the state changed.
    if let Err(e) = r
        && !matches!(e, SendError::ResponseTooLarge { .. })
    {
        assert_eq!(
            snapshot(c),
            before,
            "{who:?}: failed command {e:?} changed state"
        );
        if *e == SendError::Blocked {
            book.blocked = true;
        }
    }
}

fn session_config(mut c: Config, b: u8) -> Config {
    c.signing = policy(b);
    c.encryption = policy(b >> 2);
    if b & 0x10 != 0 {
        small_limits(&mut c);
    }
    if b & 0x20 != 0 {
        c.keepalive = None;
    } else if b & 0x40 != 0
        && let Some(k) = c.keepalive.as_mut()
    {
        k.data = Some(RawValue::from_string(r#"{"node":"x"}"#.into()).unwrap());
    }
    c
}

/// Interprets the input as operations on a [`Pair`] (send, request,
/// respond, advance time, chunked delivery, tampering, cuts, closes, …).
/// After each: every request resolves at most once, events follow the rules
/// (nothing after `Closed`, …), counters match, and in untampered sessions
/// every message and request arrives in order, once, unaltered. At the end,
/// after closing both sides and passing every deadline, each request has
/// resolved exactly once and the pair settles.
pub fn session(base: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let (cb, sb) = (input.byte(), input.byte());
    let ccfg = session_config(client_config(SEED), cb);
    let scfg = session_config(server_config(SEED), sb);
    let binding = if cb == 0xff { vec![1] } else { Vec::new() };
    let small = (cb | sb) & 0x10 != 0;
    let mut books = [Book::new("client", &ccfg), Book::new("server", &scfg)];
    let mut pair = Pair::new(base, ccfg.clone(), scfg.clone(), binding, Vec::new());
    // No tampering or injection so far: bodies must arrive intact.
    let mut clean = true;
    assert!(pair.drive_bounded(SETTLE), "handshake did not settle");
    harvest(&mut pair, &mut books, clean);

    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = input.byte();
        let (who, i) = if op & 0x80 != 0 {
            (Who::Server, 1)
        } else {
            (Who::Client, 0)
        };
        let other = if who == Who::Client {
            Who::Server
        } else {
            Who::Client
        };
        let now = pair.now;
        match op & 0x0f {
            0 => {
                let body = input.body();
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.send(&body);
                after_command(who, c, before, &r, &mut books[i]);
                if r.is_ok() {
                    books[i].sent.push_back(Sent::Msg(body.get().to_owned()));
                }
            }
            1 => {
                let body = input.body();
                let timeout = match input.byte() {
                    0 => None,
                    t => Some(Duration::from_millis(u64::from(t) * 50)),
                };
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.request(now, &body, timeout);
                after_command(who, c, before, &r, &mut books[i]);
                if let Ok(id) = r {
                    books[i].issue(id);
                    books[i]
                        .sent
                        .push_back(Sent::Req(id.0, body.get().to_owned()));
                }
            }
            2 => {
                let pick = usize::from(input.byte());
                let answer = match input.byte() % 3 {
                    0 => Answer::Value(input.body().get().to_owned()),
                    1 => Answer::Error(RemoteError::new(input.text(), input.text())),
                    _ => Answer::Error(RemoteError {
                        code: input.text(),
                        message: input.text(),
                        data: Some(input.body().get().to_owned()),
                    }),
                };
                let book = &mut books[i];
                let (id, known) = match book.open.get(pick % book.open.len().max(1)) {
                    Some(&id) if pick < 0xf0 => (id, true),
                    // An id that is not awaiting an answer.
                    _ => (u64::from(input.u16()), false),
                };
                let known = known || book.open.contains(&id);
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = match &answer {
                    Answer::Value(v) => {
                        let v = RawValue::from_string(v.clone()).unwrap();
                        c.respond(PeerRequestId(id), Ok(&v))
                    }
                    Answer::Error(e) => c.respond(PeerRequestId(id), Err(e)),
                    Answer::TooLarge => unreachable!("only recorded, never chosen"),
                };
                after_command(who, c, before, &r, book);
                match r {
                    Ok(()) => {
                        assert!(known, "{who:?}: answered {id}, which was not open");
                        book.open.retain(|&x| x != id);
                        book.answered.insert(id, answer);
                    }
                    Err(SendError::UnknownRequest(x)) => {
                        assert_eq!(x, id);
                        assert!(!known, "{who:?}: open request {id} unknown");
                    }
                    Err(SendError::ResponseTooLarge { size, limit }) => {
                        // Answered all the same, with the connection's error.
                        assert!(known, "{who:?}: answered {id}, which was not open");
                        assert!(size > limit, "{who:?}: {size} bytes within {limit}");
                        book.open.retain(|&x| x != id);
                        book.answered.insert(id, Answer::TooLarge);
                    }
                    Err(_) => {}
                }
            }
            3 => {
                let data = match input.byte() % 3 {
                    0 => None,
                    1 => Some(RawValue::from_string(r#"{"seq":1}"#.into()).unwrap()),
                    _ => Some(input.body()),
                };
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.ping(data.as_deref());
                after_command(who, c, before, &r, &mut books[i]);
            }
            4 => {
                let reason = input.text();
                pair.peer(who).conn.close(now, &reason);
            }
            5 => {
                // Up to 25.5 s: past a default keepalive timeout. With small
                // limits (1 s deadlines) up to 5.1 s: past each of them, at
                // a few keepalive rounds per jump rather than 25 (which made
                // this the most expensive operation).
                let unit = if small { 20 } else { 100 };
                let ms = u64::from(input.byte()) * unit;
                pair.advance(Duration::from_millis(ms));
            }
            6 => assert!(pair.drive_bounded(SETTLE), "the pair is stuck"),
            7 => {
                let n = 1 + input.byte() % 4;
                let sizes = (0..n).map(|_| usize::from(input.byte() % 64)).collect();
                pair.deliver_in_chunks(who, sizes);
            }
            8 => {
                let pos = usize::from(input.u16());
                let mask = input.byte().max(1);
                let mut once = Some((pos, mask));
                pair.tamper(who, move |bytes| {
                    if let (Some((pos, mask)), false) = (once, bytes.is_empty()) {
                        let at = pos % bytes.len();
                        bytes[at] ^= mask;
                        once = None;
                    }
                });
                clean = false;
            }
            9 => pair.cut(who),
            10 => {
                let p = pair.peer(who);
                p.reading = !p.reading;
            }
            11 => {
                let n = usize::from(input.byte());
                let bytes = input.take(n).to_vec();
                pair.inject(other, &bytes);
                clean = false;
            }
            12 => {
                // Answer every open request.
                let ids = books[i].open.clone();
                for id in ids {
                    let c = &mut pair.peer(who).conn;
                    let before = snapshot(c);
                    let v = RawValue::from_string(format!("{{\"answer\":{id}}}")).unwrap();
                    let r = c.respond(PeerRequestId(id), Ok(&v));
                    after_command(who, c, before, &r, &mut books[i]);
                    if r.is_ok() {
                        books[i].open.retain(|&x| x != id);
                        books[i]
                            .answered
                            .insert(id, Answer::Value(v.get().to_owned()));
                    }
                }
            }
            _ => {
                pair.step();
            }
        }
        harvest(&mut pair, &mut books, clean);
    }

    // The end: everyone reads again, both sides close, every deadline passes.
    pair.client.reading = true;
    pair.server.reading = true;
    let now = pair.now;
    pair.client.conn.close(now, "fuzz: done");
    pair.server.conn.close(now, "fuzz: done");
    harvest(&mut pair, &mut books, clean);
    assert!(
        pair.drive_bounded(SETTLE),
        "the pair is stuck while closing"
    );
    harvest(&mut pair, &mut books, clean);
    let horizon = ccfg.close_timeout.max(scfg.close_timeout) + Duration::from_secs(1);
    pair.advance(horizon);
    harvest(&mut pair, &mut books, clean);
    for (book, conn) in books.iter().zip([&pair.client.conn, &pair.server.conn]) {
        let name = book.name;
        assert!(
            conn.is_closed(),
            "{name}: open after close and every deadline"
        );
        assert!(book.closed.is_some(), "{name}: no Closed event");
        assert!(
            !book.blocked,
            "{name}: Blocked, then neither SendUnblocked nor Closed"
        );
        for (id, n) in &book.issued {
            assert_eq!(*n, 1, "{name}: request {id} resolved {n} times");
        }
    }
    assert!(
        pair.drive_bounded(SETTLE),
        "the pair is stuck after closing"
    );
}
