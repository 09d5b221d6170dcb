//! What a [`Multiplexer`](crate::Multiplexer) reports about its entries
//! and links: ids, roles, states, counters, and the events of its merged
//! stream.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use jsonlink_proto::Identity;

use crate::event::Event;
use crate::link::Link;
use crate::stats::{LinkStats, Stats};

/// A link id assigned by a [`Multiplexer`](crate::Multiplexer): unique
/// across all its entries, clients and servers alike, counting from 1,
/// and never reused (a link that reconnects gets a new one).
///
/// Not to be confused with [`Link::id`], the id a *server* gives a link:
/// every server counts from 1, so two entries may each have a link 1, and
/// a client entry's link carries the id its server chose. A
/// `LinkStatus` shows both ([`id`](LinkStatus::id) and
/// [`server_link_id`](LinkStatus::server_link_id)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MuxLinkId(pub u64);

impl fmt::Display for MuxLinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mux#{}", self.0)
    }
}

/// Which way an entry's links were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client entry: we dialed out.
    Client,
    /// A server entry: the peer dialed in.
    Server,
}

/// Where one link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// TLS is up, the jsonlink handshake is under way.
    Connecting,
    /// Authenticated and taking commands.
    Authenticated,
    /// A close from either side began: the link drains what is in flight
    /// and takes no new requests.
    Closing,
    /// A client entry's last link, which ended while the client
    /// reconnects (the next link gets a new id).
    Reconnecting,
    /// Ended.
    Closed,
}

/// Where one entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// A client entry that has not authenticated yet (its peer may be
    /// down from the start: it keeps trying per its reconnect policy).
    Connecting,
    /// A client entry with an authenticated link.
    Authenticated,
    /// A client entry that had a link, lost it and is reconnecting.
    Reconnecting,
    /// A server entry, accepting links.
    Listening,
    /// Stopped: removed, shut down, or a client that gave up (its
    /// credentials were rejected, a TLS configuration error, or
    /// [`Reconnect::Never`](crate::Reconnect::Never)).
    Closed,
}

/// One link of a [`Multiplexer`](crate::Multiplexer), as
/// [`Multiplexer::status`](crate::Multiplexer::status) saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkStatus {
    /// The Multiplexer's id for the link.
    pub id: MuxLinkId,
    /// The id the server gave the link ([`Link::id`]): per server, from
    /// 1; `None` before authentication.
    pub server_link_id: Option<u64>,
    /// The entry it belongs to.
    pub entry: Arc<str>,
    /// Client or server entry.
    pub role: Role,
    /// Where it is.
    pub state: LinkState,
    /// The identity the peer announced, once authenticated.
    pub peer: Option<Identity>,
    /// The peer's socket address.
    pub peer_addr: SocketAddr,
    /// The link's own counters.
    pub stats: LinkStats,
}

/// One entry of a [`Multiplexer`](crate::Multiplexer) and its links.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EntryStatus {
    /// The entry's name.
    pub name: Arc<str>,
    /// Client or server entry.
    pub role: Role,
    /// Where it is.
    pub state: EntryState,
    /// A server entry's listening address (the port chosen when it was
    /// given port 0); `None` for a client entry.
    pub local_addr: Option<SocketAddr>,
    /// Its links, by id: those open now, then the last ones that ended
    /// (at most [`closed_links_kept`](crate::MultiplexerBuilder::closed_links_kept)).
    pub links: Vec<LinkStatus>,
    /// The counters of the entry's server or client (all its links).
    pub stats: Stats,
}

/// An event of a [`Multiplexer`](crate::Multiplexer)'s merged stream:
/// which entry it came from, which link (the Multiplexer's id; `None` for
/// events of no link: a failed connect, a reconnect attempt), and the
/// event itself (whose [`Link`] also says, through [`Link::entry`] and
/// [`Link::mux_id`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct MuxEvent {
    /// The entry.
    pub entry: Arc<str>,
    /// The link, by the Multiplexer's id.
    pub link: Option<MuxLinkId>,
    /// The event.
    pub event: Event,
}

/// The link an event is about, if any.
pub(crate) fn event_link(ev: &Event) -> Option<&Link> {
    match ev {
        Event::Authenticated { link, .. }
        | Event::Ping { link, .. }
        | Event::Pong { link }
        | Event::KeepaliveTimeout { link }
        | Event::Closed { link, .. } => Some(link),
        Event::Message(m) => Some(&m.link),
        Event::Request(r) => Some(&r.link),
        _ => None,
    }
}
