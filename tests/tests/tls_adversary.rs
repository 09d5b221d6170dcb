//! The TLS-level half of H5 and H6 (tests/faults/FAULTS.md): a real `Server` (and, for
//! the version mismatch, a real `Client`) on 127.0.0.1 against the
//! adversarial raw-TLS peer of `jsonlink_tests`. The core halves (the same
//! bytes fed to a `Connection`) are in proto/tests/faults_handshake.rs; these rows are
//! `H5/tls` and `H6/tls` in the fault table.
//!
//! Every case must end within one round trip or at the handshake deadline
//! at the latest, with a typed error event, never hang; here the deadline is
//! set far past the test's limit, so "at once" is what is checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::{
    CloseReason, Config, Connection, ConnectionParams, DEFAULT_PRE_AUTH_MAX_FRAME, ProtocolError,
    Side,
};
use jsonlink_rt::{Error, Reconnect, Server};
use jsonlink_tests::adversary::closed_by_peer;
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, bind, localhost};
use jsonlink_tests::runtimes::{Gauges, LIMIT, on_tokio};
use jsonlink_tests::waits::{AT_ONCE, SETTLE, error_from};
use jsonlink_tests::{RawTlsClient, RawTlsServer, rss_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server's handshake deadline: far past the test, so a case that
/// waited for it would fail the test instead of passing late.
const DEADLINE: Duration = Duration::from_secs(60);
/// A server whose handshake deadline is [`DEADLINE`].
async fn server(fx: &Fixture) -> Server {
    bind(fx.server().handshake_timeout(DEADLINE)).await
}

fn is_tls_error(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData)
}

/// A core connection on `side` with `fx`'s secret, for forging honest
/// handshake lines.
fn core(fx: &Fixture, side: Side) -> Connection {
    Connection::new(
        Arc::new(Config::new(
            fx.secret.clone(),
            jsonlink_rt::Identity::new("forger", "h5"),
        )),
        side,
        Instant::now(),
        ConnectionParams::default(),
    )
}

fn first_line(conn: &mut Connection) -> String {
    let mut out = Vec::new();
    conn.poll_transmit(&mut out);
    String::from_utf8(out).expect("utf-8")
}

// ------------------------------------------------------------------- H5

#[test]
fn h5_tls_plain_tcp_http_a_non_jsonlink_tls_peer_and_a_version_mismatch_fail_at_once() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = server(&fx).await;
        let addr = server.local_addr();

        // Plain TCP to the TLS port: garbage, then an HTTP request. rustls
        // rejects the first record; the server reports it and closes.
        let mut plain = Vec::new();
        for bytes in [
            &b"\x00\x01garbage that is no TLS record\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ] {
            let t = Instant::now();
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let me = tcp.local_addr().expect("addr");
            tcp.write_all(bytes).await.expect("write");
            let _alert = closed_by_peer(&mut tcp).await;
            let error = error_from(&server, me).await;
            assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
            assert!(is_tls_error(&error), "{bytes:?}: {error:?}");
            plain.push(error);
        }

        // TLS, then HTTP: not jsonlink. The first line is not JSON: a close
        // frame invalid_json, the socket closed, an error event.
        let t = Instant::now();
        let mut http = RawTlsClient::connect(addr, fx.client_tls())
            .await
            .expect("TLS");
        let me = http.local_addr().expect("addr");
        http.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let (bytes, ended) = http.read_to_end(SETTLE, 1 << 20).await;
        assert!(ended, "the server did not close");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(r#"{"t":"close","code":"invalid_json""#) && text.ends_with("}\n"),
            "{text}"
        );
        let error = error_from(&server, me).await;
        assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
        assert!(
            matches!(
                &error,
                Error::Handshake(CloseReason::Protocol(ProtocolError::InvalidJson { .. }))
            ),
            "{error:?}"
        );

        // Version mismatch over TLS, against the server: an honest hello
        // offering versions 2 and 3 only.
        let mut forger = core(&fx, Side::Client);
        let hello = first_line(&mut forger);
        assert!(hello.contains(r#""versions":[1]"#), "{hello}");
        let hello = hello.replace(r#""versions":[1]"#, r#""versions":[2,3]"#);
        let t = Instant::now();
        let mut newer = RawTlsClient::connect(addr, fx.client_tls())
            .await
            .expect("TLS");
        let me = newer.local_addr().expect("addr");
        newer.send(hello.as_bytes()).await.expect("write");
        let (bytes, ended) = newer.read_to_end(SETTLE, 1 << 20).await;
        assert!(ended, "the server did not close");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""code":"version_mismatch""#) && text.contains(r#""versions":[1]"#),
            "{text}"
        );
        let server_error = error_from(&server, me).await;
        assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
        let mismatch = |e: &Error, theirs: &[u64]| {
            matches!(e, Error::Auth(CloseReason::Protocol(ProtocolError::VersionMismatch { ours, theirs: t }))
                if ours == &[1] && t == theirs)
        };
        assert!(mismatch(&server_error, &[2, 3]), "{server_error:?}");

        // ...and against a client: a server answering with version 2.
        let listener = TcpListener::bind(localhost()).await.expect("bind");
        let fake = listener.local_addr().expect("addr");
        let fake_server = async {
            let mut peer = RawTlsServer::accept(&listener, fx.server_tls())
                .await
                .expect("accept");
            let mut buf = vec![0u8; 16 * 1024];
            let mut hello = Vec::new();
            while !hello.ends_with(b"\n") {
                let n = peer.get_mut().read(&mut buf).await.expect("read hello");
                assert!(n > 0, "EOF before the hello");
                hello.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
            let mut honest = core(&fx, Side::Server);
            honest.handle_input(Instant::now(), &hello);
            let challenge = first_line(&mut honest);
            assert!(challenge.contains(r#""version":1"#), "{challenge}");
            let challenge = challenge.replace(r#""version":1"#, r#""version":2"#);
            peer.send(challenge.as_bytes()).await.expect("write");
            let (bytes, ended) = peer.read_to_end(SETTLE, 1 << 20).await;
            assert!(ended, "the client did not close");
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let t = Instant::now();
        let connect = fx.client(fake).reconnect(Reconnect::Never).connect();
        let (client, sent) = futures_lite::future::zip(connect, fake_server).await;
        assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
        let client_error = client.expect_err("a client offered version 2 only");
        assert!(mismatch(&client_error, &[2]), "{client_error:?}");
        assert!(
            sent.contains(r#""code":"version_mismatch""#) && sent.contains(r#""versions":[1]"#),
            "{sent}"
        );
        assert_eq!(
            server.stats().connections,
            0,
            "every refused connection is released"
        );

        record(
            "H5/tls",
            format!(
                "plain TCP with garbage / an HTTP request: {} / {} events at once (not at the \
                 60 s deadline), socket closed; TLS then GET / HTTP/1.1: close frame \
                 invalid_json, Handshake(Protocol(InvalidJson)) at once; version mismatch over \
                 TLS: close frame version_mismatch with versions [1], {} on the server and {} \
                 from Client::connect",
                io_kind(&plain[0]),
                io_kind(&plain[1]),
                short(&server_error),
                short(&client_error),
            ),
        );
    });
}

fn io_kind(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("Io({:?})", io.kind()),
        other => format!("{other:?}"),
    }
}

/// `Auth(Protocol(VersionMismatch { ours: [1], theirs: [2, 3] }))`.
fn short(e: &Error) -> String {
    match e {
        Error::Auth(CloseReason::Protocol(p)) => format!("Auth(Protocol({p:?}))"),
        other => format!("{other:?}"),
    }
}

// ------------------------------------------------------------------- H6

/// The oversized hello: the default max frame, the allocation a server
/// without a pre-auth limit would make for it.
const HUGE: usize = jsonlink_proto::DEFAULT_MAX_FRAME;

#[test]
fn h6_tls_a_pre_auth_frame_over_the_limit_is_refused_before_it_is_buffered() {
    on_tokio(Gauges::Exclusive, |rt| async move {
        let fx = Fixture::new(rt);
        let server = server(&fx).await;
        let addr = server.local_addr();
        let mut huge = br#"{"t":"hello","pad":""#.to_vec();
        huge.resize(HUGE, b'p');
        huge.extend_from_slice(b"\"}\n");

        let mut results = Vec::new();
        // Complete (with its `\n`), and never ending (no `\n` at all).
        for line in [&huge[..], &huge[..HUGE]] {
            let mut raw = RawTlsClient::connect(addr, fx.client_tls())
                .await
                .expect("TLS");
            let me = raw.local_addr().expect("addr");
            let baseline = rss_bytes().expect("rss");
            let t = Instant::now();
            // Written in 64 KiB pieces until the server hangs up.
            let mut written = 0;
            for piece in line.chunks(64 * 1024) {
                match tokio::time::timeout(LIMIT, raw.send(piece)).await {
                    Ok(Ok(())) => written += piece.len(),
                    _ => break,
                }
            }
            let error = error_from(&server, me).await;
            let took = t.elapsed();
            let growth = rss_bytes().expect("rss").saturating_sub(baseline);
            let (bytes, ended) = raw.read_to_end(SETTLE, 1 << 20).await;
            assert!(ended, "the server did not close");
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                text.starts_with(r#"{"t":"close","code":"frame_too_large""#),
                "{text}"
            );
            assert!(
                matches!(
                    &error,
                    Error::Handshake(CloseReason::Protocol(ProtocolError::FrameTooLarge { limit }))
                        if *limit == DEFAULT_PRE_AUTH_MAX_FRAME
                ),
                "{error:?}"
            );
            assert!(took < AT_ONCE, "{took:?}");
            // The server read little more than the limit before closing;
            // what the adversary got out was at most that plus the socket
            // buffers, and the server's memory never took the frame.
            assert!(written < HUGE, "all {written} bytes were taken");
            assert!(
                growth < (HUGE / 8) as u64,
                "RSS grew {growth} bytes for a {HUGE}-byte frame"
            );
            eprintln!(
                "H6/tls: {} bytes written of {HUGE} before the close, RSS +{growth} bytes, {took:?}",
                written
            );
            results.push(error);
        }
        assert_eq!(
            server.stats().connections,
            0,
            "every refused connection is released"
        );
        record(
            "H6/tls",
            format!(
                "an 8 MiB hello over TLS, complete or never ending: close frame frame_too_large, \
                 {} at once; the server buffered no more than the limit (RSS grew less than 1 MiB)",
                match &results[0] {
                    Error::Handshake(r) => format!("Handshake({r:?})"),
                    other => format!("{other:?}"),
                }
            ),
        );
    });
}
