//! Gateway configuration: the limits, TLS, CORS and trusted proxies.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use jsonlink_rpc::ParseLimits;

/// Every limit of a gateway. Each has a default (see the table); a call
/// refused by a limit is answered 429 (an extension of the @therms codes),
/// an oversized HTTP body 413, a connection over its limit is closed.
///
/// | limit | default | applies to | when exceeded |
/// | --- | --- | --- | --- |
/// | `max_body_bytes` | 1 MiB | HTTP request body | 413, connection closed |
/// | `body_timeout` | 10 s | receiving a whole HTTP body | 408, connection closed |
/// | `header_timeout` | 10 s | receiving HTTP/1.1 request headers and the WebSocket upgrade request; an HTTP connection (HTTP/1.1 or HTTP/2) with no call running | connection closed (HTTP/2: GOAWAY) |
/// | `tls_handshake_timeout` | 10 s | the TLS handshake | connection closed |
/// | `max_frame_bytes` | 1 MiB | one WebSocket message (and frame) | connection closed (1009) |
/// | `max_connections` | 10 000 | open connections, per gateway | the new connection is closed at once |
/// | `max_connections_per_ip` | none | open connections from one TCP peer IP (a proxy's own IP behind one) | the new connection is closed at once |
/// | `max_in_flight_per_connection` | 64 | calls running for one WebSocket connection; concurrent streams of one HTTP/2 connection | WebSocket: 429; HTTP/2: the stream is refused |
/// | `rate_limit` | 1000/s, burst 2000, per client IP | calls over both gateways | 429 |
/// | `call_deadline` | 30 s | one call, nested calls included | 500 "deadline exceeded" |
/// | `max_write_queue_bytes` | 4 MiB | answers and server messages queued for one WebSocket connection not reading them | connection closed |
/// | `parse` | depth 64, names 256 B | parsing a CallRequest | 400 |
/// | `shutdown_grace` | 10 s | graceful shutdown: calls in flight may finish | connections closed |
/// | `close_linger` | 2 s | a closing WebSocket connection: flushing what is queued and waiting for the client's close frame | socket dropped |
/// | `max_header_bytes` | 64 KiB | HTTP request headers (HTTP/1.1 read buffer, at least 8 KiB; HTTP/2 header list) | HTTP/1.1: 431 and closed; HTTP/2: the stream is refused |
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Time to receive a whole HTTP request body.
    pub body_timeout: Duration,
    /// Time to receive HTTP/1.1 request headers and the WebSocket upgrade;
    /// also how long an HTTP connection (HTTP/1.1 or HTTP/2, new or
    /// keep-alive) is kept with no call running.
    pub header_timeout: Duration,
    /// Time for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Largest WebSocket message, in bytes.
    pub max_frame_bytes: usize,
    /// Most open connections of one gateway.
    pub max_connections: usize,
    /// Most open connections from one TCP peer IP (`None`: no such limit).
    /// Counted by the TCP peer, before any `X-Real-IP` is read: behind a
    /// proxy it limits the proxy.
    pub max_connections_per_ip: Option<usize>,
    /// Most calls running at once for one WebSocket connection, and most
    /// concurrent streams of one HTTP/2 connection.
    pub max_in_flight_per_connection: usize,
    /// Calls per client IP, or `None` for no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Time one call may take, nested calls included.
    pub call_deadline: Duration,
    /// Most bytes of answers and server messages queued for one WebSocket
    /// connection; past it the connection is closed (a client that does not
    /// read costs no more than this).
    pub max_write_queue_bytes: usize,
    /// Limits applied while parsing a CallRequest.
    pub parse: ParseLimits,
    /// How long a graceful shutdown lets calls in flight finish.
    pub shutdown_grace: Duration,
    /// How long a closing WebSocket connection flushes what is queued and
    /// waits for the client's close frame before its socket is dropped.
    pub close_linger: Duration,
    /// Largest HTTP request head, in bytes (HTTP/1.1: the read buffer,
    /// at least 8 KiB; HTTP/2: the header list).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_frame_bytes: 1 << 20,
            max_connections: 10_000,
            max_connections_per_ip: None,
            max_in_flight_per_connection: 64,
            rate_limit: Some(RateLimit::default()),
            call_deadline: Duration::from_secs(30),
            max_write_queue_bytes: 4 << 20,
            parse: ParseLimits::default(),
            shutdown_grace: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            max_header_bytes: 64 << 10,
        }
    }
}

/// A per-client-IP rate limit: a token bucket refilled at `per_second`
/// holding at most `burst` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub per_second: NonZeroU32,
    /// Calls allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(2000).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The browser origins allowed by CORS. Off (no CORS headers) unless set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (`Access-Control-Allow-Origin: *`).
    AnyOrigin,
    /// Exactly these origins, e.g. `https://app.example.com`.
    Origins(Vec<String>),
}

/// The configuration of one gateway (HTTP or WebSocket).
#[derive(Clone, Default)]
pub struct GatewayConfig {
    /// The limits.
    pub limits: Limits,
    /// TLS, or `None` for plain TCP (behind a TLS-terminating proxy).
    /// ALPN protocols are filled in when the config has none (`h2` and
    /// `http/1.1` for HTTP, `http/1.1` for WebSocket).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// CORS for the HTTP gateway; `None` (the default) sends no CORS headers.
    pub cors: Option<Cors>,
    /// The proxies whose `X-Real-IP` header is believed; from any other
    /// peer the header is ignored and the TCP peer's address is the IP.
    /// Behind a proxy, list it: otherwise every caller has the proxy's IP
    /// and the per-IP rate limit is one limit for all of them.
    pub trusted_proxies: Vec<IpAddr>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("limits", &self.limits)
            .field("tls", &self.tls.as_ref().map(|_| "<rustls::ServerConfig>"))
            .field("cors", &self.cors)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl GatewayConfig {
    /// The client IP of a connection from `peer` with the header value
    /// `x_real_ip`: the header only when `peer` is a trusted proxy and the
    /// header parses as an IP.
    pub fn client_ip(&self, peer: IpAddr, x_real_ip: Option<&str>) -> IpAddr {
        if self.trusted_proxies.contains(&peer)
            && let Some(ip) = x_real_ip.and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
        peer
    }
}
