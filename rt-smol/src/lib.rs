//! jsonlink on [smol]: [`SmolRuntime`] implements [`rt::Runtime`] with smol's
//! global executor (or an [`Executor`] of yours), async-io timers,
//! async-net sockets and TLS through futures-rustls.
//!
//! smol's global executor runs tasks on its own thread(s), so every hand-off
//! between a link's driver and code in your `block_on` crosses threads (a
//! futex wake and a context switch). A program that wants one thread runs an
//! executor inside `block_on` and gives it to jsonlink:
//!
//! ```
//! use std::sync::Arc;
//! use jsonlink_smol::{DevPki, Identity, Secret, Server, SmolRuntime};
//!
//! let ex = Arc::new(smol::Executor::new());
//! smol::block_on(ex.run(async {
//!     let rt: Arc<dyn jsonlink_smol::Runtime> = Arc::new(SmolRuntime::on(ex.clone()));
//!     // Server::builder(rt, …) / Client::builder(rt, …): links run here.
//!     let pki = DevPki::generate().unwrap();
//!     let server = Server::builder(rt, pki.server_config().unwrap(),
//!             Secret::generate().unwrap(), Identity::new("srv", "demo"))
//!         .bind(([127, 0, 0, 1], 0).into())
//!         .await
//!         .unwrap();
//!     assert_ne!(server.local_addr().port(), 0);
//!     server.shutdown(std::time::Instant::now()).await;
//! }));
//! ```
//!
//! [smol]: https://docs.rs/smol
//!
//! The whole [`jsonlink_rt`] API ([`Server`], [`Client`], [`Link`],
//! [`Handlers`], [`Error`], [`Event`], …) is re-exported here, plus
//! [`server`] and [`client`] builders bound to this runtime. See the
//! `echo_smol` example.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use jsonlink_rt as rt;
use jsonlink_rt::runtime::{FuturesAccepted, futures_tls_connect};

pub use jsonlink_rt::*;

/// smol's global executor as the `Arc<dyn Runtime>` that [`Server::builder`] and
/// [`Client::builder`] take.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(SmolRuntime::global())
}

jsonlink_rt::adapter_builders!(runtime(), "smol");
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};

/// The [`Runtime`] for smol. Tasks (link drivers, handlers) run detached on
/// smol's global executor ([`global`](Self::global), the default) or on an
/// [`Executor`] you run ([`on`](Self::on)).
#[derive(Debug, Clone, Default)]
pub struct SmolRuntime {
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolRuntime {
    /// Spawns on smol's global executor (`smol::spawn`).
    pub fn global() -> Self {
        Self { executor: None }
    }

    /// Spawns on `executor`; its tasks make progress only while something
    /// runs it (e.g. `smol::block_on(executor.run(…))`).
    pub fn on(executor: Arc<Executor<'static>>) -> Self {
        Self {
            executor: Some(executor),
        }
    }
}

impl Runtime for SmolRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        match &self.executor {
            Some(ex) => ex.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            Timer::at(deadline).await;
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr).await?;
            Ok(Box::new(SmolListener(listener)) as Box<dyn Listener>)
        })
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { smol::net::resolve((host.as_str(), port)).await })
    }

    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> BoxFuture<'static, io::Result<TlsStream>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            futures_tls_connect(tcp, addr, config, server_name).await
        })
    }
}

#[derive(Debug)]
struct SmolListener(TcpListener);

impl Listener for SmolListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<Box<dyn Accepted>>> {
        Box::pin(async move {
            let (tcp, peer_addr) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(FuturesAccepted::new(tcp, peer_addr)) as Box<dyn Accepted>)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
