//! The seam between the runtime-independent layer and one async runtime.
//!
//! Everything runtime-specific that jsonlink needs fits in [`Runtime`]: spawning
//! a detached task, a timer at an instant, the current time, and TCP + TLS
//! connect/accept yielding [`futures_io`] streams. Each `jsonlink-*` adapter
//! crate implements it in a few dozen lines (tokio bridges its streams with
//! `tokio_util::compat`, as async-tungstenite does).
//!
//! Shared TLS glue lives here too: [`channel_binding`] for any rustls
//! connection ([`TlsStream::new`] derives it), [`accepted`] for an
//! adapter's [`Accepted`] connections, and [`futures_tls_connect`] /
//! [`futures_tls_accept`] / [`futures_accepted`] for runtimes whose sockets
//! already speak futures-io (async-std, smol), over futures-rustls (their
//! adapters' TCP code is the `futures_io_tcp!` macro's).

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bidirectional byte stream (TCP, or TLS over TCP) in futures-io terms.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A boxed [`AsyncStream`].
pub type BoxStream = Box<dyn AsyncStream>;

pub use jsonlink_proto::{EXPORTER_LABEL, EXPORTER_LEN};

/// An established TLS session, ready for the jsonlink handshake.
pub struct TlsStream {
    /// The encrypted stream.
    pub stream: BoxStream,
    /// [`EXPORTER_LEN`] bytes of TLS exporter keying material under
    /// [`EXPORTER_LABEL`] with no context; both ends derive the same bytes
    /// only if they share one TLS session (no terminating relay between them).
    pub channel_binding: Vec<u8>,
    /// The peer's address.
    pub peer_addr: SocketAddr,
}

impl TlsStream {
    /// The session established over `stream` with the peer at
    /// `peer_addr`; `session` gives the stream's rustls connection, whose
    /// [`channel_binding`] it derives.
    ///
    /// Fails as [`channel_binding`] does, if the handshake has not
    /// completed.
    pub fn new<S, D>(
        stream: S,
        peer_addr: SocketAddr,
        session: impl FnOnce(&S) -> &rustls::ConnectionCommon<D>,
    ) -> io::Result<Self>
    where
        S: AsyncStream,
    {
        let channel_binding = channel_binding(session(&stream))?;
        Ok(Self {
            stream: Box::new(stream),
            channel_binding,
            peer_addr,
        })
    }
}

impl Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

/// A bound TCP listener. Dropping it closes the socket.
pub trait Listener: Send + Sync + Debug + 'static {
    /// Accepts the next TCP connection (with `TCP_NODELAY` set).
    fn accept(&self) -> BoxFuture<'_, io::Result<Box<dyn Accepted>>>;
    /// The local address the listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// An accepted TCP connection that has not started TLS yet. Dropping it
/// closes the socket.
pub trait Accepted: Send + 'static {
    /// The peer's address.
    fn peer_addr(&self) -> SocketAddr;
    /// Runs the server side of TLS with `config`.
    fn tls(
        self: Box<Self>,
        config: Arc<rustls::ServerConfig>,
    ) -> BoxFuture<'static, io::Result<TlsStream>>;
}

/// One async runtime, as jsonlink needs it. Object safe: held as
/// `Arc<dyn Runtime>`.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Spawns a detached task. Tasks jsonlink spawns end by themselves when
    /// the handles that own them are dropped.
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// The current time of the runtime's clock.
    fn now(&self) -> Instant;
    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
    /// Resolves `host` (a DNS name, or an IP address literal) with the
    /// runtime's own resolver, giving every address for `port` in the order
    /// the resolver returns them. The client calls it before every connect
    /// attempt, so a host that moves is found again on reconnect.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
    /// Binds a TCP listener.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    /// Opens a TCP connection (with `TCP_NODELAY` set) and runs the client
    /// side of TLS over it.
    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> BoxFuture<'static, io::Result<TlsStream>>;
}

/// Derives the channel binding of an established TLS session:
/// [`EXPORTER_LEN`] bytes of exporter keying material under
/// [`EXPORTER_LABEL`] with no context. Works on either side
/// (`ClientConnection` and `ServerConnection` deref to
/// [`rustls::ConnectionCommon`]).
///
/// Fails (with [`io::ErrorKind::Other`] wrapping the [`rustls::Error`]) if
/// the handshake has not completed.
pub fn channel_binding<D>(conn: &rustls::ConnectionCommon<D>) -> io::Result<Vec<u8>> {
    conn.export_keying_material(vec![0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(io::Error::other)
}

/// Runs the client side of TLS with futures-rustls over an open `tcp`
/// stream whose peer is `peer_addr`.
///
/// A handshake failure is an [`io::ErrorKind::InvalidData`] error wrapping
/// the [`rustls::Error`].
pub async fn futures_tls_connect<S>(
    tcp: S,
    peer_addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: rustls_pki_types::ServerName<'static>,
) -> io::Result<TlsStream>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    TlsStream::new(tls, peer_addr, |s| &**s.get_ref().1)
}

/// Runs the server side of TLS with futures-rustls over an accepted `tcp`
/// stream whose peer is `peer_addr`.
///
/// A handshake failure is an [`io::ErrorKind::InvalidData`] error wrapping
/// the [`rustls::Error`].
pub async fn futures_tls_accept<S>(
    tcp: S,
    peer_addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<TlsStream>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let tls = futures_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await?;
    TlsStream::new(tls, peer_addr, |s| &**s.get_ref().1)
}

/// An [`Accepted`] connection from `peer_addr` whose server side of TLS is
/// `handshake` (given the server's configuration at the time).
pub fn accepted<F>(peer_addr: SocketAddr, handshake: F) -> Box<dyn Accepted>
where
    F: FnOnce(Arc<rustls::ServerConfig>) -> BoxFuture<'static, io::Result<TlsStream>>
        + Send
        + 'static,
{
    Box::new(AcceptedWith {
        peer_addr,
        handshake,
    })
}

/// An [`Accepted`] connection over any futures-io TCP stream; its
/// [`Accepted::tls`] is [`futures_tls_accept`].
pub fn futures_accepted<S>(stream: S, peer_addr: SocketAddr) -> Box<dyn Accepted>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    accepted(peer_addr, move |config| {
        Box::pin(futures_tls_accept(stream, peer_addr, config))
    })
}

/// What [`accepted`] makes.
struct AcceptedWith<F> {
    peer_addr: SocketAddr,
    handshake: F,
}

impl<F> Accepted for AcceptedWith<F>
where
    F: FnOnce(Arc<rustls::ServerConfig>) -> BoxFuture<'static, io::Result<TlsStream>>
        + Send
        + 'static,
{
    fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    fn tls(
        self: Box<Self>,
        config: Arc<rustls::ServerConfig>,
    ) -> BoxFuture<'static, io::Result<TlsStream>> {
        (self.handshake)(config)
    }
}

/// The TCP half of a [`Runtime`] whose sockets speak futures-io, for
/// jsonlink-async-std and jsonlink-smol: `TCP_NODELAY` set, TLS through
/// futures-rustls, over the runtime's `TcpListener` and `TcpStream`.
///
/// - `futures_io_tcp!(listener $listener)`, in the crate: its
///   [`Listener`] (`FuturesListener`);
/// - `futures_io_tcp!(methods $listener, $stream)`, in its
///   `impl Runtime`: [`Runtime::bind`] and [`Runtime::connect_tls`].
#[doc(hidden)]
#[macro_export]
macro_rules! futures_io_tcp {
    (listener $listener:ty) => {
        /// The runtime's TCP listener.
        #[derive(Debug)]
        struct FuturesListener($listener);

        impl $crate::Listener for FuturesListener {
            fn accept(&self) -> $crate::BoxFuture<'_, std::io::Result<Box<dyn $crate::Accepted>>> {
                Box::pin(async move {
                    let (tcp, peer_addr) = self.0.accept().await?;
                    tcp.set_nodelay(true)?;
                    Ok($crate::runtime::futures_accepted(tcp, peer_addr))
                })
            }

            fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                self.0.local_addr()
            }
        }
    };
    (methods $listener:ty, $stream:ty) => {
        fn bind(
            &self,
            addr: std::net::SocketAddr,
        ) -> $crate::BoxFuture<'_, std::io::Result<Box<dyn $crate::Listener>>> {
            Box::pin(async move {
                let listener = <$listener>::bind(addr).await?;
                Ok(Box::new(FuturesListener(listener)) as Box<dyn $crate::Listener>)
            })
        }

        fn connect_tls(
            &self,
            addr: std::net::SocketAddr,
            config: std::sync::Arc<$crate::rustls::ClientConfig>,
            server_name: $crate::ServerName<'static>,
        ) -> $crate::BoxFuture<'static, std::io::Result<$crate::TlsStream>> {
            Box::pin(async move {
                let tcp = <$stream>::connect(addr).await?;
                tcp.set_nodelay(true)?;
                $crate::runtime::futures_tls_connect(tcp, addr, config, server_name).await
            })
        }
    };
}
