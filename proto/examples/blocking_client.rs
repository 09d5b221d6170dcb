//! jsonlink with **no async runtime**: the sans-IO core
//! [`jsonlink_proto::Connection`] driven by a hand-written loop over a
//! blocking `std::net::TcpStream` and rustls' `StreamOwned`. This is the
//! shape to copy when embedding jsonlink in your own event loop (a game
//! loop, an embedded main loop, mio, a thread per connection).
//!
//! Run it against any jsonlink server that trusts the same secret and whose
//! certificate is signed by the CA in the PEM file:
//!
//! ```text
//! cargo run -p jsonlink-proto --example blocking_client -- 127.0.0.1:7000 ca.pem <secret-hex>
//! # or: JSONLINK_ADDR=… JSONLINK_CA=… JSONLINK_SECRET=… cargo run -p jsonlink-proto --example blocking_client
//! ```
//!
//! (`tests/tests/blocking_example.rs` runs it against an async `Server` on
//! tokio, with development certificates written by `DevPki::write_pem`.)
//!
//! # The loop
//!
//! The connection never touches the socket or the clock; this file owns
//! both. Set-up is ordinary blocking code: TCP connect, the TLS handshake
//! (`complete_io` until done), then the **channel binding** — 32 bytes of
//! TLS exporter keying material under [`jsonlink_proto::EXPORTER_LABEL`] —
//! handed to [`Connection::new`] in [`ConnectionParams`], so the
//! authentication proofs are tied to this very TLS session. Then, forever:
//!
//! 1. **Drain the outputs** until the connection is quiet:
//!    `poll_transmit` → write everything to TLS (blocking) and flush;
//!    `poll_event` → the application reacts, possibly issuing commands
//!    (`send`, `request`, `respond`, `ping`, `close`), which make new output,
//!    so drain again.
//! 2. **Stop** once the connection is closed and its last bytes (the close
//!    frame) are written; then, best effort, send TLS `close_notify`, shut
//!    down the write half and wait (bounded) for the peer's end of stream.
//! 3. **Wait for input or the deadline**: the socket's read timeout is the
//!    time left until `poll_timeout()` (capped at 500 ms here, so the example
//!    can enforce its own overall time limit). Read only while `wants_input()` —
//!    false means the outbound buffer is at its bound, so stop reading and
//!    keep writing (with blocking writes that drain fully, it is true again
//!    after step 1, but the check is part of the contract).
//!    Bytes → `handle_input(now, bytes)`; end of stream → `handle_eof(now)`;
//!    a read timeout is not an error, just "no input".
//! 4. **Fire timers**: when `now >= poll_timeout()`, `handle_timeout(now)`
//!    (handshake deadline, keepalive pings and their deadline, request
//!    timeouts, the close drain deadline). Then back to 1.
//!
//! Pongs to the peer's keepalive pings are produced by `poll_transmit` on
//! their own, so step 1 also keeps the link alive.
//!
//! The application here is a short script: once authenticated it sends a
//! `chat` message, requests `add`, answers the server's `status` request,
//! and closes gracefully when both exchanges are done. (So the server must
//! answer `add` and ask `status`, as the test's server does; otherwise the
//! script gives up after 15 s with an error.)

// proto/clippy.toml bans sockets and clocks from the crate: the core does no
// I/O. This example is the I/O loop around it, so it owns both.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::error::Error;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::{
    Authenticated, CloseReason, Config, Connection, ConnectionParams, EXPORTER_LABEL, EXPORTER_LEN,
    Event, Identity, Policy, RemoteError, RequestId, Secret, Side,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::json;
use serde_json::value::to_raw_value;

/// The name in a development server certificate (`DevPki`'s).
const DEV_SERVER_NAME: &str = "localhost";

/// Errors of this example (sendable, so a test can run it on a thread).
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// Upper bound on the whole session; the loop fails rather than hang.
const SESSION_LIMIT: Duration = Duration::from_secs(15);
/// Longest single wait on the socket, so the session limit is checked.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Time allowed for TCP connect and for the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to wait for the peer's end of stream after our close.
const LINGER: Duration = Duration::from_secs(2);

/// What the session did, for the caller (and the test) to check.
#[derive(Debug)]
pub(crate) struct Summary {
    /// The handshake outcome: the server's identity, the connection id it
    /// assigned, and whether signing and encryption are on.
    pub(crate) auth: Authenticated,
    /// The server's answer to `{"op":"add","a":2,"b":40}`.
    pub(crate) sum: i64,
    /// Ops of the server's requests this client answered.
    pub(crate) answered: Vec<String>,
    /// Why the connection ended (ours: a graceful local close).
    pub(crate) close: CloseReason,
    /// Whether the server's end of stream was seen after our close (best
    /// effort, informational: the server may drop its socket first).
    pub(crate) peer_eof: bool,
}

/// Connects to `addr` (verifying the server as `localhost` against the CA
/// in `ca_pem`), runs the script, and closes gracefully.
pub(crate) fn run(addr: SocketAddr, ca_pem: &Path, secret: &Secret) -> Result<Summary, BoxError> {
    run_with(addr, ca_pem, secret, DEV_SERVER_NAME)
}

/// A rustls client configuration trusting the CA certificates in `ca_pem`,
/// on rustls' `ring` provider (given explicitly: no process-wide default).
fn client_config(ca_pem: &Path) -> Result<ClientConfig, BoxError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// [`run`] with the server name to verify the certificate against.
pub(crate) fn run_with(
    addr: SocketAddr,
    ca_pem: &Path,
    secret: &Secret,
    server_name: &str,
) -> Result<Summary, BoxError> {
    let started = Instant::now();
    let limit = started + SESSION_LIMIT;

    // --- TCP + TLS (ordinary blocking code) ---------------------------------
    let tls_config = Arc::new(client_config(ca_pem)?);
    let mut tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let name = ServerName::try_from(server_name.to_owned())?;
    let mut tls = ClientConnection::new(tls_config, name)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .map_err(|e| timeout_msg(e, "TLS handshake"))?;
    }
    // 32 bytes of TLS exporter keying material: both ends get the same bytes
    // only if they share this TLS session (no terminating relay between).
    let channel_binding =
        tls.export_keying_material(vec![0u8; EXPORTER_LEN], EXPORTER_LABEL, None)?;
    let mut stream = StreamOwned::new(tls, tcp);
    say(
        started,
        &format!("TLS up with {addr} (server name {server_name})"),
    );

    // --- the sans-IO connection -----------------------------------------------
    // Ask for per-frame signing and second-layer encryption (the server
    // turns them on unless it refuses them).
    let config = Arc::new(Config {
        signing: Policy::Preferred,
        encryption: Policy::Preferred,
        ..Config::new(
            secret.clone(),
            Identity::new("blocking-1", "blocking-example"),
        )
    });
    let params = ConnectionParams {
        channel_binding,
        ..ConnectionParams::default()
    };
    let mut conn = Connection::new(config, Side::Client, Instant::now(), params);
    let mut app = App::default();
    let mut rbuf = vec![0u8; 16 * 1024];
    let mut wbuf = Vec::new();

    loop {
        // 1. Drain the outputs until quiet: bytes to TLS, events to the app
        //    (whose commands make more bytes).
        loop {
            let n = conn.poll_transmit(&mut wbuf);
            if n > 0 {
                stream.write_all(&wbuf)?;
                stream.flush()?;
                wbuf.clear();
            }
            let mut events = 0;
            while let Some(ev) = conn.poll_event() {
                events += 1;
                app.on_event(&mut conn, Instant::now(), ev, started)?;
            }
            if n == 0 && events == 0 {
                break;
            }
        }

        // 2. Closed and flushed: done with the connection.
        if conn.is_closed() {
            break;
        }

        // 3. Wait for input, at most until the connection's next deadline.
        let now = Instant::now();
        if now >= limit {
            return Err(format!("session did not finish within {SESSION_LIMIT:?}").into());
        }
        let deadline = conn.poll_timeout();
        let wait = deadline
            .map_or(MAX_WAIT, |d| d.saturating_duration_since(now))
            .min(limit - now)
            .clamp(Duration::from_millis(1), MAX_WAIT);
        if conn.wants_input() {
            stream.sock.set_read_timeout(Some(wait))?;
            match stream.read(&mut rbuf) {
                Ok(0) => conn.handle_eof(Instant::now()),
                Ok(n) => conn.handle_input(Instant::now(), &rbuf[..n]),
                Err(e) if is_timeout(&e) => {}
                // EOF without TLS close_notify: the peer's process or
                // socket went away. The connection decides what it means.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    conn.handle_eof(Instant::now());
                }
                Err(e) => return Err(e.into()),
            }
        }

        // 4. Fire timers that are due (spurious calls are no-ops).
        let now = Instant::now();
        if conn.poll_timeout().is_some_and(|d| d <= now) {
            conn.handle_timeout(now);
        }
    }

    // --- TLS close_notify, our FIN, then wait (bounded) for the peer's ------
    // Best effort: the jsonlink close already happened, and the server may
    // have dropped its socket by now (then these fail with EPIPE/ENOTCONN).
    stream.conn.send_close_notify();
    let _ = stream.flush();
    let _ = stream.sock.shutdown(Shutdown::Write);
    let peer_eof = drain_until_eof(&mut stream, Instant::now() + LINGER);
    say(
        started,
        &format!(
            "TLS closed ({})",
            if peer_eof {
                "the server closed its side too"
            } else {
                "no EOF from the server in time"
            }
        ),
    );

    let (Some(auth), Some(sum), Some(close)) = (app.auth, app.sum, app.closed) else {
        return Err("the session ended before the script finished".into());
    };
    Ok(Summary {
        auth,
        sum,
        answered: app.answered,
        close,
        peer_eof,
    })
}

/// The application: a script driven by the connection's events.
#[derive(Default)]
struct App {
    auth: Option<Authenticated>,
    add: Option<RequestId>,
    sum: Option<i64>,
    answered: Vec<String>,
    closing: bool,
    closed: Option<CloseReason>,
}

impl App {
    fn on_event(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        ev: Event,
        started: Instant,
    ) -> Result<(), BoxError> {
        match ev {
            Event::Authenticated(auth) => {
                say(
                    started,
                    &format!(
                        "authenticated: server {}/{}, connection id {}, signing {}, encryption {}",
                        auth.peer.node,
                        auth.peer.designation,
                        auth.connection_id,
                        on_off(auth.signing),
                        on_off(auth.encryption),
                    ),
                );
                self.auth = Some(auth);
                let chat = json!({"op": "chat", "text": "hello from a loop with no runtime"});
                conn.send(&to_raw_value(&chat)?)?;
                say(started, &format!("queued message {chat}"));
                let add = json!({"op": "add", "a": 2, "b": 40});
                self.add = Some(conn.request(now, &to_raw_value(&add)?, None)?);
                say(started, &format!("queued request {add}"));
            }
            Event::Response { id, body } if Some(id) == self.add => {
                let sum: i64 = body.parse()?;
                say(started, &format!("response to add: {sum}"));
                self.sum = Some(sum);
            }
            Event::RequestFailed { id, error } => {
                return Err(format!("request {id} failed: {error}").into());
            }
            Event::Request { id, op, body } => {
                let op = op.unwrap_or_default();
                say(started, &format!("server requests {}", body.get()));
                if op == "status" {
                    let status = json!({"ok": true, "runtime": "none", "io": "std::net + rustls"});
                    conn.respond(id, Ok(&to_raw_value(&status)?))?;
                } else {
                    let err = RemoteError::new(RemoteError::NO_HANDLER, format!("no op {op:?}"));
                    conn.respond(id, Err(&err))?;
                }
                self.answered.push(op.into());
            }
            Event::Message { body, .. } => say(started, &format!("message {}", body.get())),
            Event::Ping { data } => say(
                started,
                &format!(
                    "ping from the server{}",
                    data.map(|d| format!(" with {}", d.get()))
                        .unwrap_or_default()
                ),
            ),
            Event::Closed(reason) => {
                say(started, &format!("connection closed: {reason}"));
                self.closed = Some(reason);
            }
            // Pong, SendUnblocked (never blocked here: every write drains
            // fully), a response to an unknown id, future variants.
            _ => {}
        }
        let done = self.sum.is_some() && self.answered.iter().any(|op| op == "status");
        if done && !self.closing {
            self.closing = true;
            say(started, "both exchanges done: closing gracefully");
            conn.close(now, "done");
        }
        Ok(())
    }
}

/// Reads (and discards) until the peer's end of stream or `until`;
/// whether the end of stream came.
fn drain_until_eof(stream: &mut StreamOwned<ClientConnection, TcpStream>, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.sock.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return false,
            // FIN without close_notify still ends the stream.
            Err(e) => return e.kind() == io::ErrorKind::UnexpectedEof,
        }
    }
}

/// A socket read timeout (`WouldBlock` on Unix, `TimedOut` on Windows).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn timeout_msg(e: io::Error, what: &str) -> BoxError {
    if is_timeout(&e) {
        format!("{what} timed out").into()
    } else {
        format!("{what} failed: {e}").into()
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn say(started: Instant, text: &str) {
    println!(
        "[{:>7.3}s] blocking client: {text}",
        started.elapsed().as_secs_f64()
    );
}

#[cfg(not(test))]
fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mut arg = |env: &str| args.next().or_else(|| std::env::var(env).ok());
    let usage = "usage: blocking_client ADDR CA_PEM SECRET_HEX \
                 (or JSONLINK_ADDR, JSONLINK_CA, JSONLINK_SECRET)";
    let addr: SocketAddr = arg("JSONLINK_ADDR").ok_or(usage)?.parse()?;
    let ca = arg("JSONLINK_CA").ok_or(usage)?;
    let secret = Secret::from_hex(&arg("JSONLINK_SECRET").ok_or(usage)?)?;
    let summary = run(addr, Path::new(&ca), &secret)?;
    println!(
        "done: server {} (connection {}), 2 + 40 = {}, answered {:?}, closed: {}{}",
        summary.auth.peer.node,
        summary.auth.connection_id,
        summary.sum,
        summary.answered,
        summary.close,
        if summary.peer_eof {
            ""
        } else {
            " (no EOF from the server)"
        },
    );
    Ok(())
}
