//! Where a client connects (issue 13): host names resolved through the
//! runtime, address lists tried in order, re-resolution on reconnect,
//! resolution failures reported once per outage, and the `on_connect`
//! hook run once per authentication, before the link is handed over.
//!
//! Everything stays on 127.0.0.1: `localhost` is resolved by each
//! runtime's own resolver, and the other tests answer resolution
//! themselves through a [`Runtime`] wrapper ([`Resolver`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonlink_rt::{
    BoxFuture, Client, ClientBuilder, DevPki, Error, Event, EventKind, Identity, Link, Listener,
    Reconnect, Runtime, Secret, Server, ServerName, Target, TlsStream,
};
use jsonlink_tests::runtimes::on_each_runtime;
use serde_json::{Value, json};

/// The reconnect policy of these tests: quick, without jitter.
const RETRY: Reconnect = Reconnect::Fixed(Duration::from_millis(10));

/// A runtime whose resolver answers what the test says (and counts the
/// questions); everything else is `inner`'s.
#[derive(Debug)]
struct Resolver {
    inner: Arc<dyn Runtime>,
    answer: Mutex<Result<Vec<SocketAddr>, io::ErrorKind>>,
    lookups: AtomicUsize,
}

impl Resolver {
    /// Wraps `inner`, resolving every host to `answer`.
    fn new(inner: Arc<dyn Runtime>, answer: Result<Vec<SocketAddr>, io::ErrorKind>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            answer: Mutex::new(answer),
            lookups: AtomicUsize::new(0),
        })
    }

    /// From now on, every host resolves to `answer`.
    fn answer(&self, answer: Result<Vec<SocketAddr>, io::ErrorKind>) {
        *self.answer.lock().expect("answer lock") = answer;
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Runtime for Resolver {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        self.inner.spawn(future);
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }

    fn resolve(&self, _host: &str, _port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("answer lock").clone();
        Box::pin(async move { answer.map_err(io::Error::from) })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        self.inner.bind(addr)
    }

    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> BoxFuture<'static, io::Result<TlsStream>> {
        self.inner.connect_tls(addr, config, server_name)
    }
}

// ---------------------------------------------------------------- fixtures

/// Certificates (for `localhost` and 127.0.0.1) and a shared secret.
struct Fixture {
    pki: DevPki,
    secret: Secret,
}

impl Fixture {
    fn new() -> Self {
        Self {
            pki: DevPki::generate().expect("dev certificates"),
            secret: Secret::generate().expect("OS randomness"),
        }
    }

    /// A server on 127.0.0.1 answering `echo` with its arguments.
    async fn server(&self, rt: Arc<dyn Runtime>) -> Server {
        let tls = self.pki.server_config().expect("server TLS");
        let server = Server::builder(rt, tls, self.secret.clone(), Identity::new("s", "test"))
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind");
        server
            .handlers()
            .handle_request("echo", |_link, v: Value| async move { Ok(v) });
        server
    }

    /// A client of `target`, checking the server's certificate for
    /// `server_name` (or the target's host, given `None`).
    fn client(
        &self,
        rt: Arc<dyn Runtime>,
        target: impl Into<Target>,
        server_name: Option<ServerName<'static>>,
    ) -> ClientBuilder {
        let tls = self.pki.client_config().expect("client TLS");
        Client::builder(
            rt,
            target,
            tls,
            server_name,
            self.secret.clone(),
            Identity::new("c", "test"),
        )
        .reconnect(RETRY)
    }
}

/// A loopback address nothing listens on (connections are refused).
fn closed_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe bind");
    probe.local_addr().expect("probe addr")
}

/// Whether `client` gets its own arguments back from `echo`.
async fn echoes(client: &Client) -> bool {
    let answer: Result<Value, Error> = client.request(&json!({"op": "echo", "n": 7})).await;
    answer.is_ok_and(|v| v == json!({"n": 7}))
}

/// The link of the client's next `Authenticated` event on `server`.
async fn next_authenticated_to(client: &Client, server: SocketAddr) -> Link {
    loop {
        match client.wait_for(EventKind::Authenticated).await {
            Some(Event::Authenticated { link, .. }) if link.peer_addr() == server => return link,
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
}

/// The resolution failures among the client's events until its
/// `attempts`-th reconnect attempt from now.
async fn resolution_failures_over(client: &Client, attempts: usize) -> usize {
    let (mut seen, mut failures) = (0, 0);
    while seen < attempts {
        match client.next_event().await.expect("the event stream ended") {
            Event::ReconnectAttempt { .. } => seen += 1,
            Event::Error {
                error: Error::Resolve { .. },
                ..
            } => failures += 1,
            _ => {}
        }
    }
    failures
}

// ------------------------------------------------------------------- tests

#[test]
fn a_client_dials_localhost_by_name_with_each_runtimes_resolver() {
    on_each_runtime(|rt| async move {
        let fx = Fixture::new();
        let server = fx.server(rt.clone()).await;
        let target = format!("localhost:{}", server.local_addr().port());
        // No server name given: the certificate is checked for the host.
        let client = fx
            .client(rt, target, None)
            .connect()
            .await
            .expect("connect");
        assert_eq!(
            client.link().map(|l| l.peer_addr()),
            Some(server.local_addr()),
            "connected to the server through localhost"
        );
        assert!(echoes(&client).await, "the link carries requests");
    });
}

#[test]
fn an_unreachable_address_ahead_of_the_good_one_is_passed_over() {
    on_each_runtime(|rt| async move {
        let fx = Fixture::new();
        let server = fx.server(rt.clone()).await;
        let addrs = vec![closed_port(), server.local_addr()];
        let name = Some(fx.pki.server_name());
        let client = fx.client(rt, addrs, name).connect().await.expect("connect");
        assert_eq!(
            client.link().map(|l| l.peer_addr()),
            Some(server.local_addr()),
            "the second address took the connection"
        );
        assert!(echoes(&client).await, "the link carries requests");
    });
}

#[test]
fn a_host_is_resolved_again_on_reconnect_and_found_where_it_moved() {
    on_each_runtime(|rt| async move {
        let fx = Fixture::new();
        let first = fx.server(rt.clone()).await;
        let resolver = Resolver::new(rt.clone(), Ok(vec![first.local_addr()]));
        let client = fx
            .client(resolver.clone(), "localhost:1", None)
            .connect()
            .await
            .expect("connect");
        next_authenticated_to(&client, first.local_addr()).await;
        assert_eq!(resolver.lookups(), 1, "one lookup for the first attempt");

        // The service moves: a new server elsewhere, the old one gone.
        let second = fx.server(rt.clone()).await;
        resolver.answer(Ok(vec![second.local_addr()]));
        first.shutdown(rt.now()).await;
        drop(first);

        next_authenticated_to(&client, second.local_addr()).await;
        assert!(
            resolver.lookups() >= 2,
            "resolved again before reconnecting"
        );
        assert!(echoes(&client).await, "the new link carries requests");
    });
}

#[test]
fn a_resolution_failure_is_reported_once_per_outage() {
    on_each_runtime(|rt| async move {
        let fx = Fixture::new();
        let server = fx.server(rt.clone()).await;
        let resolver = Resolver::new(rt.clone(), Err(io::ErrorKind::NotFound));
        let client = fx.client(resolver.clone(), "localhost:1", None).start();
        assert_eq!(
            resolution_failures_over(&client, 5).await,
            1,
            "five failed attempts, one report"
        );

        // The name resolves: the outage ends.
        resolver.answer(Ok(vec![server.local_addr()]));
        let link = next_authenticated_to(&client, server.local_addr()).await;

        // A second outage: the link goes, and the name stops resolving.
        resolver.answer(Err(io::ErrorKind::NotFound));
        let server_side = server.link(link.id()).expect("the server's side");
        server_side.close("go away").await;
        assert_eq!(
            resolution_failures_over(&client, 5).await,
            1,
            "a new outage is reported once again"
        );
        assert!(resolver.lookups() >= 10, "every attempt resolved");
    });
}

#[test]
fn the_on_connect_hook_runs_once_per_authentication_before_the_link_is_handed_over() {
    on_each_runtime(|rt| async move {
        let fx = Fixture::new();
        let server = fx.server(rt.clone()).await;
        // What the server receives, in order: (link id, op).
        let (seen_tx, seen_rx) = async_channel::unbounded();
        for op in ["subscribe", "app"] {
            let seen_tx = seen_tx.clone();
            server.handlers().on_message(op, move |m| {
                let seen_tx = seen_tx.clone();
                async move {
                    let _ = seen_tx
                        .send((m.link.id(), m.op.map(|o| o.to_string())))
                        .await;
                }
            });
        }
        let hooks = Arc::new(AtomicUsize::new(0));
        let counted = hooks.clone();
        let client = fx
            .client(rt.clone(), server.local_addr(), Some(fx.pki.server_name()))
            .on_connect(move |link: Link| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    link.send(&json!({"op": "subscribe"}))
                        .await
                        .expect("subscribe");
                }
            })
            .connect()
            .await
            .expect("connect");
        let mut link = next_authenticated_to(&client, server.local_addr()).await;

        for reconnect in 0..=3 {
            // Handed over only after the hook: what the application sends
            // now comes after the hook's subscription on this link.
            let current = client.wait_connected().await.expect("connected");
            assert_eq!(current.id(), link.id(), "the client's link is the new one");
            client.send(&json!({"op": "app"})).await.expect("send");
            for expected in ["subscribe", "app"] {
                let (id, op) = seen_rx.recv().await.expect("a message");
                assert_eq!(
                    (id, op.as_deref()),
                    (link.id(), Some(expected)),
                    "link {} (reconnect {reconnect}): the hook's message first",
                    link.id()
                );
            }
            if reconnect == 3 {
                break;
            }
            let server_side = server.link(link.id()).expect("the server's side");
            server_side.close("reconnect").await;
            link = next_authenticated_to(&client, server.local_addr()).await;
        }
        assert_eq!(hooks.load(Ordering::SeqCst), 4, "one hook call per link");
        assert_eq!(
            client.stats().authenticated,
            4,
            "four authentications: the first and three reconnects"
        );
    });
}
