//! Relays (PROTOCOL.md §18): the virtual links of relayed clients inside
//! one relay connection, on both of its sides. A relay announces each of
//! its clients with `join`, carries their messages, requests and answers
//! as `cmsg`, `creq` and `cres`, and ends them with `leave`; the server
//! sees each client as a link of its own, with a request-id space of its
//! own each way and exactly one end ([`Event::Left`]).
//!
//! The state here exists only on a connection where the extension `relay`
//! is on. Each side keeps the highest client id joined, so that a frame
//! for a client that has ended (a race with a `leave` in flight, dropped)
//! is told from one for a client never joined (a protocol error) without a
//! list of ended ids.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::frames::{check_dispatchable, code_and_reason, refusal, too_large_error};
use super::timers::deadline_after;
use super::{Connection, Handled, MAX_EXTENSIONS, MAX_REASON_LEN, Side, State};
use crate::config::{Extension, Extensions, Identity, MAX_IDENTITY_LEN};
use crate::error::{CloseCode, CloseReason, ProtocolError, RemoteError, RequestError, SendError};
use crate::event::{ClientId, Event, Joined, PeerRequestId, RawJson, RequestId};
use crate::wire::{self, Envelope, Key, encode};

/// Longest `addr` in a `join`, in bytes (PROTOCOL.md §18.3).
pub const MAX_ADDR_LEN: usize = 64;
/// Smallest `max_frame` a `join` may announce (PROTOCOL.md §18.3): every
/// error answer of §14.2 fits.
pub const MIN_RELAYED_MAX_FRAME: u64 = 512;
/// Most bytes a relayed data frame (`cmsg`, `creq`, `cres`) adds to the
/// plain frame it carries (`msg`, `req`, `res`): the `c` after `t`, and
/// `"c":C,` with `C` up to 20 digits (PROTOCOL.md §18.6).
pub const RELAY_WRAPPER_OVERHEAD: usize = 26;

/// What a relayed frame adds to its plain frame for client `c`.
fn overhead(c: u64) -> usize {
    // `c` in `t`, then `"c":` + digits + `,`
    6 + c.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// A deadline held for a relayed client: one of our requests for it, or
/// the end of its graceful leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Request(u64),
    Leave,
}

/// One relayed client's virtual link.
#[derive(Debug, Default)]
struct Client {
    /// Server: the longest plain frame it accepts (from `join`).
    max_frame: usize,
    /// Server: the extensions on between it and its relay.
    extensions: Extensions,
    /// Server: our graceful `leave` was sent, with this reason; relay: the
    /// server's notice came.
    closing: Option<String>,
    /// Server: when the graceful leave gives up.
    leave_deadline: Option<Instant>,
    /// Server: the id of our next request to it.
    next_request: u64,
    /// Our requests for it awaiting an answer, with their deadlines.
    pending: HashMap<u64, Option<Instant>>,
    /// The peer's requests for it awaiting our answer.
    incoming: HashSet<u64>,
}

/// The relay state of a connection where `relay` is on.
#[derive(Debug, Default)]
pub(super) struct Relay {
    /// The highest client id joined on this connection (`None`: none yet).
    highest: Option<u64>,
    clients: HashMap<u64, Client>,
    /// Every client's timed entries, earliest first; entries of requests
    /// answered or clients gone stay until they reach the front or a
    /// compaction drops them.
    deadlines: BinaryHeap<Reverse<(Instant, u64, Due)>>,
    /// Compact `deadlines` once it holds more entries than this.
    compact_at: usize,
    /// Requests in flight over all clients, both ways (for the drain of a
    /// graceful close of the whole connection).
    in_flight: usize,
    /// Of which the peer's, awaiting our answer (bounded by
    /// [`Config::max_relayed_incoming`](crate::Config::max_relayed_incoming)).
    incoming: usize,
}

impl Relay {
    /// Whether a timed entry still stands.
    fn is_live(&self, (at, c, due): &(Instant, u64, Due)) -> bool {
        self.clients.get(c).is_some_and(|cl| match due {
            Due::Request(id) => cl.pending.get(id) == Some(&Some(*at)),
            Due::Leave => cl.leave_deadline == Some(*at),
        })
    }

    fn push_deadline(&mut self, at: Instant, c: u64, due: Due) {
        self.deadlines.push(Reverse((at, c, due)));
        if self.deadlines.len() > self.compact_at.max(64) {
            let heap = std::mem::take(&mut self.deadlines);
            self.deadlines = heap
                .into_iter()
                .filter(|Reverse(e)| self.is_live(e))
                .collect();
            self.compact_at = 2 * self.deadlines.len() + 64;
        }
    }

    /// The earliest live deadline, dropping dead entries at the front.
    pub(super) fn first_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse(e)) = self.deadlines.peek() {
            if self.is_live(e) {
                return Some(e.0);
            }
            self.deadlines.pop();
        }
        None
    }

    /// The earliest deadline held, live or not (never later than the
    /// earliest live one).
    pub(super) fn peek_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(e)| e.0)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Getters and commands (A, C) of relay connections.
impl Connection {
    /// Whether this is a relay connection (PROTOCOL.md §18): the client took
    /// the relay role and the server accepted it. Only then do the
    /// `client_*` commands, [`join`](Self::join) and [`leave`](Self::leave)
    /// work.
    pub fn is_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// The relayed clients live on this connection.
    pub fn relayed_clients(&self) -> usize {
        self.relay.as_ref().map_or(0, |r| r.clients.len())
    }

    /// Relay: the longest frame this relay can carry for a client in each
    /// direction, as the plain frame (`msg`, `req`, `res`): the longest
    /// line the server accepts, less the protection of this connection
    /// and the wrapper ([`RELAY_WRAPPER_OVERHEAD`]). A relay announces at
    /// most this (and at most its own bound) to its clients as their
    /// `max_frame` (PROTOCOL.md §18.6). 0 before authentication.
    pub fn relayed_frame_limit(&self) -> usize {
        self.link_info
            .as_ref()
            .map_or(0, |a| a.max_plain_frame())
            .saturating_sub(RELAY_WRAPPER_OVERHEAD)
    }

    /// Relay: announces a client that authenticated with the relay
    /// (`join`, PROTOCOL.md §18.3) and returns its id: the next of a
    /// strictly increasing sequence, from 1. `identity` is what the client
    /// proved, `addr` where it connected from (`ip:port`, at most
    /// [`MAX_ADDR_LEN`] bytes), `max_frame` the longest plain frame it
    /// accepts (at least [`MIN_RELAYED_MAX_FRAME`]; see
    /// [`Authenticated::max_plain_frame`](crate::Authenticated::max_plain_frame)),
    /// `extensions` those on between it and the relay. Its virtual link
    /// ends with one [`Event::Left`].
    pub fn join(
        &mut self,
        identity: &Identity,
        addr: &str,
        max_frame: usize,
        extensions: Extensions,
    ) -> Result<ClientId, SendError> {
        if self.side != Side::Client || self.relay.is_none() {
            return Err(SendError::NotRelay);
        }
        if !matches!(self.state, State::Established) {
            return Err(SendError::Closed);
        }
        if addr.len() > MAX_ADDR_LEN {
            return Err(SendError::InvalidJoin("address longer than 64 bytes"));
        }
        if identity.node.len() > MAX_IDENTITY_LEN || identity.designation.len() > MAX_IDENTITY_LEN {
            return Err(SendError::InvalidJoin("identity longer than 256 bytes"));
        }
        if (max_frame as u64) < MIN_RELAYED_MAX_FRAME {
            return Err(SendError::InvalidJoin("max_frame below 512 bytes"));
        }
        self.check_room()?;
        let c = self
            .relay
            .as_ref()
            .and_then(|r| r.highest)
            .map_or(1, |h| h.saturating_add(1));
        let join = encode::Join {
            c,
            identity,
            addr,
            max_frame: max_frame as u64,
            extensions,
        };
        self.queue_frame(|o| encode::join(o, &join))?;
        if let Some(r) = self.relay.as_mut() {
            r.highest = Some(c);
            r.clients.insert(
                c,
                Client {
                    max_frame: usize::MAX,
                    ..Client::default()
                },
            );
        }
        Ok(ClientId(c))
    }

    /// Sends a message to (server) or from (relay) a relayed client
    /// (`cmsg`). Allowed while the client or the connection drains, as
    /// [`send`](Self::send) is; refused with [`SendError::UnknownClient`]
    /// for a client not live, and otherwise as `send` refuses. On the
    /// server a message longer than the client's `max_frame` (as the plain
    /// `msg`) is [`SendError::FrameTooLarge`].
    pub fn client_send(&mut self, client: ClientId, body: &RawValue) -> Result<(), SendError> {
        self.check_can_send_relayed(client)?;
        check_dispatchable(body)?;
        let limit = self.client_limit(client.0);
        self.queue_frame_limited(|o| encode::cmsg(o, client.0, body), limit)
    }

    /// Server: sends a request to a relayed client (`creq`), numbered in
    /// that client's own id space (1, 2, 3, …); its outcome arrives as
    /// exactly one [`Event::ClientResponse`] or
    /// [`Event::ClientRequestFailed`] (with
    /// [`RequestError::ConnectionLost`] when the client leaves first).
    /// `timeout` as for [`request`](Self::request). Refused while the
    /// client or the connection is closing.
    pub fn client_request(
        &mut self,
        now: Instant,
        client: ClientId,
        body: &RawValue,
        timeout: Option<Duration>,
    ) -> Result<RequestId, SendError> {
        if self.side != Side::Server {
            return Err(SendError::NotRelay);
        }
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        let deadline = deadline_after(now, timeout);
        let id = self.client_state(client)?.next_request.max(1);
        self.start_client_request(client, id, body, deadline)?;
        if let Ok(cl) = self.client_state(client) {
            cl.next_request = id.saturating_add(1);
        }
        Ok(RequestId(id))
    }

    /// Relay: forwards a client's request to the server (`creq`) with the
    /// client's own id (PROTOCOL.md §18.4: ids pass through); no deadline
    /// (the client keeps its own). Its outcome arrives as one
    /// [`Event::ClientResponse`] or [`Event::ClientRequestFailed`] with
    /// `RequestId(id)`. Refused with [`SendError::DuplicateRequest`] for an
    /// id already in flight for that client, and while the client or the
    /// connection is closing.
    pub fn client_forward(
        &mut self,
        client: ClientId,
        id: PeerRequestId,
        body: &RawValue,
    ) -> Result<RequestId, SendError> {
        if self.side != Side::Client {
            return Err(SendError::NotRelay);
        }
        if self.client_state(client)?.pending.contains_key(&id.0) {
            return Err(SendError::DuplicateRequest(id.0));
        }
        self.start_client_request(client, id.0, body, None)?;
        Ok(RequestId(id.0))
    }

    /// Answers a request for a relayed client ([`Event::ClientRequest`])
    /// with `cres`, as [`respond`](Self::respond) answers one of the
    /// peer's: allowed while closing; on the server an answer longer than
    /// the client's `max_frame` is replaced by an error answer
    /// (`response_too_large` if the client's `join` listed it, else
    /// `internal`) and [`SendError::ResponseTooLarge`] returned.
    pub fn client_respond(
        &mut self,
        client: ClientId,
        id: PeerRequestId,
        result: Result<&RawValue, &RemoteError>,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if !self.client_state(client)?.incoming.contains(&id.0) {
            return Err(SendError::UnknownRequest(id.0));
        }
        self.check_room()?;
        let limit = self.client_limit(client.0);
        match self.queue_frame_limited(|o| encode::cres(o, client.0, id.0, result), limit) {
            Ok(()) => {}
            Err(SendError::FrameTooLarge { size, limit }) => {
                self.queue_client_too_large(client.0, id.0, size, limit);
                self.take_client_incoming(client.0, id.0);
                return Err(SendError::ResponseTooLarge { size, limit });
            }
            Err(e) => return Err(e),
        }
        self.take_client_incoming(client.0, id.0);
        Ok(())
    }

    /// Ends a relayed client's virtual link (`leave`, PROTOCOL.md §18.4),
    /// with a close code and reason (at most 256 bytes).
    ///
    /// - Relay: final (the client's connection to the relay ended, or the
    ///   relay ends it). Our requests for it fail
    ///   [`RequestError::ClosedLocally`], the server's are dropped, and
    ///   [`Event::Left`] follows.
    /// - Server, code [`CloseCode::Normal`]: the going-away notice of a
    ///   graceful close. The relay closes the client's connection
    ///   gracefully and answers with its own `leave`, which ends the link;
    ///   if it has not within [`Config::close_timeout`](crate::Config::close_timeout)
    ///   the server ends it itself (`leave` with code `timeout`). No new
    ///   requests to it meanwhile.
    /// - Server, any other code: final at once, as for the relay.
    ///
    /// A `leave` frame is queued even past the outbound bound (it is small
    /// and frees state).
    pub fn leave(
        &mut self,
        now: Instant,
        client: ClientId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let reason = wire::clip(reason, MAX_REASON_LEN);
        let server = self.side == Side::Server;
        let close_timeout = self.config.close_timeout;
        let cl = self.client_state(client)?;
        if server && code == CloseCode::Normal {
            if cl.closing.is_some() {
                return Ok(());
            }
            cl.closing = Some(reason.clone());
            let at = deadline_after(now, close_timeout);
            cl.leave_deadline = at;
            if let (Some(at), Some(r)) = (at, self.relay.as_mut()) {
                r.push_deadline(at, client.0, Due::Leave);
            }
            let _ = self.queue_frame(|o| encode::leave(o, client.0, code.as_str(), &reason));
            return Ok(());
        }
        let _ = self.queue_frame(|o| encode::leave(o, client.0, code.as_str(), &reason));
        self.end_client(
            client.0,
            CloseReason::Local { reason },
            RequestError::ClosedLocally,
        );
        self.check_drained();
        Ok(())
    }
}

/// Internals: the relay state, the frames received, timeouts and the end.
impl Connection {
    /// A live client's state; [`SendError::NotRelay`] on a connection
    /// that is not a relay connection, [`SendError::UnknownClient`] for a
    /// client not live.
    fn client_state(&mut self, client: ClientId) -> Result<&mut Client, SendError> {
        let r = self.relay.as_mut().ok_or(SendError::NotRelay)?;
        r.clients
            .get_mut(&client.0)
            .ok_or(SendError::UnknownClient(client.0))
    }

    /// The plain-frame limit of client `c` and the wrapper overhead, for
    /// [`queue_frame_limited`](Self::queue_frame_limited): the server
    /// checks against the client's `max_frame`; a relay leaves the check
    /// to the server's `max_frame`.
    fn client_limit(&self, c: u64) -> Option<(usize, usize)> {
        let r = self.relay.as_ref()?;
        let cl = r.clients.get(&c)?;
        (self.side == Side::Server).then_some((overhead(c), cl.max_frame))
    }

    /// Whether a `cmsg` for `client` may be queued: the client is live and
    /// the connection established or draining.
    fn check_can_send_relayed(&mut self, client: ClientId) -> Result<(), SendError> {
        match self.state {
            State::Established | State::Closing { .. } => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        self.client_state(client)?;
        self.check_room()
    }

    /// Queues `creq` for `client` with `id` and records it as ours.
    fn start_client_request(
        &mut self,
        client: ClientId,
        id: u64,
        body: &RawValue,
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        match self.state {
            State::Established => {}
            State::Closing { .. } | State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        let max_in_flight = self.config.max_requests_in_flight;
        let cl = self.client_state(client)?;
        if cl.closing.is_some() {
            return Err(SendError::Closed);
        }
        if cl.pending.len() >= max_in_flight {
            return Err(SendError::Busy {
                limit: max_in_flight,
            });
        }
        self.check_room()?;
        check_dispatchable(body)?;
        let limit = self.client_limit(client.0);
        self.queue_frame_limited(|o| encode::creq(o, client.0, id, body), limit)?;
        if let Some(r) = self.relay.as_mut()
            && let Some(cl) = r.clients.get_mut(&client.0)
        {
            cl.pending.insert(id, deadline);
            r.in_flight += 1;
            if let Some(at) = deadline {
                r.push_deadline(at, client.0, Due::Request(id));
            }
        }
        Ok(())
    }

    /// Forgets the peer's request `id` for client `c` (answered).
    fn take_client_incoming(&mut self, c: u64, id: u64) {
        if let Some(r) = self.relay.as_mut()
            && let Some(cl) = r.clients.get_mut(&c)
            && cl.incoming.remove(&id)
        {
            r.in_flight -= 1;
            r.incoming -= 1;
        }
        self.check_drained();
    }

    /// Queues the error answer for a relayed client that replaces an answer
    /// too large for it (PROTOCOL.md §14.2, §18.6).
    fn queue_client_too_large(&mut self, c: u64, id: u64, size: usize, limit: usize) {
        self.stats.responses_too_large += 1;
        // The requester: the client, as its `join` said (server), or the
        // server, as the handshake agreed (relay).
        let ext = match self.side {
            Side::Server => self
                .relay
                .as_ref()
                .and_then(|r| r.clients.get(&c))
                .map_or(Extensions::NONE, |cl| cl.extensions),
            Side::Client => self.extensions,
        };
        let err = too_large_error(size, limit, ext);
        let _ = self.queue_frame(|o| encode::cres(o, c, id, Err(&err)));
    }

    /// Ends client `c`: its requests of ours fail with `error` (in id
    /// order), the peer's are dropped, and [`Event::Left`] follows.
    fn end_client(&mut self, c: u64, reason: CloseReason, error: RequestError) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        let Some(cl) = r.clients.remove(&c) else {
            return;
        };
        r.in_flight -= cl.pending.len() + cl.incoming.len();
        r.incoming -= cl.incoming.len();
        let mut ids: Vec<u64> = cl.pending.into_keys().collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(Event::ClientRequestFailed {
                client: ClientId(c),
                id: RequestId(id),
                error: error.clone(),
            });
        }
        self.events.push_back(Event::Left {
            client: ClientId(c),
            reason,
        });
    }

    /// The connection ends: every live client ends with it (in id order),
    /// before the connection's own events.
    pub(super) fn end_all_clients(&mut self, reason: &CloseReason, error: &RequestError) {
        let Some(r) = self.relay.as_ref() else {
            return;
        };
        let mut ids: Vec<u64> = r.clients.keys().copied().collect();
        ids.sort_unstable();
        for c in ids {
            self.end_client(c, reason.clone(), error.clone());
        }
        if let Some(r) = self.relay.as_mut() {
            r.deadlines.clear();
        }
    }

    /// Fires the earliest relayed deadline if it is due at `now`, before
    /// the connection's own earliest due request `request` (which goes
    /// first on a tie) and not after its earliest due fixed timer `timer`
    /// (which goes after on a tie, PROTOCOL.md §12.3). Returns whether one
    /// fired.
    pub(super) fn fire_relay_deadline(
        &mut self,
        now: Instant,
        request: Option<Instant>,
        timer: Option<Instant>,
    ) -> bool {
        let Some(r) = self.relay.as_mut() else {
            return false;
        };
        let Some(at) = r.first_deadline() else {
            return false;
        };
        if at > now || request.is_some_and(|q| q <= at) || timer.is_some_and(|t| t < at) {
            return false;
        }
        let Some(Reverse((_, c, due))) = r.deadlines.pop() else {
            return false;
        };
        match due {
            Due::Request(id) => {
                if let Some(cl) = r.clients.get_mut(&c)
                    && cl.pending.remove(&id).is_some()
                {
                    r.in_flight -= 1;
                    self.events.push_back(Event::ClientRequestFailed {
                        client: ClientId(c),
                        id: RequestId(id),
                        error: RequestError::Timeout,
                    });
                }
            }
            Due::Leave => {
                let reason = r
                    .clients
                    .get(&c)
                    .and_then(|cl| cl.closing.clone())
                    .unwrap_or_default();
                let _ = self.queue_frame(|o| {
                    encode::leave(
                        o,
                        c,
                        CloseCode::Timeout.as_str(),
                        "graceful leave timed out",
                    )
                });
                self.end_client(
                    c,
                    CloseReason::Local { reason },
                    RequestError::ClosedLocally,
                );
            }
        }
        self.check_drained();
        true
    }

    /// The client a received relayed frame names: `Ok(None)` for one that
    /// has ended (the frame is dropped), an error for one never joined.
    fn received_client(&mut self, env: &Envelope<'_>) -> Result<Option<u64>, ProtocolError> {
        let c = env.u64(Key::C)?;
        let Some(r) = self.relay.as_mut() else {
            return Ok(None);
        };
        if r.clients.contains_key(&c) {
            return Ok(Some(c));
        }
        if r.highest.is_some_and(|h| c <= h) {
            self.stats.relayed_frames_dropped += 1;
            return Ok(None);
        }
        Err(ProtocolError::InvalidField {
            field: "c",
            detail: "a client id never joined",
        })
    }

    /// A relayed frame (`join`, `leave`, `cmsg`, `creq`, `cres`) came on a
    /// relay connection; `None` if `t` is not one of them (or not one
    /// this side receives), or this is not a relay connection.
    pub(super) fn on_relay_frame(&mut self, env: &Envelope<'_>, t: &str) -> Option<Handled> {
        self.relay.as_ref()?;
        Some(match t {
            "join" if self.side == Side::Server => self.on_join(env),
            "leave" => self.on_leave(env),
            "cmsg" => self.on_cmsg(env),
            "creq" => self.on_creq(env),
            "cres" => self.on_cres(env),
            _ => return None,
        })
    }

    fn on_join(&mut self, env: &Envelope<'_>) -> Handled {
        let c = env.u64(Key::C)?;
        let identity = env.identity()?;
        let addr = env.str(Key::Addr)?;
        if addr.len() > MAX_ADDR_LEN {
            return Err(ProtocolError::InvalidField {
                field: "addr",
                detail: "longer than 64 bytes",
            });
        }
        let max_frame = env.u64(Key::MaxFrame)?;
        if max_frame < MIN_RELAYED_MAX_FRAME {
            return Err(ProtocolError::InvalidField {
                field: "max_frame",
                detail: "below the 512-byte minimum of a join",
            });
        }
        let extensions: Extensions = env
            .opt_str_list(Key::Ext, MAX_EXTENSIONS)?
            .iter()
            .flatten()
            .filter_map(|n| Extension::parse(n))
            .collect();
        let closing = !matches!(self.state, State::Established);
        let limit = self.config.max_relayed_clients;
        let Some(r) = self.relay.as_mut() else {
            return Ok(());
        };
        if r.highest.is_some_and(|h| c <= h) {
            return Err(ProtocolError::InvalidField {
                field: "c",
                detail: "a client id not greater than every id joined before",
            });
        }
        r.highest = Some(c);
        if closing || r.clients.len() >= limit {
            self.stats.relay_joins_refused += 1;
            let why = if closing {
                "the server is closing"
            } else {
                "too many relayed clients on this relay"
            };
            let _ = self.queue_frame(|o| encode::leave(o, c, CloseCode::Refused.as_str(), why));
            return Ok(());
        }
        let max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
        r.clients.insert(
            c,
            Client {
                max_frame,
                extensions,
                next_request: 1,
                ..Client::default()
            },
        );
        self.events.push_back(Event::Joined(Joined {
            client: ClientId(c),
            identity,
            addr: addr.into_owned(),
            max_frame,
            extensions,
        }));
        Ok(())
    }

    fn on_leave(&mut self, env: &Envelope<'_>) -> Handled {
        let (code, reason) = code_and_reason(env)?;
        let Some(c) = self.received_client(env)? else {
            return Ok(());
        };
        let closing = self
            .relay
            .as_mut()
            .and_then(|r| r.clients.get_mut(&c))
            .and_then(|cl| cl.closing.clone());
        if self.side == Side::Client && code == CloseCode::Normal {
            // The server's going-away notice for this client; its end
            // comes with our own `leave`.
            if closing.is_none() {
                if let Some(cl) = self.relay.as_mut().and_then(|r| r.clients.get_mut(&c)) {
                    cl.closing = Some(reason.clone());
                }
                self.events.push_back(Event::ClientClosing {
                    client: ClientId(c),
                    reason,
                });
            }
            return Ok(());
        }
        let why = match closing {
            // Our graceful leave, completed.
            Some(ours) if self.side == Side::Server && code == CloseCode::Normal => {
                CloseReason::Local { reason: ours }
            }
            _ => CloseReason::Remote { code, reason },
        };
        self.end_client(c, why, RequestError::ConnectionLost);
        self.check_drained();
        Ok(())
    }

    fn on_cmsg(&mut self, env: &Envelope<'_>) -> Handled {
        let d = env.body()?;
        let op = env.op()?;
        let Some(c) = self.received_client(env)? else {
            return Ok(());
        };
        self.events.push_back(Event::ClientMessage {
            client: ClientId(c),
            op,
            body: RawJson::new(d.to_owned()),
        });
        Ok(())
    }

    fn on_creq(&mut self, env: &Envelope<'_>) -> Handled {
        let id = env.u64(Key::Id)?;
        let d = env.body()?;
        let op = env.op()?;
        let Some(c) = self.received_client(env)? else {
            return Ok(());
        };
        let connection_closing = matches!(self.state, State::Closing { .. });
        let max_incoming = self.config.max_incoming_requests;
        let max_total = self.config.max_relayed_incoming;
        let Some(r) = self.relay.as_mut() else {
            return Ok(());
        };
        let Some(cl) = r.clients.get_mut(&c) else {
            return Ok(());
        };
        if !cl.incoming.insert(id) {
            return Err(ProtocolError::InvalidField {
                field: "id",
                detail: "request id already in flight for that client",
            });
        }
        let refuse = refusal(
            connection_closing || cl.closing.is_some(),
            cl.incoming.len() > max_incoming || r.incoming >= max_total,
        );
        if let Some(err) = refuse {
            cl.incoming.remove(&id);
            self.stats.rejected_requests += 1;
            let _ = self.queue_frame(|o| encode::cres(o, c, id, Err(&err)));
            return Ok(());
        }
        r.in_flight += 1;
        r.incoming += 1;
        self.events.push_back(Event::ClientRequest {
            client: ClientId(c),
            id: PeerRequestId(id),
            op,
            body: RawJson::new(d.to_owned()),
        });
        Ok(())
    }

    fn on_cres(&mut self, env: &Envelope<'_>) -> Handled {
        let id = env.u64(Key::Id)?;
        let result = env.outcome()?;
        let Some(c) = self.received_client(env)? else {
            return Ok(());
        };
        let Some(r) = self.relay.as_mut() else {
            return Ok(());
        };
        let answered = match r.clients.entry(c) {
            Entry::Occupied(mut e) => e.get_mut().pending.remove(&id).is_some(),
            Entry::Vacant(_) => false,
        };
        if !answered {
            self.stats.dropped_responses += 1;
            return Ok(());
        }
        r.in_flight -= 1;
        self.events.push_back(match result {
            Ok(d) => Event::ClientResponse {
                client: ClientId(c),
                id: RequestId(id),
                body: RawJson::new(d.to_owned()),
            },
            Err(e) => Event::ClientRequestFailed {
                client: ClientId(c),
                id: RequestId(id),
                error: RequestError::Remote(e),
            },
        });
        self.check_drained();
        Ok(())
    }
}
