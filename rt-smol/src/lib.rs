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

use smol::{Executor, Timer};

pub use jsonlink_rt as rt;
pub use jsonlink_rt::*;

jsonlink_rt::adapter_builders! {
    /// smol's global executor as the `Arc<dyn Runtime>` that
    /// [`Server::builder`] and [`Client::builder`] take.
    runtime = SmolRuntime::global(),
    name = "smol",
}
jsonlink_rt::futures_io_tcp!(listener smol::net::TcpListener);

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

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { smol::net::resolve((host.as_str(), port)).await })
    }

    jsonlink_rt::futures_io_tcp!(methods smol::net::TcpListener, smol::net::TcpStream);
}
