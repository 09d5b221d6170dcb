//! The adversarial peers: a raw-TLS client or server whose plaintext is
//! under full control of the test (it can send arbitrary bytes at arbitrary
//! times, or run the real handshake with a core `Connection` and then write
//! whatever it likes), and plain-TCP helpers for peers below TLS.
//!
//! The adversary speaks TLS with tokio-rustls directly, so it is
//! independent of the adapters under test; it runs on tokio (the harness's
//! [`on_tokio`](crate::runtimes::on_tokio)).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::waits::SETTLE;

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

    /// The local address of the TCP socket (the peer address the server
    /// reports for this connection).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.get_ref().0.local_addr()
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

/// Reads a plain TCP socket until the peer closes it (EOF or reset);
/// everything that came before (a TLS alert, say).
///
/// # Panics
///
/// If the peer has not closed it within [`SETTLE`].
pub async fn closed_by_peer(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(SETTLE, tcp.read(&mut buf))
            .await
            .expect("the peer did not close the socket")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
}
