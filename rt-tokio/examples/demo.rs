//! The jsonlink tour: a server and a client on 127.0.0.1 over TLS with
//! development certificates generated in memory (no files, no openssl).
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Steps: authentication (identities and protection each side sees),
//! messages dispatched by `op` both ways, a request each way, a ping with
//! data, a server restart that the client rides out by reconnecting, a
//! request over the new link, and a graceful close. Every wait is bounded:
//! if a step does not happen in time, the demo says which and exits 1.

use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonlink_tokio::{
    Authenticated, Client, DevPki, Error, Event, EventKind, Handlers, Identity, Link, Policy,
    Reconnect, Secret, Server,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Errors of the demo, with a message saying which step failed.
pub(crate) type DemoError = Box<dyn StdError + Send + Sync>;

/// The event kind the demo waits for most.
const AUTHENTICATED: EventKind = EventKind::Authenticated;
/// Longest wait for any one step.
const STEP_LIMIT: Duration = Duration::from_secs(5);
/// How long the restarted server may take to get its port back.
const REBIND_LIMIT: Duration = Duration::from_secs(3);

/// What happened, for the test that runs the demo
/// (`tests/tests/demo_runs.rs`, which reads every field).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Outcome {
    /// The answer to `add` 2 + 3 on the first link.
    pub(crate) sum: i64,
    /// The client's answer to the server's `status` request.
    pub(crate) status: Value,
    /// The data the server saw on the client's ping.
    pub(crate) ping_data: Value,
    /// The message the server's `chat` handler got.
    pub(crate) chat: Value,
    /// Reconnect attempts the client announced during the restart.
    pub(crate) reconnect_attempts: u32,
    /// The answer to `add` 40 + 2 on the link after the restart.
    pub(crate) sum_after_restart: i64,
    /// Both links ended gracefully (server restart, client close).
    pub(crate) graceful: bool,
}

/// Prints one line per thing that happened, with the time since the start.
struct Log(Instant);

impl Log {
    fn section(&self, title: &str) {
        println!();
        println!("── {title}");
    }

    fn say(&self, who: &str, text: impl Display) {
        println!(
            "  {:>6.3}s  {who:<7} {text}",
            self.0.elapsed().as_secs_f64()
        );
    }
}

/// Awaits `fut` for at most [`STEP_LIMIT`]; the error names the step.
async fn step<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, DemoError> {
    tokio::time::timeout(STEP_LIMIT, fut)
        .await
        .map_err(|_| format!("timed out after {STEP_LIMIT:?} waiting for {what}").into())
}

/// The next event of `kind` within [`STEP_LIMIT`].
async fn event(what: &str, wait: impl Future<Output = Option<Event>>) -> Result<Event, DemoError> {
    step(what, wait)
        .await?
        .ok_or_else(|| format!("event stream ended while waiting for {what}").into())
}

/// `wait_for` returned an event of another kind than asked for.
fn unexpected() -> DemoError {
    "an event of an unexpected kind arrived".into()
}

/// The `Authenticated` event `wait` gives (from `wait_for` on `side`),
/// within [`STEP_LIMIT`].
async fn authenticated(
    side: &str,
    wait: impl Future<Output = Option<Event>>,
) -> Result<(Link, Authenticated), DemoError> {
    match event(&format!("{side}'s Authenticated event"), wait).await? {
        Event::Authenticated { link, info } => Ok((link, info)),
        _ => Err(unexpected()),
    }
}

/// Logs the client's events until one of `kind` arrives (all within
/// [`STEP_LIMIT`]), and returns it; `attempts` follows the reconnect
/// attempts announced meanwhile.
async fn client_events_until(
    log: &Log,
    client: &Client,
    kind: EventKind,
    attempts: &mut u32,
) -> Result<Event, DemoError> {
    let what = format!("the client's {kind:?} event");
    step(&what, async {
        loop {
            let Some(ev) = client.next_event().await else {
                return Err(format!("event stream ended while waiting for {what}").into());
            };
            if let Event::ReconnectAttempt { attempt, .. } = ev {
                *attempts = attempt;
            }
            log.say("client", describe(&ev));
            if ev.kind() == kind {
                return Ok(ev);
            }
        }
    })
    .await?
}

/// The peer of an authenticated link and the link's connection id.
fn seen(info: &Authenticated) -> String {
    let peer = &info.peer;
    format!(
        "{}/{} as connection {}",
        peer.node, peer.designation, info.connection_id
    )
}

/// What the client logs for an event while it reconnects.
fn describe(ev: &Event) -> String {
    match ev {
        Event::Closed { reason, .. } => format!("link closed: {reason}"),
        Event::ReconnectAttempt { attempt, delay } => {
            format!("reconnect attempt {attempt} in {} ms", delay.as_millis())
        }
        // While no server listens, attempts fail; the client reports the
        // failure once per outage (not once per attempt) and keeps trying.
        Event::Error { error, .. } => format!("connect failed: {error} (reported once per outage)"),
        Event::Authenticated { info, .. } => {
            format!("reconnected and authenticated again: {}", seen(info))
        }
        other => format!("event {other:?}"),
    }
}

/// Handles `chat` messages by sending their bodies to `tx`.
fn forward_chat(handlers: &Handlers, tx: mpsc::Sender<Value>) {
    handlers.on_message("chat", move |m| {
        let tx = tx.clone();
        async move {
            if let Ok(body) = m.parse::<Value>() {
                let _ = tx.send(body).await;
            }
        }
    });
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// What the demo's server is made of, for its first start and its restart.
struct ServerSetup<'a> {
    pki: &'a DevPki,
    secret: &'a Secret,
    /// Where its `chat` handler sends the messages it gets.
    chat_tx: mpsc::Sender<Value>,
}

impl ServerSetup<'_> {
    /// Binds a server with the demo's handlers at `addr`.
    async fn start(&self, addr: SocketAddr) -> Result<Server, Error> {
        // Handlers by op, registered before the first link can arrive.
        let handlers = Handlers::new();
        // Messages whose body has "op": "chat" go to this handler.
        forward_chat(&handlers, self.chat_tx.clone());
        // Requests with "op": "add" are answered by this typed handler.
        handlers.handle_request("add", |_link: Link, v: Value| async move {
            Ok(v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0))
        });
        jsonlink_tokio::server(
            self.pki.server_config().map_err(io::Error::other)?,
            self.secret.clone(),
            Identity::new("server-1", "demo-server"),
        )
        .handlers(handlers)
        .bind(addr)
        .await
    }

    /// Binds a fresh server at `addr`, retrying while the old listener
    /// still holds the port (bounded by [`REBIND_LIMIT`]).
    async fn restart(&self, addr: SocketAddr) -> Result<Server, DemoError> {
        let until = Instant::now() + REBIND_LIMIT;
        loop {
            match self.start(addr).await {
                Ok(server) => return Ok(server),
                Err(Error::Io(e))
                    if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(format!("could not bind the new server on {addr}: {e}").into());
                }
            }
        }
    }
}

/// The whole demo. Prints as it goes; fails with a message naming the step
/// that did not happen.
pub(crate) async fn run() -> Result<Outcome, DemoError> {
    let log = Log(Instant::now());
    println!("jsonlink demo: a server and a client on 127.0.0.1, TLS with throwaway certificates");

    // ── 1. Setup ────────────────────────────────────────────────────────
    log.section("1. Setup");
    let pki = DevPki::generate()?;
    log.say(
        "pki",
        "generated a CA, a server certificate for localhost/127.0.0.1 and a client certificate (in memory)",
    );
    let secret = Secret::generate()?;
    log.say(
        "secret",
        "32 random bytes shared by both sides; it never crosses the wire, not even hashed",
    );
    let (chat_tx, mut chat_rx) = mpsc::channel::<Value>(8);
    let setup = ServerSetup {
        pki: &pki,
        secret: &secret,
        chat_tx,
    };
    let server = setup.start(([127, 0, 0, 1], 0).into()).await?;
    let addr = server.local_addr();
    log.say("server", format!("listening on {addr}"));

    let (client_chat_tx, mut client_chat_rx) = mpsc::channel::<Value>(8);
    let client_handlers = Handlers::new();
    forward_chat(&client_handlers, client_chat_tx);
    let started = Instant::now();
    client_handlers.handle_request("status", move |_link: Link, _: Value| async move {
        let uptime_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(json!({"ok": true, "uptime_ms": uptime_ms}))
    });
    let client = step(
        "the client to connect",
        jsonlink_tokio::client(
            addr,
            pki.client_config()?,
            pki.server_name(),
            secret.clone(),
            Identity::new("client-1", "demo-client"),
        )
        // The server can send messages and requests to the client too.
        .handlers(client_handlers)
        // Ask for per-frame signing and second-layer encryption.
        .signing(Policy::Preferred)
        .encryption(Policy::Preferred)
        // Reconnect quickly after a drop: full-jitter backoff, 100 ms .. 1 s.
        .reconnect(Reconnect::Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        })
        .connect(),
    )
    .await??;
    log.say("client", format!("connected to {addr} as client-1"));

    // ── 2. Authentication ──────────────────────────────────────────────
    log.section(
        "2. Authentication: TLS, then mutual HMAC challenge-response bound to the TLS session",
    );
    let (link, info) = authenticated("the server", server.wait_for(AUTHENTICATED)).await?;
    log.say(
        "server",
        format!("sees {} from {}", seen(&info), link.peer_addr()),
    );
    let (_, info) = authenticated("the client", client.wait_for(AUTHENTICATED)).await?;
    let proved = "which proved it holds the secret too";
    log.say("client", format!("sees {}, {proved}", seen(&info)));
    log.say(
        "both",
        format!(
            "protocol v{}, signing {} (HMAC-SHA256 per frame), encryption {} (AES-256-CBC + HMAC)",
            info.version,
            on_off(info.signing),
            on_off(info.encryption)
        ),
    );
    let conn_id = link.id();

    // ── 3. Messages dispatched by op ───────────────────────────────────
    log.section("3. Messages, dispatched by their \"op\" field");
    let hello = json!({"op": "chat", "text": "hello, server"});
    client.send(&hello).await?;
    log.say("client", format!("send {hello}"));
    let chat = step("the server's chat handler", chat_rx.recv())
        .await?
        .ok_or("the chat channel closed")?;
    log.say("server", format!("on_message(\"chat\") got {chat}"));
    let welcome = json!({"op": "chat", "text": "welcome, client-1"});
    server.send(conn_id, &welcome).await?;
    log.say("server", format!("send {welcome}"));
    let got = step("the client's chat handler", client_chat_rx.recv())
        .await?
        .ok_or("the client's chat channel closed")?;
    log.say("client", format!("on_message(\"chat\") got {got}"));

    // ── 4. Requests both ways ──────────────────────────────────────────
    log.section("4. Requests, both ways");
    let add = json!({"op": "add", "a": 2, "b": 3});
    log.say("client", format!("request {add}"));
    let sum: i64 = step("the add response", client.request(&add)).await??;
    log.say("client", format!("response {sum}"));
    let status_req = json!({"op": "status"});
    log.say(
        "server",
        format!("request {status_req} to connection {conn_id}"),
    );
    let status: Value = step("the status response", server.request(conn_id, &status_req)).await??;
    log.say("server", format!("response {status}"));

    // ── 5. Ping with data ──────────────────────────────────────────────
    log.section("5. Ping with a data object (like zetta-rpc's pingDataObject)");
    let load = json!({"load": 0.42});
    client.ping(Some(&load)).await?;
    log.say("client", format!("ping {load}"));
    let Event::Ping { data, .. } =
        event("the server's Ping event", server.wait_for(EventKind::Ping)).await?
    else {
        return Err(unexpected());
    };
    let ping_data: Value = match &data {
        Some(d) => d.parse()?,
        None => Value::Null,
    };
    log.say("server", format!("ping with data {ping_data} (pong sent)"));
    event("the client's Pong event", client.wait_for(EventKind::Pong)).await?;
    log.say("client", "pong");

    // ── 6. Server restart ──────────────────────────────────────────────
    log.section("6. Server restart: the client reconnects by itself");
    step(
        "the server to shut down",
        server.shutdown(Instant::now() + Duration::from_secs(1)),
    )
    .await?;
    drop(server);
    log.say(
        "server",
        "shut down (close frame to every link, listener closed)",
    );
    let mut graceful = true;
    let mut reconnect_attempts = 0;
    // The client reports the drop, then its reconnect attempts, which fail
    // while no server listens.
    let attempts = &mut reconnect_attempts;
    if let Event::Closed { reason, .. } =
        client_events_until(&log, &client, EventKind::Closed, attempts).await?
    {
        graceful &= reason.is_graceful();
    }
    client_events_until(&log, &client, EventKind::Error, attempts).await?;
    let server = setup.restart(addr).await?;
    log.say("server", format!("listening again on {addr}"));
    // Then the client authenticates again.
    client_events_until(&log, &client, AUTHENTICATED, attempts).await?;
    let (_, info) = authenticated("the new server", server.wait_for(AUTHENTICATED)).await?;
    log.say("server", format!("sees {} again", seen(&info)));

    // ── 7. A request over the new link ─────────────────────────────────
    log.section("7. A request over the new link");
    let add = json!({"op": "add", "a": 40, "b": 2});
    log.say("client", format!("request {add}"));
    let sum_after_restart: i64 = step("the add response", client.request(&add)).await??;
    log.say("client", format!("response {sum_after_restart}"));

    // ── 8. Graceful close ──────────────────────────────────────────────
    log.section("8. Graceful close");
    step("the client to close", client.close()).await?;
    log.say("client", "closed (close frame sent, no reconnect)");
    let Event::Closed { reason, .. } = event(
        "the server's Closed event",
        server.wait_for(EventKind::Closed),
    )
    .await?
    else {
        return Err(unexpected());
    };
    graceful &= reason.is_graceful();
    log.say("server", format!("link closed: {reason}"));
    step(
        "the server to shut down",
        server.shutdown(Instant::now() + Duration::from_secs(1)),
    )
    .await?;
    log.say("server", "shut down");

    Ok(Outcome {
        sum,
        status,
        ping_data,
        chat,
        reconnect_attempts,
        sum_after_restart,
        graceful,
    })
}

#[cfg(not(test))]
#[tokio::main]
async fn main() {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(outcome)) => {
            println!();
            println!(
                "demo finished: 2 + 3 = {}, then 40 + 2 = {} after {} reconnect attempt(s)",
                outcome.sum, outcome.sum_after_restart, outcome.reconnect_attempts
            );
        }
        Ok(Err(e)) => {
            eprintln!();
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!();
            eprintln!("demo failed: it did not finish within 30 s");
            std::process::exit(1);
        }
    }
}
