//! TLS configuration over real TLS on 127.0.0.1: servers that require
//! client certificates (mutual TLS), a server certificate replaced while
//! links are up, and fault case C5 of tests/faults/FAULTS.md (a TLS
//! configuration error while connecting, before and after a first
//! authentication), each C5 case on tokio and on smol.
//!
//! Waits on time only bound how long an expected event may take (a
//! failure, never a pass).

use std::sync::Arc;

use jsonlink_rt::{Error, Event, EventKind, Reconnect, Runtime, ServerName};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{
    Fixture, add_handler, another_pki, assert_add_answered, bind, ms, server_identity,
};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::tests_on_tokio_and_smol;
use jsonlink_tests::waits::{EXPECT_WITHIN, next_event_within, within};

/// A TLS configuration error as the fault table names it.
fn describe(e: &Error) -> String {
    match e {
        Error::TlsConfig { error, .. } => match error {
            rustls::Error::InvalidCertificate(c) => {
                let kind = format!("{c:?}");
                let kind = kind.split([' ', '{', '(']).next().unwrap_or_default();
                format!("TlsConfig(InvalidCertificate({kind}))")
            }
            other => format!("TlsConfig({other:?})"),
        },
        other => format!("{other:?}"),
    }
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let tls = fx.pki.server_config_requiring_client_cert().expect("tls");
        let server = bind(fx.server_with_tls(tls, server_identity())).await;
        let without = fx
            .client(server.local_addr())
            .reconnect(Reconnect::Never)
            .connect()
            .await;
        assert!(
            without.is_err(),
            "a client without a certificate must fail TLS"
        );
        let with = fx
            .client_with_tls(
                server.local_addr(),
                fx.pki.client_config_with_client_cert().expect("tls"),
                fx.pki.server_name(),
            )
            .reconnect(Reconnect::Never)
            .connect()
            .await
            .expect("a client with the CA's certificate authenticates");
        assert!(
            with.is_connected(),
            "the client with a certificate is connected"
        );
        with.close().await;
    });
}

#[test]
fn a_replaced_certificate_serves_new_handshakes_and_keeps_old_links() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = fx.running_server().await;
        let old = fx.connected_client(&server).await;

        let renewed = another_pki();
        server.set_tls_config(renewed.server_config().expect("tls"));
        // A client trusting only the old CA now fails TLS (a configuration
        // error: retrying cannot fix it)…
        let r = fx.client(server.local_addr()).connect().await;
        assert!(
            matches!(r, Err(Error::TlsConfig { .. })),
            "a client trusting only the old CA: {r:?}"
        );
        // …one trusting the new CA gets in…
        let new = fx
            .client_with_tls(
                server.local_addr(),
                renewed.client_config().expect("tls"),
                renewed.server_name(),
            )
            .connect()
            .await
            .expect("a client trusting the new CA connects");
        assert_add_answered(&new, 1, 2).await;
        // …and the existing link is untouched.
        assert_add_answered(&old, 3, 4).await;
    });
}

// ------------------------------------------------------------------- C5

/// What each bad configuration must say, and the words of its fix.
const BEFORE_AUTH: &str = "unknown CA: start() + wait_connected() ended at once with \
     TlsConfig(InvalidCertificate(UnknownIssuer)) (\"add the CA certificate that issued it to the \
     root store\"); name mismatch: TlsConfig(InvalidCertificate(NotValidForNameContext)) \
     (\"connect with a server name the certificate lists\"); each after 1 attempt, 1 Error event, \
     no reconnect attempt, the client closed; connect() fails with the same error";

/// A client TLS configuration that cannot work, and what it must say.
struct BadConfig {
    what: &'static str,
    tls: rustls::ClientConfig,
    server_name: ServerName<'static>,
    /// The error, as [`describe`] names it.
    error: String,
    /// Words of the fix the error's text must carry.
    fix: &'static str,
}

async fn c5_before_the_first_authentication(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let server = bind(fx.server()).await;
    let addr = server.local_addr();
    let stranger = another_pki();
    let cases = [
        BadConfig {
            what: "unknown CA",
            tls: stranger.client_config().expect("tls"),
            server_name: fx.pki.server_name(),
            error: "TlsConfig(InvalidCertificate(UnknownIssuer))".into(),
            fix: "add the CA certificate that issued it to the root store",
        },
        BadConfig {
            what: "name mismatch",
            tls: fx.pki.client_config().expect("tls"),
            server_name: ServerName::try_from("wrong.example").expect("name"),
            error: "TlsConfig(InvalidCertificate(NotValidForNameContext))".into(),
            fix: "connect with a server name the certificate lists",
        },
    ];
    for case in cases {
        let what = case.what;
        let builder = || {
            fx.client_with_tls(addr, case.tls.clone(), case.server_name.clone())
                .reconnect(Reconnect::Fixed(ms(10)))
        };
        let client = builder().start();
        let r = within(EXPECT_WITHIN, client.wait_connected())
            .await
            .unwrap_or_else(|| {
                panic!("{what}: wait_connected kept waiting through a TLS configuration error")
            });
        let e = r.expect_err("connected with a bad TLS configuration");
        assert_eq!(describe(&e), case.error, "{what}: {e:?}");
        let text = e.to_string();
        eprintln!("C5 {what}: {text}");
        assert!(
            text.contains(case.fix),
            "{what}: the error says what to fix: {text}"
        );
        assert!(client.is_closed(), "{what}: the client ended");
        let mut errors = Vec::new();
        while let Some(ev) = client.try_next_event() {
            match ev {
                Event::Error { error, .. } => errors.push(describe(&error)),
                other => panic!("{what}: unexpected {other:?}"),
            }
        }
        assert_eq!(
            errors,
            std::slice::from_ref(&case.error),
            "{what}: one Error event"
        );
        let again = client.wait_connected().await;
        assert_eq!(
            again.err().map(|e| describe(&e)),
            Some(case.error.clone()),
            "{what}: later callers get the same error"
        );
        match builder().connect().await {
            Err(e) => assert_eq!(
                describe(&e),
                case.error,
                "{what}: connect() reports it the same way"
            ),
            Ok(_) => panic!("{what}: connect() succeeded"),
        }
    }
    assert_eq!(server.stats().authenticated, 0, "nobody authenticated");
    record("C5", BEFORE_AUTH);
}

/// Failed attempts watched per outage.
const ATTEMPTS: u32 = 6;
const OUTAGES: usize = 2;
const AFTER_AUTH: &str = "after a first authentication, a server switching to a certificate \
     of an unknown CA: TlsConfig(InvalidCertificate(UnknownIssuer)) reported once per outage \
     (6 failed attempts each, two outages), the client kept retrying and reconnected once the \
     good certificate was back";

async fn c5_after_a_first_authentication(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let stranger = another_pki();
    let server = bind(fx.server()).await;
    add_handler(&server);
    let client = fx
        .client(server.local_addr())
        .reconnect(Reconnect::Fixed(ms(10)))
        .start();
    client.wait_connected().await.expect("connected");
    client.wait_for(EventKind::Authenticated).await;
    for outage in 0..OUTAGES {
        server.set_tls_config(stranger.server_config().expect("tls"));
        let link = server.links().pop().expect("a link");
        link.close("rotating the certificate").await;
        let mut errors = Vec::new();
        loop {
            match next_event_within(&client, EXPECT_WITHIN, "failed attempts").await {
                Event::Closed { .. } => {}
                Event::Error { error, .. } => errors.push(describe(&error)),
                Event::ReconnectAttempt { attempt, .. } if attempt > ATTEMPTS => break,
                Event::ReconnectAttempt { .. } => {}
                other => panic!("outage {outage}: unexpected {other:?}"),
            }
        }
        assert!(
            !client.is_closed(),
            "outage {outage}: the client kept retrying"
        );
        assert_eq!(
            errors,
            ["TlsConfig(InvalidCertificate(UnknownIssuer))"],
            "outage {outage}: reported once"
        );
        server.set_tls_config(fx.pki.server_config().expect("tls"));
        loop {
            match next_event_within(&client, EXPECT_WITHIN, "the reconnect").await {
                Event::Authenticated { .. } => break,
                Event::ReconnectAttempt { .. } => {}
                other => panic!("outage {outage}: unexpected {other:?}"),
            }
        }
        assert_add_answered(&client, 2, 3).await;
    }
    client.close().await;
    record("C5/rotation", AFTER_AUTH);
}

tests_on_tokio_and_smol!(c5_before_the_first_authentication =>
    c5_a_tls_configuration_error_before_the_first_authentication_ends_wait_connected_tokio,
    c5_a_tls_configuration_error_before_the_first_authentication_ends_wait_connected_smol);

tests_on_tokio_and_smol!(c5_after_a_first_authentication =>
    c5_after_a_first_authentication_a_certificate_error_is_reported_once_per_outage_tokio,
    c5_after_a_first_authentication_a_certificate_error_is_reported_once_per_outage_smol);
