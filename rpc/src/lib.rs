//! Procedures over jsonlink, wire-compatible with @therms/rpc-server 2.19.
//!
//! - [`wire`]: the CallRequest / CallResponse / Identity wire types and the
//!   codes;
//! - [`registry`]: procedures keyed by exact `scope::procedure::version`
//!   with validated arguments, identity, internal procedures, nested calls,
//!   middleware and an error hook; stream procedures
//!   ([`RegistryBuilder::stream_procedure`]);
//! - [`schema`]: argument schemas (JSON Schema, `jsonschema`);
//! - [`Trace`]: a ready middleware logging each call in a `tracing` span;
//! - [`link`]: procedures over jsonlink links (`rpc.call`, `rpc.identity`,
//!   and the stream ops `rpc.stream`, `rpc.item`, `rpc.credit`,
//!   `rpc.cancel`);
//! - [`client`]: [`RpcClient`] over transports tried in order, and the
//!   jsonlink [`LinkTransport`].
//!
//! The crate is runtime-independent: it uses `jsonlink-rt`'s `Runtime`
//! trait for the one timer it needs (the link call timeout). The README
//! (`rpc/README.md`) has a worked example, the limits, the client's
//! fallback rules and a migration table from @therms/rpc-server.
#![forbid(unsafe_code)]

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod client;
pub mod link;
pub mod registry;
pub mod schema;
pub mod trace;
pub mod wire;

pub use client::{
    ClientError, LinkTransport, RpcClient, RpcStream, RpcTransport, StreamError, TransportError,
};
pub use link::{LinkOptions, serve};
pub use registry::{
    BoxFuture, CallInfo, Caller, Context, ErrorEvent, FnMiddleware, HandlerFault, Limits,
    Middleware, Next, Origin, PeerInfo, Procedure, ProcedureInfo, ProcedureStream, Registry,
    RegistryBuilder, RegistryError, RpcError, Transport,
};
pub use trace::Trace;
pub use wire::{Authorization, CallRequest, CallResponse, Identity, ParseLimits, code};
