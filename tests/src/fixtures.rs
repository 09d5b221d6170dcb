//! What a test sets up, as functions: certificates and a secret, server and
//! client builders wired to them, a running server with the common
//! handlers, requests held for the test to answer, an authenticated
//! adversary, addresses, a temporary directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonlink_proto::{Connection, Side};
use jsonlink_rt::{
    Client, ClientBuilder, CloseCode, CloseReason, DevPki, Handlers, Identity, Reconnect, Request,
    Runtime, Secret, Server, ServerBuilder, ServerName,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adversary::RawTlsClient;
use crate::runtimes::LIMIT;

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Exponential backoff from `base` up to `cap`, with full jitter.
pub fn backoff(base: Duration, cap: Duration) -> Reconnect {
    Reconnect::Backoff { base, cap }
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

/// The identity of the fixture's servers.
pub fn server_identity() -> Identity {
    Identity::new("server-1", "faults")
}

/// The identity of the fixture's clients.
pub fn client_identity() -> Identity {
    Identity::new("client-1", "faults")
}

/// A secret no fixture shares (a wrong secret).
pub fn another_secret() -> Secret {
    Secret::generate().expect("secret")
}

/// Certificates of another CA than any fixture's (a stranger, or a
/// renewed CA).
pub fn another_pki() -> DevPki {
    DevPki::generate().expect("dev certs")
}

/// Certificates, a secret, and builders wired to them.
pub struct Fixture {
    /// The runtime servers and clients run on.
    pub rt: Arc<dyn Runtime>,
    /// Development CA, server and client certificates.
    pub pki: Arc<DevPki>,
    /// The shared secret.
    pub secret: Secret,
}

impl Fixture {
    /// Fresh certificates and a random secret.
    pub fn new(rt: Arc<dyn Runtime>) -> Self {
        Self::with_secret(rt, another_secret())
    }

    /// Fresh certificates and the given secret.
    pub fn with_secret(rt: Arc<dyn Runtime>, secret: Secret) -> Self {
        Self {
            rt,
            pki: Arc::new(another_pki()),
            secret,
        }
    }

    /// The same certificates and secret on another runtime (a client on
    /// one runtime, its server on another).
    pub fn on_runtime(&self, rt: Arc<dyn Runtime>) -> Self {
        Self {
            rt,
            pki: self.pki.clone(),
            secret: self.secret.clone(),
        }
    }

    /// A server builder.
    pub fn server(&self) -> ServerBuilder {
        self.server_as(server_identity())
    }

    /// A server builder for a server calling itself `identity`.
    pub fn server_as(&self, identity: Identity) -> ServerBuilder {
        self.server_with_tls(self.pki.server_config().expect("tls"), identity)
    }

    /// A server builder with its own TLS configuration.
    pub fn server_with_tls(&self, tls: rustls::ServerConfig, identity: Identity) -> ServerBuilder {
        Server::builder(self.rt.clone(), tls, self.secret.clone(), identity)
    }

    /// A client builder for `addr`.
    pub fn client(&self, addr: SocketAddr) -> ClientBuilder {
        self.client_as(addr, client_identity())
    }

    /// A client builder for `addr`, for a client calling itself `identity`.
    pub fn client_as(&self, addr: SocketAddr, identity: Identity) -> ClientBuilder {
        self.client_with(ClientParts {
            identity,
            ..self.client_parts(addr)
        })
    }

    /// A client builder for `addr` holding another secret.
    pub fn client_with_secret(&self, addr: SocketAddr, secret: Secret) -> ClientBuilder {
        self.client_with(ClientParts {
            secret,
            ..self.client_parts(addr)
        })
    }

    /// A client builder for `addr` with its own TLS configuration and the
    /// server name it checks the certificate against.
    pub fn client_with_tls(
        &self,
        addr: SocketAddr,
        tls: rustls::ClientConfig,
        server_name: ServerName<'static>,
    ) -> ClientBuilder {
        self.client_with(ClientParts {
            tls,
            server_name,
            ..self.client_parts(addr)
        })
    }

    /// What [`client`](Self::client) builds from, for a test to change.
    pub fn client_parts(&self, addr: SocketAddr) -> ClientParts {
        ClientParts {
            addr,
            tls: self.pki.client_config().expect("tls"),
            server_name: self.pki.server_name(),
            secret: self.secret.clone(),
            identity: client_identity(),
        }
    }

    /// A client builder from `parts`.
    pub fn client_with(&self, parts: ClientParts) -> ClientBuilder {
        Client::builder(
            self.rt.clone(),
            parts.addr,
            parts.tls,
            parts.server_name,
            parts.secret,
            parts.identity,
        )
    }

    /// A server on 127.0.0.1 serving the [`common_handlers`].
    pub async fn running_server(&self) -> Server {
        let server = bind(self.server()).await;
        common_handlers(server.handlers());
        server
    }

    /// A client connected (authenticated) to `server`.
    pub async fn connected_client(&self, server: &Server) -> Client {
        connect(self.client(server.local_addr())).await
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

    /// An adversarial client, authenticated with the real handshake, that
    /// from now on writes nothing unless the test says so.
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

/// Everything a client builder is made of.
pub struct ClientParts {
    /// Where it connects.
    pub addr: SocketAddr,
    /// Its TLS configuration.
    pub tls: rustls::ClientConfig,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
    /// The shared secret.
    pub secret: Secret,
    /// Who it says it is.
    pub identity: Identity,
}

/// `builder` bound to 127.0.0.1 on any port.
pub async fn bind(builder: ServerBuilder) -> Server {
    builder
        .bind(localhost())
        .await
        .expect("a server binds to 127.0.0.1")
}

/// `builder` connected (authenticated).
pub async fn connect(builder: ClientBuilder) -> Client {
    builder
        .connect()
        .await
        .expect("a client of the fixture connects")
}

/// The body of the `add` op.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
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

/// Asserts that `client`'s `add` request of `a` and `b` is answered with
/// their sum (the link works, end to end).
pub async fn assert_add_answered(client: &Client, a: i64, b: i64) {
    let sum: i64 = client
        .request(&serde_json::json!({"op": "add", "a": a, "b": b}))
        .await
        .expect("an add request is answered");
    assert_eq!(sum, a + b, "add answers the sum of {a} and {b}");
}

/// Registers the ops most tests call: `add` (`{"a", "b"}` → `a + b`) and
/// `echo` (its arguments back: the body without `op`, or `args`).
pub fn common_handlers(handlers: &Handlers) {
    handlers
        .handle_request("add", |_link, v: Add| async move { Ok(v.a + v.b) })
        .handle_request("echo", |_link, v: Value| async move { Ok(v) });
}

/// Registers `whoami` on a client's `handlers`: it answers
/// `{"me": "client-1", "peer": <the node of the link's peer>}`.
pub fn whoami_handler(handlers: &Handlers) {
    handlers.handle_request("whoami", |link: jsonlink_rt::Link, _: Value| async move {
        Ok(serde_json::json!({"me": "client-1", "peer": link.peer().map(|p| p.node.clone())}))
    });
}

/// Asserts that the server's `whoami` request on `link` is answered by
/// the client's [`whoami_handler`], which knows the server as `server-1`.
pub async fn assert_whoami_answered(server: &Server, link: &jsonlink_rt::Link) {
    let who: Value = server
        .request(link.id(), &serde_json::json!({"op": "whoami"}))
        .await
        .expect("the client answers whoami");
    assert_eq!(
        who,
        serde_json::json!({"me": "client-1", "peer": "server-1"}),
        "the client's handler answered the server"
    );
}

/// Requests of the `hold` op, held for the test to answer or drop.
pub struct HeldRequests {
    rx: async_channel::Receiver<Request>,
    count: Arc<AtomicUsize>,
}

impl HeldRequests {
    /// The next held request.
    pub async fn next(&self) -> Request {
        self.rx.recv().await.expect("a held request")
    }

    /// Waits for the next held request, then runs `meanwhile()` while it
    /// stays unanswered; then drops it.
    pub async fn hold_next_during<Fut: Future<Output = ()>>(
        &self,
        meanwhile: impl FnOnce() -> Fut,
    ) {
        let request = self.next().await;
        meanwhile().await;
        drop(request);
    }

    /// How many `hold` requests arrived so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Makes `handlers`'s `hold` requests wait for the test to answer (or
/// drop) them.
pub fn hold_requests(handlers: &Handlers) -> HeldRequests {
    let (tx, rx) = async_channel::unbounded::<Request>();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    handlers.on_request("hold", move |req| {
        let tx = tx.clone();
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = tx.send(req).await;
        }
    });
    HeldRequests { rx, count }
}

/// Registers `op` on `handlers`: each request signals `started`, waits at
/// `gate`, then goes to `then` (to be answered there).
pub fn on_request_at_gate<F, Fut>(
    handlers: &Handlers,
    op: &str,
    started: &Gate,
    gate: &Gate,
    then: F,
) where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (started, gate, then) = (started.clone(), gate.clone(), Arc::new(then));
    handlers.on_request(op, move |req| {
        let (started, gate, then) = (started.clone(), gate.clone(), then.clone());
        async move {
            started.signal();
            gate.wait().await;
            then(req).await;
        }
    });
}

/// A one-way signal between a test and its handlers: each
/// [`signal`](Self::signal) lets one [`wait`](Self::wait) through (now or
/// when it comes), [`open`](Self::open) lets every wait through for good.
/// A handler waits at a gate the test opens; the test waits for a gate a
/// handler signals ("started").
#[derive(Clone)]
pub struct Gate {
    permits: async_channel::Sender<()>,
    waiting: async_channel::Receiver<()>,
}

impl Default for Gate {
    fn default() -> Self {
        let (permits, waiting) = async_channel::unbounded();
        Self { permits, waiting }
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until a signal lets this wait through, or the gate is open.
    pub async fn wait(&self) {
        let _ = self.waiting.recv().await;
    }

    /// Lets one wait through.
    pub fn signal(&self) {
        let _ = self.permits.try_send(());
    }

    /// Lets every wait through, now and later.
    pub fn open(&self) {
        self.permits.close();
    }
}

/// A close by [`Server::shutdown`], as its peer sees it.
pub fn is_graceful_shutdown(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Remote { code: CloseCode::Normal, reason } if reason == "server shutting down")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `jsonlink-<name>-<pid>-<nanos>` under the temp dir.
    pub fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("jsonlink-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
