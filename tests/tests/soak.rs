//! L4 (tests/faults/FAULTS.md): a soak of requests across randomly injected disconnects,
//! over real TLS on 127.0.0.1.
//!
//! Clients reach the server through a TCP relay of the test's own that can
//! cut any connection abruptly. Every few hundred requests (at a random
//! point) one disruption is injected: the relay cuts a connection, a client
//! closes its link, the server closes a link, or the server restarts on
//! the same port. Meanwhile workers issue requests without pause; each
//! request resolves exactly once (the outcomes, counted by kind, add up to
//! the requests issued; every answer is the one asked for), and at the end
//! the open file descriptors and the tasks of the jsonlink runtime are back
//! to their baseline.
//!
//! `cargo test` runs 20 000 requests. The full soak is one million:
//!
//! ```sh
//! JSONLINK_SOAK_REQUESTS=1000000 cargo test --release -p jsonlink-tests --test soak -- --nocapture
//! ```
//!
//! (`JSONLINK_SOAK_SEED` replays a run's disruptions; the seed is printed.)

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonlink_rt::{Client, Error, Reconnect, RemoteError, Runtime, Server};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, backoff, bind, connect, hold_requests, localhost, ms};
use jsonlink_tests::gauges::assert_fds_back_to;
use jsonlink_tests::runtimes::{Gauges, on_tokio, on_tokio_within};
use jsonlink_tests::waits::{authenticated, rebind};
use jsonlink_tests::{CountingRuntime, open_fds};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Requests of the CI variant.
const CI_REQUESTS: u64 = 20_000;
const CLIENTS: usize = 4;
/// Concurrent request loops per client.
const WORKERS: usize = 16;
/// Mean number of resolved requests between two disruptions.
const DISRUPT_EVERY: u64 = 500;
/// One request in this many asks for an answer that comes too late.
const SLOW_EVERY: u64 = 250;

fn requests() -> u64 {
    std::env::var("JSONLINK_SOAK_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_REQUESTS)
}

/// splitmix64: a small, seedable generator for the disruptions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A TCP relay to the server whose connections the test can cut.
struct Relay {
    addr: SocketAddr,
    pipes: Arc<Mutex<HashMap<u64, AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(localhost()).await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let pipes: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
        let registry = pipes.clone();
        let accept = tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                next += 1;
                let id = next;
                let registry2 = registry.clone();
                // Registered before it runs, so a cut can find it; the
                // pipe removes itself when it ends.
                let mut map = registry.lock().expect("relay registry");
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    registry2.lock().expect("relay registry").remove(&id);
                });
                map.insert(id, pipe.abort_handle());
            }
        });
        Self {
            addr,
            pipes,
            accept,
        }
    }

    /// Cuts one connection at random (both of its sockets close at once);
    /// false if there was none.
    fn cut(&self, rng: &mut Rng) -> bool {
        let map = self.pipes.lock().expect("relay registry");
        let ids: Vec<u64> = map.keys().copied().collect();
        match ids.get(rng.below(ids.len() as u64) as usize) {
            Some(id) => {
                if let Some(h) = map.get(id) {
                    h.abort();
                }
                true
            }
            None => false,
        }
    }

    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let pipes: Vec<AbortHandle> = self
            .pipes
            .lock()
            .expect("relay registry")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for p in pipes {
            p.abort();
        }
    }
}

/// Request outcomes by kind.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, u64>>);

impl Tally {
    fn add(&self, kind: &'static str) {
        *self.0.lock().expect("tally").entry(kind).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("tally").clone()
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::ConnectionLost => "ConnectionLost",
        Error::NotConnected => "NotConnected",
        Error::Timeout => "Timeout",
        Error::ShuttingDown => "ShuttingDown",
        Error::Closed => "Closed",
        Error::Busy { .. } => "Busy",
        Error::NoHandler(_) => "NoHandler",
        Error::HandlerDropped(_) => "HandlerDropped",
        // The server's link was closing and refused the request unread.
        Error::Remote(r) if r.code == RemoteError::SHUTTING_DOWN => "Remote(shutting_down)",
        Error::Remote(_) => "Remote",
        Error::Decode(_) => "Decode",
        _ => "other",
    }
}

fn serve(server: &Server, rt: &Arc<dyn Runtime>) {
    server
        .handlers()
        .handle_request("echo", |_l, v: Value| async move { Ok(v["n"].clone()) });
    let rt = rt.clone();
    server
        .handlers()
        .handle_request("slow", move |_l, v: Value| {
            let sleep = rt.sleep_until(rt.now() + ms(50));
            async move {
                sleep.await;
                Ok(v["n"].clone())
            }
        });
}

/// One worker: requests until `total` have been issued; each outcome is
/// counted once.
async fn worker(
    client: Client,
    issued: Arc<AtomicU64>,
    resolved: Arc<AtomicU64>,
    total: u64,
    tally: Arc<Tally>,
    progress: Arc<tokio::sync::Notify>,
) {
    loop {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            issued.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let r = if n.is_multiple_of(SLOW_EVERY) {
            client
                .request_with_timeout::<u64, _>(&json!({"op": "slow", "n": n}), ms(10))
                .await
        } else {
            client
                .request::<u64, _>(&json!({"op": "echo", "n": n}))
                .await
        };
        match &r {
            Ok(v) => {
                assert_eq!(*v, n, "request {n} got the answer to {v}");
                tally.add("Ok");
            }
            Err(e) => tally.add(kind(e)),
        }
        resolved.fetch_add(1, Ordering::Relaxed);
        progress.notify_one();
        if matches!(r, Err(Error::NotConnected)) {
            // Disconnected: wait for the next link rather than spin.
            client.wait_connected().await.expect("client closed early");
        }
    }
}

#[test]
fn l4_soak_requests_across_random_disconnects_each_resolve_once_and_leave_nothing_behind() {
    let total = requests();
    let limit = Duration::from_secs(60 + total / 2_000);
    let seed = std::env::var("JSONLINK_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    on_tokio_within(limit, Gauges::Exclusive, |rt| async move {
        let mut rng = Rng(seed);
        let counting = CountingRuntime::new(rt);
        let rt: Arc<dyn Runtime> = counting.clone();
        let fx = Fixture::new(rt.clone());
        let fds_before = open_fds().expect("fds");
        let server_builder = || {
            fx.server()
                .close_timeout(ms(200))
                .handshake_timeout(Duration::from_secs(5))
        };
        let mut server = bind(server_builder()).await;
        serve(&server, &rt);
        let upstream = server.local_addr();
        let relay = Relay::start(upstream).await;
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|_| {
                fx.client(relay.addr)
                    .close_timeout(ms(200))
                    .reconnect(backoff(ms(5), ms(50)))
                    .events(false)
                    .start()
            })
            .collect();
        for c in &clients {
            c.wait_connected().await.expect("connected");
        }

        let issued = Arc::new(AtomicU64::new(0));
        let resolved = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Tally::default());
        let progress = Arc::new(tokio::sync::Notify::new());
        let start = Instant::now();
        let workers: Vec<_> = clients
            .iter()
            .flat_map(|c| (0..WORKERS).map(move |_| c.clone()))
            .map(|c| {
                tokio::spawn(worker(
                    c,
                    issued.clone(),
                    resolved.clone(),
                    total,
                    tally.clone(),
                    progress.clone(),
                ))
            })
            .collect();

        // The disruptions, at random points of the run.
        let mut disruptions: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut next = DISRUPT_EVERY / 2 + rng.below(DISRUPT_EVERY);
        while next < total {
            while resolved.load(Ordering::Relaxed) < next {
                progress.notified().await;
            }
            let what = match rng.below(8) {
                0..=2 => relay.cut(&mut rng).then_some("relay cut"),
                3 | 4 => {
                    let c = &clients[rng.below(CLIENTS as u64) as usize];
                    match c.link() {
                        Some(link) => {
                            link.close("soak: client drop").await;
                            Some("client close")
                        }
                        None => None,
                    }
                }
                5 | 6 => {
                    let links = server.links();
                    match links.get(rng.below(links.len() as u64) as usize) {
                        Some(link) => {
                            link.close("soak: server drop").await;
                            Some("server close")
                        }
                        None => None,
                    }
                }
                _ => {
                    server.shutdown(rt.now() + ms(20)).await;
                    drop(server);
                    server = rebind(server_builder, upstream).await;
                    serve(&server, &rt);
                    Some("server restart")
                }
            };
            if let Some(w) = what {
                *disruptions.entry(w).or_default() += 1;
            }

            next += DISRUPT_EVERY / 2 + rng.below(DISRUPT_EVERY);
        }
        for w in workers {
            w.await.expect("worker");
        }
        let wall = start.elapsed();

        // Exactly once: every issued request produced one outcome.
        let outcomes = tally.snapshot();
        let counted: u64 = outcomes.values().sum();
        assert_eq!(
            issued.load(Ordering::Relaxed),
            total,
            "every request was issued"
        );
        assert_eq!(
            resolved.load(Ordering::Relaxed),
            total,
            "every request resolved"
        );
        assert_eq!(counted, total, "{outcomes:?}");
        let allowed = [
            "Ok",
            "ConnectionLost",
            "NotConnected",
            "Timeout",
            "ShuttingDown",
            "Remote(shutting_down)",
        ];
        assert!(
            outcomes.keys().all(|k| allowed.contains(k)),
            "unexpected outcomes: {outcomes:?}"
        );
        assert!(
            outcomes.get("Ok").copied().unwrap_or(0) > total / 2,
            "most requests succeed"
        );
        for c in &clients {
            assert_eq!(c.stats().requests_in_flight, 0, "nothing left in flight");
        }
        let reconnects: u64 = clients.iter().map(|c| c.stats().connections_total).sum();

        // Everything goes; nothing is left behind.
        let tasks_during = counting.live();
        for c in &clients {
            c.close().await;
        }
        drop(clients);
        server.shutdown(rt.now() + ms(200)).await;
        drop(server);
        relay.stop().await;
        let settled = tokio::time::timeout(Duration::from_secs(10), counting.until_live(0)).await;
        assert!(
            settled.is_ok(),
            "{} jsonlink tasks still alive",
            counting.live()
        );
        assert_fds_back_to(fds_before, Duration::from_secs(10)).await;
        eprintln!(
            "L4 (seed {seed}): {total} requests in {wall:.2?} ({:.0}/s), {CLIENTS} clients x \
             {WORKERS} workers through a relay; disruptions {disruptions:?}; client connections \
             {reconnects}; outcomes {outcomes:?}; fds {fds_before} before, {:?} after; jsonlink \
             tasks {tasks_during} during, {} after",
            total as f64 / wall.as_secs_f64(),
            open_fds(),
            counting.live(),
        );
        record(
            "L4",
            "requests across random disruptions (relay cuts, client closes, server closes, \
             server restarts): each resolved exactly once (outcomes Ok / ConnectionLost / \
             NotConnected / Timeout / ShuttingDown / Remote(shutting_down) add up to the \
             requests issued, never Closed; every answer the one asked for); fds and jsonlink \
             tasks back to baseline",
        );
    });
}

/// Found by L4: a request made while the client's link was closing (a
/// close from either side, requests still draining) failed with
/// `Error::Closed`, which for a `Client` means closed by its owner — a
/// caller stopping on it would stop for good on a transient close. Now
/// it fails with `NotConnected` like any request between two links, or,
/// in wait-for-reconnect mode, goes to the next link.
#[test]
fn l4_a_request_on_a_closing_link_fails_not_connected_or_waits_for_the_next_link() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = bind(fx.server()).await;
        serve(&server, &rt);
        let held_by_server = hold_requests(server.handlers());
        let addr = server.local_addr();
        for wait in [false, true] {
            let client = connect(
                fx.client(addr)
                    .wait_for_reconnect(wait)
                    .reconnect(Reconnect::Fixed(ms(10))),
            )
            .await;
            authenticated(&server).await;
            // A request in flight keeps the link draining after the close.
            let hold = json!({"op": "hold"});
            let held = client.request::<Value, _>(&hold);
            let old = client.link().expect("link").id();
            let close_then_request = async {
                let req = held_by_server.next().await;
                client.link().expect("link").close("test").await;
                // Queued behind the close (its first poll sends the
                // command): the closing core refuses it and sends nothing.
                let echo = json!({"op": "echo", "n": 7});
                let mut r = std::pin::pin!(client.request::<u64, _>(&echo));
                let first = futures_lite::future::poll_once(&mut r).await;
                // The held request answered, the old link can end.
                req.respond(&json!("late")).expect("respond");
                match first {
                    // Refused already (fail-fast mode).
                    Some(r) => r,
                    None => r.await,
                }
            };
            let (held, r) = futures_lite::future::zip(held, close_then_request).await;
            assert_eq!(
                held.expect("drained"),
                json!("late"),
                "the held request drained"
            );
            if wait {
                assert_eq!(
                    r.expect("sent on the next link"),
                    7,
                    "the request went on the next link"
                );
            } else {
                assert!(matches!(r, Err(Error::NotConnected)), "{r:?}");
            }
            // The closing link is not the client's link any more: waiting
            // for one gives the next.
            let next = client.wait_connected().await.expect("reconnected");
            assert_ne!(
                next.id(),
                old,
                "wait {wait}: next link {next:?}, closed {}",
                next.is_closed()
            );
            assert!(
                !client.is_closed(),
                "a transient close does not close the client"
            );
            // The owner's close is still Closed.
            let one = json!({"op": "echo", "n": 1});
            let closing = client.close();
            let r = client.request::<u64, _>(&one);
            let ((), r) = futures_lite::future::zip(closing, r).await;
            assert!(
                matches!(r, Err(Error::Closed) | Ok(1)),
                "a request during close(): {r:?}"
            );
            let r = client
                .request::<u64, _>(&json!({"op": "echo", "n": 1}))
                .await;
            assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        }
    });
}
