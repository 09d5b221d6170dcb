//! HTTP and WebSocket gateways for jsonlink procedures
//! ([`jsonlink_rpc::Registry`]), wire-compatible with @therms/rpc-server
//! 2.19, so its JavaScript, Kotlin and Swift clients can call them
//! unchanged. The wire is specified in `WIRE.md` beside this crate.
//!
//! - [`HttpGateway`]: any path and method, the body a CallRequest, HTTP
//!   status 200 with the outcome in the body's `code`; `/health` answers
//!   `ok`; HTTP/1.1 and HTTP/2; plain or TLS (rustls with ring); CORS off
//!   unless configured.
//! - [`WsGateway`]: its own port, text frames; the connection's identity,
//!   calls answered out of order by `correlationId`, client messages to a
//!   hook, server messages to a connection by id, hooks for connect,
//!   disconnect, identity changed and client message; listing connections.
//! - [`Limits`]: every limit with its default; a call refused by a limit is
//!   answered 429 (our extension of the @therms codes).
//! - Feature `client`: [`client`], HTTP and WebSocket transports for the
//!   procedure layer's client.
#![forbid(unsafe_code)]

mod config;
mod core;
mod http;
mod ws;

#[cfg(feature = "client")]
pub mod client;

pub use config::{Cors, GatewayConfig, Limits, RateLimit};
pub use http::{HttpGateway, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT};
pub use ws::{ConnectionInfo, SendError, WsGateway, WsHooks, WsStats};

/// The README's Rust examples, compiled as doctests of this crate
/// (`cargo test -p jsonlink-gateway --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
