//! What the handshake negotiates, over real TLS on 127.0.0.1: R9 of
//! tests/faults/FAULTS.md (an answer too large for the requester, with and
//! without the `response_too_large` extension; the core half is
//! proto/tests/faults_requests.rs `r9_*`), and PROTOCOL.md §3's TLS 1.2 rule (no
//! session without the extended master secret, on either side).
//!
//! Its own test binary, because it installs the process-wide `tracing`
//! subscriber that captures the warnings R9 checks.

use std::time::{Duration, Instant};

use jsonlink_proto::{Extensions, RemoteError};
use jsonlink_rt::{Error, RawJson, Reconnect, Request};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, bind, connect, localhost};
use jsonlink_tests::logs::{Capture, capture_logs};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Everything this binary logs at WARN and above (the process-wide
/// subscriber, installed by the first call).
fn warnings() -> &'static Capture {
    capture_logs(tracing::Level::WARN)
}

// ------------------------------------------------------------------- R9

/// Long enough that a timeout would be unmistakable (and past the test's
/// limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The requester's max_frame.
const REQUESTER_MAX_FRAME: usize = 1024;
/// A body whose answer frame is over `REQUESTER_MAX_FRAME`.
const BIG: usize = 2000;

#[test]
fn r9_an_answer_over_the_requesters_max_frame_fails_at_once_is_counted_logged_and_frees_its_slot() {
    warnings();
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        // Two incoming slots: a leaked slot per too-large answer would make
        // the third request `busy`.
        let server = bind(
            fx.server()
                .max_incoming_requests(2)
                .request_timeout(REQUEST_TIMEOUT),
        )
        .await;
        let big = "y".repeat(BIG);
        // A task handler that reports what `respond` returned.
        let (said_tx, said_rx) = async_channel::unbounded::<Result<(), Error>>();
        let body = big.clone();
        server
            .handlers()
            .on_request("r9.echo", move |req: Request| {
                let said = said_tx.clone();
                let body = body.clone();
                async move {
                    let _ = said.send(req.respond(&body)).await;
                }
            });
        // An inline handler and a typed handler answering the same.
        let body = big.clone();
        server
            .handlers()
            .on_request_inline("r9.inline", move |_l, _b| {
                Ok(RawJson::from_value(&body).expect("json"))
            });
        let body = big.clone();
        server
            .handlers()
            .handle_request("r9.typed", move |_l, _v: Value| {
                let body = body.clone();
                async move { Ok(body) }
            });
        server
            .handlers()
            .handle_request("r9.small", |_l, v: Value| async move { Ok(v) });

        let mut outcome = Vec::new();
        for ext in [Extensions::ALL, Extensions::NONE] {
            let client = connect(
                fx.client(server.local_addr())
                    .max_frame(REQUESTER_MAX_FRAME)
                    .request_timeout(REQUEST_TIMEOUT)
                    .extensions(ext)
                    .reconnect(Reconnect::Never),
            )
            .await;
            let link = authenticated(&server).await;
            let auth = link.auth().expect("auth").clone();
            assert_eq!(
                auth.extensions, ext,
                "the server negotiated what the client offered"
            );
            assert_eq!(
                client
                    .link()
                    .and_then(|l| l.auth().cloned())
                    .map(|a| a.extensions),
                Some(ext),
                "the client negotiated what it offered"
            );
            let want = if ext.is_empty() {
                RemoteError::INTERNAL
            } else {
                RemoteError::RESPONSE_TOO_LARGE
            };
            let before = server.stats().responses_too_large;
            let mut codes = Vec::new();
            let mut refused = None;
            for op in ["r9.echo", "r9.inline", "r9.typed", "r9.echo", "r9.inline"] {
                let t = Instant::now();
                let r = client.request::<Value, _>(&json!({"op": op})).await;
                let elapsed = t.elapsed();
                let e = match r {
                    Err(Error::Remote(e)) => e,
                    other => panic!("{op}: expected a remote error, got {other:?}"),
                };
                assert_eq!(e.code, want, "{op}: {e:?}");
                assert!(elapsed < REQUEST_TIMEOUT / 10, "{op}: {elapsed:?}");
                codes.push(e.code);
                if op == "r9.echo" {
                    let said = said_rx.recv().await.expect("handler result");
                    match said {
                        Err(Error::ResponseTooLarge { size, limit }) => {
                            assert!(size > BIG && limit == REQUESTER_MAX_FRAME, "{size} {limit}");
                            refused = Some(format!(
                                "ResponseTooLarge {{ size: {size}, limit: {limit} }}"
                            ));
                        }
                        other => panic!("respond returned {other:?}"),
                    }
                }
            }
            codes.dedup();
            // The server's counter is published just after the answer is
            // written: it has no event to await.
            let counted = || server.stats().responses_too_large - before;
            assert!(eventually(SETTLE, || counted() == 5).await, "{}", counted());
            let counted = counted();
            // The link is up, and no slot was leaked: small requests are
            // still answered, not `busy`.
            for n in 0..3 {
                let v: Value = client
                    .request(&json!({"op": "r9.small", "n": n}))
                    .await
                    .expect("small request");
                assert_eq!(v["n"], n, "a small request answered, not busy");
            }
            assert_eq!(
                client.link().map(|l| l.id()),
                Some(link.id()),
                "still the same link"
            );
            outcome.push(format!(
                "{}: respond returned {} at once; the requester got Remote({}) at once for task, inline and typed handlers (not the 60 s timeout); {counted} counted in Stats::responses_too_large",
                if ext.is_empty() { "extension not accepted" } else { "extension accepted" },
                refused.expect("the task handler answered"),
                codes.join("/"),
            ));
            client.close().await;
        }
        // One warning per replaced answer, naming the op and both sizes.
        let lines = warnings().lines_with("answer too large");
        for op in ["r9.echo", "r9.inline", "r9.typed"] {
            let mine: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains(&format!("op={op:?} ")))
                .collect();
            let n = if op == "r9.typed" { 2 } else { 4 };
            assert_eq!(mine.len(), n, "{op}: {lines:#?}");
            for l in mine {
                assert!(l.contains("WARN"), "{l}");
                assert!(l.contains(&format!("limit={REQUESTER_MAX_FRAME}")), "{l}");
                assert!(l.contains("size=20"), "{l}");
            }
        }
        outcome.push(format!(
            "{} warnings naming the op and both sizes; the 2 incoming slots were never leaked (5 too-large answers each, then small requests answered, none busy) (core, every protected mode: see faults::r9_*)",
            lines.len()
        ));
        record("R9", outcome.join("; "));
    });
}

// ---------------------------------------------- TLS 1.2 needs EMS (§3)

const EMS: u16 = 0x0017;

fn push_u16(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}

/// Wraps `body` as a handshake message of `kind` in one TLS 1.2 record.
fn record_of(kind: u8, body: &[u8], record_version: u16) -> Vec<u8> {
    let mut hs = vec![kind];
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    hs.extend_from_slice(len.get(1..).expect("3 bytes"));
    hs.extend_from_slice(body);
    let mut rec = vec![0x16];
    push_u16(&mut rec, record_version);
    push_u16(&mut rec, u16::try_from(hs.len()).expect("small"));
    rec.extend_from_slice(&hs);
    rec
}

fn extension(o: &mut Vec<u8>, kind: u16, data: &[u8]) {
    push_u16(o, kind);
    push_u16(o, u16::try_from(data.len()).expect("small"));
    o.extend_from_slice(data);
}

/// A TLS 1.2-only ClientHello offering ECDHE suites (ECDSA and RSA), with
/// or without the extended master secret extension.
fn client_hello_tls12(with_ems: bool) -> Vec<u8> {
    let mut b = Vec::new();
    push_u16(&mut b, 0x0303);
    b.extend_from_slice(&[0x11; 32]);
    b.push(0); // no session id
    let suites: [u16; 6] = [0xc02b, 0xc02c, 0xcca9, 0xc02f, 0xc030, 0xcca8];
    push_u16(&mut b, 12);
    for s in suites {
        push_u16(&mut b, s);
    }
    b.extend_from_slice(&[1, 0]); // null compression
    let mut ext = Vec::new();
    extension(
        &mut ext,
        0x000a,
        &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
    );
    extension(&mut ext, 0x000b, &[1, 0]);
    extension(
        &mut ext,
        0x000d,
        &[
            0, 10, 0x04, 0x03, 0x05, 0x03, 0x08, 0x04, 0x08, 0x05, 0x04, 0x01,
        ],
    );
    extension(&mut ext, 0xff01, &[0]);
    if with_ems {
        extension(&mut ext, EMS, &[]);
    }
    push_u16(&mut b, u16::try_from(ext.len()).expect("small"));
    b.extend_from_slice(&ext);
    record_of(1, &b, 0x0301)
}

/// The first TLS record the peer sends back: (content type, first body
/// byte), e.g. (0x16, 2) for a ServerHello, (0x15, _) for an alert.
async fn first_record(tcp: &mut TcpStream) -> (u8, u8) {
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("a record");
    (head[0], head[5])
}

#[test]
fn a_server_refuses_tls12_without_the_extended_master_secret() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        // The same configuration given without `require_ems` (as a caller's
        // own might be): the server sets it.
        let mut tls = fx.pki.server_config().expect("tls");
        tls.require_ems = false;
        server.set_tls_config(tls);
        for (with_ems, want) in [(true, (0x16, 2)), (false, (0x15, 2))] {
            let mut tcp = TcpStream::connect(server.local_addr()).await.expect("tcp");
            tcp.write_all(&client_hello_tls12(with_ems))
                .await
                .expect("write");
            // With EMS a ServerHello; without, a fatal alert (level 2).
            assert_eq!(
                first_record(&mut tcp).await,
                want,
                "EMS offered: {with_ems}"
            );
        }
    });
}

/// A TLS "server" that answers any ClientHello with a TLS 1.2 ServerHello
/// (ECDHE-ECDSA-AES128-GCM), with or without the extended master secret,
/// then hangs up.
async fn fake_tls12_server(listener: TcpListener, with_ems: bool) {
    let (mut tcp, _) = listener.accept().await.expect("accept");
    let mut head = [0u8; 5];
    tcp.read_exact(&mut head).await.expect("record header");
    let mut hello = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
    tcp.read_exact(&mut hello).await.expect("ClientHello");
    let mut b = Vec::new();
    push_u16(&mut b, 0x0303);
    b.extend_from_slice(&[0x22; 32]);
    b.push(0);
    push_u16(&mut b, 0xc02b);
    b.push(0);
    let mut ext = Vec::new();
    if with_ems {
        extension(&mut ext, EMS, &[]);
    }
    push_u16(&mut b, u16::try_from(ext.len()).expect("small"));
    b.extend_from_slice(&ext);
    tcp.write_all(&record_of(2, &b, 0x0303))
        .await
        .expect("ServerHello");
    // Whatever the client says next (an alert, or nothing while it waits
    // for the certificate), then hang up.
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await;
}

#[test]
fn a_client_refuses_a_tls12_server_without_the_extended_master_secret() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        for with_ems in [true, false] {
            let listener = TcpListener::bind(localhost()).await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let fake = tokio::spawn(fake_tls12_server(listener, with_ems));
            // A client configuration without `require_ems`: the client sets it.
            let mut tls = fx.pki.client_config().expect("tls");
            tls.require_ems = false;
            let r = fx
                .client_with_tls(addr, tls, fx.pki.server_name())
                .reconnect(Reconnect::Never)
                .connect()
                .await;
            let e = match r {
                Err(e) => e.to_string(),
                Ok(_) => panic!("connected to a fake server"),
            };
            assert_eq!(
                e.contains("ExtendedMasterSecret"),
                !with_ems,
                "EMS offered by the server: {with_ems}: {e}"
            );
            fake.await.expect("fake server");
        }
    });
}
