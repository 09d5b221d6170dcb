#![forbid(unsafe_code)]
//! What the handshake negotiates (PROTOCOL.md §6.1, §6.2, §7, §9): every
//! combination of protection policies, the signing algorithm, and the
//! rules for the `hello` and `challenge` members that carry them.

mod common;

use common::*;
use jsonlink_proto::crypto;
use jsonlink_proto::testing::{TEST_SECRET, Who};
use jsonlink_proto::{CloseCode, CloseReason, Policy, ProtocolError, Secret, SignAlg};

/// One cell of the protection matrix: the client's and the server's
/// signing (`cs`, `ss`) and sealing (`ce`, `se`) policies. Either both
/// sides agree on what negotiation decides and their frames show it, or
/// both fail with `negotiation_failed`.
fn check_policies(cs: Policy, ss: Policy, ce: Policy, se: Policy) {
    let case = format!("sign {cs:?}/{ss:?} enc {ce:?}/{se:?}");
    let mut p = Setup::seed(3)
        .binding(1)
        .client(|c| (c.signing, c.encryption) = (cs, ce))
        .server(|s| (s.signing, s.encryption) = (ss, se))
        .pair();
    p.drive();
    let (Ok(sign), Ok(seal)) = (Policy::negotiate(cs, ss), Policy::negotiate(ce, se)) else {
        assert_both_closed_with(&p, CloseCode::NegotiationFailed, &case);
        return;
    };
    let a = authentication(&p.client);
    assert_eq!(
        a.signing,
        sign || seal,
        "{case}: signed (sealing signs too)"
    );
    assert_eq!(a.encryption, seal, "{case}: sealed");
    p.client.take_events();
    p.server.take_events();
    p.client.conn.send(&raw(r#"{"op":"x","s":"é\n"}"#)).unwrap();
    let req = deliver_request(&mut p, Who::Client, "[1]");
    assert_eq!(
        messages(&p.server),
        vec![r#"{"op":"x","s":"é\n"}"#],
        "{case}: the message arrives"
    );
    p.server
        .conn
        .respond(req.peer_id, Ok(&raw("true")))
        .unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(req.id, "true")],
        "{case}: the request is answered"
    );
    p.client.conn.send(&raw(r#""secret-payload""#)).unwrap();
    let wire = take_output_text(&mut p.client);
    assert_eq!(
        wire.contains("secret-payload"),
        !seal,
        "{case}: the payload shows unless sealed: {wire}"
    );
    assert_eq!(
        wire.starts_with(r#"{"q":"#),
        sign || seal,
        "{case}: frames are wrapped when protected: {wire}"
    );
}

#[test]
fn h7_protection_matrix_every_policy_combination() {
    use Policy::*;
    let all = [Off, Optional, Preferred, Required];
    for cs in all {
        for ss in all {
            for ce in all {
                for se in all {
                    check_policies(cs, ss, ce, se);
                }
            }
        }
    }
}

/// The server's outcome (`None`: it answered with a challenge) and what it
/// wrote, when the hello of `setup`'s client arrives edited.
fn server_on_edited_hello(
    setup: Setup,
    edit: impl Fn(String) -> String,
) -> (Option<CloseReason>, String) {
    let mut p = setup.pair();
    let hello = edit(take_output_text(&mut p.client));
    p.inject(Who::Server, hello.as_bytes());
    (p.server.closed().cloned(), take_output_text(&mut p.server))
}

/// PROTOCOL.md §6.1, §7, §9.2: `versions: []` is malformed; a `sign_alg`
/// or `seal_alg` offer (policy not `off`) naming no algorithm the server
/// knows fails negotiation whatever the decision would be, `optional`
/// included, and an empty list names none; `seal_alg` may be a string or a
/// list, like `sign_alg`; with the policy `off` the algorithm is ignored.
#[test]
fn hello_field_rules() {
    let (r, _) = server_on_edited_hello(Setup::seed(2), |h| {
        h.replace(r#""versions":[1]"#, r#""versions":[]"#)
    });
    assert_eq!(
        r,
        Some(CloseReason::Protocol(ProtocolError::InvalidField {
            field: "versions",
            detail: "names no version"
        })),
        "versions [] is malformed"
    );
    use Policy::{Off, Optional, Preferred};
    let refused = || Some(CloseCode::NegotiationFailed);
    let malformed = || Some(CloseCode::InvalidFrame);
    // The signing offer `sign_alg` in place of the default list, for a
    // client with this signing policy (sealing off), and the close code
    // expected (`None`: a challenge).
    let signing = [
        (Optional, "[]", refused()),
        (Optional, r#"["rot13"]"#, refused()),
        (Optional, r#""rot13""#, refused()),
        (Optional, r#"["rot13","hmac-sha256"]"#, None),
        (Off, r#"["rot13"]"#, None),
        (Off, "7", None),
    ];
    // The same for the sealing offer `seal_alg` (signing off).
    let sealing = [
        (Preferred, r#"["x","aes-256-cbc-hmac-sha256"]"#, None),
        (Optional, r#"["aes-256-cbc-hmac-sha256"]"#, None),
        (Optional, r#"["x"]"#, refused()),
        (Optional, "[]", refused()),
        (Optional, r#""x""#, refused()),
        (Optional, "7", malformed()),
        (Optional, "[7]", malformed()),
        (Off, "7", None),
    ];
    let offers = signing
        .map(|(policy, offer, want)| {
            let from = r#"["aes-256-gmac","hmac-sha256"]"#.to_owned();
            ((policy, Off), from, offer.to_owned(), want)
        })
        .into_iter()
        .chain(sealing.map(|(policy, offer, want)| {
            let from = r#""seal_alg":"aes-256-cbc-hmac-sha256""#.to_owned();
            ((Off, policy), from, format!(r#""seal_alg":{offer}"#), want)
        }));
    for ((sign, seal), from, to, want) in offers {
        let setup = Setup::seed(2).client(|c| (c.signing, c.encryption) = (sign, seal));
        let (r, challenge) = server_on_edited_hello(setup, |h| h.replacen(&from, &to, 1));
        assert_eq!(
            r.as_ref().map(CloseReason::code),
            want,
            "{sign:?}/{seal:?} {to}: {r:?}"
        );
        if want.is_none() {
            assert!(
                challenge.contains(r#""t":"challenge""#),
                "{to}: a challenge: {challenge}"
            );
        }
        if seal == Preferred {
            assert!(
                challenge.contains(r#""seal":true"#),
                "one known algorithm in the list turns sealing on: {challenge}"
            );
        }
    }
}

/// PROTOCOL.md §6.2: `sign_alg` is sent exactly when `sign` is true; a
/// receiver ignores it when `sign` is false (§5: unused members are not
/// checked), and checks it as usual when sealing is on too, although
/// sealed frames do not use it.
#[test]
fn challenge_sign_alg_rules() {
    // A challenge with `sign` false and a meaningless `sign_alg`: the client
    // takes it, and authenticates against a server proof over that line.
    let mut p = Setup::seed(4).recorded();
    p.step(); // hello delivered, challenge in flight
    let mut ch = std::mem::take(&mut p.server.in_flight);
    ch.extend(take_output(&mut p.server));
    let ch = String::from_utf8(ch).unwrap();
    let ch = ch.lines().next().unwrap().replacen(
        r#""sign":false,"#,
        r#""sign":false,"sign_alg":"rot13","#,
        1,
    );
    inject_line(&mut p, Who::Client, &ch);
    assert!(
        p.client.closed().is_none(),
        "the client takes it: {:?}",
        p.client.events
    );
    let hello = log_text(&p.client).lines().next().unwrap().to_owned();
    let secret = Secret::from_bytes(TEST_SECRET.to_vec()).unwrap();
    let th = crypto::transcript_hash(hello.as_bytes(), ch.as_bytes(), &[]);
    use base64::Engine as _;
    let proof =
        base64::engine::general_purpose::STANDARD.encode(crypto::server_proof(&secret, &th));
    take_output(&mut p.client); // its auth
    p.inject(
        Who::Client,
        format!(r#"{{"t":"ok","proof":"{proof}"}}"#).as_bytes(),
    );
    p.inject(Who::Client, b"\n");
    let a = authentication(&p.client);
    assert!(
        !a.signing && a.sign_alg.is_none(),
        "authenticated without signing: {a:?}"
    );

    // With sealing on, `sign_alg` is checked all the same.
    let mut p = Setup::seed(4)
        .client(|c| {
            c.signing = Policy::Required;
            c.encryption = Policy::Required;
            c.sign_algs = vec![SignAlg::Aes256Gmac];
        })
        .pair();
    rewrite(&mut p, Who::Server, |s| {
        assert!(
            s.contains(r#""sign":true,"sign_alg":"aes-256-gmac","seal":true"#),
            "the challenge names the algorithm: {s}"
        );
        s.replacen("aes-256-gmac", "hmac-sha256", 1)
    });
    p.drive();
    assert!(
        failed_negotiation(&p.client),
        "an algorithm the client did not offer"
    );
}

/// Signing algorithm negotiation: the server picks the first of its list
/// that the client offered, both sides report it, frames carry its tag,
/// and an offer or choice outside the lists fails with `negotiation_failed`.
#[test]
fn h7_signing_algorithm_negotiation() {
    use SignAlg::{Aes256Gmac as Gmac, HmacSha256 as Hmac};
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
        let mut p = Setup::seed(5)
            .binding(2)
            .client(|c| {
                c.signing = Policy::Required;
                c.sign_algs = client_algs.to_vec();
            })
            .server(|s| s.sign_algs = server_algs.to_vec())
            .pair();
        p.drive();
        let Some(alg) = want else {
            assert_both_closed_with(&p, CloseCode::NegotiationFailed, &case);
            continue;
        };
        for peer in [&p.client, &p.server] {
            assert_eq!(
                authentication(peer).sign_alg,
                Some(alg),
                "{case}: both sides report the choice"
            );
        }
        p.client.take_events();
        p.server.take_events();
        p.client.conn.send(&raw(r#"{"op":"x"}"#)).unwrap();
        let wire = take_output_text(&mut p.client);
        let tag = string_member(&wire, "s").unwrap();
        assert_eq!(
            tag.len(),
            if alg == Gmac { 24 } else { 44 },
            "{case}: the frame carries its tag: {wire}"
        );
        p.inject(Who::Server, wire.as_bytes());
        assert_eq!(
            messages(&p.server),
            vec![r#"{"op":"x"}"#],
            "{case}: the frame verifies"
        );
    }
}

/// The `sign_alg` offer on the wire: a string for one algorithm, a list
/// for several; unknown names are skipped; too long a list or no known
/// name fails; a challenge naming an algorithm the client did not offer
/// fails on the client.
#[test]
fn h7_sign_alg_offer_forms_and_bad_choices() {
    let hello_of = |algs: Vec<SignAlg>| {
        let mut p = Setup::seed(6).client(|c| c.sign_algs = algs).pair();
        take_output_text(&mut p.client)
    };
    let one = hello_of(vec![SignAlg::HmacSha256]);
    assert!(
        one.contains(r#""sign_alg":"hmac-sha256","#),
        "one algorithm: a string: {one}"
    );
    let two = hello_of(SignAlg::ALL.to_vec());
    assert!(
        two.contains(r#""sign_alg":["aes-256-gmac","hmac-sha256"],"#),
        "several: a list: {two}"
    );

    // Unknown names are skipped; the known one is chosen. The client is
    // preferred-signing so the server turns signing on.
    let server_code_for_offer = |offer: &str| {
        let setup = Setup::seed(6).client(|c| c.signing = Policy::Preferred);
        let (r, _) = server_on_edited_hello(setup, |h| {
            h.replace(r#"["aes-256-gmac","hmac-sha256"]"#, offer)
        });
        r.as_ref().map(CloseReason::code)
    };
    assert_eq!(
        server_code_for_offer(r#"["rot13","hmac-sha256"]"#),
        None,
        "an unknown name is skipped"
    );
    let many = format!("[{}]", vec![r#""hmac-sha256""#; 17].join(","));
    for (offer, code) in [
        (r#"["rot13"]"#, CloseCode::NegotiationFailed),
        (r#""rot13""#, CloseCode::NegotiationFailed),
        ("[]", CloseCode::NegotiationFailed),
        (r#"[1]"#, CloseCode::InvalidFrame),
        ("7", CloseCode::InvalidFrame),
        (many.as_str(), CloseCode::InvalidFrame),
    ] {
        assert_eq!(server_code_for_offer(offer), Some(code), "{offer}");
    }

    // A challenge choosing an algorithm the client did not offer (a broken
    // or hostile server): the client refuses before sending its proof.
    let mut p = Setup::seed(6)
        .client(|c| {
            c.signing = Policy::Required;
            c.sign_algs = vec![SignAlg::Aes256Gmac];
        })
        .pair();
    rewrite(&mut p, Who::Server, |s| {
        s.replace(
            r#""sign_alg":"aes-256-gmac""#,
            r#""sign_alg":"hmac-sha256""#,
        )
    });
    p.drive();
    assert!(
        failed_negotiation(&p.client),
        "a choice the client did not offer"
    );
    // A challenge with signing on and no algorithm is malformed.
    let mut p = Setup::seed(6).pair();
    take_output(&mut p.client);
    let challenge = r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"s","designation":"d","conn":1,"max_frame":8388608,"sign":true,"seal":false}"#;
    inject_line(&mut p, Who::Client, challenge);
    assert_eq!(
        close_code(&p.client),
        Some(CloseCode::InvalidFrame),
        "signing without an algorithm"
    );
}
