//! The [`Multiplexer`]: one handle over named client and server entries
//! (zetta-rpc's and iris-rpc's `Multiplexer`), built from a
//! [`ConnectionList`].
//!
//! Each entry is an ordinary [`Client`] or [`Server`] of this crate, built
//! from the entry and the list's defaults, sharing the Multiplexer's one
//! [`Handlers`] table; their event streams are merged into one
//! ([`MuxEvent`]: which entry, which link). Every link of every entry
//! gets an id of the Multiplexer's own ([`MuxLinkId`]), unique across
//! entries and never reused, set on the [`Link`] before its first event
//! or handler call ([`Link::mux_id`], [`Link::entry`]). Nothing changes
//! on the wire.

#[cfg(feature = "config-file")]
mod file;
mod list;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use jsonlink_proto::{CloseReason, Identity, RawJson, Secret};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

#[cfg(feature = "config-file")]
pub use file::LoadOptions;
use list::Common;
pub use list::{ClientEntry, ConnectionList, Defaults, EntrySpec, ListError, ServerEntry};
pub use status::{EntryState, EntryStatus, LinkState, LinkStatus, MuxEvent, MuxLinkId, Role};

use crate::client::{Client, ClientBuilder};
use crate::config::LinkOptions;
use crate::deadline::clamp_deadline;
use crate::dispatch::Handlers;
use crate::driver::LinkObserver;
use crate::error::Error;
use crate::event::EventStream;
use crate::link::{Link, MuxTag};
use crate::runtime::{BoxFuture, Runtime};
use crate::server::{Server, ServerBuilder};
use crate::stats::Stats;

/// Default capacity of a Multiplexer's merged event stream.
pub const DEFAULT_MUX_EVENT_CAPACITY: usize = 256;
/// Default number of ended links whose status each entry keeps.
pub const DEFAULT_CLOSED_LINKS_KEPT: usize = 16;
/// Events one entry's forwarder moves into the merged stream at a time.
const FORWARD_BATCH: usize = 64;

/// Where a command goes: one link, every live link of an entry (a request:
/// one of them, round robin), or every live link of a peer identity.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    /// One link, by the Multiplexer's id.
    Link(MuxLinkId),
    /// An entry, by name.
    Entry(&'a str),
    /// A peer by the identity it announced (node and designation:
    /// zetta-rpc's `cid`), whichever entry and link it is on now; it
    /// survives reconnects, where link ids do not.
    Peer(&'a Identity),
}

/// Configures and starts a [`Multiplexer`]; made by
/// [`Multiplexer::builder`].
pub struct MultiplexerBuilder {
    rt: Arc<dyn Runtime>,
    list: ConnectionList,
    handlers: Handlers,
    consume_events: bool,
    event_capacity: usize,
    closed_links_kept: usize,
    link_options: LinkOptions,
}

impl fmt::Debug for MultiplexerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiplexerBuilder")
            .field("list", &self.list)
            .field("consume_events", &self.consume_events)
            .field("event_capacity", &self.event_capacity)
            .field("closed_links_kept", &self.closed_links_kept)
            .field("link_options", &self.link_options)
            .finish_non_exhaustive()
    }
}

impl MultiplexerBuilder {
    /// Declares that the application reads the merged stream's data
    /// events (messages and requests no handler takes), for every entry:
    /// see [`LinkOptions::consume_events`]. Default `false`.
    pub fn consume_events(mut self, on: bool) -> Self {
        self.consume_events = on;
        self
    }

    /// Capacity of the merged event stream. Past it, each entry's events
    /// wait in that entry's own stream (bounded by
    /// [`LinkOptions::event_capacity`]: data events make their link wait,
    /// the oldest lifecycle events are dropped and counted). Default
    /// [`DEFAULT_MUX_EVENT_CAPACITY`].
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// How many ended links each entry keeps in its
    /// [`EntryStatus::links`]. Default [`DEFAULT_CLOSED_LINKS_KEPT`].
    pub fn closed_links_kept(mut self, n: usize) -> Self {
        self.closed_links_kept = n;
        self
    }

    /// The link options of every entry (their `consume_events` is set by
    /// [`consume_events`](Self::consume_events); their event stream is
    /// always on, it feeds the merged one). Default
    /// [`LinkOptions::default`].
    pub fn link_options(mut self, options: LinkOptions) -> Self {
        self.link_options = options;
        self
    }

    /// Uses `handlers` as the one table of every entry (it can be shared
    /// and edited later). Default: a new, empty table.
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Starts every entry of the list: servers bind (before this
    /// returns), clients start connecting in the background (a peer down
    /// from the start is retried per the reconnect policy; see
    /// [`EntryState::Connecting`]).
    ///
    /// # Errors
    ///
    /// The first entry that cannot start, naming it:
    /// [`ListError::Duplicate`], [`ListError::EmptyName`],
    /// [`ListError::Missing`] (a secret, identity or TLS configuration
    /// neither the entry nor the defaults have), [`ListError::Bind`]. The
    /// entries started before it are stopped.
    pub async fn start(self) -> Result<Multiplexer, ListError> {
        let mut options = self.link_options;
        options.events = true;
        options.consume_events = self.consume_events;
        let (events_tx, events_rx) = async_channel::bounded(self.event_capacity);
        let shared = Arc::new(MuxShared {
            rt: self.rt,
            handlers: self.handlers,
            defaults: self.list.defaults,
            options,
            closed_links_kept: self.closed_links_kept,
            next_id: AtomicU64::new(1),
            peer_rr: AtomicUsize::new(0),
            registry: Mutex::new(Registry::default()),
            events_tx,
        });
        let mux = Multiplexer {
            inner: Arc::new(MuxInner {
                shared,
                events: events_rx,
            }),
        };
        for (name, entry) in self.list.entries {
            mux.add(name, entry).await?;
        }
        Ok(mux)
    }
}

/// One handle over many links: the client and server entries of a
/// [`ConnectionList`] (iris-rpc's `Multiplexer`). Cheap to clone;
/// dropping the last clone stops every entry (servers stop listening,
/// clients close, links close gracefully).
///
/// - **Addressing** ([`To`]): `send`, `request`, `ping` go to one link
///   ([`To::Link`]), to an entry ([`To::Entry`]: a message or ping to
///   every live link of it, a request to one of them, round robin), or to
///   a peer identity ([`To::Peer`]: node and designation, which survive a
///   reconnect); [`broadcast`](Self::broadcast) goes to every live link.
///   A request to an entry or peer with no live link fails at once with
///   [`Error::NotConnected`], never waiting for a reconnect.
/// - **Ids**: the Multiplexer's own [`MuxLinkId`], unique across all
///   entries and never reused; [`Link::id`] stays the id the link's
///   server gave it (per server, from 1).
/// - **Handlers and events**: one [`Handlers`] table for every entry
///   (handlers get the [`Link`]: [`Link::entry`], [`Link::mux_id`]); one
///   merged event stream ([`next_event`](Self::next_event)), each
///   [`MuxEvent`] naming its entry and link.
/// - **Status** ([`status`](Self::status)): per entry and per link: role,
///   state, peer identity, counters.
/// - **Entries** are added ([`add`](Self::add)) and removed
///   ([`remove`](Self::remove)) while running; [`shutdown`](Self::shutdown)
///   stops all of them with one deadline.
#[derive(Clone)]
pub struct Multiplexer {
    inner: Arc<MuxInner>,
}

pub(crate) struct MuxInner {
    shared: Arc<MuxShared>,
    events: async_channel::Receiver<MuxEvent>,
}

impl Drop for MuxInner {
    fn drop(&mut self) {
        // The entries' handles go: each server and client closes (its
        // forwarder ends with its event stream).
        let entries = {
            let mut reg = self.shared.registry();
            reg.stopped = true;
            std::mem::take(&mut reg.entries)
        };
        drop(entries);
    }
}

impl fmt::Debug for Multiplexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.inner.shared.registry();
        f.debug_struct("Multiplexer")
            .field("entries", &reg.entries.keys().collect::<Vec<_>>())
            .field("links", &reg.links.len())
            .finish()
    }
}

struct MuxShared {
    rt: Arc<dyn Runtime>,
    handlers: Handlers,
    defaults: Defaults,
    options: LinkOptions,
    closed_links_kept: usize,
    next_id: AtomicU64,
    /// Round robin over the links of a peer identity.
    peer_rr: AtomicUsize,
    registry: Mutex<Registry>,
    events_tx: async_channel::Sender<MuxEvent>,
}

impl MuxShared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Registry {
    entries: BTreeMap<Arc<str>, EntryRt>,
    /// Every link not yet ended, by the Multiplexer's id.
    links: BTreeMap<u64, LinkRec>,
    /// The authenticated ones among them, by the identity their peer
    /// announced (for [`To::Peer`]).
    peers: HashMap<Identity, BTreeSet<u64>>,
    stopped: bool,
}

impl Registry {
    /// Forgets link `id` (ended, or its entry removed).
    fn forget(&mut self, id: u64) -> Option<LinkRec> {
        let rec = self.links.remove(&id)?;
        if let Some(peer) = rec.link.peer()
            && let Some(ids) = self.peers.get_mut(peer)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.peers.remove(peer);
            }
        }
        Some(rec)
    }
}

#[derive(Clone)]
enum Endpoint {
    Client(Client),
    Server(Server),
}

impl Endpoint {
    fn role(&self) -> Role {
        match self {
            Self::Client(_) => Role::Client,
            Self::Server(_) => Role::Server,
        }
    }

    fn stats(&self) -> Stats {
        match self {
            Self::Client(c) => c.stats(),
            Self::Server(s) => s.stats(),
        }
    }

    /// Stops the entry: a server shuts down, a client closes, both by
    /// `deadline`.
    async fn stop(&self, deadline: Instant) {
        match self {
            Self::Client(c) => c.close_by(deadline).await,
            Self::Server(s) => s.shutdown(deadline).await,
        }
    }
}

struct EntryRt {
    endpoint: Endpoint,
    /// Round robin over the entry's live links.
    rr: usize,
    /// A client entry's link has authenticated once.
    ever_up: bool,
    /// The last links that ended, oldest first.
    history: VecDeque<LinkStatus>,
}

struct LinkRec {
    entry: Arc<str>,
    role: Role,
    link: Link,
}

impl LinkRec {
    fn status(&self, id: u64) -> LinkStatus {
        let link = &self.link;
        let state = if link.auth().is_none() {
            LinkState::Connecting
        } else if link.takes_commands() {
            LinkState::Authenticated
        } else {
            LinkState::Closing
        };
        LinkStatus {
            id: MuxLinkId(id),
            server_link_id: link.auth().map(|a| a.connection_id),
            entry: self.entry.clone(),
            role: self.role,
            state,
            peer: link.peer().cloned(),
            peer_addr: link.peer_addr(),
            stats: link.stats(),
        }
    }

    fn is_live(&self) -> bool {
        self.link.takes_commands()
    }
}

/// Tells the Multiplexer about every link of one entry.
struct EntryObserver {
    mux: Weak<MuxShared>,
    /// For [`Link::multiplexer`].
    handle: Weak<MuxInner>,
    entry: Arc<str>,
    role: Role,
}

impl LinkObserver for EntryObserver {
    fn created(&self, link: &Link) {
        let Some(mux) = self.mux.upgrade() else {
            return;
        };
        let id = mux.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = link.inner.tag.set(MuxTag {
            id,
            entry: self.entry.clone(),
            mux: self.handle.clone(),
        });
        mux.registry().links.insert(
            id,
            LinkRec {
                entry: self.entry.clone(),
                role: self.role,
                link: link.clone(),
            },
        );
    }

    fn authenticated(&self, link: &Link) {
        let Some(mux) = self.mux.upgrade() else {
            return;
        };
        let mut reg = mux.registry();
        if let Some(e) = reg.entries.get_mut(&self.entry) {
            e.ever_up = true;
        }
        if let (Some(tag), Some(peer)) = (link.inner.tag.get(), link.peer())
            && reg.links.contains_key(&tag.id)
        {
            reg.peers.entry(peer.clone()).or_default().insert(tag.id);
        }
    }

    fn closed(&self, link: &Link, _reason: &CloseReason) {
        let Some(mux) = self.mux.upgrade() else {
            return;
        };
        let Some(tag) = link.inner.tag.get() else {
            return;
        };
        let mut reg = mux.registry();
        let Some(rec) = reg.forget(tag.id) else {
            return;
        };
        let mut status = rec.status(tag.id);
        status.state = LinkState::Closed;
        if let Some(e) = reg.entries.get_mut(&self.entry) {
            e.history.push_back(status);
            while e.history.len() > mux.closed_links_kept {
                e.history.pop_front();
            }
        }
    }
}

/// Moves one entry's events into the merged stream, until the entry's
/// stream ends (its server or client, and every link of it, are gone) or
/// the Multiplexer is dropped.
async fn forward(events: EventStream, entry: Arc<str>, tx: async_channel::Sender<MuxEvent>) {
    let mut batch = Vec::with_capacity(FORWARD_BATCH);
    while events.next_many(&mut batch, FORWARD_BATCH).await > 0 {
        for event in batch.drain(..) {
            let ev = MuxEvent {
                entry: entry.clone(),
                link: status::event_link(&event).and_then(Link::mux_id),
                event,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// An entry's common values over the defaults', with the two it cannot
/// do without.
fn resolve(
    name: &str,
    entry: &Common,
    defaults: &Common,
) -> Result<(Secret, Identity, Common), ListError> {
    let common = entry.or(defaults);
    let secret = common
        .secret
        .clone()
        .ok_or_else(|| ListError::missing(name, "secret"))?;
    let identity = common
        .identity
        .clone()
        .ok_or_else(|| ListError::missing(name, "identity"))?;
    Ok((secret, identity, common))
}

/// Applies the Multiplexer's link options and handlers, and an entry's
/// resolved [`Common`] values, to a server or client builder (the two
/// share these setters).
macro_rules! apply_common {
    ($builder:expr, $shared:expr, $common:expr) => {{
        let mut b = $builder
            .link_options($shared.options.clone())
            .handlers($shared.handlers.clone());
        if let Some(p) = $common.signing {
            b = b.signing(p);
        }
        if let Some(p) = $common.encryption {
            b = b.encryption(p);
        }
        if let Some(t) = $common.request_timeout {
            b = b.request_timeout(t);
        }
        if let Some(k) = $common.keepalive {
            b = b.keepalive(k);
        }
        b
    }};
}

/// Waits for every future, run as tasks of their own (so they proceed
/// together whatever the runtime).
async fn join_all(rt: &dyn Runtime, futures: Vec<BoxFuture<'static, ()>>) {
    let mut done = Vec::with_capacity(futures.len());
    for f in futures {
        let (tx, rx) = futures_channel::oneshot::channel::<()>();
        rt.spawn(Box::pin(async move {
            f.await;
            let _ = tx.send(());
        }));
        done.push(rx);
    }
    for rx in done {
        let _ = rx.await;
    }
}

impl Multiplexer {
    /// Starts configuring a Multiplexer over the entries of `list`, on
    /// runtime `rt`.
    pub fn builder(rt: Arc<dyn Runtime>, list: ConnectionList) -> MultiplexerBuilder {
        MultiplexerBuilder {
            rt,
            list,
            handlers: Handlers::new(),
            consume_events: false,
            event_capacity: DEFAULT_MUX_EVENT_CAPACITY,
            closed_links_kept: DEFAULT_CLOSED_LINKS_KEPT,
            link_options: LinkOptions::default(),
        }
    }

    /// The Multiplexer a link's [`Link::multiplexer`] reaches, while a
    /// user handle keeps it.
    pub(crate) fn from_weak(weak: &Weak<MuxInner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    /// The one handler table of every entry; edit it while running.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.shared.handlers
    }

    /// The entries' names, in order.
    pub fn entries(&self) -> Vec<String> {
        let reg = self.inner.shared.registry();
        reg.entries.keys().map(|k| k.to_string()).collect()
    }

    /// Adds an entry while running, with the list's defaults (a server
    /// binds before this returns; a client starts connecting).
    ///
    /// # Errors
    ///
    /// As [`MultiplexerBuilder::start`], for this entry; and
    /// [`ListError::ShutDown`] after [`shutdown`](Self::shutdown).
    pub async fn add(
        &self,
        name: impl Into<String>,
        entry: impl Into<EntrySpec>,
    ) -> Result<(), ListError> {
        let name: String = name.into();
        if name.is_empty() {
            return Err(ListError::EmptyName);
        }
        let shared = &self.inner.shared;
        {
            let reg = shared.registry();
            if reg.stopped {
                return Err(ListError::ShutDown);
            }
            if reg.entries.contains_key(name.as_str()) {
                return Err(ListError::Duplicate { entry: name });
            }
        }
        let name: Arc<str> = Arc::from(name);
        let entry = entry.into();
        let role = match &entry {
            EntrySpec::Client(_) => Role::Client,
            EntrySpec::Server(_) => Role::Server,
        };
        let observer: Arc<dyn LinkObserver> = Arc::new(EntryObserver {
            mux: Arc::downgrade(shared),
            handle: Arc::downgrade(&self.inner),
            entry: name.clone(),
            role,
        });
        let (endpoint, events) = match entry {
            EntrySpec::Client(c) => {
                let mut b = self.client_builder(&name, c)?;
                b.observer = Some(observer);
                let (client, events) = b.start_detached_events();
                (Endpoint::Client(client), events)
            }
            EntrySpec::Server(s) => {
                let addr = s.bind;
                let mut b = self.server_builder(&name, s)?;
                b.observer = Some(observer);
                let (server, events) =
                    b.bind_detached_events(addr)
                        .await
                        .map_err(|error| ListError::Bind {
                            entry: name.to_string(),
                            addr,
                            error: Box::new(error),
                        })?;
                (Endpoint::Server(server), events)
            }
        };
        let refused = {
            let mut reg = shared.registry();
            // Checked again: another `add` of the same name, or a
            // shutdown, may have run while the server bound.
            if reg.stopped {
                Some(ListError::ShutDown)
            } else if reg.entries.contains_key(&name) {
                Some(ListError::Duplicate {
                    entry: name.to_string(),
                })
            } else {
                // A client's first link may have authenticated already.
                let ever_up = reg
                    .links
                    .values()
                    .any(|r| r.entry == name && r.link.auth().is_some());
                reg.entries.insert(
                    name.clone(),
                    EntryRt {
                        endpoint: endpoint.clone(),
                        rr: 0,
                        ever_up,
                        history: VecDeque::new(),
                    },
                );
                None
            }
        };
        if let Some(e) = refused {
            endpoint.stop(shared.rt.now()).await;
            return Err(e);
        }
        tracing::info!(entry = %name, role = ?role, "multiplexer entry added");
        shared
            .rt
            .spawn(Box::pin(forward(events, name, shared.events_tx.clone())));
        Ok(())
    }

    fn client_builder(&self, name: &str, c: ClientEntry) -> Result<ClientBuilder, ListError> {
        let shared = &self.inner.shared;
        let d = &shared.defaults;
        let (secret, identity, common) = resolve(name, &c.common, &d.common)?;
        let tls = c
            .tls
            .or_else(|| d.client_tls.clone())
            .ok_or_else(|| ListError::missing(name, "tls"))?;
        let b = Client::builder(
            shared.rt.clone(),
            c.target,
            tls,
            c.server_name,
            secret,
            identity,
        );
        let b = apply_common!(b, shared, common);
        Ok(match c.reconnect.or(d.reconnect) {
            Some(p) => b.reconnect(p),
            None => b,
        })
    }

    fn server_builder(&self, name: &str, s: ServerEntry) -> Result<ServerBuilder, ListError> {
        let shared = &self.inner.shared;
        let d = &shared.defaults;
        let (secret, identity, common) = resolve(name, &s.common, &d.common)?;
        let tls = s
            .tls
            .or_else(|| d.server_tls.clone())
            .ok_or_else(|| ListError::missing(name, "tls"))?;
        let b = Server::builder(shared.rt.clone(), tls, secret, identity)
            .max_connections_per_ip(s.max_connections_per_ip);
        let b = apply_common!(b, shared, common);
        Ok(match s.max_connections {
            Some(n) => b.max_connections(n),
            None => b,
        })
    }

    /// Removes the entry `name` while running: it leaves addressing at
    /// once, then stops gracefully by `deadline` (a server shuts down, a
    /// client closes: see [`Server::shutdown`], [`Client::close_by`]);
    /// returns when it has. Its events, to the `Closed` of its last link,
    /// still reach the merged stream.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownEntry`] if there is no such entry.
    pub async fn remove(&self, name: &str, deadline: Instant) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let entry = {
            let mut reg = shared.registry();
            let entry = reg
                .entries
                .remove(name)
                .ok_or_else(|| Error::UnknownEntry(name.to_owned()))?;
            let ids: Vec<u64> = reg
                .links
                .iter()
                .filter(|(_, l)| &*l.entry == name)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                reg.forget(id);
            }
            entry
        };
        tracing::info!(entry = %name, "multiplexer entry removed");
        entry.endpoint.stop(deadline).await;
        // Dropping the handle lets the entry's event stream end once its
        // last link has: its forwarder passes on every event till then.
        drop(entry);
        Ok(())
    }

    /// Stops every entry gracefully with one `deadline` (each server
    /// shuts down, each client closes, all at once: see
    /// [`Server::shutdown`], [`Client::close_by`]); returns when all have
    /// stopped, or shortly after `deadline` (a link's linger time at
    /// most). Requests still unanswered at the deadline fail with
    /// [`Error::ShuttingDown`]. No entry can be added afterwards.
    pub async fn shutdown(&self, deadline: Instant) {
        let shared = &self.inner.shared;
        let deadline = clamp_deadline(shared.rt.now(), deadline);
        let entries: Vec<Endpoint> = {
            let mut reg = shared.registry();
            reg.stopped = true;
            reg.entries.values().map(|e| e.endpoint.clone()).collect()
        };
        tracing::info!(entries = entries.len(), "multiplexer shutting down");
        let stops = entries
            .into_iter()
            .map(|endpoint| {
                Box::pin(async move { endpoint.stop(deadline).await }) as BoxFuture<'static, ()>
            })
            .collect();
        join_all(&*shared.rt, stops).await;
    }

    // ------------------------------------------------------------ status

    /// Every entry with its links: their roles, states, peers and
    /// counters, in name order.
    pub fn status(&self) -> Vec<EntryStatus> {
        let reg = self.inner.shared.registry();
        reg.entries
            .iter()
            .map(|(name, e)| entry_status(&reg, name, e))
            .collect()
    }

    /// One entry's status.
    pub fn entry_status(&self, name: &str) -> Option<EntryStatus> {
        let reg = self.inner.shared.registry();
        let (name, e) = reg.entries.get_key_value(name)?;
        Some(entry_status(&reg, name, e))
    }

    /// One link's status (also of a link that ended, while its entry
    /// keeps it in its history).
    pub fn link_status(&self, id: MuxLinkId) -> Option<LinkStatus> {
        let reg = self.inner.shared.registry();
        if let Some(rec) = reg.links.get(&id.0) {
            return Some(rec.status(id.0));
        }
        reg.entries
            .values()
            .flat_map(|e| e.history.iter())
            .find(|s| s.id == id)
            .cloned()
    }

    /// The link with this id, while it has not ended (authenticated or
    /// not).
    pub fn link(&self, id: MuxLinkId) -> Option<Link> {
        let reg = self.inner.shared.registry();
        reg.links.get(&id.0).map(|r| r.link.clone())
    }

    /// Every authenticated link taking commands, by id.
    pub fn links(&self) -> Vec<Link> {
        let reg = self.inner.shared.registry();
        reg.links
            .values()
            .filter(|r| r.is_live())
            .map(|r| r.link.clone())
            .collect()
    }

    // -------------------------------------------------------- addressing

    /// Every live link `to` names.
    fn targets(&self, to: To<'_>) -> Result<Vec<Link>, Error> {
        let reg = self.inner.shared.registry();
        let links: Vec<Link> = match to {
            To::Link(id) => {
                return match reg.links.get(&id.0) {
                    Some(r) if r.link.auth().is_some() => Ok(vec![r.link.clone()]),
                    _ => Err(Error::UnknownLink(id.0)),
                };
            }
            To::Entry(name) => {
                if !reg.entries.contains_key(name) {
                    return Err(Error::UnknownEntry(name.to_owned()));
                }
                reg.links
                    .values()
                    .filter(|r| &*r.entry == name && r.is_live())
                    .map(|r| r.link.clone())
                    .collect()
            }
            To::Peer(identity) => reg
                .peers
                .get(identity)
                .into_iter()
                .flatten()
                .filter_map(|id| reg.links.get(id))
                .filter(|r| r.is_live())
                .map(|r| r.link.clone())
                .collect(),
        };
        if links.is_empty() {
            return Err(Error::NotConnected);
        }
        Ok(links)
    }

    /// The one link a request to `to` goes to: round robin over an
    /// entry's (or a peer's) live links.
    fn pick(&self, to: To<'_>) -> Result<Link, Error> {
        let mut links = self.targets(to)?;
        let n = links.len();
        let i = match to {
            To::Link(_) => 0,
            To::Entry(name) => {
                let mut reg = self.inner.shared.registry();
                reg.entries.get_mut(name).map_or(0, |e| {
                    e.rr = e.rr.wrapping_add(1);
                    e.rr
                })
            }
            To::Peer(_) => self.inner.shared.peer_rr.fetch_add(1, Ordering::Relaxed),
        };
        Ok(links.swap_remove(i % n))
    }

    /// Sends a message to `to`: the link, or every live link of the entry
    /// or peer (encoded once; each send waits for room in its link's
    /// queue, see [`Link::send`]). Returns to how many links it went.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLink`], [`Error::UnknownEntry`];
    /// [`Error::NotConnected`] if the entry or peer has no live link;
    /// [`Error::Encode`] if `value` does not serialize; and, when it went
    /// to no link at all, the error of the first ([`Link::send`]).
    pub async fn send<T: Serialize + ?Sized>(&self, to: To<'_>, value: &T) -> Result<usize, Error> {
        let body = serde_json::value::to_raw_value(value).map_err(Error::Encode)?;
        self.send_raw(to, Arc::from(body)).await
    }

    /// Sends the message `{"op": op, <args>}` (see [`Link::send_op`]) to
    /// `to`, as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_op<A: Serialize + ?Sized>(
        &self,
        to: To<'_>,
        op: &str,
        args: &A,
    ) -> Result<usize, Error> {
        let body = RawJson::call(op, args).map_err(Error::Encode)?;
        self.send_raw(to, Arc::from(body.into_raw())).await
    }

    /// Sends a message given as raw JSON to `to`, as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), without [`Error::Encode`].
    pub async fn send_raw(&self, to: To<'_>, body: Arc<RawValue>) -> Result<usize, Error> {
        self.on_each(to, |link| {
            let body = body.clone();
            async move { link.send_raw(body).await }
        })
        .await
    }

    /// Runs `command` on every live link `to` names, one after the other;
    /// on how many it succeeded (the first error if on none).
    async fn on_each<F, Fut>(&self, to: To<'_>, mut command: F) -> Result<usize, Error>
    where
        F: FnMut(Link) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let mut done = 0;
        let mut first_error = None;
        for link in self.targets(to)? {
            match command(link).await {
                Ok(()) => done += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Pings `to` (the link, or every live link of the entry or peer)
    /// with optional data; to how many links it went.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`Error::Send`] if `data` is not an
    /// object.
    pub async fn ping<T: Serialize + ?Sized>(
        &self,
        to: To<'_>,
        data: Option<&T>,
    ) -> Result<usize, Error> {
        self.on_each(to, |link| async move { link.ping(data).await })
            .await
    }

    /// Sends a message to every live link of every entry without waiting
    /// (encoded once; a link whose command queue is full is skipped, so
    /// one slow reader cannot stall the rest, as with
    /// [`Server::broadcast`]). Returns to how many links it was queued.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `value` does not serialize.
    pub fn broadcast<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, Error> {
        let body: Arc<RawValue> =
            Arc::from(serde_json::value::to_raw_value(value).map_err(Error::Encode)?);
        Ok(self
            .links()
            .into_iter()
            .filter(|l| l.try_send_raw(body.clone()))
            .count())
    }

    /// Sends a request given as raw JSON to `to` (one link: for an entry
    /// or peer, the next of its live links, round robin); `timeout`
    /// defaults to the link's request timeout.
    ///
    /// # Errors
    ///
    /// At once, nothing sent: [`Error::UnknownLink`],
    /// [`Error::UnknownEntry`], [`Error::NotConnected`] (the entry or peer
    /// has no live link: it is down or reconnecting); then those of
    /// [`Link::request_raw`].
    pub async fn request_raw(
        &self,
        to: To<'_>,
        body: Box<RawValue>,
        timeout: Option<Duration>,
    ) -> Result<RawJson, Error> {
        let link = self.pick(to)?;
        link.request_raw(body, timeout).await
    }

    /// Sends a request to `to` (as [`request_raw`](Self::request_raw))
    /// and deserializes the answer into `R`.
    ///
    /// # Errors
    ///
    /// As [`request_raw`](Self::request_raw), and [`Error::Encode`],
    /// [`Error::Decode`].
    pub async fn request<R, T>(&self, to: To<'_>, value: &T) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.pick(to)?.request(value).await
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_with_timeout<R, T>(
        &self,
        to: To<'_>,
        value: &T,
        timeout: Duration,
    ) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.pick(to)?.request_with_timeout(value, timeout).await
    }

    /// Calls `op` with typed arguments on `to` (see [`Link::call`]).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn call<R, A>(&self, to: To<'_>, op: &str, args: &A) -> Result<R, Error>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.pick(to)?.call(op, args).await
    }

    /// [`call`](Self::call) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn call_with_timeout<R, A>(
        &self,
        to: To<'_>,
        op: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R, Error>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.pick(to)?.call_with_timeout(op, args, timeout).await
    }

    // ------------------------------------------------------------ events

    /// The next event of any entry (waits while there is none). Messages and requests no handler takes arrive
    /// here only with
    /// [`consume_events(true)`](MultiplexerBuilder::consume_events).
    pub async fn next_event(&self) -> Option<MuxEvent> {
        self.inner.events.recv().await.ok()
    }

    /// Waits for the next event, then moves it and up to `max - 1` more
    /// already waiting into `out`; how many.
    pub async fn next_events(&self, out: &mut Vec<MuxEvent>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.next_event().await else {
            return 0;
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.inner.events.try_recv() {
                Ok(ev) => out.push(ev),
                Err(_) => break,
            }
            n += 1;
        }
        n
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&self) -> Option<MuxEvent> {
        self.inner.events.try_recv().ok()
    }
}

fn entry_status(reg: &Registry, name: &Arc<str>, e: &EntryRt) -> EntryStatus {
    let role = e.endpoint.role();
    let open: Vec<LinkStatus> = reg
        .links
        .iter()
        .filter(|(_, r)| r.entry == *name)
        .map(|(id, r)| r.status(*id))
        .collect();
    let state = match &e.endpoint {
        _ if reg.stopped => EntryState::Closed,
        Endpoint::Server(_) => EntryState::Listening,
        Endpoint::Client(c) if c.is_closed() => EntryState::Closed,
        Endpoint::Client(_) if open.iter().any(|l| l.state == LinkState::Authenticated) => {
            EntryState::Authenticated
        }
        Endpoint::Client(_) if e.ever_up => EntryState::Reconnecting,
        Endpoint::Client(_) => EntryState::Connecting,
    };
    let mut links: Vec<LinkStatus> = e.history.iter().cloned().collect();
    // A reconnecting client's last link shows it.
    if state == EntryState::Reconnecting
        && open.is_empty()
        && let Some(last) = links.last_mut()
    {
        last.state = LinkState::Reconnecting;
    }
    links.extend(open);
    let local_addr = match &e.endpoint {
        Endpoint::Server(s) => Some(s.local_addr()),
        Endpoint::Client(_) => None,
    };
    EntryStatus {
        name: name.clone(),
        role,
        state,
        local_addr,
        links,
        stats: e.endpoint.stats(),
    }
}
