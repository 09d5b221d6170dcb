//! Connection lists read from TOML or JSON files (feature `config-file`):
//! the file format is in the README ("Connection-list files").
//!
//! Secrets are named by environment variable (`{ env = "NAME" }`) or by
//! file (`{ file = "path" }`); one written in the file itself
//! (`{ inline = "..." }`) is refused unless the loader allows it
//! ([`LoadOptions::allow_inline_secrets`]). Parse errors never quote the
//! file's text (which could hold a secret): they name the key and, for
//! TOML, the line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonlink_proto::{Identity, Keepalive, Policy, Secret};
use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use zeroize::Zeroize as _;

use super::list::{
    ClientEntry, Common, ConnectionList, Defaults, EntrySpec, ListError, ServerEntry,
};
use crate::certs;
use crate::reconnect::Reconnect;

/// How a connection-list file is read.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    allow_inline_secrets: bool,
    base_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// Inline secrets refused; relative paths from the current directory
    /// (or, with [`ConnectionList::load`], from the file's directory).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts secrets written in the file itself (`{ inline = "..." }`).
    /// Default `false`: such a file fails with [`ListError::InlineSecret`].
    /// Keep it off for files that are checked in or shared.
    pub fn allow_inline_secrets(mut self, allow: bool) -> Self {
        self.allow_inline_secrets = allow;
        self
    }

    /// The directory relative paths (PEM files, secret files) are read
    /// from. Default: the list file's directory for
    /// [`ConnectionList::load`], else the current directory.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }
}

impl ConnectionList {
    /// Reads a connection list from TOML text.
    ///
    /// # Errors
    ///
    /// [`ListError::Parse`] (the key, line and column; never the text
    /// itself), and the errors of the entries' values, each naming its
    /// entry and field: [`ListError::Invalid`], [`ListError::InlineSecret`],
    /// [`ListError::Read`].
    pub fn from_toml(text: &str, options: &LoadOptions) -> Result<Self, ListError> {
        let file: FileList = toml::from_str(text).map_err(|e| parse_error("text", text, &e))?;
        file.resolve(options)
    }

    /// Reads a connection list from JSON text.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml).
    pub fn from_json(text: &str, options: &LoadOptions) -> Result<Self, ListError> {
        let file: FileList = serde_json::from_str(text).map_err(|e| ListError::Parse {
            origin: "text".into(),
            message: e.to_string(),
        })?;
        file.resolve(options)
    }

    /// Reads a connection list from a file: TOML if its name ends in
    /// `.toml`, JSON if in `.json`. Relative paths in it are read from its
    /// directory unless `options` names another.
    ///
    /// # Errors
    ///
    /// [`ListError::Read`] if the file cannot be read,
    /// [`ListError::Invalid`] for another extension; else as
    /// [`from_toml`](Self::from_toml).
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, ListError> {
        let path = path.as_ref();
        let mut text = std::fs::read_to_string(path).map_err(|error| ListError::Read {
            entry: "list".into(),
            field: "path".into(),
            path: path.to_owned(),
            error,
        })?;
        let mut options = options.clone();
        if options.base_dir.is_none() {
            options.base_dir = path.parent().map(Path::to_owned);
        }
        let origin = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parsed = match ext {
            "toml" => {
                toml::from_str::<FileList>(&text).map_err(|e| parse_error(&origin, &text, &e))
            }
            "json" => serde_json::from_str::<FileList>(&text).map_err(|e| ListError::Parse {
                origin: origin.clone(),
                message: e.to_string(),
            }),
            _ => Err(ListError::Invalid {
                entry: "list".into(),
                field: "path".into(),
                reason: format!("`{origin}` is neither .toml nor .json"),
            }),
        };
        // The text may hold inline secrets.
        text.zeroize();
        parsed?.resolve(&options)
    }
}

/// A TOML error as line, column and message, without the snippet of the
/// file's text that its `Display` shows.
fn parse_error(origin: &str, text: &str, e: &toml::de::Error) -> ListError {
    let place = e.span().map_or(String::new(), |span| {
        let before = text.get(..span.start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    ListError::Parse {
        origin: origin.to_owned(),
        message: format!("{place}{}", e.message().trim_end()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileList {
    #[serde(default)]
    defaults: FileDefaults,
    #[serde(default)]
    entries: BTreeMap<String, FileEntry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDefaults {
    identity: Option<FileIdentity>,
    secret: Option<FileSecret>,
    client_tls: Option<FileTls>,
    server_tls: Option<FileTls>,
    signing: Option<FilePolicy>,
    encryption: Option<FilePolicy>,
    reconnect: Option<FileReconnect>,
    request_timeout_ms: Option<u64>,
    keepalive: Option<FileKeepalive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    /// A client entry: `host:port` or `ip:port`.
    connect: Option<String>,
    /// A server entry: `ip:port`.
    bind: Option<String>,
    server_name: Option<String>,
    identity: Option<FileIdentity>,
    secret: Option<FileSecret>,
    tls: Option<FileTls>,
    signing: Option<FilePolicy>,
    encryption: Option<FilePolicy>,
    reconnect: Option<FileReconnect>,
    request_timeout_ms: Option<u64>,
    keepalive: Option<FileKeepalive>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    node: String,
    designation: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    /// Client: the CA certificates to trust (PEM).
    ca: Option<PathBuf>,
    /// Server: its certificate chain; client: its client certificate.
    cert: Option<PathBuf>,
    /// The private key of `cert`.
    key: Option<PathBuf>,
    /// Server: require client certificates issued by these CAs.
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FilePolicy {
    Off,
    Optional,
    Preferred,
    Required,
}

impl From<FilePolicy> for Policy {
    fn from(p: FilePolicy) -> Self {
        match p {
            FilePolicy::Off => Self::Off,
            FilePolicy::Optional => Self::Optional,
            FilePolicy::Preferred => Self::Preferred,
            FilePolicy::Required => Self::Required,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum FileReconnect {
    Never,
    FixedMs(u64),
    Backoff { base_ms: u64, cap_ms: u64 },
}

impl From<FileReconnect> for Reconnect {
    fn from(r: FileReconnect) -> Self {
        match r {
            FileReconnect::Never => Self::Never,
            FileReconnect::FixedMs(ms) => Self::Fixed(Duration::from_millis(ms)),
            FileReconnect::Backoff { base_ms, cap_ms } => Self::Backoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
            },
        }
    }
}

/// `"off"`, or `{ interval_ms, timeout_ms }` (each defaulting to the
/// core's default).
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum FileKeepalive {
    Off(FileOff),
    On(FileKeepaliveOn),
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct FileKeepaliveOn {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FileOff {
    Off,
}

impl From<FileKeepalive> for Option<Keepalive> {
    fn from(k: FileKeepalive) -> Self {
        match k {
            FileKeepalive::Off(FileOff::Off) => None,
            FileKeepalive::On(FileKeepaliveOn {
                interval_ms,
                timeout_ms,
            }) => {
                let mut k = Keepalive::default();
                if let Some(ms) = interval_ms {
                    k.interval = Duration::from_millis(ms);
                }
                if let Some(ms) = timeout_ms {
                    k.timeout = Duration::from_millis(ms);
                }
                Some(k)
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
enum Encoding {
    #[default]
    Hex,
    Base64,
    Password,
}

/// Where a secret comes from. Deserialized by hand so that no error
/// message ever quotes a value (a secret written where a table belongs).
#[derive(Default)]
struct FileSecret {
    env: Option<String>,
    file: Option<PathBuf>,
    inline: Option<String>,
    encoding: Encoding,
}

impl fmt::Debug for FileSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSecret")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("inline", &self.inline.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Drop for FileSecret {
    fn drop(&mut self) {
        if let Some(s) = self.inline.as_mut() {
            s.zeroize();
        }
    }
}

const SECRET_SHAPE: &str = "a secret is a table: { env = \"NAME\" } or { file = \"path\" } \
     (or { inline = \"...\" } where inline secrets are allowed), with an optional \
     encoding = \"hex\" | \"base64\" | \"password\"";

impl<'de> Deserialize<'de> for FileSecret {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SECRET_SHAPE)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<FileSecret, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<FileSecret, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<FileSecret, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<FileSecret, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileSecret, A::Error> {
                let mut s = FileSecret::default();
                let string = |map: &mut A| -> Result<String, A::Error> {
                    // A value of another type: the shape, not the value.
                    map.next_value::<String>()
                        .map_err(|_| de::Error::custom(SECRET_SHAPE))
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "env" => s.env = Some(string(&mut map)?),
                        "file" => s.file = Some(PathBuf::from(string(&mut map)?)),
                        "inline" => s.inline = Some(string(&mut map)?),
                        "encoding" => {
                            s.encoding = match string(&mut map)?.as_str() {
                                "hex" => Encoding::Hex,
                                "base64" => Encoding::Base64,
                                "password" => Encoding::Password,
                                _ => return Err(de::Error::custom(SECRET_SHAPE)),
                            }
                        }
                        _ => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{key}`: {SECRET_SHAPE}"
                            )));
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_any(V)
    }
}

/// Resolves the values of one entry (or of the defaults) against the
/// loader's options, naming the entry in every error.
struct Ctx<'a> {
    entry: &'a str,
    options: &'a LoadOptions,
}

impl Ctx<'_> {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> ListError {
        ListError::Invalid {
            entry: self.entry.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        match &self.options.base_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    fn secret(&self, s: &FileSecret) -> Result<Secret, ListError> {
        let sources = [s.env.is_some(), s.file.is_some(), s.inline.is_some()];
        if sources.iter().filter(|x| **x).count() != 1 {
            return Err(self.invalid("secret", "name exactly one of `env`, `file`, `inline`"));
        }
        let mut text = if let Some(var) = &s.env {
            std::env::var(var).map_err(|_| {
                self.invalid(
                    "secret.env",
                    format!("environment variable `{var}` is not set (or not UTF-8)"),
                )
            })?
        } else if let Some(file) = &s.file {
            let path = self.path(file);
            std::fs::read_to_string(&path).map_err(|error| ListError::Read {
                entry: self.entry.to_owned(),
                field: "secret.file".into(),
                path,
                error,
            })?
        } else {
            if !self.options.allow_inline_secrets {
                return Err(ListError::InlineSecret {
                    entry: self.entry.to_owned(),
                    field: "secret.inline".into(),
                });
            }
            s.inline.clone().unwrap_or_default()
        };
        let trimmed = text.trim_end_matches(['\n', '\r']);
        let secret = match s.encoding {
            Encoding::Hex => Secret::from_hex(trimmed),
            Encoding::Base64 => Secret::from_base64(trimmed),
            Encoding::Password => Secret::from_password(trimmed),
        };
        text.zeroize();
        secret.map_err(|e| self.invalid("secret", e.to_string()))
    }

    fn cert_error(&self, field: &str, e: certs::CertError) -> ListError {
        self.invalid(field, e.to_string())
    }

    fn client_tls(&self, field: &str, t: &FileTls) -> Result<rustls::ClientConfig, ListError> {
        let ca = t.ca.as_ref().ok_or_else(|| {
            self.invalid(
                field,
                "a client's TLS needs `ca` (the CA certificates to trust)",
            )
        })?;
        let f = format!("{field}.ca");
        let roots = certs::load_certs(self.path(ca))
            .and_then(certs::root_store)
            .map_err(|e| self.cert_error(&f, e))?;
        match (&t.cert, &t.key) {
            (None, None) => certs::client_config(roots).map_err(|e| self.cert_error(field, e)),
            (Some(cert), Some(key)) => {
                let chain = certs::load_certs(self.path(cert))
                    .map_err(|e| self.cert_error(&format!("{field}.cert"), e))?;
                let key = certs::load_private_key(self.path(key))
                    .map_err(|e| self.cert_error(&format!("{field}.key"), e))?;
                certs::client_config_with_client_cert(roots, chain, key)
                    .map_err(|e| self.cert_error(field, e))
            }
            _ => Err(self.invalid(field, "`cert` and `key` go together")),
        }
    }

    fn server_tls(&self, field: &str, t: &FileTls) -> Result<rustls::ServerConfig, ListError> {
        let (Some(cert), Some(key)) = (&t.cert, &t.key) else {
            return Err(self.invalid(field, "a server's TLS needs `cert` and `key`"));
        };
        let chain = certs::load_certs(self.path(cert))
            .map_err(|e| self.cert_error(&format!("{field}.cert"), e))?;
        let key = certs::load_private_key(self.path(key))
            .map_err(|e| self.cert_error(&format!("{field}.key"), e))?;
        match &t.client_ca {
            None => certs::server_config(chain, key).map_err(|e| self.cert_error(field, e)),
            Some(ca) => {
                let f = format!("{field}.client_ca");
                let roots = certs::load_certs(self.path(ca))
                    .and_then(certs::root_store)
                    .map_err(|e| self.cert_error(&f, e))?;
                certs::server_config_with_client_auth(chain, key, roots)
                    .map_err(|e| self.cert_error(field, e))
            }
        }
    }
}

fn identity(i: &FileIdentity) -> Identity {
    Identity::new(i.node.clone(), i.designation.clone())
}

impl FileList {
    fn resolve(self, options: &LoadOptions) -> Result<ConnectionList, ListError> {
        let d = &self.defaults;
        let cx = Ctx {
            entry: "defaults",
            options,
        };
        let mut defaults = Defaults::new();
        if let Some(i) = &d.identity {
            defaults = defaults.identity(identity(i));
        }
        if let Some(s) = &d.secret {
            defaults = defaults.secret(cx.secret(s)?);
        }
        if let Some(t) = &d.client_tls {
            defaults = defaults.client_tls(cx.client_tls("client_tls", t)?);
        }
        if let Some(t) = &d.server_tls {
            defaults = defaults.server_tls(cx.server_tls("server_tls", t)?);
        }
        if let Some(p) = d.signing {
            defaults = defaults.signing(p.into());
        }
        if let Some(p) = d.encryption {
            defaults = defaults.encryption(p.into());
        }
        if let Some(r) = d.reconnect {
            defaults = defaults.reconnect(r.into());
        }
        if let Some(ms) = d.request_timeout_ms {
            defaults = defaults.request_timeout(Duration::from_millis(ms));
        }
        if let Some(k) = d.keepalive {
            defaults = defaults.keepalive(k.into());
        }
        let mut list = ConnectionList::new(defaults);
        for (name, e) in &self.entries {
            let cx = Ctx {
                entry: name,
                options,
            };
            list = list.entry(name.clone(), e.resolve(&cx)?);
        }
        Ok(list)
    }
}

impl FileEntry {
    /// The values every entry may set.
    fn common(&self, cx: &Ctx<'_>) -> Result<Common, ListError> {
        Ok(Common {
            identity: self.identity.as_ref().map(identity),
            secret: self.secret.as_ref().map(|s| cx.secret(s)).transpose()?,
            signing: self.signing.map(Into::into),
            encryption: self.encryption.map(Into::into),
            request_timeout: self.request_timeout_ms.map(Duration::from_millis),
            keepalive: self.keepalive.map(Into::into),
        })
    }

    fn resolve(&self, cx: &Ctx<'_>) -> Result<EntrySpec, ListError> {
        match (&self.connect, &self.bind) {
            (Some(target), None) => self.client(cx, target).map(EntrySpec::Client),
            (None, Some(bind)) => self.server(cx, bind).map(EntrySpec::Server),
            _ => Err(cx.invalid(
                "connect",
                "an entry has exactly one of `connect` (a client) and `bind` (a server)",
            )),
        }
    }

    fn client(&self, cx: &Ctx<'_>, target: &str) -> Result<ClientEntry, ListError> {
        for (set, field) in [
            (self.max_connections.is_some(), "max_connections"),
            (
                self.max_connections_per_ip.is_some(),
                "max_connections_per_ip",
            ),
        ] {
            if set {
                return Err(cx.invalid(field, "only a server entry (`bind`) has it"));
            }
        }
        let mut e = ClientEntry::new(target);
        if let Some(name) = &self.server_name {
            let name = ServerName::try_from(name.clone()).map_err(|_| {
                cx.invalid(
                    "server_name",
                    format!("`{name}` is no valid TLS server name"),
                )
            })?;
            e = e.server_name(name);
        }
        if let Some(t) = &self.tls {
            e = e.tls(Arc::new(cx.client_tls("tls", t)?));
        }
        if let Some(r) = self.reconnect {
            e = e.reconnect(r.into());
        }
        e.common = self.common(cx)?;
        Ok(e)
    }

    fn server(&self, cx: &Ctx<'_>, bind: &str) -> Result<ServerEntry, ListError> {
        for (set, field) in [
            (self.server_name.is_some(), "server_name"),
            (self.reconnect.is_some(), "reconnect"),
        ] {
            if set {
                return Err(cx.invalid(field, "only a client entry (`connect`) has it"));
            }
        }
        let addr: SocketAddr = bind
            .parse()
            .map_err(|_| cx.invalid("bind", format!("`{bind}` is not ip:port")))?;
        let mut e = ServerEntry::new(addr);
        if let Some(t) = &self.tls {
            e = e.tls(Arc::new(cx.server_tls("tls", t)?));
        }
        e.common = self.common(cx)?;
        e.max_connections = self.max_connections;
        e.max_connections_per_ip = self.max_connections_per_ip;
        Ok(e)
    }
}
