//! A relay front-end (PROTOCOL.md §18; zetta's "Router"): accepts
//! jsonlink clients with its own TLS and client secret, and carries all
//! their traffic to one upstream server over one link in the relay role.
//!
//! Each client that authenticates with the relay is announced upstream
//! (`join`, with the identity it proved and the address it came from); its
//! messages, requests and responses are wrapped both ways (`cmsg`, `creq`,
//! `cres`, payload bytes unchanged), and its end is reported (`leave`).
//! The upstream server sees each client as a [`Link`](crate::Link) of its
//! own. The relay terminates TLS and authentication for its clients: the
//! server trusts what the relay announces only because the relay proved a
//! relay secret.
//!
//! Bounds: each client's queue of frames from the server holds at most
//! [`RelayBuilder::client_queue`] frames; a client that lets it fill is
//! closed with the reason `overflow` (the relay does not block the shared
//! upstream link for it). When the upstream link ends, every client is
//! closed with the reason `upstream_lost`; the relay does not reconnect
//! (make a new [`Relay`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures_lite::AsyncReadExt;
use futures_lite::AsyncWriteExt;
use jsonlink_proto::{
    Authenticated, ClientId, CloseCode, Config, Connection, ConnectionParams,
    DEFAULT_MAX_RELAYED_FRAME, Event, Extensions, Identity, PeerRequestId, RawJson, RemoteError,
    RequestId, Secret, SendError, Side,
};
use rustls_pki_types::ServerName;

use crate::error::Error;
use crate::runtime::{BoxStream, Runtime};

/// Default of [`RelayBuilder::client_queue`]: frames from the server
/// waiting for one client.
pub const DEFAULT_RELAY_CLIENT_QUEUE: usize = 1024;
/// Commands from all clients waiting for the upstream link (bounded, so
/// a blocked upstream backs the clients up instead of growing memory).
const UP_QUEUE: usize = 4096;

/// Default of [`RelayBuilder::max_clients`].
pub const DEFAULT_RELAY_MAX_CLIENTS: usize = 10_000;

/// Configures a [`Relay`].
pub struct RelayBuilder {
    rt: Arc<dyn Runtime>,
    tls: Arc<rustls::ServerConfig>,
    client_config: Config,
    upstream: SocketAddr,
    upstream_tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    upstream_config: Config,
    client_queue: usize,
    max_clients: usize,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("upstream", &self.upstream)
            .field("client_queue", &self.client_queue)
            .field("max_clients", &self.max_clients)
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    /// A relay on `rt` that accepts clients with `tls` and the
    /// `client_secret`, presenting `identity`, and connects to the server
    /// at `upstream` (TLS `upstream_tls`, name `server_name`) with the
    /// `relay_secret` the server lists in its
    /// [`relay_secrets`](crate::ServerBuilder::relay_secrets).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: Arc<dyn Runtime>,
        tls: Arc<rustls::ServerConfig>,
        client_secret: Secret,
        identity: Identity,
        upstream: SocketAddr,
        upstream_tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        relay_secret: Secret,
    ) -> Self {
        let client_config = Config::new(client_secret, identity.clone());
        let mut upstream_config = Config::new(relay_secret, identity);
        upstream_config.relay = true;
        Self {
            rt,
            tls,
            client_config,
            upstream,
            upstream_tls,
            server_name,
            upstream_config,
            client_queue: DEFAULT_RELAY_CLIENT_QUEUE,
            max_clients: DEFAULT_RELAY_MAX_CLIENTS,
        }
    }

    /// Frames from the server that may wait for one client (it reads
    /// slower than the server sends); past it the client is closed with
    /// the reason `overflow`. Default [`DEFAULT_RELAY_CLIENT_QUEUE`];
    /// at least 1.
    pub fn client_queue(mut self, n: usize) -> Self {
        self.client_queue = n.max(1);
        self
    }

    /// Clients connected at once; one more is refused at TCP accept.
    /// Default [`DEFAULT_RELAY_MAX_CLIENTS`].
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Connects upstream (TLS and the relay handshake), then listens on
    /// `addr` for clients.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the upstream connection or the bind fails,
    /// [`Error::Closed`] if the upstream handshake does not authenticate
    /// in the relay role.
    pub async fn bind(self, addr: SocketAddr) -> Result<Relay, Error> {
        let rt = self.rt.clone();
        let tls = rt
            .connect_tls(
                self.upstream,
                self.upstream_tls.clone(),
                self.server_name.clone(),
            )
            .await
            .map_err(Error::Io)?;
        let params = ConnectionParams {
            channel_binding: tls.channel_binding,
            ..ConnectionParams::default()
        };
        let mut conn = Connection::new(
            Arc::new(self.upstream_config),
            Side::Client,
            rt.now(),
            params,
        );
        let mut stream = tls.stream;
        let mut early = Vec::new();
        if handshake(&*rt, &mut conn, &mut stream, &mut early)
            .await
            .is_none()
            || !conn.is_relay()
        {
            return Err(Error::Closed);
        }
        let max_frame = DEFAULT_MAX_RELAYED_FRAME.min(conn.relayed_frame_limit());
        let listener = rt.bind(addr).await.map_err(Error::Io)?;
        let local_addr = listener.local_addr().map_err(Error::Io)?;
        let (up_tx, up_rx) = async_channel::bounded::<Up>(UP_QUEUE);
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let shared = Arc::new(Shared {
            clients: AtomicUsize::new(0),
            upstream_open: AtomicBool::new(true),
        });
        let mut client_config = self.client_config;
        client_config.max_frame = client_config.max_frame.min(max_frame);
        let client_config = Arc::new(client_config);
        let up = Upstream {
            rt: rt.clone(),
            conn,
            early,
            clients: HashMap::new(),
            queue: self.client_queue,
            shared: shared.clone(),
        };
        rt.spawn(Box::pin(up.run(stream, up_rx, stop_rx.clone())));
        let accept = {
            let rt = rt.clone();
            let shared = shared.clone();
            let max_clients = self.max_clients;
            let tls = self.tls.clone();
            async move {
                loop {
                    let accepted =
                        futures_lite::future::or(async { Some(listener.accept().await) }, async {
                            let _ = stop_rx.recv().await;
                            None
                        })
                        .await;
                    let Some(accepted) = accepted else { return };
                    let Ok(accepted) = accepted else { continue };
                    if shared.clients.load(Ordering::Relaxed) >= max_clients
                        || !shared.upstream_open.load(Ordering::Relaxed)
                    {
                        continue;
                    }
                    shared.clients.fetch_add(1, Ordering::Relaxed);
                    let client = Downstream {
                        max_frame,
                        rt: rt.clone(),
                        config: client_config.clone(),
                        up: up_tx.clone(),
                        shared: shared.clone(),
                    };
                    rt.spawn(Box::pin(client.run(accepted, tls.clone())));
                }
            }
        };
        rt.spawn(Box::pin(accept));
        Ok(Relay {
            local_addr,
            max_frame,
            shared,
            _stop: stop_tx,
        })
    }
}

/// A running relay; dropping it stops accepting clients and closes the
/// upstream link (and with it every client).
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    max_frame: usize,
    shared: Arc<Shared>,
    _stop: async_channel::Sender<()>,
}

impl Relay {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `max_frame` the relay announces to its clients:
    /// `min(DEFAULT_MAX_RELAYED_FRAME, the upstream's relayed frame limit)`
    /// (and no more than its client configuration's `max_frame`).
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Clients connected now (including those still in their handshake).
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Whether the upstream link is still open.
    pub fn upstream_open(&self) -> bool {
        self.shared.upstream_open.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Shared {
    clients: AtomicUsize,
    upstream_open: AtomicBool,
}

/// From a client's task to the upstream task.
enum Up {
    Join {
        identity: Identity,
        addr: String,
        max_frame: usize,
        extensions: Extensions,
        down: async_channel::Sender<Down>,
        reply: futures_channel::oneshot::Sender<Option<ClientId>>,
    },
    Msg(ClientId, RawJson),
    Req(ClientId, PeerRequestId, RawJson),
    Res(ClientId, PeerRequestId, Result<RawJson, RemoteError>),
    Leave(ClientId, CloseCode, String),
}

/// From the upstream task to one client's task.
enum Down {
    Msg(RawJson),
    Req(PeerRequestId, RawJson),
    Res(PeerRequestId, Result<RawJson, RemoteError>),
    /// Close the client at once with this reason.
    Close(String),
    /// Close the client gracefully (the server's going-away notice).
    Drain(String),
}

/// Runs the handshake of `conn` over `stream`; what it authenticated,
/// or `None`. Events after `Authenticated` in the same round stay in
/// `early`.
async fn handshake(
    rt: &dyn Runtime,
    conn: &mut Connection,
    stream: &mut BoxStream,
    early: &mut Vec<Event>,
) -> Option<Authenticated> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut done = None;
    loop {
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Authenticated(a) => done = Some(a),
                Event::Closed(_) => return None,
                ev if done.is_some() => early.push(ev),
                _ => {}
            }
        }
        if !flush(conn, stream).await {
            return None;
        }
        if done.is_some() {
            return done;
        }
        let timeout = conn.poll_timeout();
        match read_or_timeout(rt, stream, &mut buf, timeout).await {
            Read::Data(n) => conn.handle_input(rt.now(), buf.get(..n).unwrap_or_default()),
            Read::Eof => conn.handle_eof(rt.now()),
            Read::Timeout => conn.handle_timeout(rt.now()),
        }
    }
}

/// Writes what `conn` has queued; `false` on a write error.
async fn flush(conn: &mut Connection, stream: &mut BoxStream) -> bool {
    loop {
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        if out.is_empty() {
            return stream.flush().await.is_ok();
        }
        if stream.write_all(&out).await.is_err() {
            return false;
        }
    }
}

enum Read {
    Data(usize),
    Eof,
    Timeout,
}

async fn read_or_timeout(
    rt: &dyn Runtime,
    stream: &mut BoxStream,
    buf: &mut [u8],
    timeout: Option<Instant>,
) -> Read {
    let read = async {
        match stream.read(buf).await {
            Ok(0) | Err(_) => Read::Eof,
            Ok(n) => Read::Data(n),
        }
    };
    match timeout {
        None => read.await,
        Some(at) => {
            futures_lite::future::or(read, async {
                rt.sleep_until(at).await;
                Read::Timeout
            })
            .await
        }
    }
}

/// One step of a connection task: input, a command, or a timer.
enum Step<C> {
    Read(Read),
    Cmd(Option<C>),
}

/// The upstream link, in the relay role.
struct Upstream {
    rt: Arc<dyn Runtime>,
    conn: Connection,
    early: Vec<Event>,
    clients: HashMap<ClientId, async_channel::Sender<Down>>,
    queue: usize,
    shared: Arc<Shared>,
}

impl Upstream {
    async fn run(
        mut self,
        mut stream: BoxStream,
        cmds: async_channel::Receiver<Up>,
        stop: async_channel::Receiver<()>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        for ev in std::mem::take(&mut self.early) {
            self.event(ev);
        }
        let mut held: Option<Up> = None;
        loop {
            while let Some(ev) = self.conn.poll_event() {
                self.event(ev);
            }
            if !flush(&mut self.conn, &mut stream).await || self.conn.is_closed() {
                break;
            }
            if let Some(cmd) = held.take() {
                let now = self.rt.now();
                held = self.command(now, cmd);
                if held.is_none() {
                    continue;
                }
            }
            let timeout = self.conn.poll_timeout();
            let paused = held.is_some();
            let step = futures_lite::future::or(
                async {
                    let r = read_or_timeout(&*self.rt, &mut stream, &mut buf, timeout).await;
                    Step::Read(r)
                },
                futures_lite::future::or(
                    async {
                        if paused {
                            std::future::pending::<()>().await;
                        }
                        Step::Cmd(cmds.recv().await.ok())
                    },
                    async {
                        let _ = stop.recv().await;
                        Step::Cmd(None)
                    },
                ),
            )
            .await;
            let now = self.rt.now();
            match step {
                Step::Read(Read::Data(n)) => {
                    self.conn
                        .handle_input(now, buf.get(..n).unwrap_or_default());
                }
                Step::Read(Read::Eof) => self.conn.handle_eof(now),
                Step::Read(Read::Timeout) => self.conn.handle_timeout(now),
                Step::Cmd(Some(cmd)) => held = self.command(now, cmd),
                // The relay dropped: close the upstream link.
                Step::Cmd(None) => self.conn.close_by(now, "relay stopped", now),
            }
        }
        self.shared.upstream_open.store(false, Ordering::Relaxed);
        for (_, tx) in self.clients.drain() {
            let _ = tx.force_send(Down::Close("upstream_lost".into()));
        }
        // Joins still queued get no id.
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let Up::Join { reply, .. } = cmd {
                let _ = reply.send(None);
            }
        }
    }

    /// Applies one command from a client's task; the command back if the
    /// upstream connection is blocked (its outbound buffer is full: the
    /// clients then wait, the bounded command queue backing them up).
    fn command(&mut self, now: Instant, cmd: Up) -> Option<Up> {
        let c = &mut self.conn;
        match cmd {
            Up::Join {
                identity,
                addr,
                max_frame,
                extensions,
                down,
                reply,
            } => match c.join(&identity, &addr, max_frame, extensions) {
                Err(SendError::Blocked) => {
                    return Some(Up::Join {
                        identity,
                        addr,
                        max_frame,
                        extensions,
                        down,
                        reply,
                    });
                }
                Ok(id) => {
                    self.clients.insert(id, down);
                    let _ = reply.send(Some(id));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "relay: join refused");
                    let _ = reply.send(None);
                }
            },
            Up::Msg(client, body) => {
                if let Err(SendError::Blocked) = c.client_send(client, body.raw()) {
                    return Some(Up::Msg(client, body));
                }
            }
            Up::Req(client, id, body) => match c.client_forward(client, id, body.raw()) {
                Ok(_) => {}
                Err(SendError::Blocked) => return Some(Up::Req(client, id, body)),
                Err(e) => {
                    let err = RemoteError::new(
                        RemoteError::INTERNAL,
                        format!("the relay could not forward the request: {e}"),
                    );
                    self.deliver(client, Down::Res(id, Err(err)));
                }
            },
            Up::Res(client, id, result) => {
                if let Err(SendError::Blocked) =
                    c.client_respond(client, id, result.as_ref().map(RawJson::raw))
                {
                    return Some(Up::Res(client, id, result));
                }
            }
            Up::Leave(client, code, reason) => {
                self.clients.remove(&client);
                let _ = c.leave(now, client, code, &reason);
            }
        }
        None
    }

    /// Queues `frame` for `client`; a client whose queue is full is closed
    /// (`overflow`) and left.
    fn deliver(&mut self, client: ClientId, frame: Down) {
        let Some(tx) = self.clients.get(&client) else {
            return;
        };
        if tx.len() >= self.queue || tx.try_send(frame).is_err() {
            let _ = tx.force_send(Down::Close(
                "overflow: the client reads slower than the server sends".into(),
            ));
            self.clients.remove(&client);
            let now = self.rt.now();
            let _ = self.conn.leave(
                now,
                client,
                CloseCode::Overflow,
                "the client's queue at the relay is full",
            );
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::ClientMessage { client, body, .. } => self.deliver(client, Down::Msg(body)),
            Event::ClientRequest {
                client, id, body, ..
            } => self.deliver(client, Down::Req(id, body)),
            Event::ClientResponse { client, id, body } => {
                self.deliver(client, Down::Res(PeerRequestId(id.0), Ok(body)));
            }
            // A failure other than the server's error answer (the client
            // left, or the upstream link ended) is not passed on: the
            // client's connection is closed (by its own end, or with
            // `upstream_lost`), which fails the request there, once.
            Event::ClientRequestFailed {
                client,
                id,
                error: jsonlink_proto::RequestError::Remote(e),
            } => {
                self.deliver(client, Down::Res(PeerRequestId(id.0), Err(e)));
            }
            Event::ClientClosing { client, reason } => {
                if let Some(tx) = self.clients.get(&client) {
                    let _ = tx.force_send(Down::Drain(reason));
                }
            }
            Event::Left { client, reason } => {
                if let Some(tx) = self.clients.remove(&client) {
                    // Left with the connection: the upstream is gone.
                    let why = if self.conn.is_closed() {
                        format!("upstream_lost: {reason}")
                    } else {
                        format!("the server ended the client: {reason}")
                    };
                    let _ = tx.force_send(Down::Close(why));
                }
            }
            _ => {}
        }
    }
}

/// One client's connection to the relay.
struct Downstream {
    /// The bound on relayed frames (announced to the clients as theirs).
    max_frame: usize,
    rt: Arc<dyn Runtime>,
    config: Arc<Config>,
    up: async_channel::Sender<Up>,
    shared: Arc<Shared>,
}

impl Downstream {
    async fn run(
        self,
        accepted: Box<dyn crate::runtime::Accepted>,
        tls: Arc<rustls::ServerConfig>,
    ) {
        self.serve(accepted, tls).await;
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }

    async fn serve(
        &self,
        accepted: Box<dyn crate::runtime::Accepted>,
        tls: Arc<rustls::ServerConfig>,
    ) {
        let peer_addr = accepted.peer_addr();
        // The TLS handshake within the client handshake timeout (the
        // jsonlink handshake has its own timer in the core).
        let deadline =
            crate::deadline::deadline_after(self.rt.now(), self.config.handshake_timeout);
        let tls = crate::deadline::with_deadline(&*self.rt, deadline, accepted.tls(tls))
            .await
            .and_then(Result::ok);
        let Some(tls) = tls else {
            return;
        };
        let params = ConnectionParams {
            channel_binding: tls.channel_binding,
            connection_id: 0,
        };
        let mut conn = Connection::new(self.config.clone(), Side::Server, self.rt.now(), params);
        let mut stream = tls.stream;
        let mut early = Vec::new();
        let Some(auth) = handshake(&*self.rt, &mut conn, &mut stream, &mut early).await else {
            return;
        };
        let Some(peer) = conn.peer().cloned() else {
            return;
        };
        let (down_tx, down_rx) = async_channel::unbounded::<Down>();
        let (reply_tx, reply_rx) = futures_channel::oneshot::channel();
        let join = Up::Join {
            identity: peer,
            addr: peer_addr.to_string(),
            // What the client accepts as a plain frame, within the bound on
            // relayed frames (PROTOCOL.md §18.3).
            max_frame: auth.max_plain_frame().min(self.max_frame).max(512),
            extensions: conn.extensions(),
            down: down_tx,
            reply: reply_tx,
        };
        let client = match self.up.send(join).await {
            Ok(()) => reply_rx.await.ok().flatten(),
            Err(_) => None,
        };
        let Some(client) = client else {
            let now = self.rt.now();
            conn.close_by(now, "upstream_lost", now);
            let _ = flush(&mut conn, &mut stream).await;
            return;
        };
        // The server's requests to this client, by the relay's own ids.
        let mut theirs: HashMap<RequestId, PeerRequestId> = HashMap::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending = early;
        let mut code = CloseCode::Normal;
        // A frame for the client that its connection refused as blocked
        // (its outbound buffer is full): the client is paused, its queue
        // at the relay fills, and past the bound the upstream task closes
        // it (`overflow`).
        let mut held: Option<Down> = None;
        loop {
            for ev in pending.drain(..) {
                self.event(client, &mut theirs, ev).await;
            }
            while let Some(ev) = conn.poll_event() {
                if let Event::Closed(r) = &ev {
                    code = r.code();
                }
                self.event(client, &mut theirs, ev).await;
            }
            if !flush(&mut conn, &mut stream).await || conn.is_closed() {
                break;
            }
            let now = self.rt.now();
            if let Some(frame) = held.take() {
                held = self.apply(&mut conn, client, &mut theirs, now, frame).await;
                if held.is_none() {
                    continue;
                }
            }
            let timeout = conn.poll_timeout();
            let paused = held.is_some();
            let step = futures_lite::future::or(
                async {
                    Step::Read(read_or_timeout(&*self.rt, &mut stream, &mut buf, timeout).await)
                },
                async {
                    if paused {
                        std::future::pending::<()>().await;
                    }
                    Step::Cmd(down_rx.recv().await.ok())
                },
            )
            .await;
            let now = self.rt.now();
            match step {
                Step::Read(Read::Data(n)) => {
                    conn.handle_input(now, buf.get(..n).unwrap_or_default());
                }
                Step::Read(Read::Eof) => conn.handle_eof(now),
                Step::Read(Read::Timeout) => conn.handle_timeout(now),
                Step::Cmd(Some(frame)) => {
                    held = self.apply(&mut conn, client, &mut theirs, now, frame).await;
                }
                Step::Cmd(None) => {
                    conn.close_by(now, "upstream_lost", now);
                }
            }
        }
        let _ = self
            .up
            .send(Up::Leave(
                client,
                code,
                "the client's connection ended".into(),
            ))
            .await;
    }

    /// Gives one frame from the server to the client's connection; the
    /// frame back if the connection is blocked (try again after
    /// `SendUnblocked`).
    async fn apply(
        &self,
        conn: &mut Connection,
        client: ClientId,
        theirs: &mut HashMap<RequestId, PeerRequestId>,
        now: Instant,
        frame: Down,
    ) -> Option<Down> {
        match frame {
            Down::Msg(body) => {
                if let Err(SendError::Blocked) = conn.send(body.raw()) {
                    return Some(Down::Msg(body));
                }
            }
            Down::Req(id, body) => match conn.request(now, body.raw(), None) {
                Ok(ours) => {
                    theirs.insert(ours, id);
                }
                Err(SendError::Blocked) => return Some(Down::Req(id, body)),
                Err(e) => {
                    let err = RemoteError::new(
                        RemoteError::INTERNAL,
                        format!("the relay could not forward the request: {e}"),
                    );
                    let _ = self.up.send(Up::Res(client, id, Err(err))).await;
                }
            },
            Down::Res(id, result) => {
                if let Err(SendError::Blocked) = conn.respond(id, result.as_ref().map(RawJson::raw))
                {
                    return Some(Down::Res(id, result));
                }
            }
            Down::Close(reason) => conn.close_by(now, &reason, now),
            Down::Drain(reason) => conn.close(now, &reason),
        }
        None
    }

    async fn event(
        &self,
        client: ClientId,
        theirs: &mut HashMap<RequestId, PeerRequestId>,
        ev: Event,
    ) {
        let up = match ev {
            Event::Message { body, .. } => Up::Msg(client, body),
            Event::Request { id, body, .. } => Up::Req(client, id, body),
            Event::Response { id, body } => match theirs.remove(&id) {
                Some(theirs) => Up::Res(client, theirs, Ok(body)),
                None => return,
            },
            Event::RequestFailed { id, error } => match theirs.remove(&id) {
                Some(theirs) => {
                    let err = match error {
                        jsonlink_proto::RequestError::Remote(e) => e,
                        _ => RemoteError::new(
                            RemoteError::INTERNAL,
                            "the relay could not forward the request",
                        ),
                    };
                    Up::Res(client, theirs, Err(err))
                }
                None => return,
            },
            _ => return,
        };
        let _ = self.up.send(up).await;
    }
}
