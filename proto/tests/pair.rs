#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Scenarios on the in-memory pair with virtual time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseCode, CloseReason, Event, Policy, ProtocolError, RemoteError, RequestError, Secret,
    SendError,
};

#[test]
fn happy_path_messages_and_requests_both_ways() {
    let mut p = pair();
    p.drive();
    let Some(Event::Authenticated(a)) = p.client.events.first().cloned() else {
        panic!("{:?}", p.client.events)
    };
    assert_eq!(a.peer.node, "server-node");
    assert_eq!(a.connection_id, 7);
    assert_eq!((a.signing, a.encryption), (false, false));
    let Some(Event::Authenticated(b)) = p.server.events.first().cloned() else {
        panic!()
    };
    assert_eq!(b.peer.designation, "test-client");
    assert_eq!(b.connection_id, 7);
    p.client.take_events();
    p.server.take_events();

    p.client.conn.send(&raw(r#"{"op":"hello","n":1}"#)).unwrap();
    p.server.conn.send(&raw(r#"[1,2,3]"#)).unwrap();
    let now = p.now;
    let c_req = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"sum","a":[1,2]}"#), None)
        .unwrap();
    let s_req = p
        .server
        .conn
        .request(now, &raw(r#""ping?""#), None)
        .unwrap();
    p.drive();
    assert!(matches!(&p.server.events[0], Event::Message { op: Some(op), .. } if op == "hello"));
    assert_eq!(messages(&p.client), vec!["[1,2,3]"]);
    let sr = requests(&p.server);
    assert_eq!(sr.len(), 1);
    assert_eq!(sr[0].1.as_deref(), Some("sum"));
    let cr = requests(&p.client);
    assert_eq!(cr[0].1, None);
    p.server.conn.respond(sr[0].0, Ok(&raw("3"))).unwrap();
    p.client
        .conn
        .respond(cr[0].0, Ok(&raw(r#""pong!""#)))
        .unwrap();
    p.drive();
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, c_req);
    assert_eq!(r[0].1.as_ref().unwrap().get(), "3");
    let r = resolutions(&p.server);
    assert_eq!(
        (r[0].0, r[0].1.as_ref().unwrap().get()),
        (s_req, r#""pong!""#)
    );
}

#[test]
fn remote_error_response() {
    let mut p = connected();
    let now = p.now;
    let id = p.client.conn.request(now, &raw("{}"), None).unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    let mut err = RemoteError::new("bad_request", "missing \"a\"");
    err.data = Some(r#"{"field":"a"}"#.into());
    p.server.conn.respond(rid, Err(&err)).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Err(&err)),
        Err(SendError::UnknownRequest(rid.0))
    );
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Remote(err)))]
    );
}

#[test]
fn h1_wrong_secret_fails_on_both_sides() {
    let mut c = client_config(1);
    c.secret = Secret::from_bytes(b"not the secret".to_vec()).unwrap();
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed))
    );
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
}

#[test]
fn h5_version_mismatch_names_both_versions() {
    let mut p = pair();
    // Replace the client's hello with one offering only version 2.
    p.client.conn.poll_transmit(&mut Vec::new());
    p.inject(
        Who::Server,
        br#"{"t":"hello","versions":[2,3],"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","node":"n","designation":"d","max_frame":8388608,"sign":"optional","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}
"#,
    );
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::VersionMismatch {
            ours: vec![1],
            theirs: vec![2, 3]
        }))
    );
    let mut wire = Vec::new();
    p.server.conn.poll_transmit(&mut wire);
    let text = String::from_utf8(wire).unwrap();
    assert!(text.contains(r#""code":"version_mismatch""#), "{text}");
    assert!(text.contains(r#""versions":[1]"#), "{text}");
    // The client, fed that close frame, reports a version mismatch naming both.
    p.client.conn.handle_input(p.now, text.as_bytes());
    while let Some(e) = p.client.conn.poll_event() {
        p.client.events.push(e);
    }
    let Some(CloseReason::Remote { code, reason }) = p.client.closed() else {
        panic!("{:?}", p.client.events)
    };
    assert_eq!(*code, CloseCode::VersionMismatch);
    assert!(
        reason.contains("[1]") && reason.contains("[2, 3]"),
        "{reason}"
    );
}

#[test]
fn handshake_deadline_closes_both_roles() {
    let mut p = pair();
    p.client.reading = false; // the client never sees the challenge
    p.advance(Duration::from_secs(9));
    assert!(p.client.closed().is_none());
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client.closed(), Some(&CloseReason::HandshakeTimeout));
    assert_eq!(p.server.closed(), Some(&CloseReason::HandshakeTimeout));
}

#[test]
fn h7_protection_matrix_every_policy_combination() {
    use Policy::*;
    let all = [Off, Optional, Preferred, Required];
    for cs in all {
        for ss in all {
            for ce in all {
                for se in all {
                    let mut c = client_config(3);
                    c.signing = cs;
                    c.encryption = ce;
                    let mut s = server_config(3);
                    s.signing = ss;
                    s.encryption = se;
                    let mut p = Pair::new(Instant::now(), c, s, vec![1; 32], vec![1; 32]);
                    p.drive();
                    let sign = Policy::negotiate(cs, ss);
                    let enc = Policy::negotiate(ce, se);
                    let case = format!("sign {cs:?}/{ss:?} enc {ce:?}/{se:?}");
                    match (sign, enc) {
                        (Ok(sign), Ok(enc)) => {
                            let Some(Event::Authenticated(a)) = p.client.events.first().cloned()
                            else {
                                panic!("{case}: {:?}", p.client.events)
                            };
                            assert_eq!((a.signing, a.encryption), (sign || enc, enc), "{case}");
                            p.client.take_events();
                            p.server.take_events();
                            let now = p.now;
                            p.client.conn.send(&raw(r#"{"op":"x","s":"é\n"}"#)).unwrap();
                            let id = p.client.conn.request(now, &raw("[1]"), None).unwrap();
                            p.drive();
                            assert_eq!(
                                messages(&p.server),
                                vec![r#"{"op":"x","s":"é\n"}"#],
                                "{case}"
                            );
                            let (rid, _, _) = requests(&p.server)[0].clone();
                            p.server.conn.respond(rid, Ok(&raw("true"))).unwrap();
                            p.drive();
                            assert_eq!(resolutions(&p.client)[0].0, id, "{case}");
                            // Frames on the wire are visibly protected.
                            p.client.conn.send(&raw(r#""secret-payload""#)).unwrap();
                            let mut wire = Vec::new();
                            p.client.conn.poll_transmit(&mut wire);
                            let wire = String::from_utf8(wire).unwrap();
                            assert_eq!(wire.contains("secret-payload"), !enc, "{case}: {wire}");
                            assert_eq!(wire.starts_with(r#"{"q":"#), sign || enc, "{case}: {wire}");
                        }
                        _ => {
                            let code = p.server.closed().map(CloseReason::code);
                            assert_eq!(code, Some(CloseCode::NegotiationFailed), "{case}");
                            assert_eq!(
                                p.client.closed().map(CloseReason::code),
                                Some(CloseCode::NegotiationFailed),
                                "{case}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn request_until_times_out_at_its_deadline_not_before() {
    let mut p = connected();
    let deadline = p.now + Duration::from_secs(3);
    let id = p.client.conn.request_until(&raw("1"), deadline).unwrap();
    p.drive();
    assert!(p.client.conn.poll_timeout().is_some_and(|t| t <= deadline));
    p.advance(Duration::from_millis(2_999));
    assert!(
        resolutions(&p.client).is_empty(),
        "failed before its deadline"
    );
    p.advance(Duration::from_millis(1));
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Timeout))]
    );
}

#[test]
fn r2_request_timeout_then_late_response_is_dropped_and_counted() {
    let mut p = connected();
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw("1"), Some(Duration::from_secs(2)))
        .unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    p.advance(Duration::from_secs(2));
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Timeout))]
    );
    p.server.conn.respond(rid, Ok(&raw("2"))).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client).len(),
        1,
        "late response not delivered"
    );
    assert_eq!(p.client.conn.stats().dropped_responses, 1);
    // The next id is fresh.
    let id2 = p.client.conn.request(p.now, &raw("1"), None).unwrap();
    assert!(id2.0 > id.0);
}

#[test]
fn k1_keepalive_pings_and_timeout() {
    let mut p = connected();
    // Healthy: a minute of keepalives, no close.
    p.advance(Duration::from_secs(60));
    assert!(p.client.closed().is_none() && p.server.closed().is_none());
    assert!(p.client.events.iter().any(|e| matches!(e, Event::Pong)));
    assert!(
        p.server
            .events
            .iter()
            .any(|e| matches!(e, Event::Ping { .. }))
    );
    // The server stops reading (its process hangs; TCP stays up).
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw("1"), Some(Duration::from_secs(300)))
        .unwrap();
    p.server.reading = false;
    p.advance(Duration::from_secs(25));
    assert_eq!(p.client.closed(), Some(&CloseReason::KeepaliveTimeout));
    assert!(resolutions(&p.client).contains(&(id, Err(RequestError::ConnectionLost))));
    assert_closed_last(&p.client);
}

#[test]
fn ping_with_data_and_pong() {
    let mut p = connected();
    p.client.conn.ping(Some(&raw(r#"{"load":0.5}"#))).unwrap();
    assert_eq!(
        p.client.conn.ping(Some(&raw("5"))),
        Err(SendError::NotAnObject)
    );
    p.drive();
    let data = p.server.events.iter().find_map(|e| match e {
        Event::Ping { data } => data.clone(),
        _ => None,
    });
    assert_eq!(data.unwrap().get(), r#"{"load":0.5}"#);
    assert!(p.client.events.contains(&Event::Pong));
}

#[test]
fn keepalive_ping_carries_configured_data() {
    let mut c = client_config(1);
    c.keepalive.as_mut().unwrap().data = Some(raw(r#"{"uptime":1}"#));
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    p.advance(Duration::from_secs(16));
    assert!(p.server.events.iter().any(|e| matches!(e,
        Event::Ping { data: Some(d) } if d.get() == r#"{"uptime":1}"#)));
}

#[test]
fn graceful_close_with_requests_in_flight() {
    let mut p = connected();
    let now = p.now;
    let a = p.client.conn.request(now, &raw("1"), None).unwrap();
    let b = p.client.conn.request(now, &raw("2"), None).unwrap();
    let s = p.server.conn.request(now, &raw("3"), None).unwrap();
    p.drive();
    p.client.conn.close(now, "bye");
    // Nothing new is started (messages still go out while draining: see
    // tests/closing.rs).
    assert_eq!(
        p.client.conn.request(now, &raw("4"), None),
        Err(SendError::Closed)
    );
    assert_eq!(p.client.conn.ping(None), Err(SendError::Closed));
    p.drive();
    // The server learns of the close; its new requests are refused.
    assert_eq!(
        p.server.conn.request(p.now, &raw("1"), None),
        Err(SendError::Closed)
    );
    let sreq = requests(&p.server);
    // Answer one now; the client answers the server's request.
    p.server.conn.respond(sreq[0].0, Ok(&raw("10"))).unwrap();
    let creq = requests(&p.client);
    p.client.conn.respond(creq[0].0, Ok(&raw("30"))).unwrap();
    p.drive();
    assert!(p.client.closed().is_none(), "still draining request b");
    p.server.conn.respond(sreq[1].0, Ok(&raw("20"))).unwrap();
    p.drive();
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(r[0].0, a);
    assert_eq!(r[1].0, b);
    assert_eq!(
        resolutions(&p.server),
        vec![(s, Ok(jsonlink_proto::Payload::from_json("30").unwrap()))]
    );
    assert_eq!(
        p.client.closed(),
        Some(&CloseReason::Local {
            reason: "bye".into()
        })
    );
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
}

#[test]
fn close_deadline_fails_unanswered_requests_locally() {
    let mut p = connected();
    let now = p.now;
    let a = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    p.client
        .conn
        .close_by(now, "shutdown", now + Duration::from_secs(1));
    p.advance(Duration::from_secs(1));
    assert_eq!(
        resolutions(&p.client),
        vec![(a, Err(RequestError::ClosedLocally))]
    );
    assert_closed_last(&p.client);
}

#[test]
fn in_flight_limit_returns_busy() {
    let mut c = client_config(1);
    c.max_requests_in_flight = 3;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    let now = p.now;
    for _ in 0..3 {
        p.client.conn.request(now, &raw("1"), None).unwrap();
    }
    assert_eq!(
        p.client.conn.request(now, &raw("1"), None),
        Err(SendError::Busy { limit: 3 })
    );
}

#[test]
fn peer_over_incoming_limit_gets_busy_answers() {
    let mut s = server_config(1);
    s.max_incoming_requests = 2;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    let now = p.now;
    let ids: Vec<_> = (0..5)
        .map(|_| p.client.conn.request(now, &raw("1"), None).unwrap())
        .collect();
    p.drive();
    assert_eq!(requests(&p.server).len(), 2);
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 3);
    for (id, res) in &r {
        assert!(ids[2..].contains(id));
        assert!(matches!(res, Err(RequestError::Remote(e)) if e.code == RemoteError::BUSY));
    }
    assert_eq!(p.server.conn.stats().rejected_requests, 3);
    // The refused requests left nothing behind: two in flight, answerable.
    assert_eq!(p.server.conn.incoming_in_flight(), 2);
    for (rid, _, _) in requests(&p.server) {
        p.server.conn.respond(rid, Ok(&raw("2"))).unwrap();
    }
    assert_eq!(p.server.conn.incoming_in_flight(), 0);
    p.drive();
    assert_eq!(resolutions(&p.client).len(), 5);
}

#[test]
fn an_answer_refused_for_backpressure_leaves_the_request_answerable() {
    let mut s = server_config(1);
    s.max_outbound = 2048;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    let now = p.now;
    let id = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    // Fill the server's outbound buffer past its bound.
    let body = raw(&format!("\"{}\"", "x".repeat(3000)));
    p.server.conn.send(&body).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Ok(&raw("3"))),
        Err(SendError::Blocked)
    );
    assert_eq!(
        p.server.conn.respond_too_large(rid, 9999),
        Err(SendError::Blocked)
    );
    assert_eq!(p.server.conn.incoming_in_flight(), 1);
    p.drive();
    p.server.conn.respond(rid, Ok(&raw("3"))).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Ok(&raw("3"))),
        Err(SendError::UnknownRequest(rid.0))
    );
    p.drive();
    assert_eq!(resolutions(&p.client).len(), 1);
    assert_eq!(resolutions(&p.client)[0].0, id);
    assert_eq!(p.server.conn.stats().responses_too_large, 0);
}

/// The client's hello, edited, fed to a fresh server; the server's
/// outcome (`None`: it answered with a challenge).
fn server_on_edited_hello(
    client: jsonlink_proto::Config,
    server: jsonlink_proto::Config,
    edit: impl Fn(String) -> String,
) -> (Option<CloseReason>, String) {
    let mut p = Pair::new(Instant::now(), client, server, vec![], vec![]);
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let h = edit(String::from_utf8(hello).unwrap());
    p.inject(Who::Server, h.as_bytes());
    let mut out = Vec::new();
    p.server.conn.poll_transmit(&mut out);
    (p.server.closed().cloned(), String::from_utf8(out).unwrap())
}

/// PROTOCOL.md §6.1, §7, §9.2: `versions: []` is malformed; a `sign_alg`
/// or `seal_alg` offer (policy not `off`) naming no algorithm the server
/// knows fails negotiation whatever the decision would be, `optional`
/// included, and an empty list names none; `seal_alg` may be a string or a
/// list, like `sign_alg`; with the policy `off` the algorithm is ignored.
#[test]
fn hello_field_rules() {
    let (r, _) = server_on_edited_hello(client_config(2), server_config(2), |h| {
        h.replace(r#""versions":[1]"#, r#""versions":[]"#)
    });
    assert_eq!(
        r,
        Some(CloseReason::Protocol(ProtocolError::InvalidField {
            field: "versions",
            detail: "names no version"
        }))
    );
    let gmac_hmac = r#"["aes-256-gmac","hmac-sha256"]"#;
    let seal = r#""seal_alg":"aes-256-cbc-hmac-sha256""#;
    let code = |r: Option<CloseReason>| r.map(|r| r.code());
    // (client signing, client sealing, edit, expected close code)
    let cases: Vec<(Policy, Policy, String, String, Option<CloseCode>)> = vec![
        // Signing offers.
        (
            Policy::Optional,
            Policy::Off,
            gmac_hmac.into(),
            "[]".into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Optional,
            Policy::Off,
            gmac_hmac.into(),
            r#"["rot13"]"#.into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Optional,
            Policy::Off,
            gmac_hmac.into(),
            r#""rot13""#.into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Optional,
            Policy::Off,
            gmac_hmac.into(),
            r#"["rot13","hmac-sha256"]"#.into(),
            None,
        ),
        (
            Policy::Off,
            Policy::Off,
            gmac_hmac.into(),
            r#"["rot13"]"#.into(),
            None,
        ),
        (Policy::Off, Policy::Off, gmac_hmac.into(), "7".into(), None),
        // Sealing offers: a string or a list.
        (
            Policy::Off,
            Policy::Preferred,
            seal.into(),
            r#""seal_alg":["x","aes-256-cbc-hmac-sha256"]"#.into(),
            None,
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":["aes-256-cbc-hmac-sha256"]"#.into(),
            None,
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":["x"]"#.into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":[]"#.into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":"x""#.into(),
            Some(CloseCode::NegotiationFailed),
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":7"#.into(),
            Some(CloseCode::InvalidFrame),
        ),
        (
            Policy::Off,
            Policy::Optional,
            seal.into(),
            r#""seal_alg":[7]"#.into(),
            Some(CloseCode::InvalidFrame),
        ),
        (
            Policy::Off,
            Policy::Off,
            seal.into(),
            r#""seal_alg":7"#.into(),
            None,
        ),
    ];
    for (sign, sealing, from, to, want) in cases {
        let mut c = client_config(2);
        c.signing = sign;
        c.encryption = sealing;
        let (r, challenge) =
            server_on_edited_hello(c, server_config(2), |h| h.replacen(&from, &to, 1));
        assert_eq!(code(r.clone()), want, "{sign:?}/{sealing:?} {to}: {r:?}");
        if want.is_none() {
            assert!(
                challenge.contains(r#""t":"challenge""#),
                "{to}: {challenge}"
            );
        }
        if to.contains(r#"["x","aes"#) {
            assert!(challenge.contains(r#""seal":true"#), "{challenge}");
        }
    }
}

/// PROTOCOL.md §6.2: `sign_alg` is sent exactly when `sign` is true; a
/// receiver ignores it when `sign` is false (§5: unused members are not
/// checked), and checks it as usual when sealing is on too, although
/// sealed frames do not use it.
#[test]
fn challenge_sign_alg_rules() {
    use jsonlink_proto::crypto;
    // A challenge with `sign` false and a meaningless `sign_alg`: the client
    // takes it, and authenticates against a server proof over that line.
    let mut p = Pair::seeded(Instant::now(), 4);
    p.record();
    p.step(); // hello delivered, challenge in flight
    let mut ch = std::mem::take(&mut p.server.in_flight);
    p.server.conn.poll_transmit(&mut ch);
    let ch = String::from_utf8(ch).unwrap();
    let ch = ch.lines().next().unwrap().replacen(
        r#""sign":false,"#,
        r#""sign":false,"sign_alg":"rot13","#,
        1,
    );
    p.inject(Who::Client, format!("{ch}\n").as_bytes());
    assert!(p.client.closed().is_none(), "{:?}", p.client.events);
    let hello = p.client.log.as_ref().unwrap();
    let hello = hello.split(|b| *b == b'\n').next().unwrap().to_vec();
    let secret = Secret::from_bytes(jsonlink_proto::testing::TEST_SECRET.to_vec()).unwrap();
    let th = crypto::transcript_hash(&hello, ch.as_bytes(), &[]);
    use base64::Engine as _;
    let proof =
        base64::engine::general_purpose::STANDARD.encode(crypto::server_proof(&secret, &th));
    p.client.conn.poll_transmit(&mut Vec::new()); // its auth
    p.inject(
        Who::Client,
        format!(r#"{{"t":"ok","proof":"{proof}"}}"#).as_bytes(),
    );
    p.inject(Who::Client, b"\n");
    match p.client.events.first() {
        Some(Event::Authenticated(a)) => assert!(!a.signing && a.sign_alg.is_none()),
        other => panic!("{other:?}"),
    }

    // With sealing on, `sign_alg` is checked all the same.
    let mut c = client_config(4);
    c.signing = Policy::Required;
    c.encryption = Policy::Required;
    c.sign_algs = vec![jsonlink_proto::SignAlg::Aes256Gmac];
    let mut p = Pair::new(Instant::now(), c, server_config(4), vec![], vec![]);
    p.tamper(Who::Server, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        assert!(
            s.contains(r#""sign":true,"sign_alg":"aes-256-gmac","seal":true"#),
            "{s}"
        );
        *b = s.replacen("aes-256-gmac", "hmac-sha256", 1).into_bytes();
    });
    p.drive();
    assert!(
        matches!(
            p.client.closed(),
            Some(CloseReason::Protocol(
                ProtocolError::NegotiationFailed { .. }
            ))
        ),
        "{:?}",
        p.client.events
    );
}

#[test]
fn h4_channel_binding_mismatch_fails_auth() {
    let mut p = Pair::new(
        Instant::now(),
        client_config(1),
        server_config(1),
        vec![1; 32],
        vec![2; 32],
    );
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed))
    );
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
}

#[test]
fn commands_before_auth_are_refused() {
    let mut p = pair();
    assert_eq!(
        p.client.conn.send(&raw("1")),
        Err(SendError::NotAuthenticated)
    );
    assert_eq!(
        p.server.conn.request(p.now, &raw("1"), None),
        Err(SendError::NotAuthenticated)
    );
}

#[test]
fn backpressure_blocks_then_unblocks() {
    let mut c = client_config(1);
    c.max_outbound = 4096;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    let body = raw(&format!("\"{}\"", "x".repeat(1000)));
    let mut sent = 0;
    loop {
        match p.client.conn.send(&body) {
            Ok(()) => sent += 1,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!((4..=5).contains(&sent), "{sent}");
    assert!(p.client.conn.outbound_len() < 4096 + 1100);
    p.drive();
    assert!(p.client.events.contains(&Event::SendUnblocked));
    assert_eq!(messages(&p.server).len(), sent);
    p.client.conn.send(&body).unwrap();
}

#[test]
fn non_compact_payloads_cannot_break_framing() {
    let mut p = connected();
    let pretty = raw("{\n  \"op\": \"x\",\n  \"v\": [1,\n 2]\n}");
    p.client.conn.send(&pretty).unwrap();
    let now = p.now;
    p.client.conn.request(now, &pretty, None).unwrap();
    p.client.conn.ping(Some(&pretty)).unwrap();
    p.drive();
    assert!(p.server.closed().is_none(), "{:?}", p.server.events);
    let m = messages(&p.server);
    let v: serde_json::Value = serde_json::from_str(&m[0]).unwrap();
    assert_eq!(v, serde_json::json!({"op": "x", "v": [1, 2]}));
    let (rid, op, _) = requests(&p.server)[0].clone();
    assert_eq!(op.as_deref(), Some("x"));
    p.server.conn.respond(rid, Ok(&pretty)).unwrap();
    p.drive();
    assert!(resolutions(&p.client)[0].1.is_ok());
}

/// PROTOCOL.md §5: payloads are JSON text, passed through as exact bytes.
/// Numbers are never converted (`1.0` stays `1.0`, `1e400` and
/// integers past 64 bits arrive as written, `-0` keeps its sign) and
/// escapes are not decoded, in every payload (message and request bodies,
/// answers, error data, ping data) and every protection mode.
#[test]
fn payload_bytes_pass_through_unchanged() {
    let values = [
        "1.0",
        "1e400",
        "-0",
        "-0.0",
        "1E+2",
        "123456789012345678901234567890",
        "18446744073709551616",
        "0.1000000000000000055511151231257827",
        r#""\u00e9""#,
        r#""é""#,
        r#""\ud83d\ude00\/\b""#,
        r#"{"op":"x\u0041","a":1.0,"b":[1e400,-0,{}],"c":"\u00e9\"","d":null}"#,
        r#"[ 1 , 2.50 ]"#,
    ];
    for (sign, seal) in [(false, false), (true, false), (false, true)] {
        let mut c = client_config(3);
        let mut s = server_config(3);
        let policy = |on| if on { Policy::Required } else { Policy::Off };
        (c.signing, s.signing) = (policy(sign), policy(sign));
        (c.encryption, s.encryption) = (policy(seal), policy(seal));
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        p.connect();
        let now = p.now;
        for v in values {
            p.client.conn.send(&raw(v)).unwrap();
            p.client.conn.request(now, &raw(v), None).unwrap();
            p.client.conn.request(now, &raw("0"), None).unwrap();
            p.client
                .conn
                .ping(Some(&raw(&format!(r#"{{"v":{v}}}"#))))
                .unwrap();
            p.drive();
            let events = p.server.take_events();
            let [
                Event::Message { body: m, .. },
                Event::Request {
                    id: r1, body: b1, ..
                },
                Event::Request { id: r2, .. },
                Event::Ping { data: Some(d) },
            ] = events.as_slice()
            else {
                panic!("{v}: {events:?}")
            };
            assert_eq!((m.get(), b1.get()), (v, v));
            assert_eq!(d.get(), format!(r#"{{"v":{v}}}"#));
            // Answers and error data, back the other way.
            p.server.conn.respond(*r1, Ok(&raw(v))).unwrap();
            let err = RemoteError {
                data: Some(v.to_owned()),
                ..RemoteError::new("c", "m")
            };
            p.server.conn.respond(*r2, Err(&err)).unwrap();
            p.drive();
            let r = resolutions(&p.client);
            p.client.take_events();
            let [(_, Ok(answer)), (_, Err(RequestError::Remote(e)))] = r.as_slice() else {
                panic!("{v}: {r:?}")
            };
            assert_eq!(answer.get(), v);
            assert_eq!(e.data.as_deref(), Some(v));
        }
    }
}

/// Signing algorithm negotiation: the server picks the first of its list
/// that the client offered, both sides report it, frames carry its tag,
/// and an offer or choice outside the lists fails with `negotiation_failed`.
#[test]
fn h7_signing_algorithm_negotiation() {
    use jsonlink_proto::SignAlg::{Aes256Gmac as Gmac, HmacSha256 as Hmac};
    // (client list, server list, expected choice; None = negotiation_failed)
    let cases: [(&[_], &[_], _); 6] = [
        (&[Gmac, Hmac], &[Gmac, Hmac], Some(Gmac)),
        (&[Hmac, Gmac], &[Gmac, Hmac], Some(Gmac)),
        (&[Gmac, Hmac], &[Hmac, Gmac], Some(Hmac)),
        (&[Hmac], &[Gmac, Hmac], Some(Hmac)),
        (&[Gmac], &[Gmac], Some(Gmac)),
        (&[Gmac], &[Hmac], None),
    ];
    for (client_algs, server_algs, want) in cases {
        let case = format!("{client_algs:?} / {server_algs:?}");
        let mut c = client_config(5);
        c.signing = Policy::Required;
        c.sign_algs = client_algs.to_vec();
        let mut s = server_config(5);
        s.sign_algs = server_algs.to_vec();
        let mut p = Pair::new(Instant::now(), c, s, vec![2; 32], vec![2; 32]);
        p.drive();
        let Some(alg) = want else {
            assert_eq!(
                p.server.closed().map(CloseReason::code),
                Some(CloseCode::NegotiationFailed),
                "{case}"
            );
            assert_eq!(
                p.client.closed().map(CloseReason::code),
                Some(CloseCode::NegotiationFailed),
                "{case}"
            );
            continue;
        };
        for peer in [&p.client, &p.server] {
            let Some(Event::Authenticated(a)) = peer.events.first().cloned() else {
                panic!("{case}: {:?}", peer.events)
            };
            assert_eq!(a.sign_alg, Some(alg), "{case}");
        }
        p.client.take_events();
        p.server.take_events();
        p.client.conn.send(&raw(r#"{"op":"x"}"#)).unwrap();
        let mut wire = Vec::new();
        p.client.conn.poll_transmit(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        let tag = wire
            .split(r#""s":""#)
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap();
        assert_eq!(
            tag.len(),
            if alg == Gmac { 24 } else { 44 },
            "{case}: {wire}"
        );
        p.inject(Who::Server, wire.as_bytes());
        assert_eq!(messages(&p.server), vec![r#"{"op":"x"}"#], "{case}");
    }
}

/// The `sign_alg` offer on the wire: a string for one algorithm, a list
/// for several; unknown names are skipped; too long a list or no known
/// name fails; a challenge naming an algorithm the client did not offer
/// fails on the client.
#[test]
fn h7_sign_alg_offer_forms_and_bad_choices() {
    let hello_of = |algs: Vec<jsonlink_proto::SignAlg>| {
        let mut c = client_config(6);
        c.sign_algs = algs;
        let mut p = Pair::new(Instant::now(), c, server_config(6), vec![], vec![]);
        let mut hello = Vec::new();
        p.client.conn.poll_transmit(&mut hello);
        (p, String::from_utf8(hello).unwrap())
    };
    let (_, one) = hello_of(vec![jsonlink_proto::SignAlg::HmacSha256]);
    assert!(one.contains(r#""sign_alg":"hmac-sha256","#), "{one}");
    let (_, two) = hello_of(jsonlink_proto::SignAlg::ALL.to_vec());
    assert!(
        two.contains(r#""sign_alg":["aes-256-gmac","hmac-sha256"],"#),
        "{two}"
    );

    // Unknown names are skipped; the known one is chosen. The client is
    // preferred-signing so the server turns signing on.
    let replace_offer = |offer: &str| {
        let mut c = client_config(6);
        c.signing = Policy::Preferred;
        let mut p = Pair::new(Instant::now(), c, server_config(6), vec![], vec![]);
        let mut hello = Vec::new();
        p.client.conn.poll_transmit(&mut hello);
        let h = String::from_utf8(hello)
            .unwrap()
            .replace(r#"["aes-256-gmac","hmac-sha256"]"#, offer);
        p.inject(Who::Server, h.as_bytes());
        p
    };
    let p = replace_offer(r#"["rot13","hmac-sha256"]"#);
    assert!(p.server.closed().is_none(), "{:?}", p.server.closed());
    let many = format!("[{}]", vec![r#""hmac-sha256""#; 17].join(","));
    for (offer, code) in [
        (r#"["rot13"]"#, CloseCode::NegotiationFailed),
        (r#""rot13""#, CloseCode::NegotiationFailed),
        ("[]", CloseCode::NegotiationFailed),
        (r#"[1]"#, CloseCode::InvalidFrame),
        ("7", CloseCode::InvalidFrame),
        (many.as_str(), CloseCode::InvalidFrame),
    ] {
        let p = replace_offer(offer);
        assert_eq!(
            p.server.closed().map(CloseReason::code),
            Some(code),
            "{offer}"
        );
    }

    // A challenge choosing an algorithm the client did not offer (a broken
    // or hostile server): the client refuses before sending its proof.
    let mut c = client_config(6);
    c.signing = Policy::Required;
    c.sign_algs = vec![jsonlink_proto::SignAlg::Aes256Gmac];
    let mut p = Pair::new(Instant::now(), c, server_config(6), vec![], vec![]);
    p.tamper(Who::Server, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        *b = s
            .replace(
                r#""sign_alg":"aes-256-gmac""#,
                r#""sign_alg":"hmac-sha256""#,
            )
            .into_bytes();
    });
    p.drive();
    assert!(matches!(
        p.client.closed(),
        Some(CloseReason::Protocol(
            ProtocolError::NegotiationFailed { .. }
        ))
    ));
    // A challenge with signing on and no algorithm is malformed.
    let mut p = Pair::new(
        Instant::now(),
        client_config(6),
        server_config(6),
        vec![],
        vec![],
    );
    p.client.conn.poll_transmit(&mut Vec::new());
    let challenge = r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"s","designation":"d","conn":1,"max_frame":8388608,"sign":true,"seal":false}"#;
    p.inject(Who::Client, format!("{challenge}\n").as_bytes());
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::InvalidFrame)
    );
}
