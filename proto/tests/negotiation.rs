#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! What the handshake negotiates (PROTOCOL.md §6.1, §6.2, §7, §9): every
//! combination of protection policies, the signing algorithm, and the
//! rules for the `hello` and `challenge` members that carry them.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{CloseCode, CloseReason, Event, Policy, ProtocolError, Secret};

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
