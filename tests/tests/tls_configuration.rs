//! Server options over real TLS on 127.0.0.1: the per-IP connection limit
//! and servers that require client certificates (mutual TLS).

use std::sync::Arc;

use jsonlink_tests::fixture;

use jsonlink_rt::{
    Client, DevPki, Error, Event, EventKind, Identity, Reconnect, Runtime, Secret, Server,
};

/// The shared harness: a tokio runtime built for the test, bounded in time.
fn on_tokio<Fut: Future<Output = ()>>(test: impl FnOnce(Arc<dyn Runtime>) -> Fut) {
    fixture::on_tokio(fixture::Gauges::Shared, test);
}

#[test]
fn per_ip_limit_refuses_the_extra_connection_from_one_address() {
    on_tokio(|rt| async move {
        let pki = DevPki::generate().unwrap();
        let secret = Secret::generate().unwrap();
        let server = Server::builder(
            rt.clone(),
            pki.server_config().unwrap(),
            secret.clone(),
            Identity::new("s", "s"),
        )
        .max_connections_per_ip(Some(2))
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
        let client = || {
            Client::builder(
                rt.clone(),
                server.local_addr(),
                pki.client_config().unwrap(),
                pki.server_name(),
                secret.clone(),
                Identity::new("c", "c"),
            )
            .reconnect(Reconnect::Never)
        };
        let a = client().connect().await.unwrap();
        let b = client().connect().await.unwrap();
        let c = client().connect().await;
        assert!(
            c.is_err(),
            "third connection from 127.0.0.1 must be refused"
        );
        let refused = loop {
            match server.wait_for(EventKind::Error).await {
                Some(Event::Error {
                    error: Error::Refused { limit },
                    ..
                }) => break limit,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        };
        assert_eq!(refused, "max_connections_per_ip");
        // The two admitted links still work.
        server
            .handlers()
            .handle_request("echo", |_l, v: serde_json::Value| async move { Ok(v) });
        for c in [&a, &b] {
            let v: serde_json::Value = c
                .request(&serde_json::json!({"op": "echo", "n": 7}))
                .await
                .unwrap();
            assert_eq!(v["n"], 7);
        }
        assert!(b.is_connected());
        assert_eq!(server.stats().connections_refused, 1);
        a.close().await;
        b.close().await;
    });
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    on_tokio(|rt| async move {
        let pki = DevPki::generate().unwrap();
        let secret = Secret::generate().unwrap();
        let server = Server::builder(
            rt.clone(),
            pki.server_config_requiring_client_cert().unwrap(),
            secret.clone(),
            Identity::new("s", "s"),
        )
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
        let without = Client::builder(
            rt.clone(),
            server.local_addr(),
            pki.client_config().unwrap(),
            pki.server_name(),
            secret.clone(),
            Identity::new("anon", "c"),
        )
        .reconnect(Reconnect::Never)
        .connect()
        .await;
        assert!(
            without.is_err(),
            "a client without a certificate must fail TLS"
        );
        let with = Client::builder(
            rt.clone(),
            server.local_addr(),
            pki.client_config_with_client_cert().unwrap(),
            pki.server_name(),
            secret,
            Identity::new("cert", "c"),
        )
        .reconnect(Reconnect::Never)
        .connect()
        .await
        .expect("a client with the CA's certificate authenticates");
        assert!(with.is_connected());
        with.close().await;
    });
}
