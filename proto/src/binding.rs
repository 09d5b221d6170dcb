//! Channel binding (PROTOCOL.md §3): the TLS exporter parameters both sides
//! use to derive the bytes they pass as
//! [`ConnectionParams::channel_binding`](crate::ConnectionParams).

/// Label of the TLS exporter keying material (RFC 5705 / RFC 8446 §7.5)
/// that both sides feed into the handshake as channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-jsonlink-channel-binding";

/// Length of the exported channel-binding material in bytes (exported with
/// no context).
pub const EXPORTER_LEN: usize = 32;
