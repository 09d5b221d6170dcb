#![forbid(unsafe_code)]
//! Relays (PROTOCOL.md §18) in the pair harness: the relay role in the
//! handshake and its secret, the virtual links of relayed clients inside
//! one connection (join, per-client request-id spaces, messages both
//! ways, leave, graceful leave and its timeout), sizes, limits, the end
//! of the connection. (What a peer that is not a relay gets for relay
//! frames is fault case X4, in `faults_relay.rs`.) The client of each pair
//! is the relay, the server the upstream server.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{
    ClientId, CloseCode, CloseReason, Event, Extension, Extensions, Identity, PeerRequestId,
    ProtocolError, RELAY_WRAPPER_OVERHEAD, RawJson, RemoteError, RequestError, RequestId, Secret,
    SendError,
};
use serde_json::value::RawValue;

/// The relay secret of these tests (distinct from the client secret).
const RELAY_SECRET: [u8; 32] = [0x52; 32];

fn relay_secret() -> Secret {
    Secret::from_bytes(RELAY_SECRET.to_vec()).unwrap()
}

/// A relay (the client) and a server that allows relays, before the
/// handshake.
fn relay_setup() -> Setup {
    Setup::seed(3)
        .client(|c| {
            c.relay = true;
            c.secret = relay_secret();
        })
        .server(|c| c.relay_secrets = vec![relay_secret()])
}

/// A relay connection, authenticated.
fn relayed() -> Pair {
    relay_setup().connected()
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn identity(n: u32) -> Identity {
    Identity::new(format!("node-{n}"), "app")
}

/// Joins a client through the relay and returns its id, checking the
/// server's `Joined`.
fn join(p: &mut Pair, n: u32) -> ClientId {
    let c = p
        .client
        .conn
        .join(
            &identity(n),
            &format!("10.0.0.{n}:5000"),
            65536,
            Extensions::ALL,
        )
        .unwrap();
    p.drive();
    let joined = p.server.take_events();
    match joined.as_slice() {
        [Event::Joined(j)] => {
            assert_eq!(j.client, c);
            assert_eq!(j.identity, identity(n));
            assert_eq!(j.addr, format!("10.0.0.{n}:5000"));
            assert_eq!(j.max_frame, 65536);
            assert!(j.extensions.contains(Extension::ResponseTooLarge));
        }
        other => panic!("server events after join: {other:?}"),
    }
    c
}

/// The relay forwards request `id` of client `c` with `body`.
fn forward(p: &mut Pair, c: ClientId, id: u64, body: &str) {
    p.client
        .conn
        .client_forward(c, PeerRequestId(id), &raw(body))
        .unwrap();
}

/// The server sends client `c` a request with `body` and the default
/// timeout; its id.
fn server_request(p: &mut Pair, c: ClientId, body: &str) -> RequestId {
    let now = p.now;
    p.server
        .conn
        .client_request(now, c, &raw(body), None)
        .unwrap()
}

/// [`server_request`] with a timeout of `secs` seconds.
fn server_request_within(p: &mut Pair, c: ClientId, body: &str, secs: u64) -> RequestId {
    let now = p.now;
    let timeout = Some(Duration::from_secs(secs));
    p.server
        .conn
        .client_request(now, c, &raw(body), timeout)
        .unwrap()
}

/// The relayed events of `p` (everything but the connection's own).
fn relayed_events(p: &mut jsonlink_proto::testing::Peer) -> Vec<Event> {
    p.take_events()
}

#[test]
fn the_relay_role_is_offered_accepted_and_proven_with_a_relay_secret() {
    let mut p = relay_setup().pair();
    p.drive();
    let a = authentication(&p.client);
    let b = authentication(&p.server);
    assert!(a.relay && b.relay, "both sides see a relay connection");
    assert!(p.client.conn.is_relay() && p.server.conn.is_relay());
    // `relay` is a role, not one of the extensions agreed.
    assert_eq!(a.extensions, Extensions::ALL);
    // A plain pair is not a relay connection.
    let mut plain = pair();
    plain.drive();
    assert!(!plain.client.conn.is_relay() && !authentication(&plain.server).relay);
}

#[test]
fn a_client_holding_only_the_client_secret_cannot_become_a_relay() {
    // It offers `relay` with the client secret: the server checks relay
    // secrets only.
    let mut p = relay_setup()
        .client(|c| c.secret = jsonlink_proto::testing::client_config(3).secret)
        .pair();
    p.drive();
    assert_auth_failed(&p, "client secret as a relay");
}

#[test]
fn a_relay_secret_opens_no_client_connection() {
    let mut p = relay_setup().client(|c| c.relay = false).pair();
    p.drive();
    assert_auth_failed(&p, "relay secret as a client");
}

#[test]
fn a_relay_secret_equal_to_the_client_secret_is_refused_and_never_used() {
    let mut server = jsonlink_proto::testing::server_config(3);
    server.relay_secrets = vec![server.secret.clone()];
    assert_eq!(
        server.check_relay_secrets(),
        Err(jsonlink_proto::RelaySecretsError::SameAsClientSecret)
    );
    // Were it run anyway, the entry is skipped: no relays allowed, so a
    // relay with that secret is refused at the challenge.
    let mut p = Setup::seed(3)
        .client(|c| c.relay = true)
        .server(|c| c.relay_secrets = vec![c.secret.clone()])
        .pair();
    p.drive();
    assert!(failed_negotiation(&p.client), "{:?}", p.client.events);
}

#[test]
fn a_relay_refuses_a_server_that_allows_no_relays() {
    let mut p = relay_setup().server(|c| c.relay_secrets.clear()).pair();
    p.drive();
    assert!(failed_negotiation(&p.client), "{:?}", p.client.events);
    assert!(!authenticated(&p.server));
}

#[test]
fn any_of_several_relay_secrets_is_accepted() {
    let other = Secret::from_bytes(vec![0x61; 32]).unwrap();
    let mut p = relay_setup()
        .server(|c| c.relay_secrets = vec![other, relay_secret()])
        .protection(Protection::Sealed)
        .connected();
    // Sealed frames work: the session keys come from the relay secret.
    let c = join(&mut p, 1);
    p.client
        .conn
        .client_send(c, &raw(r#"{"op":"hi"}"#))
        .unwrap();
    p.drive();
    assert!(matches!(
        p.server.take_events().as_slice(),
        [Event::ClientMessage { client, body, .. }] if *client == c && body.get() == r#"{"op":"hi"}"#
    ));
}

#[test]
fn a_join_sent_by_the_server_is_unexpected_at_the_relay() {
    let mut p = relayed();
    p.inject(
        Who::Client,
        b"{\"t\":\"join\",\"c\":1,\"node\":\"n\",\"designation\":\"d\",\"addr\":\"a\",\"max_frame\":4096}\n",
    );
    assert!(matches!(
        protocol_error(&p.client),
        ProtocolError::UnexpectedFrame { .. }
    ));
}

#[test]
fn clients_have_their_own_request_id_spaces_both_ways() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let b = join(&mut p, 2);
    assert_eq!((a, b), (ClientId(1), ClientId(2)));
    // Each client's request 7, forwarded with its own id.
    for c in [a, b] {
        p.client
            .conn
            .client_forward(
                c,
                PeerRequestId(7),
                &raw(&format!(r#"{{"op":"who","c":{}}}"#, c.0)),
            )
            .unwrap();
    }
    p.drive();
    let got = p.server.take_events();
    assert_eq!(got.len(), 2);
    for (e, c) in got.iter().zip([a, b]) {
        assert!(
            matches!(e, Event::ClientRequest { client, id: PeerRequestId(7), op: Some(op), .. } if *client == c && op == "who"),
            "{e:?}"
        );
    }
    // Answered separately, in the other order.
    for c in [b, a] {
        let answer = raw(&c.0.to_string());
        p.server
            .conn
            .client_respond(c, PeerRequestId(7), Ok(&answer))
            .unwrap();
    }
    p.drive();
    assert_eq!(
        p.client.take_events(),
        [b, a]
            .iter()
            .map(|c| Event::ClientResponse {
                client: *c,
                id: RequestId(7),
                body: RawJson::from_json(&c.0.to_string()).unwrap(),
            })
            .collect::<Vec<_>>()
    );
    // The server numbers its requests per client, from 1.
    let r1 = server_request(&mut p, a, "1");
    let r2 = server_request(&mut p, b, "2");
    let r3 = server_request(&mut p, a, "3");
    assert_eq!((r1, r2, r3), (RequestId(1), RequestId(1), RequestId(2)));
    p.drive();
    let ids: Vec<(ClientId, PeerRequestId)> = p
        .client
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::ClientRequest { client, id, .. } => (client, id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        [
            (a, PeerRequestId(1)),
            (b, PeerRequestId(1)),
            (a, PeerRequestId(2))
        ]
    );
    // A duplicate id in flight for one client is refused locally.
    forward(&mut p, a, 9, "0");
    assert_eq!(
        p.client.conn.client_forward(a, PeerRequestId(9), &raw("0")),
        Err(SendError::DuplicateRequest(9))
    );
}

#[test]
fn messages_keep_their_order_per_client_both_ways() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let b = join(&mut p, 2);
    for i in 0..5 {
        for c in [a, b] {
            p.client
                .conn
                .client_send(c, &raw(&format!("[{},{i}]", c.0)))
                .unwrap();
            p.server
                .conn
                .client_send(c, &raw(&format!("[{},{i}]", c.0)))
                .unwrap();
        }
    }
    p.drive();
    for peer in [&mut p.client, &mut p.server] {
        for c in [a, b] {
            let got: Vec<String> = peer
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::ClientMessage { client, body, .. } if *client == c => {
                        Some(body.get().to_owned())
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<String> = (0..5).map(|i| format!("[{},{i}]", c.0)).collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn a_client_leaving_fails_the_servers_requests_to_it_as_lost() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let b = join(&mut p, 2);
    let r = server_request(&mut p, a, "1");
    server_request(&mut p, b, "1");
    // The client's own request in flight at the server is abandoned.
    forward(&mut p, a, 4, "0");
    p.drive();
    p.client.take_events();
    let _ = p.server.take_events();
    let now = p.now;
    p.client
        .conn
        .leave(now, a, CloseCode::Gone, "connection reset")
        .unwrap();
    p.drive();
    let relay_side = p.client.take_events();
    assert_eq!(
        relay_side,
        [
            Event::ClientRequestFailed {
                client: a,
                id: RequestId(4),
                error: RequestError::ClosedLocally
            },
            Event::Left {
                client: a,
                reason: CloseReason::Local {
                    reason: "connection reset".into()
                }
            }
        ]
    );
    assert_eq!(
        p.server.take_events(),
        [
            Event::ClientRequestFailed {
                client: a,
                id: r,
                error: RequestError::ConnectionLost
            },
            Event::Left {
                client: a,
                reason: CloseReason::Remote {
                    code: CloseCode::Gone,
                    reason: "connection reset".into()
                }
            }
        ]
    );
    // Its request cannot be answered any more; the other client's still
    // can, and b is unaffected.
    assert_eq!(
        p.server
            .conn
            .client_respond(a, PeerRequestId(4), Ok(&raw("1"))),
        Err(SendError::UnknownClient(1))
    );
    assert_eq!(p.server.conn.relayed_clients(), 1);
    assert_eq!(p.client.conn.relayed_clients(), 1);
    assert!(!p.server.conn.is_closed());
}

#[test]
fn frames_for_a_client_that_ended_are_dropped_and_for_one_never_joined_refused() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let now = p.now;
    // The server ends the client abortively while the relay sends for it.
    p.server
        .conn
        .leave(now, a, CloseCode::Refused, "address limit")
        .unwrap();
    forward(&mut p, a, 1, "1");
    p.client.conn.client_send(a, &raw("2")).unwrap();
    p.drive();
    assert!(!p.server.conn.is_closed() && !p.client.conn.is_closed());
    assert_eq!(p.server.conn.stats().relayed_frames_dropped, 2);
    // The relay lost the client too, with the server's code, and its
    // request in flight failed as lost.
    assert_eq!(
        p.client.take_events(),
        [
            Event::ClientRequestFailed {
                client: a,
                id: RequestId(1),
                error: RequestError::ConnectionLost
            },
            Event::Left {
                client: a,
                reason: CloseReason::Remote {
                    code: CloseCode::Refused,
                    reason: "address limit".into()
                }
            }
        ]
    );
    // An id never joined is a protocol error, fatal to the connection.
    p.inject(Who::Server, b"{\"t\":\"cmsg\",\"c\":2,\"d\":1}\n");
    assert_eq!(
        protocol_error(&p.server),
        ProtocolError::InvalidField {
            field: "c",
            detail: "a client id never joined"
        }
    );
}

#[test]
fn join_ids_must_increase() {
    let mut p = relayed();
    join(&mut p, 1);
    p.inject(
        Who::Server,
        b"{\"t\":\"join\",\"c\":1,\"node\":\"n\",\"designation\":\"d\",\"addr\":\"a\",\"max_frame\":4096}\n",
    );
    assert!(matches!(
        protocol_error(&p.server),
        ProtocolError::InvalidField { field: "c", .. }
    ));
}

#[test]
fn join_fields_are_checked() {
    for (line, field) in [
        (
            r#"{"t":"join","c":5,"node":"n","designation":"d","addr":"1.2.3.4:5","max_frame":511}"#,
            "max_frame",
        ),
        (
            r#"{"t":"join","c":5,"node":"n","designation":"d","max_frame":4096}"#,
            "addr",
        ),
        (
            &format!(
                r#"{{"t":"join","c":5,"node":"n","designation":"d","addr":"{}","max_frame":4096}}"#,
                "a".repeat(65)
            ),
            "addr",
        ),
        (
            r#"{"t":"join","c":-5,"node":"n","designation":"d","addr":"a","max_frame":4096}"#,
            "c",
        ),
    ] {
        let mut p = relayed();
        p.inject(Who::Server, format!("{line}\n").as_bytes());
        assert!(
            matches!(protocol_error(&p.server), ProtocolError::InvalidField { field: f, .. } if f == field),
            "{line}: {:?}",
            p.server.events
        );
    }
    // The relay refuses such arguments locally.
    let mut p = relayed();
    let me = identity(1);
    assert!(matches!(
        p.client
            .conn
            .join(&me, &"a".repeat(65), 4096, Extensions::NONE),
        Err(SendError::InvalidJoin(_))
    ));
    assert!(matches!(
        p.client.conn.join(&me, "a", 511, Extensions::NONE),
        Err(SendError::InvalidJoin(_))
    ));
    assert_eq!(
        p.server.conn.join(&me, "a", 4096, Extensions::NONE),
        Err(SendError::NotRelay)
    );
    let mut plain = connected();
    assert_eq!(
        plain.client.conn.join(&me, "a", 4096, Extensions::NONE),
        Err(SendError::NotRelay)
    );
    assert_eq!(
        plain.client.conn.client_send(ClientId(1), &raw("1")),
        Err(SendError::NotRelay)
    );
    let _ = p.drive_bounded(10);
}

#[test]
fn a_graceful_leave_drains_the_client_then_ends_when_the_relay_says_so() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let r = server_request(&mut p, a, "1");
    p.drive();
    let Some(Event::ClientRequest { id: at_relay, .. }) = p.client.take_events().pop() else {
        panic!("no request at the relay");
    };
    let now = p.now;
    p.server
        .conn
        .leave(now, a, CloseCode::Normal, "rebalancing")
        .unwrap();
    // No new request to a client that is closing.
    assert_eq!(
        p.server.conn.client_request(now, a, &raw("2"), None),
        Err(SendError::Closed)
    );
    p.drive();
    assert_eq!(
        p.client.take_events(),
        [Event::ClientClosing {
            client: a,
            reason: "rebalancing".into()
        }]
    );
    // The client drains: its answer still reaches the server.
    p.client
        .conn
        .client_respond(a, at_relay, Ok(&raw("\"done\"")))
        .unwrap();
    p.drive();
    assert!(matches!(
        p.server.take_events().as_slice(),
        [Event::ClientResponse { client, id, body }] if *client == a && *id == r && body.get() == "\"done\""
    ));
    // Its connection to the relay has ended: the relay's leave ends it.
    let now = p.now;
    p.client.conn.leave(now, a, CloseCode::Normal, "").unwrap();
    p.drive();
    assert_eq!(
        p.server.take_events(),
        [Event::Left {
            client: a,
            reason: CloseReason::Local {
                reason: "rebalancing".into()
            }
        }]
    );
}

#[test]
fn a_graceful_leave_the_relay_never_completes_times_out() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let now = p.now;
    let r = server_request_within(&mut p, a, "1", 60);
    p.server
        .conn
        .leave(now, a, CloseCode::Normal, "bye")
        .unwrap();
    p.drive();
    p.client.take_events();
    // The server's close timeout (5 s) passes.
    p.advance(Duration::from_secs(6));
    assert_eq!(
        p.server.take_events(),
        [
            Event::ClientRequestFailed {
                client: a,
                id: r,
                error: RequestError::ClosedLocally
            },
            Event::Left {
                client: a,
                reason: CloseReason::Local {
                    reason: "bye".into()
                }
            }
        ]
    );
    assert_eq!(
        p.client.take_events(),
        [Event::Left {
            client: a,
            reason: CloseReason::Remote {
                code: CloseCode::Timeout,
                reason: "graceful leave timed out".into()
            }
        }]
    );
    assert!(!p.server.conn.is_closed());
}

#[test]
fn the_servers_requests_to_a_client_time_out_in_order_with_the_others() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let now = p.now;
    let slow = server_request_within(&mut p, a, "1", 3);
    let own = p
        .server
        .conn
        .request(now, &raw("2"), Some(Duration::from_secs(2)))
        .unwrap();
    p.drive();
    p.client.take_events();
    // One late check (a stalled loop) fires both in deadline order.
    p.jump(Duration::from_secs(10));
    assert_eq!(
        p.server.take_events(),
        [
            Event::RequestFailed {
                id: own,
                error: RequestError::Timeout
            },
            Event::ClientRequestFailed {
                client: a,
                id: slow,
                error: RequestError::Timeout
            }
        ]
    );
    // A late answer is dropped.
    p.client
        .conn
        .client_respond(a, PeerRequestId(1), Ok(&raw("1")))
        .unwrap();
    p.drive();
    assert!(p.server.take_events().is_empty());
    assert_eq!(p.server.conn.stats().dropped_responses, 1);
}

#[test]
fn sizes_are_checked_against_each_clients_max_frame() {
    let mut p = relayed();
    let small = p
        .client
        .conn
        .join(&identity(1), "10.0.0.1:1", 1024, Extensions::ALL)
        .unwrap();
    let old = p
        .client
        .conn
        .join(&identity(2), "10.0.0.2:1", 1024, Extensions::NONE)
        .unwrap();
    p.drive();
    p.server.take_events();
    // {"t":"msg","d":"…"} is 16 + 2 + n bytes: n = 1006 fits 1024 exactly.
    let fits = raw(&format!("\"{}\"", "x".repeat(1006)));
    let over = raw(&format!("\"{}\"", "x".repeat(1007)));
    p.server.conn.client_send(small, &fits).unwrap();
    assert_eq!(
        p.server.conn.client_send(small, &over),
        Err(SendError::FrameTooLarge {
            size: 1025,
            limit: 1024
        })
    );
    // An answer too large is replaced, by the client's extensions.
    for c in [small, old] {
        forward(&mut p, c, 1, "0");
    }
    p.drive();
    p.server.take_events();
    p.client.take_events();
    let big = raw(&format!("\"{}\"", "y".repeat(2000)));
    for c in [small, old] {
        assert!(matches!(
            p.server.conn.client_respond(c, PeerRequestId(1), Ok(&big)),
            Err(SendError::ResponseTooLarge { limit: 1024, .. })
        ));
    }
    p.drive();
    let codes: Vec<String> = p
        .client
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ClientRequestFailed {
                error: RequestError::Remote(e),
                ..
            } => Some(e.code),
            Event::ClientMessage { .. } => None,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [RemoteError::RESPONSE_TOO_LARGE, RemoteError::INTERNAL]
    );
    // The relay's limit for its clients: the server's max_frame less the
    // wrapper, on a plain connection.
    assert_eq!(
        p.client.conn.relayed_frame_limit(),
        p.client.conn.peer_max_frame() - RELAY_WRAPPER_OVERHEAD
    );
}

#[test]
fn a_relayed_answer_too_large_for_the_server_is_replaced_as_the_handshake_agreed() {
    let mut p = relay_setup().server(|c| c.max_frame = 1024).connected();
    let a = join(&mut p, 1);
    let r = server_request(&mut p, a, "1");
    p.drive();
    let Some(Event::ClientRequest { id, .. }) = p.client.take_events().pop() else {
        panic!("no request at the relay");
    };
    let big = raw(&format!("\"{}\"", "y".repeat(2000)));
    assert!(matches!(
        p.client.conn.client_respond(a, id, Ok(&big)),
        Err(SendError::ResponseTooLarge { limit: 1024, .. })
    ));
    p.drive();
    assert!(matches!(
        p.server.take_events().as_slice(),
        [Event::ClientRequestFailed { client, id, error: RequestError::Remote(e) }]
            if *client == a && *id == r && e.code == RemoteError::RESPONSE_TOO_LARGE
    ));
}

#[test]
fn the_wrapper_overhead_is_at_most_26_bytes() {
    // The longest client id: `c` in `t`, and `"c":18446744073709551615,`.
    let plain = br#"{"t":"msg","d":1}"#.len();
    let relayed = br#"{"t":"cmsg","c":18446744073709551615,"d":1}"#.len();
    assert_eq!(relayed - plain, RELAY_WRAPPER_OVERHEAD);
}

#[test]
fn a_relay_limit_refuses_joins_past_it() {
    let mut p = relay_setup()
        .server(|c| c.max_relayed_clients = 2)
        .connected();
    join(&mut p, 1);
    join(&mut p, 2);
    let third = p
        .client
        .conn
        .join(&identity(3), "10.0.0.3:1", 4096, Extensions::NONE)
        .unwrap();
    p.drive();
    assert!(p.server.take_events().is_empty(), "no Joined for it");
    assert_eq!(p.server.conn.stats().relay_joins_refused, 1);
    assert!(matches!(
        p.client.take_events().as_slice(),
        [Event::Left { client, reason: CloseReason::Remote { code: CloseCode::Refused, .. } }] if *client == third
    ));
}

#[test]
fn each_client_has_its_own_busy_limit() {
    let mut p = relay_setup()
        .server(|c| c.max_incoming_requests = 1)
        .connected();
    let a = join(&mut p, 1);
    let b = join(&mut p, 2);
    for (c, id) in [(a, 1), (a, 2), (b, 1)] {
        forward(&mut p, c, id, "0");
    }
    p.drive();
    assert_eq!(
        p.server
            .take_events()
            .iter()
            .filter(|e| matches!(e, Event::ClientRequest { .. }))
            .count(),
        2,
        "a's first and b's first"
    );
    assert!(matches!(
        p.client.take_events().as_slice(),
        [Event::ClientRequestFailed { client, id: RequestId(2), error: RequestError::Remote(e) }]
            if *client == a && e.code == RemoteError::BUSY
    ));
}

#[test]
fn the_requests_held_for_all_clients_of_a_relay_are_bounded() {
    let mut p = relay_setup()
        .server(|c| c.max_relayed_incoming = 3)
        .connected();
    let clients: Vec<ClientId> = (1..=4).map(|n| join(&mut p, n)).collect();
    for c in &clients {
        forward(&mut p, *c, 1, "0");
    }
    p.drive();
    let held: Vec<ClientId> = p
        .server
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ClientRequest { client, .. } => Some(client),
            _ => None,
        })
        .collect();
    assert_eq!(held, clients[..3], "three held, the fourth refused");
    assert!(matches!(
        p.client.take_events().as_slice(),
        [Event::ClientRequestFailed { client, error: RequestError::Remote(e), .. }]
            if *client == clients[3] && e.code == RemoteError::BUSY
    ));
    // An answer frees a slot, and so does a client leaving.
    p.server
        .conn
        .client_respond(clients[0], PeerRequestId(1), Ok(&raw("1")))
        .unwrap();
    let now = p.now;
    p.client
        .conn
        .leave(now, clients[1], CloseCode::Gone, "")
        .unwrap();
    p.drive();
    p.client.take_events();
    for n in 2..4 {
        forward(&mut p, clients[3], n, "0");
    }
    p.drive();
    assert_eq!(
        p.server
            .take_events()
            .iter()
            .filter(|e| matches!(e, Event::ClientRequest { .. }))
            .count(),
        2
    );
}

#[test]
fn the_connection_ending_ends_every_client_first() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    let b = join(&mut p, 2);
    let ra = server_request(&mut p, a, "1");
    forward(&mut p, b, 3, "1");
    p.drive();
    p.client.take_events();
    p.server.take_events();
    p.cut(Who::Client);
    assert_eq!(
        p.server.take_events(),
        [
            Event::ClientRequestFailed {
                client: a,
                id: ra,
                error: RequestError::ConnectionLost
            },
            Event::Left {
                client: a,
                reason: CloseReason::UnexpectedEof
            },
            Event::Left {
                client: b,
                reason: CloseReason::UnexpectedEof
            },
            Event::Closed(CloseReason::UnexpectedEof)
        ]
    );
    p.cut(Who::Server);
    assert_eq!(
        p.client.take_events(),
        [
            Event::Left {
                client: a,
                reason: CloseReason::UnexpectedEof
            },
            Event::ClientRequestFailed {
                client: b,
                id: RequestId(3),
                error: RequestError::ConnectionLost
            },
            Event::Left {
                client: b,
                reason: CloseReason::UnexpectedEof
            },
            Event::Closed(CloseReason::UnexpectedEof)
        ]
    );
}

#[test]
fn a_graceful_close_drains_every_clients_requests() {
    let mut p = relayed();
    let a = join(&mut p, 1);
    forward(&mut p, a, 1, "1");
    p.drive();
    p.server.take_events();
    let now = p.now;
    p.server.conn.close(now, "maintenance");
    p.drive();
    assert!(
        !p.server.conn.is_closed(),
        "a client's request is in flight"
    );
    // New work is refused while draining: a new request, a join.
    assert_eq!(
        p.client.conn.client_forward(a, PeerRequestId(2), &raw("1")),
        Err(SendError::Closed)
    );
    assert_eq!(
        p.client
            .conn
            .join(&identity(2), "a", 4096, Extensions::NONE),
        Err(SendError::Closed)
    );
    p.server
        .conn
        .client_respond(a, PeerRequestId(1), Ok(&raw("5")))
        .unwrap();
    p.drive();
    assert!(p.server.conn.is_closed() && p.client.conn.is_closed());
    let relay_side = p.client.take_events();
    assert!(
        matches!(
            relay_side.as_slice(),
            [
                Event::ClientResponse { client, .. },
                Event::Left { client: left, .. },
                Event::Closed(_)
            ] if *client == a && *left == a
        ),
        "{relay_side:?}"
    );
}

#[test]
fn a_join_crossing_the_servers_close_is_refused() {
    let mut p = relayed();
    let now = p.now;
    // The server drains a request of its own, so it reads the join.
    p.server.conn.request(now, &raw("1"), None).unwrap();
    p.server.conn.close(now, "maintenance");
    let c = p
        .client
        .conn
        .join(&identity(1), "a", 4096, Extensions::NONE)
        .unwrap();
    p.drive();
    assert_eq!(p.server.conn.stats().relay_joins_refused, 1);
    assert!(p.client.events.iter().any(|e| matches!(
        e,
        Event::Left { client, reason: CloseReason::Remote { code: CloseCode::Refused, .. } } if *client == c
    )));
}

#[test]
fn relayed_frames_work_signed_and_sealed() {
    for protection in Protection::PROTECTED {
        let mut p = relay_setup().protection(protection).connected();
        let a = join(&mut p, 1);
        let now = p.now;
        p.server
            .conn
            .client_request(now, a, &raw(r#"{"op":"x"}"#), None)
            .unwrap();
        p.drive();
        let Some(Event::ClientRequest { id, .. }) = p.client.take_events().pop() else {
            panic!("{protection:?}: no request at the relay");
        };
        p.client
            .conn
            .client_respond(a, id, Ok(&raw("[1]")))
            .unwrap();
        p.drive();
        assert!(
            matches!(p.server.take_events().as_slice(), [Event::ClientResponse { body, .. }] if body.get() == "[1]"),
            "{protection:?}"
        );
        // The relay's limit accounts for the protection's expansion.
        let limit = p.client.conn.relayed_frame_limit();
        assert!(limit + RELAY_WRAPPER_OVERHEAD < p.client.conn.peer_max_frame());
        let body = raw(&format!("\"{}\"", "z".repeat(limit - 18)));
        assert!(
            p.client.conn.client_send(a, &body).is_ok(),
            "{protection:?}"
        );
        p.drive();
    }
}

#[test]
fn relayed_commands_refuse_unknown_clients() {
    let mut p = relayed();
    let now = p.now;
    assert_eq!(
        p.server.conn.client_send(ClientId(1), &raw("1")),
        Err(SendError::UnknownClient(1))
    );
    assert_eq!(
        p.server
            .conn
            .client_request(now, ClientId(1), &raw("1"), None),
        Err(SendError::UnknownClient(1))
    );
    assert_eq!(
        p.server.conn.leave(now, ClientId(1), CloseCode::Normal, ""),
        Err(SendError::UnknownClient(1))
    );
    assert_eq!(
        p.client
            .conn
            .client_request(now, ClientId(1), &raw("1"), None),
        Err(SendError::NotRelay),
        "the relay forwards with the client's ids instead"
    );
    let _ = relayed_events(&mut p.client);
}
