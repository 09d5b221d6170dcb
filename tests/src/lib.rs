//! Test-only helpers for jsonlink's workspace integration tests: an
//! adversarial raw-TLS peer (client and server) that can send arbitrary bytes
//! at arbitrary times, and process gauges (resident memory, open file
//! descriptors, live tasks) for the fault, load and soak tests.
//!
//! The adversary speaks TLS with tokio-rustls directly, so it is independent
//! of the adapters under test; where a case needs an authenticated link it
//! runs the real handshake with a `jsonlink_proto::Connection` and then
//! writes whatever it likes.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An adversarial TLS client (or an accepted TLS stream, for client-side
/// cases), with the plaintext under full control of the test.
pub struct RawTls<S> {
    stream: S,
    channel_binding: Vec<u8>,
}

/// The client variant.
pub type RawTlsClient = RawTls<tokio_rustls::client::TlsStream<TcpStream>>;
/// The server variant.
pub type RawTlsServer = RawTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl RawTlsClient {
    /// Opens TCP + TLS to `addr` (server name `localhost`).
    pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let channel_binding = jsonlink_rt::channel_binding(stream.get_ref().1)?;
        Ok(Self {
            stream,
            channel_binding,
        })
    }
}

impl RawTlsServer {
    /// Accepts one TCP + TLS connection.
    pub async fn accept(
        listener: &TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self> {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let channel_binding = jsonlink_rt::channel_binding(stream.get_ref().1)?;
        Ok(Self {
            stream,
            channel_binding,
        })
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawTls<S> {
    /// The TLS exporter bytes of this session.
    pub fn channel_binding(&self) -> &[u8] {
        &self.channel_binding
    }

    /// Writes bytes and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes one byte at a time, pausing `gap` between bytes.
    pub async fn send_slowly(&mut self, bytes: &[u8], gap: Duration) -> io::Result<()> {
        for b in bytes {
            self.send(std::slice::from_ref(b)).await?;
            tokio::time::sleep(gap).await;
        }
        Ok(())
    }

    /// Reads until EOF (or error, or `limit` bytes), at most `timeout`;
    /// returns what arrived and whether the stream ended (EOF or reset)
    /// within the time.
    pub async fn read_to_end(&mut self, timeout: Duration, limit: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return (out, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
                Ok(Ok(n)) => {
                    out.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if out.len() >= limit {
                        return (out, false);
                    }
                }
            }
        }
    }

    /// Runs the real jsonlink handshake over this stream with a core
    /// `Connection`, returning it authenticated (its later output is the
    /// test's to forge or withhold).
    pub async fn handshake(
        &mut self,
        config: Config,
        side: Side,
        timeout: Duration,
    ) -> io::Result<Connection> {
        let start = Instant::now();
        let mut conn = Connection::new(
            Arc::new(config),
            side,
            start,
            ConnectionParams {
                channel_binding: self.channel_binding.clone(),
                connection_id: 1,
            },
        );
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut out = Vec::new();
            conn.poll_transmit(&mut out);
            if !out.is_empty() {
                self.send(&out).await?;
            }
            while let Some(ev) = conn.poll_event() {
                match ev {
                    Event::Authenticated(_) => return Ok(conn),
                    Event::Closed(r) => return Err(io::Error::other(r.to_string())),
                    _ => {}
                }
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
            if n == 0 {
                conn.handle_eof(Instant::now());
            } else {
                conn.handle_input(Instant::now(), buf.get(..n).unwrap_or_default());
            }
        }
    }

    /// Sends a TLS close_notify and shuts the write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// The inner stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads and feeds `conn` until it yields an event, writing nothing
    /// back (the peer stays unresponsive: no pongs, no answers). At end of
    /// stream `conn` gets `handle_eof` (so its last event is `Closed`);
    /// `None` once it has nothing more to say. Fails with
    /// [`io::ErrorKind::TimedOut`] after `timeout`.
    pub async fn next_event(
        &mut self,
        conn: &mut Connection,
        timeout: Duration,
    ) -> io::Result<Option<Event>> {
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = conn.poll_event() {
                return Ok(Some(ev));
            }
            if conn.is_closed() {
                return Ok(None);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no event in time"))?;
            match read {
                Ok(0) | Err(_) => conn.handle_eof(Instant::now()),
                Ok(n) => conn.handle_input(Instant::now(), buf.get(..n).unwrap_or_default()),
            }
        }
    }
}

impl RawTlsClient {
    /// The local address of the TCP socket (the peer address the server
    /// reports for this connection).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.get_ref().0.local_addr()
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Number of open file descriptors of this process (Linux `/proc/self/fd`).
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// CPU time (user + system) this process has used so far, all threads
/// together (Linux `/proc/self/stat`, in clock ticks of 10 ms: `USER_HZ` is
/// 100 on every mainstream Linux architecture). A task spinning in a busy
/// loop shows up here as about one core's worth of time per second.
pub fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the whole line: 12th and
    // 13th after the command name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Polls `f` every few milliseconds until it returns true or `timeout`
/// passes; for gauges that have no event to await (fd counts, task counts).
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A [`jsonlink_rt::Runtime`] that counts the tasks it spawned which are
/// still alive, so a test can assert that none leaked; a task spinning in a
/// busy loop is a live task too, so "back to baseline" also rules that out.
#[derive(Debug)]
pub struct CountingRuntime {
    inner: Arc<dyn jsonlink_rt::Runtime>,
    live: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Decrements the live count when a counted task ends (or is dropped).
struct TaskGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl CountingRuntime {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn jsonlink_rt::Runtime>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            live: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Tasks spawned through this runtime that have not ended.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until exactly `n` spawned tasks are alive.
    pub async fn until_live(&self, n: usize) {
        let mut rx = self.live.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx.wait_for(|live| *live == n).await;
    }
}

impl jsonlink_rt::Runtime for CountingRuntime {
    fn spawn(&self, future: jsonlink_rt::BoxFuture<'static, ()>) {
        self.live.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.live.clone());
        self.inner.spawn(Box::pin(async move {
            let _guard = guard;
            future.await;
        }));
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Instant) -> jsonlink_rt::BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }

    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> jsonlink_rt::BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve(host, port)
    }

    fn bind(
        &self,
        addr: SocketAddr,
    ) -> jsonlink_rt::BoxFuture<'_, io::Result<Box<dyn jsonlink_rt::Listener>>> {
        self.inner.bind(addr)
    }

    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> jsonlink_rt::BoxFuture<'static, io::Result<jsonlink_rt::TlsStream>> {
        self.inner.connect_tls(addr, config, server_name)
    }
}

/// What the adapter fault, load and soak tests share: a tokio runtime per
/// test bounded in time, certificates and builders wired to them, and small
/// helpers that wait for server events.
pub mod fixture {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use jsonlink_proto::{Connection, Side};
    use jsonlink_rt::{
        Client, ClientBuilder, CloseCode, CloseReason, DevPki, Error, Event, EventKind, Identity,
        Link, Runtime, Secret, Server, ServerBuilder,
    };
    use serde::{Deserialize, Serialize};

    use crate::RawTlsClient;

    /// Upper bound on one test's body.
    pub const LIMIT: Duration = Duration::from_secs(20);
    /// Upper bound on a gauge (fds, connection count) settling after the
    /// event that caused the change.
    pub const SETTLE: Duration = Duration::from_secs(5);

    /// Tests reading process-wide gauges hold this exclusively (one per
    /// test binary: each binary is its own process).
    static GAUGES: RwLock<()> = RwLock::new(());

    /// Whether a test may run beside others of its binary.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Gauges {
        /// Runs alongside other tests.
        Shared,
        /// Runs alone in this binary (reads fd counts or RSS).
        Exclusive,
    }

    /// `n` milliseconds.
    pub fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 127.0.0.1 on any port.
    pub fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A loopback address nothing listens on (connections are refused).
    pub fn closed_port() -> SocketAddr {
        let probe = std::net::TcpListener::bind(localhost()).expect("probe bind");
        probe.local_addr().expect("probe addr")
    }

    /// Runs `test` on a multi-threaded tokio runtime built for it, failing
    /// after [`LIMIT`].
    pub fn on_tokio<F, Fut>(gauges: Gauges, test: F)
    where
        F: FnOnce(Arc<dyn Runtime>) -> Fut,
        Fut: Future<Output = ()>,
    {
        on_tokio_within(LIMIT, gauges, test);
    }

    /// [`on_tokio`] failing after `limit`.
    pub fn on_tokio_within<F, Fut>(limit: Duration, gauges: Gauges, test: F)
    where
        F: FnOnce(Arc<dyn Runtime>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let _shared;
        let _exclusive;
        match gauges {
            Gauges::Shared => _shared = GAUGES.read().unwrap_or_else(|e| e.into_inner()),
            Gauges::Exclusive => _exclusive = GAUGES.write().unwrap_or_else(|e| e.into_inner()),
        }
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let rt: Arc<dyn Runtime> = Arc::new(jsonlink_tokio::TokioRuntime::from_handle(
            tokio.handle().clone(),
        ));
        tokio.block_on(async {
            tokio::time::timeout(limit, test(rt))
                .await
                .expect("test did not finish within its limit")
        });
    }

    /// Certificates, a secret, and builders wired to them.
    pub struct Fixture {
        /// The runtime servers and clients run on.
        pub rt: Arc<dyn Runtime>,
        /// Development CA, server and client certificates.
        pub pki: DevPki,
        /// The shared secret.
        pub secret: Secret,
    }

    impl Fixture {
        /// Fresh certificates and a random secret.
        pub fn new(rt: Arc<dyn Runtime>) -> Self {
            Self {
                rt,
                pki: DevPki::generate().expect("dev certs"),
                secret: Secret::generate().expect("secret"),
            }
        }

        /// A server builder.
        pub fn server(&self) -> ServerBuilder {
            Server::builder(
                self.rt.clone(),
                self.pki.server_config().expect("tls"),
                self.secret.clone(),
                Identity::new("server-1", "faults"),
            )
        }

        /// A client builder for `addr`.
        pub fn client(&self, addr: SocketAddr) -> ClientBuilder {
            Client::builder(
                self.rt.clone(),
                addr,
                self.pki.client_config().expect("tls"),
                self.pki.server_name(),
                self.secret.clone(),
                Identity::new("client-1", "faults"),
            )
        }

        /// The TLS client configuration (trusting the dev CA).
        pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
            Arc::new(self.pki.client_config().expect("tls"))
        }

        /// The TLS server configuration.
        pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
            Arc::new(self.pki.server_config().expect("tls"))
        }

        /// The core configuration the adversary authenticates with.
        pub fn adversary_config(&self, node: &str) -> jsonlink_proto::Config {
            jsonlink_proto::Config::new(self.secret.clone(), Identity::new(node, "adversary"))
        }

        /// An adversarial client, authenticated with the real handshake,
        /// that from now on writes nothing unless the test says so.
        pub async fn adversary(&self, addr: SocketAddr) -> (RawTlsClient, Connection) {
            let mut raw = RawTlsClient::connect(addr, self.client_tls())
                .await
                .expect("adversary TLS");
            let conn = raw
                .handshake(self.adversary_config("adversary"), Side::Client, LIMIT)
                .await
                .expect("adversary handshake");
            (raw, conn)
        }
    }

    /// Binds `builder()` to `addr` again after a server there went away
    /// (its listener may take a moment to close).
    ///
    /// The old listener closes when its accept task next runs, which has no
    /// event to wait for: this retries (yielding, then every millisecond)
    /// for up to [`SETTLE`].
    pub async fn rebind(builder: impl Fn() -> ServerBuilder, addr: SocketAddr) -> Server {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut tries = 0u32;
        loop {
            match builder().bind(addr).await {
                Ok(s) => return s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("could not bind {addr} again after {tries} tries: {e:?}")
                }
                Err(_) if tries < 100 => tokio::task::yield_now().await,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
            tries += 1;
        }
    }

    /// The next `Authenticated` event of a server: its link.
    pub async fn authenticated(server: &Server) -> Link {
        match server.wait_for(EventKind::Authenticated).await {
            Some(Event::Authenticated { link, .. }) => link,
            other => panic!("expected Authenticated, got {other:?}"),
        }
    }

    /// The next `Closed` event of a server.
    pub async fn closed(server: &Server) -> (Link, CloseReason) {
        match server.wait_for(EventKind::Closed).await {
            Some(Event::Closed { link, reason }) => (link, reason),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    /// The next `Error` event of a server: the peer's address and the error.
    pub async fn error_event(server: &Server) -> (Option<SocketAddr>, Error) {
        match server.wait_for(EventKind::Error).await {
            Some(Event::Error { peer_addr, error }) => (peer_addr, error),
            other => panic!("expected Error, got {other:?}"),
        }
    }

    /// A close by [`Server::shutdown`], as its peer sees it.
    pub fn is_graceful_shutdown(reason: &CloseReason) -> bool {
        matches!(reason, CloseReason::Remote { code: CloseCode::Normal, reason } if reason == "server shutting down")
    }

    /// The body of the `add` op.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Add {
        /// Left operand.
        pub a: i64,
        /// Right operand.
        pub b: i64,
    }

    /// Registers `add` (`{"a", "b"}` → `a + b`) on a server.
    pub fn add_handler(server: &Server) {
        server
            .handlers()
            .handle_request("add", |_link, v: Add| async move { Ok(v.a + v.b) });
    }
}

/// The fault table (`tests/faults/expected.md`) and outcome recording.
pub mod faults {
    use std::fmt;

    /// Records a fault case's observed outcome: written to
    /// `$JSONLINK_FAULT_RESULTS/<id>` when that variable is set (as
    /// scripts/check.sh does), else a no-op.
    ///
    /// # Panics
    ///
    /// If the variable is set and the file cannot be written (a lost
    /// outcome would only show up later as `MISSING`).
    pub fn record(id: &str, outcome: impl fmt::Display) {
        if let Some(dir) = std::env::var_os("JSONLINK_FAULT_RESULTS") {
            let dir = std::path::PathBuf::from(dir);
            let path = result_path(&dir, id);
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, outcome.to_string()))
                .unwrap_or_else(|e| panic!("recording {id} in {}: {e}", path.display()));
        }
    }

    /// Where the outcome of case `id` is recorded under `dir`: one file per
    /// case, a sub-case `H5/tls` as `H5~tls` (beside `H5`, not under it).
    pub fn result_path(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
        dir.join(id.replace('/', "~"))
    }

    /// What a case must produce.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Expected {
        /// This exact outcome text.
        Outcome(String),
        /// Not run, for the written reason.
        Skip(String),
    }

    impl fmt::Display for Expected {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Outcome(o) => write!(f, "`{o}`"),
                Self::Skip(r) => write!(f, "SKIP: {r}"),
            }
        }
    }

    /// One row of the table.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Row {
        /// The tests/faults/FAULTS.md id, e.g. `F1`.
        pub id: String,
        /// The expected outcome.
        pub expected: Expected,
    }

    /// Parses the markdown table: rows `| ID | case | expected | test |`
    /// where expected is `` `outcome` `` or `SKIP: reason`.
    pub fn parse_table(md: &str) -> Result<Vec<Row>, String> {
        let mut rows = Vec::new();
        for line in md.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, id, _case, expected, ..] = cells.as_slice() else {
                continue;
            };
            // `F1`, or a sub-case such as `H5/tls` (same case, another layer).
            let (main, sub) = id.split_once('/').unwrap_or((id, ""));
            let is_id = main.len() >= 2
                && main.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && main.chars().skip(1).all(|c| c.is_ascii_digit())
                && sub
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !is_id {
                continue;
            }
            let expected = if let Some(r) = expected.strip_prefix("SKIP:") {
                let r = r.trim();
                if r.is_empty() {
                    return Err(format!("{id}: a skip needs a written reason"));
                }
                Expected::Skip(r.to_owned())
            } else if let Some(o) = expected.strip_prefix('`').and_then(|e| e.strip_suffix('`')) {
                Expected::Outcome(o.to_owned())
            } else {
                return Err(format!("{id}: expected must be `outcome` or SKIP: reason"));
            };
            if rows.iter().any(|r: &Row| r.id == *id) {
                return Err(format!("{id}: listed twice"));
            }
            rows.push(Row {
                id: (*id).to_owned(),
                expected,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod table_tests {
    /// The IDs of the catalogue (`tests/faults/FAULTS.md`), in its order,
    /// split into the cases of what has landed and those of the layers
    /// still to come (after the heading "Cases for the layers being added").
    fn catalogue_ids() -> (Vec<String>, Vec<String>) {
        let md = include_str!("../faults/FAULTS.md");
        let (landed, coming) = md
            .split_once("# Cases for the layers being added")
            .expect("FAULTS.md has the heading for the layers to come");
        let ids = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim_start().strip_prefix("- **"))
                .filter_map(|l| l.split_once("**").map(|(id, _)| id.to_owned()))
                .collect()
        };
        (ids(landed), ids(coming))
    }

    #[test]
    fn the_table_lists_every_landed_fault_id_once_in_catalogue_order() {
        let (landed, coming) = catalogue_ids();
        assert!(landed.len() >= 40, "catalogue parsed: {landed:?}");
        let md = include_str!("../faults/expected.md");
        let rows = crate::faults::parse_table(md).expect("table parses");
        let main_ids: Vec<&str> = rows
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !id.contains('/'))
            .collect();
        // Cases of layers still to come may join the table as they land.
        let landed_in_table: Vec<&str> = main_ids
            .iter()
            .copied()
            .filter(|id| !coming.iter().any(|c| c == id))
            .collect();
        assert_eq!(landed_in_table, landed, "every landed case, in order");
        for r in &rows {
            let main = r.id.split_once('/').map_or(r.id.as_str(), |(m, _)| m);
            assert!(
                landed.iter().chain(&coming).any(|c| c == main),
                "{} is not a case of the catalogue",
                r.id
            );
        }
    }

    #[test]
    fn a_skip_without_reason_is_rejected() {
        assert!(crate::faults::parse_table("| X1 | c | SKIP: | t |").is_err());
        assert!(crate::faults::parse_table("| X1 | c | plain | t |").is_err());
    }
}
