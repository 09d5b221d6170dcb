//! Procedures over jsonlink, wire-compatible with @therms/rpc-server 2.19.
//!
//! - [`wire`]: the CallRequest / CallResponse / Identity wire types and the
//!   codes;
//! - [`registry`]: procedures keyed by exact `scope::procedure::version`
//!   with validated arguments, identity, internal procedures, nested calls,
//!   middleware and an error hook.
//!
//! The crate is runtime-independent.
#![forbid(unsafe_code)]

pub mod registry;
pub mod schema;
pub mod wire;

pub use registry::{
    BoxFuture, CallInfo, Caller, Context, ErrorEvent, FnMiddleware, HandlerFault, Limits,
    Middleware, Next, Origin, PeerInfo, Procedure, ProcedureInfo, Registry, RegistryBuilder,
    RegistryError, RpcError, Transport,
};
pub use wire::{Authorization, CallRequest, CallResponse, Identity, ParseLimits, code};
