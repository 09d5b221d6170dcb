//! [`Target`]: where a client connects — socket addresses, or a host name
//! and port resolved through the runtime before every attempt — and the
//! TLS server name it implies.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use rustls_pki_types::ServerName;

use crate::error::Error;
use crate::runtime::Runtime;

/// Where a [`Client`](crate::Client) connects. The builders take anything
/// that converts into one:
///
/// - a [`SocketAddr`], or a list of them (`Vec<SocketAddr>`,
///   `&[SocketAddr]`, `[SocketAddr; N]`): those addresses;
/// - a `"host:port"` string (`&str` or `String`; an IPv6 address in
///   brackets, `"[::1]:7000"`) or a `(host, port)` pair: the host is
///   resolved through the [`Runtime`] (so each adapter uses its runtime's
///   resolver) before **every** connect attempt, so a host that moves to
///   another address is found again on reconnect. An IP address literal
///   is used as it is.
///
/// One attempt tries the addresses in order, the next when one fails, all
/// within the one handshake deadline
/// ([`handshake_timeout`](crate::ClientBuilder::handshake_timeout)), which
/// also covers the resolution. A failure to resolve is reported like any
/// other connect error ([`Error::Resolve`], once per outage) and retried
/// per the reconnect policy.
///
/// Unless the builder is given a TLS server name, the client checks the
/// server's certificate against [`server_name`](Self::server_name): the
/// host, or, for addresses, the first one's IP address.
///
/// A string that is not `host:port`, an empty address list, or a host that
/// is no valid server name while none is given, ends the client at once
/// with [`Error::InvalidTarget`].
///
/// ```no_run
/// # async fn demo(rt: std::sync::Arc<dyn jsonlink_rt::Runtime>, tls: jsonlink_rt::rustls::ClientConfig,
/// #     secret: jsonlink_rt::Secret) -> Result<(), jsonlink_rt::Error> {
/// use jsonlink_rt::{Client, Identity};
/// // Resolved before every attempt; the certificate is checked for
/// // `db.example` (no server name given).
/// let client = Client::builder(rt, "db.example:7000", tls, None, secret, Identity::new("c1", "app"))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Target(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Addrs(Vec<SocketAddr>),
    Host { host: String, port: u16 },
    Invalid { text: String, reason: &'static str },
}

impl Target {
    /// The host `host` (a DNS name or an IP address literal) at `port`.
    pub fn host(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        match host.parse::<IpAddr>() {
            Ok(ip) => Self(Kind::Addrs(vec![SocketAddr::new(ip, port)])),
            Err(_) => Self(Kind::Host { host, port }),
        }
    }

    /// These addresses, tried in order.
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self(Kind::Addrs(addrs.into_iter().collect()))
    }

    /// The TLS server name the client checks by default: the host, or the
    /// first address's IP address; `None` when there is none (an empty
    /// address list, a host that is no valid DNS name, an invalid target).
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        match &self.0 {
            Kind::Addrs(addrs) => addrs.first().map(|a| ServerName::IpAddress(a.ip().into())),
            Kind::Host { host, .. } => ServerName::try_from(host.clone()).ok(),
            Kind::Invalid { .. } => None,
        }
    }

    /// The server name to check: `given`, or this target's own.
    pub(crate) fn tls_name(
        &self,
        given: Option<ServerName<'static>>,
    ) -> Result<ServerName<'static>, Error> {
        if let Kind::Invalid { reason, .. } = &self.0 {
            return Err(self.invalid(reason));
        }
        if let Kind::Addrs(addrs) = &self.0
            && addrs.is_empty()
        {
            return Err(self.invalid("no address to connect to"));
        }
        given.or_else(|| self.server_name()).ok_or_else(|| {
            self.invalid("the host is no valid TLS server name: give the builder one")
        })
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidTarget {
            target: self.to_string(),
            reason,
        }
    }

    /// The addresses to try now: resolved through `rt` for a host.
    pub(crate) async fn resolve(&self, rt: &dyn Runtime) -> Result<Vec<SocketAddr>, Error> {
        let (host, port) = match &self.0 {
            Kind::Addrs(addrs) => return Ok(addrs.clone()),
            Kind::Host { host, port } => (host, *port),
            Kind::Invalid { reason, .. } => return Err(self.invalid(reason)),
        };
        let resolve_error = |error| Error::Resolve {
            host: host.clone(),
            error,
        };
        let addrs = rt.resolve(host, port).await.map_err(resolve_error)?;
        if addrs.is_empty() {
            let none = io::Error::new(io::ErrorKind::NotFound, "the resolver gave no address");
            return Err(resolve_error(none));
        }
        Ok(addrs)
    }

    /// Parses `host:port`.
    fn parse(text: &str) -> Self {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Self(Kind::Addrs(vec![addr]));
        }
        let invalid = |reason| {
            Self(Kind::Invalid {
                text: text.to_owned(),
                reason,
            })
        };
        let Some((host, port)) = text.rsplit_once(':') else {
            return invalid("expected host:port");
        };
        let Ok(port) = port.parse::<u16>() else {
            return invalid("the port is not a number from 0 to 65535");
        };
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = bracketed.unwrap_or(host);
        if host.is_empty() {
            return invalid("expected host:port");
        }
        if host.contains(':') && (bracketed.is_none() || host.parse::<IpAddr>().is_err()) {
            return invalid("expected host:port (an IPv6 address in brackets)");
        }
        Self::host(host, port)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Addrs(addrs) if addrs.len() == 1 => write!(f, "{}", addrs[0]),
            Kind::Addrs(addrs) => {
                f.write_str("[")?;
                for (i, a) in addrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Kind::Host { host, port } => write!(f, "{host}:{port}"),
            Kind::Invalid { text, .. } => f.write_str(text),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self(Kind::Addrs(vec![addr]))
    }
}

impl From<Vec<SocketAddr>> for Target {
    fn from(addrs: Vec<SocketAddr>) -> Self {
        Self(Kind::Addrs(addrs))
    }
}

impl From<&[SocketAddr]> for Target {
    fn from(addrs: &[SocketAddr]) -> Self {
        Self(Kind::Addrs(addrs.to_vec()))
    }
}

impl<const N: usize> From<[SocketAddr; N]> for Target {
    fn from(addrs: [SocketAddr; N]) -> Self {
        Self(Kind::Addrs(addrs.to_vec()))
    }
}

impl From<(IpAddr, u16)> for Target {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        Self::from(SocketAddr::new(ip, port))
    }
}

impl From<(&str, u16)> for Target {
    fn from((host, port): (&str, u16)) -> Self {
        Self::host(host, port)
    }
}

impl From<(String, u16)> for Target {
    fn from((host, port): (String, u16)) -> Self {
        Self::host(host, port)
    }
}

impl From<&str> for Target {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl From<String> for Target {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<&String> for Target {
    fn from(text: &String) -> Self {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn host_and_port_strings_parse_into_hosts_and_addresses() {
        assert_eq!(
            Target::from("example.com:7000"),
            Target::host("example.com", 7000)
        );
        assert_eq!(
            Target::from("127.0.0.1:80"),
            Target::from(addr("127.0.0.1:80"))
        );
        assert_eq!(Target::from("[::1]:80"), Target::from(addr("[::1]:80")));
        assert_eq!(
            Target::from(("10.0.0.1", 5)),
            Target::from(addr("10.0.0.1:5"))
        );
        assert_eq!(Target::from("localhost:9").to_string(), "localhost:9");
    }

    #[test]
    fn malformed_targets_are_refused_with_their_reason() {
        for text in ["localhost", "localhost:http", ":80", "::1:80", "host:70000"] {
            let e = Target::from(text).tls_name(None).expect_err(text);
            assert!(
                matches!(&e, Error::InvalidTarget { target, .. } if target == text),
                "{text}: {e}"
            );
        }
        let e = Target::addrs([]).tls_name(None).expect_err("no address");
        assert!(e.to_string().contains("no address"), "{e}");
    }

    #[test]
    fn the_server_name_defaults_to_the_host_or_the_first_address() {
        let name = |t: Target| t.tls_name(None).expect("server name");
        assert_eq!(
            name(Target::from("db.example:1")),
            ServerName::try_from("db.example").expect("dns name")
        );
        assert_eq!(
            name(Target::from([addr("127.0.0.1:1"), addr("10.0.0.1:1")])),
            ServerName::IpAddress(addr("127.0.0.1:1").ip().into())
        );
        let given = ServerName::try_from("other.example").expect("dns name");
        assert_eq!(
            Target::from("db.example:1")
                .tls_name(Some(given.clone()))
                .expect("given"),
            given
        );
        assert!(Target::host("not a name", 1).tls_name(None).is_err());
    }
}
