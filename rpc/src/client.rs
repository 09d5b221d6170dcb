//! A Rust client of the procedure layer: an [`RpcClient`] over one or more
//! [`RpcTransport`]s tried in a configured order. This crate has the
//! jsonlink-link transport ([`LinkTransport`]); `jsonlink-gateway` adds the
//! HTTP and WebSocket ones behind its `client` feature.
//!
//! # Fallback
//!
//! A call goes to the first transport in the order given. It moves to the
//! next **only** when the transport reports [`TransportError::Unavailable`]:
//! it could not connect, or has no connection now, and **did not send the
//! call**. Every other failure ([`TransportError::Failed`]: the connection
//! was lost after the call was sent, a timeout, a refused or malformed
//! answer) ends the call with that error and is never retried on another
//! transport, because the call may have run. A transport answering with
//! any `code` (400, 500, …) is an answer, not a failure.
//!
//! # Identity
//!
//! [`RpcClient::set_identity`] gives the identity to every transport once;
//! each sends it the way its connection needs: with every call (HTTP), or
//! once per connection and again after each reconnect (WebSocket, jsonlink
//! link). A call's own `identity` still wins for that call.

use crate::link::{CALL_OP, IDENTITY_OP};
use crate::registry::BoxFuture;
use crate::wire::{CallRequest, CallResponse, Identity};
use jsonlink_rt::{Client, Error as LinkError, Link};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a transport did not deliver an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The transport could not connect, or has no connection now; the call
    /// was not sent. The client falls back to the next transport.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call was (or may have been) sent and no answer came, or the
    /// answer could not be read. Never retried.
    #[error("failed: {0}")]
    Failed(String),
}

/// One way to reach a procedure server.
pub trait RpcTransport: Send + Sync + 'static {
    /// A short name for errors and logs (`"link"`, `"http"`, `"ws"`).
    fn name(&self) -> &str;
    /// Stores the identity to send with later calls (see the module docs).
    fn set_identity(&self, identity: Option<Identity>);
    /// Sends one call and waits for its answer.
    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>>;
}

/// Why an [`RpcClient`] call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Every transport was unavailable; the call was sent nowhere.
    #[error("no transport could connect: {}", .0.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "))]
    NoTransport(Vec<(String, String)>),
    /// A transport failed after (possibly) sending the call.
    #[error("transport {transport} failed: {reason}")]
    Failed {
        /// The transport's name.
        transport: String,
        /// What went wrong.
        reason: String,
    },
    /// The call was answered with a code other than 2xx (only from
    /// [`RpcClient::call_typed`]).
    #[error("call answered {code}: {message}")]
    Answer {
        /// The code.
        code: u16,
        /// The message.
        message: String,
    },
    /// The answer's `data` does not fit the requested type (only from
    /// [`RpcClient::call_typed`]).
    #[error("answer does not decode: {0}")]
    Decode(String),
}

/// Calls procedures through transports tried in order (see the module
/// docs for when it falls back).
#[derive(Clone)]
pub struct RpcClient {
    transports: Arc<[Arc<dyn RpcTransport>]>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field(
                "transports",
                &self.transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RpcClient {
    /// A client over `transports`, tried in this order.
    pub fn new(transports: Vec<Arc<dyn RpcTransport>>) -> Self {
        Self {
            transports: transports.into(),
        }
    }

    /// Sets the identity of every later call (each transport re-sends it
    /// after its reconnects). `None` clears it.
    pub fn set_identity(&self, identity: Option<Identity>) {
        for t in self.transports.iter() {
            t.set_identity(identity.clone());
        }
    }

    /// Calls a procedure; `Ok` is whatever CallResponse came back.
    pub async fn call(&self, req: CallRequest) -> Result<CallResponse, ClientError> {
        let mut unavailable = Vec::new();
        let mut req = Some(req);
        let last = self.transports.len().saturating_sub(1);
        for (i, t) in self.transports.iter().enumerate() {
            // The last transport takes the request itself: no copy of the
            // arguments on the common one-transport path.
            let this = if i == last { req.take() } else { req.clone() };
            let Some(this) = this else { break };
            match t.call(this).await {
                Ok(resp) => return Ok(resp),
                Err(TransportError::Unavailable(why)) => {
                    tracing::debug!(target: "jsonlink::rpc", transport = t.name(), %why, "transport unavailable; trying the next");
                    unavailable.push((t.name().to_owned(), why));
                }
                Err(TransportError::Failed(reason)) => {
                    return Err(ClientError::Failed {
                        transport: t.name().to_owned(),
                        reason,
                    });
                }
            }
        }
        Err(ClientError::NoTransport(unavailable))
    }

    /// Calls a procedure and decodes a 2xx answer's `data` as `R`.
    pub async fn call_typed<R: serde::de::DeserializeOwned>(
        &self,
        req: CallRequest,
    ) -> Result<R, ClientError> {
        let resp = self.call(req).await?;
        if !resp.success {
            return Err(ClientError::Answer {
                code: resp.code,
                message: resp.message.unwrap_or_default(),
            });
        }
        serde_json::from_value(resp.data.unwrap_or_default())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Where a [`LinkTransport`] sends: a client's current link, or one link
/// of a server (the server calling one of its clients).
#[derive(Clone, Debug)]
enum Target {
    Client(Client),
    Link(Link),
}

/// The jsonlink transport: `rpc.call` requests over a link (PROTOCOL.md
/// §11.6). Unavailable (so the next transport is tried) when there is no
/// authenticated link now, the link is closing and refuses new requests,
/// or setting the identity on a new link failed (the call was not sent); a call lost with its link, timed out, refused as busy or
/// answered with anything but a CallResponse has failed.
///
/// The identity is sent with `rpc.identity` before the first call on each
/// new link (so again after every reconnect), not with every call.
pub struct LinkTransport {
    target: Target,
    timeout: Option<Duration>,
    identity: Mutex<IdentityState>,
}

#[derive(Default)]
struct IdentityState {
    identity: Option<Identity>,
    /// The link whose server-side identity is `identity` (`None`: none yet).
    sent_on: Option<u64>,
    /// The link on which an identity (not `None`) was last set.
    set_on: Option<u64>,
}

impl fmt::Debug for LinkTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTransport")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LinkTransport {
    /// Calls over `client`'s current link (the client reconnects by its
    /// own policy).
    pub fn client(client: Client) -> Self {
        Self::new(Target::Client(client))
    }

    /// Calls over one link (a server calling a client's procedures).
    pub fn link(link: Link) -> Self {
        Self::new(Target::Link(link))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            timeout: None,
            identity: Mutex::new(IdentityState::default()),
        }
    }

    /// The request timeout of each call (default: the link's configured
    /// request timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn current(&self) -> Result<Link, TransportError> {
        let link = match &self.target {
            Target::Client(c) => c.link(),
            Target::Link(l) => (!l.is_closed()).then(|| l.clone()),
        };
        link.ok_or_else(|| TransportError::Unavailable("no authenticated link".into()))
    }

    /// The identity to set on `link` first, if the link does not hold it:
    /// the identity on a link that has not had it; `None` (a clear) only on
    /// the link that had one (a new link starts with none).
    fn identity_due(&self, link: &Link) -> Option<Option<Identity>> {
        let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        let id = link.id();
        if st.sent_on == Some(id) {
            return None;
        }
        if st.identity.is_none() && st.set_on != Some(id) {
            st.sent_on = Some(id);
            return None;
        }
        Some(st.identity.clone())
    }

    async fn send(&self, req: CallRequest) -> Result<CallResponse, TransportError> {
        let link = self.current()?;
        if let Some(identity) = self.identity_due(&link) {
            // The call is not sent before the identity is set: a link lost
            // meanwhile is a link we could not use (so the next transport
            // may take the call).
            let body = raw_call(IDENTITY_OP, &identity)?;
            let resp = link
                .request_raw(body, self.timeout)
                .await
                .map_err(|e| TransportError::Unavailable(format!("setting the identity: {e}")))?;
            let resp: CallResponse = resp
                .parse()
                .map_err(|e| TransportError::Failed(format!("identity answer: {e}")))?;
            if !resp.success {
                return Err(TransportError::Failed(format!(
                    "identity refused: {}",
                    resp.message.unwrap_or_default()
                )));
            }
            let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
            if st.identity == identity {
                st.sent_on = Some(link.id());
                st.set_on = identity.is_some().then(|| link.id());
            }
        }
        let body = flat_call(&req)?;
        let answer = link
            .request_raw(body, self.timeout)
            .await
            .map_err(map_link_error)?;
        answer
            .parse::<CallResponse>()
            .map_err(|e| TransportError::Failed(format!("not a CallResponse: {e}")))
    }
}

impl RpcTransport for LinkTransport {
    fn name(&self) -> &str {
        "link"
    }

    fn set_identity(&self, identity: Option<Identity>) {
        let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        st.identity = identity;
        st.sent_on = None;
    }

    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>> {
        Box::pin(self.send(req))
    }
}

/// `{"op": op, "args": <args>}` (PROTOCOL.md §11.5, rule 1), serialized
/// once, never re-parsed.
pub(crate) fn raw_call<T: serde::Serialize + ?Sized>(
    op: &str,
    args: &T,
) -> Result<Box<serde_json::value::RawValue>, TransportError> {
    #[derive(serde::Serialize)]
    struct Body<'a, T: ?Sized> {
        op: &'a str,
        args: &'a T,
    }
    serde_json::value::to_raw_value(&Body { op, args })
        .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))
}

fn is_default_scope(s: &&str) -> bool {
    *s == crate::wire::DEFAULT_SCOPE
}

fn is_default_version(s: &&str) -> bool {
    *s == crate::wire::DEFAULT_VERSION
}

/// `{"op":"rpc.call","procedure":…,…}`: the CallRequest's members beside
/// `op` (PROTOCOL.md §11.5, the flat shape), serialized once; the default
/// scope and version are left out (the receiver applies them).
fn flat_call(req: &CallRequest) -> Result<Box<serde_json::value::RawValue>, TransportError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Flat<'a> {
        op: &'a str,
        procedure: &'a str,
        #[serde(skip_serializing_if = "is_default_scope")]
        scope: &'a str,
        #[serde(skip_serializing_if = "is_default_version")]
        version: &'a str,
        args: &'a serde_json::Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        correlation_id: &'a Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: &'a Option<Identity>,
    }
    serde_json::value::to_raw_value(&Flat {
        op: CALL_OP,
        procedure: &req.procedure,
        scope: &req.scope,
        version: &req.version,
        args: &req.args,
        correlation_id: &req.correlation_id,
        identity: &req.identity,
    })
    .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))
}

/// Whether a link error means the request was not sent.
fn map_link_error(e: LinkError) -> TransportError {
    match e {
        LinkError::NotConnected | LinkError::Closed => TransportError::Unavailable(e.to_string()),
        other => TransportError::Failed(other.to_string()),
    }
}
