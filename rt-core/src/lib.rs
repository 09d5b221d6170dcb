//! The runtime-independent half of every jsonlink adapter.
//!
//! [`runtime`] is the seam to one async runtime (the [`Runtime`] trait, which
//! `jsonlink-tokio`, `jsonlink-async-std` and `jsonlink-smol` implement) plus
//! the TLS glue they share; [`certs`] makes development certificates and
//! loads PEM files into rustls configurations built on the `ring` provider.
#![forbid(unsafe_code)]

pub mod certs;
pub mod runtime;

pub use certs::{CertError, DevPki};
pub use runtime::{
    Accepted, AsyncStream, BoxFuture, BoxStream, EXPORTER_LABEL, EXPORTER_LEN, Listener, Runtime,
    TlsStream, channel_binding,
};
