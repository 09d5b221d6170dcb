//! jsonlink on [async-std]: [`AsyncStdRuntime`] implements [`rt::Runtime`]
//! with async-std tasks, timers and sockets, and TLS through futures-rustls.
//!
//! **async-std is discontinued upstream** ([RUSTSEC-2025-0052]); its authors
//! point to smol. This crate is kept as a small shim for existing async-std
//! programs and gets no features of its own: prefer `jsonlink-smol` (the same
//! executor and reactor underneath) or `jsonlink-tokio` for new code.
//!
//! [async-std]: https://docs.rs/async-std
//! [RUSTSEC-2025-0052]: https://rustsec.org/advisories/RUSTSEC-2025-0052
//!
//! The whole [`jsonlink_rt`] API ([`Server`], [`Client`], [`Link`],
//! [`Handlers`], [`Error`], [`Event`], …) is re-exported here, plus
//! [`server`] and [`client`] builders bound to this runtime. See the
//! `echo_async_std` example.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use jsonlink_rt as rt;
pub use jsonlink_rt::*;

jsonlink_rt::adapter_builders! {
    /// async-std as the `Arc<dyn Runtime>` that [`Server::builder`] and
    /// [`Client::builder`] take.
    runtime = AsyncStdRuntime,
    name = "async-std",
}
jsonlink_rt::futures_io_tcp!(listener async_std::net::TcpListener);

/// The [`Runtime`] for async-std (discontinued upstream, see the crate docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(async_std::task::spawn(future));
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            async_std::task::sleep(deadline.saturating_duration_since(Instant::now())).await;
        })
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        use async_std::net::ToSocketAddrs as _;
        let host = host.to_owned();
        Box::pin(async move { Ok((host.as_str(), port).to_socket_addrs().await?.collect()) })
    }

    jsonlink_rt::futures_io_tcp!(methods async_std::net::TcpListener, async_std::net::TcpStream);
}
