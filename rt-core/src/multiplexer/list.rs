//! The connection list a [`Multiplexer`](crate::Multiplexer) is built
//! from, as iris-rpc's `connectionList`: named entries, each a client
//! ([`ClientEntry`]) or a server ([`ServerEntry`]), and shared
//! [`Defaults`] an entry may override.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonlink_proto::{Identity, Keepalive, Policy, Secret};
use rustls_pki_types::ServerName;

use crate::client::Target;
use crate::error::Error;
use crate::reconnect::Reconnect;

/// A `Debug` field that only says whether a value is set (TLS
/// configurations are long; secrets print as `<redacted>` anyway).
fn set<T>(v: &Option<T>) -> &'static str {
    if v.is_some() { "<set>" } else { "None" }
}

/// What the defaults and every entry may set: the identity announced,
/// the secret, the signing and encryption policies, the request timeout,
/// keepalive. An entry's value wins over the defaults'.
#[derive(Clone, Default)]
pub(crate) struct Common {
    pub(crate) identity: Option<Identity>,
    pub(crate) secret: Option<Secret>,
    pub(crate) signing: Option<Policy>,
    pub(crate) encryption: Option<Policy>,
    pub(crate) request_timeout: Option<Duration>,
    /// `Some(None)`: keepalive off.
    pub(crate) keepalive: Option<Option<Keepalive>>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keepalive = self.keepalive.as_ref().map(|k| {
            k.as_ref()
                .map(|k| (k.interval, k.timeout, k.data.as_ref().map(|d| d.get())))
        });
        f.debug_struct("Common")
            .field("identity", &self.identity)
            .field("secret", &self.secret)
            .field("signing", &self.signing)
            .field("encryption", &self.encryption)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive", &keepalive)
            .finish()
    }
}

impl Common {
    /// These values where set, else those of `defaults`.
    pub(crate) fn or(&self, defaults: &Self) -> Self {
        Self {
            identity: self.identity.clone().or_else(|| defaults.identity.clone()),
            secret: self.secret.clone().or_else(|| defaults.secret.clone()),
            signing: self.signing.or(defaults.signing),
            encryption: self.encryption.or(defaults.encryption),
            request_timeout: self.request_timeout.or(defaults.request_timeout),
            keepalive: self
                .keepalive
                .clone()
                .or_else(|| defaults.keepalive.clone()),
        }
    }
}

/// What every entry of a [`ConnectionList`] uses unless it says otherwise:
/// the identity announced, the secret, TLS for client and server entries,
/// the signing and encryption policies, the reconnect policy, the
/// request timeout and keepalive. Everything is unset by default; an entry that needs
/// a value neither it nor the defaults have fails with
/// [`ListError::Missing`] naming the entry and the field.
#[derive(Clone, Default)]
pub struct Defaults {
    pub(crate) common: Common,
    pub(crate) client_tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) reconnect: Option<Reconnect>,
}

impl fmt::Debug for Defaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Defaults")
            .field("common", &self.common)
            .field("client_tls", &set(&self.client_tls))
            .field("server_tls", &set(&self.server_tls))
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// Setters shared by [`Defaults`], [`ClientEntry`] and [`ServerEntry`]:
/// the values every one of them may carry.
macro_rules! common_setters {
    () => {
        /// The identity announced in the handshake (node and designation,
        /// zetta-rpc's `node` and `designation`).
        pub fn identity(mut self, identity: Identity) -> Self {
            self.common.identity = Some(identity);
            self
        }

        /// The shared secret (zetta-rpc's `auth`).
        pub fn secret(mut self, secret: Secret) -> Self {
            self.common.secret = Some(secret);
            self
        }

        /// The signing policy (default [`Policy::Optional`]).
        pub fn signing(mut self, policy: Policy) -> Self {
            self.common.signing = Some(policy);
            self
        }

        /// The second-layer encryption policy (default
        /// [`Policy::Optional`]).
        pub fn encryption(mut self, policy: Policy) -> Self {
            self.common.encryption = Some(policy);
            self
        }

        /// The timeout of requests that name none (default
        /// [`jsonlink_proto::DEFAULT_REQUEST_TIMEOUT`]).
        pub fn request_timeout(mut self, timeout: Duration) -> Self {
            self.common.request_timeout = Some(timeout);
            self
        }

        /// Keepalive pings (zetta-rpc's `ping`, `pingFreq`,
        /// `pingDataObject`); `None` sends none. Default: interval
        /// [`jsonlink_proto::DEFAULT_KEEPALIVE_INTERVAL`], timeout
        /// [`jsonlink_proto::DEFAULT_KEEPALIVE_TIMEOUT`], no data.
        pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
            self.common.keepalive = Some(keepalive);
            self
        }
    };
}

impl Defaults {
    /// Nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!();

    /// The TLS configuration of client entries (the CA they trust, a
    /// client certificate if servers want one).
    pub fn client_tls(mut self, tls: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        self.client_tls = Some(tls.into());
        self
    }

    /// The TLS configuration of server entries (their certificate).
    pub fn server_tls(mut self, tls: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        self.server_tls = Some(tls.into());
        self
    }

    /// The reconnect policy of client entries (default
    /// [`Reconnect::default`]).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }
}

/// A client entry: dials `target` and keeps a link to it, reconnecting
/// per its policy (iris-rpc's entry with an `address`).
#[derive(Clone)]
pub struct ClientEntry {
    pub(crate) target: Target,
    pub(crate) server_name: Option<ServerName<'static>>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) common: Common,
}

impl fmt::Debug for ClientEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientEntry")
            .field("target", &self.target)
            .field("server_name", &self.server_name)
            .field("tls", &set(&self.tls))
            .field("reconnect", &self.reconnect)
            .field("common", &self.common)
            .finish()
    }
}

impl ClientEntry {
    /// A client of `target` (an address, a list of them, `"host:port"`:
    /// see [`Target`]); everything else from the defaults.
    pub fn new(target: impl Into<Target>) -> Self {
        Self {
            target: target.into(),
            server_name: None,
            tls: None,
            reconnect: None,
            common: Common::default(),
        }
    }

    common_setters!();

    /// The name the server's certificate is checked for; by default the
    /// target's host (see [`Client::builder`](crate::Client::builder)).
    pub fn server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    /// This entry's TLS configuration, instead of the defaults'.
    pub fn tls(mut self, tls: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = Some(tls.into());
        self
    }

    /// This entry's reconnect policy, instead of the defaults'.
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }
}

/// A server entry: listens on `bind` and accepts links (iris-rpc's entry
/// with a `port`).
#[derive(Clone)]
pub struct ServerEntry {
    pub(crate) bind: SocketAddr,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) common: Common,
}

impl fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerEntry")
            .field("bind", &self.bind)
            .field("tls", &set(&self.tls))
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("common", &self.common)
            .finish()
    }
}

impl ServerEntry {
    /// A server listening on `bind` (port 0: any free port, see
    /// [`EntryStatus::local_addr`](crate::EntryStatus::local_addr));
    /// everything else from the defaults.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            tls: None,
            max_connections: None,
            max_connections_per_ip: None,
            common: Common::default(),
        }
    }

    common_setters!();

    /// This entry's TLS configuration, instead of the defaults'.
    pub fn tls(mut self, tls: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = Some(tls.into());
        self
    }

    /// Connections open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`](crate::DEFAULT_MAX_CONNECTIONS)).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Connections open at once from one IP address (default: no limit).
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = Some(n);
        self
    }
}

/// One entry of a [`ConnectionList`]: a client or a server.
#[derive(Debug, Clone)]
pub enum EntrySpec {
    /// Dials out.
    Client(ClientEntry),
    /// Listens.
    Server(ServerEntry),
}

impl From<ClientEntry> for EntrySpec {
    fn from(e: ClientEntry) -> Self {
        Self::Client(e)
    }
}

impl From<ServerEntry> for EntrySpec {
    fn from(e: ServerEntry) -> Self {
        Self::Server(e)
    }
}

/// Named entries and their shared defaults: what a
/// [`Multiplexer`](crate::Multiplexer) starts with. Built in code, or
/// (feature `config-file`) read from a TOML or JSON file with
/// `ConnectionList::from_toml` / `from_json` / `load` (README,
/// "Connection-list files").
#[derive(Debug, Clone, Default)]
pub struct ConnectionList {
    pub(crate) defaults: Defaults,
    pub(crate) entries: Vec<(String, EntrySpec)>,
}

impl ConnectionList {
    /// An empty list with these defaults.
    pub fn new(defaults: Defaults) -> Self {
        Self {
            defaults,
            entries: Vec::new(),
        }
    }

    /// Adds a client entry named `name`.
    pub fn client(self, name: impl Into<String>, entry: ClientEntry) -> Self {
        self.entry(name, entry)
    }

    /// Adds a server entry named `name`.
    pub fn server(self, name: impl Into<String>, entry: ServerEntry) -> Self {
        self.entry(name, entry)
    }

    /// Adds an entry named `name` (a name listed twice fails the
    /// Multiplexer's start with [`ListError::Duplicate`]).
    pub fn entry(mut self, name: impl Into<String>, entry: impl Into<EntrySpec>) -> Self {
        self.entries.push((name.into(), entry.into()));
        self
    }

    /// The defaults.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The entries, in list order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &EntrySpec)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), e))
    }
}

/// Why a connection list, or one entry of it, could not be used. Each
/// variant names the entry (`"defaults"` for the shared defaults) and,
/// where one is to blame, the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// Neither the entry nor the defaults set a value the entry needs.
    #[error("entry `{entry}`: no `{field}` (set it on the entry or in the defaults)")]
    Missing {
        /// The entry.
        entry: String,
        /// The field.
        field: &'static str,
    },
    /// Two entries have the same name (or an added entry's name is taken).
    #[error("entry `{entry}` is listed twice")]
    Duplicate {
        /// The name.
        entry: String,
    },
    /// An entry name that is empty.
    #[error("an entry name must not be empty")]
    EmptyName,
    /// A field's value is not usable.
    #[error("entry `{entry}`, field `{field}`: {reason}")]
    Invalid {
        /// The entry.
        entry: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret written in the file itself, where the loader did not
    /// allow that (feature `config-file`: `LoadOptions::allow_inline_secrets`).
    #[error(
        "entry `{entry}`, field `{field}`: an inline secret is refused; name an environment variable (`env`) or a file (`file`) instead"
    )]
    InlineSecret {
        /// The entry.
        entry: String,
        /// The field.
        field: String,
    },
    /// A server entry could not bind its address.
    #[error("entry `{entry}`: could not bind {addr}: {error}")]
    Bind {
        /// The entry.
        entry: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        error: Box<Error>,
    },
    /// The file is not valid TOML or JSON, or does not have the shape of
    /// a connection list (the text names the key and, for TOML, the line).
    #[error("connection list {origin}: {message}")]
    Parse {
        /// The file, or `"text"`.
        origin: String,
        /// What the parser reported.
        message: String,
    },
    /// A file could not be read (the list itself, a secret file, a PEM
    /// file).
    #[error("entry `{entry}`, field `{field}`: could not read {path}: {error}")]
    Read {
        /// The entry (`"list"` for the list file itself).
        entry: String,
        /// The field.
        field: String,
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The Multiplexer has been shut down: no entry can be added.
    #[error("the multiplexer is shut down")]
    ShutDown,
}

impl ListError {
    pub(crate) fn missing(entry: &str, field: &'static str) -> Self {
        Self::Missing {
            entry: entry.to_owned(),
            field,
        }
    }
}
