//! jsonlink on [tokio]: [`TokioRuntime`] implements [`rt::Runtime`] with tokio
//! tasks, timers and sockets, and TLS through tokio-rustls. TLS streams are
//! bridged to futures-io with `tokio_util::compat`.
//!
//! The whole [`jsonlink_rt`] API ([`Server`], [`Client`], [`Link`],
//! [`Handlers`], [`Error`], [`Event`], …) is re-exported here, plus
//! [`server`] and [`client`] builders bound to this runtime. See the
//! `echo_tokio` example.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

pub use jsonlink_rt as rt;
pub use jsonlink_rt::*;

jsonlink_rt::adapter_builders! {
    /// The current tokio runtime as the `Arc<dyn Runtime>` that
    /// [`Server::builder`] and [`Client::builder`] take.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    runtime = TokioRuntime::current(),
    name = "the current tokio runtime",
}

/// The [`Runtime`] for tokio. Tasks are spawned on the tokio runtime whose
/// [`Handle`] it holds, so it may be used from any thread.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// A runtime spawning onto the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (see [`Handle::current`]).
    pub fn current() -> Self {
        Self::from_handle(Handle::current())
    }

    /// A runtime spawning onto the tokio runtime of `handle`.
    pub fn from_handle(handle: Handle) -> Self {
        Self { handle }
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(self.handle.spawn(future));
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        in_tokio(&self.handle, async move {
            tokio::time::sleep_until(deadline.into()).await
        })
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        in_tokio(&self.handle, async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        let handle = self.handle.clone();
        in_tokio(&self.handle, async move {
            let listener = TcpListener::bind(addr).await?;
            Ok(Box::new(TokioListener(listener, handle)) as Box<dyn Listener>)
        })
    }

    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> BoxFuture<'static, io::Result<TlsStream>> {
        in_tokio(&self.handle, async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            TlsStream::new(tls.compat(), addr, |s| &**s.get_ref().get_ref().1)
        })
    }
}

/// Runs `fut` inside `handle`'s context on every poll, so tokio sockets and
/// timers work even when the caller awaits from another executor (a smol
/// or async-std task, or `futures_lite::future::block_on`).
fn in_tokio<'a, T>(handle: &Handle, fut: impl Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
    let handle = handle.clone();
    let mut fut = Box::pin(fut);
    Box::pin(std::future::poll_fn(move |cx| {
        let _entered = handle.enter();
        fut.as_mut().poll(cx)
    }))
}

#[derive(Debug)]
struct TokioListener(TcpListener, Handle);

impl Listener for TokioListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<Box<dyn Accepted>>> {
        let handle = self.1.clone();
        in_tokio(&self.1, async move {
            let (tcp, peer_addr) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(runtime::accepted(peer_addr, move |config| {
                in_tokio(&handle, async move {
                    let tls = TlsAcceptor::from(config).accept(tcp).await?;
                    TlsStream::new(tls.compat(), peer_addr, |s| &**s.get_ref().get_ref().1)
                })
            }))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The README's Rust examples, compiled and run as doctests of this crate
/// (`cargo test -p jsonlink-tokio --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
