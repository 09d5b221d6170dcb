//! The runtime-independent half of every jsonlink adapter: the per-link
//! driver, [`Server`], [`Client`], [`Link`], dispatch by op ([`Handlers`]),
//! the reconnect policy and the limits, written once and generic over
//! `Arc<dyn` [`Runtime`]`>`.
//!
//! A [`Multiplexer`] (module [`multiplexer`]) holds many links behind one
//! handle: the named client and server entries of a [`ConnectionList`],
//! one handler table, one merged event stream, addressing by link, entry
//! or peer identity ([`To`]).
//!
//! [`runtime`] is the seam to one async runtime (the [`Runtime`] trait, which
//! `jsonlink-tokio`, `jsonlink-async-std` and `jsonlink-smol` implement) plus
//! the TLS glue they share; [`certs`] loads PEM files into rustls
//! configurations built on the `ring` provider, and [`dev_certs`] (feature
//! `dev-certs`, on by default) makes development certificates in memory.
//!
//! # Shape
//!
//! Each link is one task that **owns** its sans-IO
//! [`jsonlink_proto::Connection`] and its TLS stream (no mutex around the
//! state machine). Handles ([`Link`], [`Server`], [`Client`]) talk to it
//! through bounded channels, so a slow peer makes `send().await` wait
//! instead of growing a queue. Responses to requests come back through a
//! one-shot channel per request. See the `driver` module docs for the
//! order of work in one wake.
//!
//! # Example
//!
//! ```
//! # // Any runtime: smol's here (rt-core's doctests run on jsonlink-smol).
//! # smol::block_on(demo(jsonlink_smol::runtime())).unwrap();
//! # async fn demo(rt: std::sync::Arc<dyn jsonlink_rt::Runtime>) -> Result<(), jsonlink_rt::Error> {
//! use jsonlink_rt::{Client, DevPki, Identity, Secret, Server};
//! use serde_json::{Value, json};
//!
//! let pki = DevPki::generate().expect("dev certs");
//! let secret = Secret::generate().expect("OS randomness");
//! let server = Server::builder(rt.clone(), pki.server_config().expect("tls"), secret.clone(),
//!         Identity::new("server-1", "demo"))
//!     .bind(([127, 0, 0, 1], 0).into())
//!     .await?;
//! server.handlers().handle_request("add", |_link, v: Value| async move {
//!     Ok(v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0))
//! });
//!
//! let client = Client::builder(rt, server.local_addr(), pki.client_config().expect("tls"),
//!         pki.server_name(), secret, Identity::new("client-1", "demo"))
//!     .connect()
//!     .await?;
//! let sum: i64 = client.request(&json!({"op": "add", "a": 2, "b": 3})).await?;
//! assert_eq!(sum, 5);
//! client.close().await;
//! server.shutdown(std::time::Instant::now()).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod certs;
mod client;
mod config;
mod context;
mod deadline;
#[cfg(feature = "dev-certs")]
pub mod dev_certs;
mod dispatch;
mod driver;
mod error;
mod event;
mod event_queue;
mod handler_error;
mod link;
pub mod multiplexer;
mod queue;
pub mod reconnect;
pub mod relay;
pub mod runtime;
mod server;
mod stats;

/// The sans-IO core this layer drives.
pub use jsonlink_proto as proto;
/// The TLS library (ring provider) whose configurations the builders take.
pub use rustls;
/// The server name type [`Client::builder`] takes.
pub use rustls_pki_types::ServerName;

/// Defines, in an adapter crate, `runtime()` (the adapter's runtime as
/// `Arc<dyn Runtime>`: `runtime = ..`, after its doc comment), and
/// `server(..)`, `client(..)` and `multiplexer(..)`: [`Server::builder`],
/// [`Client::builder`] and [`Multiplexer::builder`] bound to it. Used by jsonlink-tokio,
/// jsonlink-async-std and jsonlink-smol, so the three stay identical. (The
/// adapters write `pub use jsonlink_rt as rt; pub use jsonlink_rt::*;`
/// themselves: a macro may not re-export `$crate` on the MSRV, 1.90.)
#[doc(hidden)]
#[macro_export]
macro_rules! adapter_builders {
    ($(#[$doc:meta])* runtime = $runtime:expr, name = $name:literal $(,)?) => {
        $(#[$doc])*
        pub fn runtime() -> std::sync::Arc<dyn $crate::Runtime> {
            std::sync::Arc::new($runtime)
        }

        #[doc = concat!("[`Server::builder`] on ", $name, ".")]
        pub fn server(
            tls: impl Into<std::sync::Arc<$crate::rustls::ServerConfig>>,
            secret: $crate::Secret,
            identity: $crate::Identity,
        ) -> $crate::ServerBuilder {
            $crate::Server::builder(runtime(), tls, secret, identity)
        }

        #[doc = concat!("[`Client::builder`] on ", $name, ": a client of `target`")]
        #[doc = "(an address, a list of them, `\"host:port\"`: see [`Target`]) whose"]
        #[doc = "certificate is checked for `server_name`, or for the target's host given `None`."]
        pub fn client(
            target: impl Into<$crate::Target>,
            tls: impl Into<std::sync::Arc<$crate::rustls::ClientConfig>>,
            server_name: impl Into<Option<$crate::ServerName<'static>>>,
            secret: $crate::Secret,
            identity: $crate::Identity,
        ) -> $crate::ClientBuilder {
            $crate::Client::builder(runtime(), target, tls, server_name, secret, identity)
        }

        #[doc = concat!("[`Multiplexer::builder`] on ", $name, ": a Multiplexer over the entries")]
        #[doc = "of `list` (see [`ConnectionList`])."]
        pub fn multiplexer(list: $crate::ConnectionList) -> $crate::MultiplexerBuilder {
            $crate::Multiplexer::builder(runtime(), list)
        }
    };
}

pub use certs::CertError;
pub use client::{Client, ClientBuilder, Target};
pub use config::{
    DEFAULT_COMMAND_BYTES, DEFAULT_COMMAND_CAPACITY, DEFAULT_EVENT_CAPACITY, DEFAULT_LINGER,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDLER_BYTES, DEFAULT_MAX_HANDLER_TASKS,
    DEFAULT_READ_BUFFER, LinkOptions,
};
#[cfg(feature = "dev-certs")]
pub use dev_certs::DevPki;
pub use dispatch::{Handlers, Message, Request, Responder};
pub use error::Error;
pub use event::{Event, EventKind};
pub use handler_error::HandlerError;
pub use jsonlink_proto::{
    Authenticated, CloseCode, CloseReason, Extension, Extensions, Identity, Keepalive, Op,
    PeerRequestId, Policy, RawJson, RemoteError, Secret, SecretError, SendError, SignAlg,
};
pub use link::Link;
#[cfg(feature = "config-file")]
pub use multiplexer::LoadOptions;
pub use multiplexer::{
    ClientEntry, ConnectionList, DEFAULT_CLOSED_LINKS_KEPT, DEFAULT_MUX_EVENT_CAPACITY, Defaults,
    EntrySpec, EntryState, EntryStatus, LinkState, LinkStatus, ListError, Multiplexer,
    MultiplexerBuilder, MuxEvent, MuxLinkId, Role, ServerEntry, To,
};
pub use reconnect::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, Reconnect};
pub use relay::{DEFAULT_RELAY_CLIENT_QUEUE, DEFAULT_RELAY_MAX_CLIENTS, Relay, RelayBuilder};
pub use runtime::{
    Accepted, AsyncStream, BoxFuture, BoxStream, EXPORTER_LABEL, EXPORTER_LEN, Listener, Runtime,
    TlsStream, channel_binding,
};
pub use server::{Server, ServerBuilder};
pub use stats::{LinkStats, Stats};
