//! The frames after the handshake (PROTOCOL.md §11–§13): the commands
//! that send messages, requests, answers, pings and `close`, and what the
//! connection does with each such frame it receives.

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::timers::{Timer, deadline_after};
use super::{Connection, Handled, MAX_REASON_LEN, State};
use crate::config::{Extension, Extensions};
use crate::error::{CloseCode, CloseReason, ProtocolError, RemoteError, RequestError, SendError};
use crate::event::{Event, PeerRequestId, RawJson, RequestId};
use crate::wire::{self, Envelope, Key, encode};

/// Commands (C): what the application sends.
impl Connection {
    /// Sends a fire-and-forget message. Allowed while the connection drains
    /// after a graceful close, from either side (PROTOCOL.md §13.3), so that
    /// what handlers still running send reaches the peer, which keeps
    /// reading until it ends; refused with [`SendError::Closed`] once ended.
    ///
    /// Refused with [`SendError::TooDeep`] for a body nested deeper than
    /// [`Config::max_depth`](crate::Config::max_depth),
    /// [`SendError::DuplicateOp`] for an object body with `op` more than
    /// once (the peer would refuse either frame).
    pub fn send(&mut self, body: &RawValue) -> Result<(), SendError> {
        self.check_can_send()?;
        check_dispatchable(body)?;
        self.queue_frame(|o| encode::msg(o, body))
    }

    /// Sends a request; its outcome arrives as exactly one
    /// [`Event::Response`] or [`Event::RequestFailed`]. `timeout` defaults
    /// to [`Config::request_timeout`](crate::Config::request_timeout). A
    /// timeout too large to add to `now` (such as `Duration::MAX`) means no
    /// deadline: the request waits for its answer or fails when the
    /// connection ends. The body is refused as by [`send`](Self::send).
    pub fn request(
        &mut self,
        now: Instant,
        body: &RawValue,
        timeout: Option<Duration>,
    ) -> Result<RequestId, SendError> {
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.request_at(body, deadline_after(now, timeout))
    }

    /// [`request`](Self::request) with its deadline given as an instant:
    /// it fails with [`RequestError::Timeout`] once a
    /// [`handle_timeout`](Self::handle_timeout) call passes `deadline`.
    /// For callers that already hold the deadline (an async layer that
    /// took the request earlier), which saves the conversion to a timeout
    /// and back.
    pub fn request_until(
        &mut self,
        body: &RawValue,
        deadline: Instant,
    ) -> Result<RequestId, SendError> {
        self.request_at(body, Some(deadline))
    }

    fn request_at(
        &mut self,
        body: &RawValue,
        deadline: Option<Instant>,
    ) -> Result<RequestId, SendError> {
        self.check_can_start()?;
        if self.pending.len() >= self.config.max_requests_in_flight {
            return Err(SendError::Busy {
                limit: self.config.max_requests_in_flight,
            });
        }
        let id = self.next_request;
        check_dispatchable(body)?;
        self.queue_frame(|o| encode::req(o, id, body))?;
        self.next_request += 1;
        self.pending.insert(id, deadline);
        if let Some(deadline) = deadline {
            self.deadlines.insert(deadline, id);
        }
        Ok(RequestId(id))
    }

    /// Answers a peer's request with a value or an error. Allowed while
    /// closing, so in-flight requests can finish.
    ///
    /// An answer whose frame would exceed the peer's `max_frame` is not
    /// sent: the request is answered with an error in its place
    /// (PROTOCOL.md §14.2: `response_too_large` where that extension is
    /// on, else `internal`), its slot is freed, it is counted in
    /// [`Stats::responses_too_large`](crate::Stats::responses_too_large),
    /// and this returns [`SendError::ResponseTooLarge`]. The other errors
    /// leave the request answerable.
    pub fn respond(
        &mut self,
        id: PeerRequestId,
        result: Result<&RawValue, &RemoteError>,
    ) -> Result<(), SendError> {
        self.take_incoming(id)?;
        match self.queue_frame(|o| encode::res(o, id.0, result)) {
            Ok(()) => {}
            Err(SendError::FrameTooLarge { size, limit }) => {
                self.queue_too_large(id.0, size, limit);
                self.check_drained();
                return Err(SendError::ResponseTooLarge { size, limit });
            }
            Err(e) => {
                self.incoming.insert(id.0);
                return Err(e);
            }
        }
        self.check_drained();
        Ok(())
    }

    /// Answers a peer's request in place of an answer of `size` encoded
    /// bytes that the caller found too large for the peer, without handing
    /// the answer over: the same error answer, freed slot and count as
    /// [`respond`](Self::respond) gives such an answer. For a layer above
    /// that checks answers itself before passing them on (with
    /// [`Authenticated::response_frame_bound`](crate::Authenticated::response_frame_bound)),
    /// so that its caller learns the outcome at once. `Ok` once the error
    /// answer is queued; the errors are those of `respond` and leave the
    /// request answerable.
    pub fn respond_too_large(&mut self, id: PeerRequestId, size: usize) -> Result<(), SendError> {
        self.take_incoming(id)?;
        self.queue_too_large(id.0, size, self.peer_max_frame);
        self.check_drained();
        Ok(())
    }

    /// Sends a ping, optionally with a JSON object as data. The peer answers
    /// with a pong ([`Event::Pong`]).
    pub fn ping(&mut self, data: Option<&RawValue>) -> Result<(), SendError> {
        if data.is_some_and(|d| !d.get().starts_with('{')) {
            return Err(SendError::NotAnObject);
        }
        self.check_can_start()?;
        self.queue_frame(|o| encode::ping(o, data))
    }

    /// Closes gracefully: sends a close frame, refuses new requests and
    /// pings (messages may still be sent while it drains), lets
    /// requests in flight (both ways) finish for up to
    /// [`Config::close_timeout`](crate::Config::close_timeout), then ends
    /// with [`CloseReason::Local`]. Before authentication it ends at once. A
    /// close timeout too large to add to `now` means no drain deadline: the
    /// connection ends once nothing is in flight (or at a later
    /// [`close_by`](Self::close_by) deadline).
    pub fn close(&mut self, now: Instant, reason: &str) {
        let deadline = deadline_after(now, self.config.close_timeout);
        self.close_at(reason, deadline);
    }

    /// Like [`close`](Self::close) with an explicit drain deadline
    /// (for a server-wide shutdown deadline). Requests still open at the
    /// deadline fail with [`RequestError::ClosedLocally`]. While already
    /// closing, it can only bring the drain deadline forward.
    pub fn close_by(&mut self, now: Instant, reason: &str, deadline: Instant) {
        let _ = now;
        self.close_at(reason, Some(deadline));
    }

    /// [`close_by`](Self::close_by) with `None` for no drain deadline.
    fn close_at(&mut self, reason: &str, deadline: Option<Instant>) {
        let local = CloseReason::Local {
            reason: wire::clip(reason, MAX_REASON_LEN),
        };
        match self.state {
            State::Closed => {}
            State::Closing { .. } => {
                // Already draining (perhaps the peer closed): tighten the
                // deadline, keep the first reason.
                let d = match (self.timers.get(Timer::Close), deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.set_timer(Timer::Close, d);
            }
            State::Established => {
                self.queue_close(CloseCode::Normal, reason, None);
                self.state = State::Closing { reason: local };
                self.set_timer(Timer::KeepaliveSend, None);
                self.set_timer(Timer::KeepaliveDeadline, None);
                self.set_timer(Timer::Close, deadline);
                self.check_drained();
            }
            _ => {
                self.queue_close(CloseCode::Normal, reason, None);
                self.terminate(local);
            }
        }
    }
}

impl Connection {
    /// Takes a peer request out of the incoming table to answer it (one
    /// lookup on the usual path), unless the connection cannot queue the
    /// answer now; put it back if the answer is not queued after all.
    fn take_incoming(&mut self, id: PeerRequestId) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if !self.incoming.remove(&id.0) {
            return Err(SendError::UnknownRequest(id.0));
        }
        if self.out.len() >= self.config.max_outbound {
            self.incoming.insert(id.0);
            self.notify_unblocked = true;
            return Err(SendError::Blocked);
        }
        Ok(())
    }

    /// Queues the error answer that replaces an answer of `size` bytes over
    /// the peer's `limit` (PROTOCOL.md §14.2), and counts it. The error
    /// frame is a few hundred bytes at most (sealed included), so it fits
    /// any peer's `max_frame` (at least 1024).
    fn queue_too_large(&mut self, id: u64, size: usize, limit: usize) {
        self.stats.responses_too_large += 1;
        let err = too_large_error(size, limit, self.extensions);
        let _ = self.queue_frame(|o| encode::res(o, id, Err(&err)));
    }

    /// Whether a `msg` may be queued: while established and while draining
    /// (§13.3: the draining side's handlers may still send until it ends).
    fn check_can_send(&mut self) -> Result<(), SendError> {
        match self.state {
            State::Established | State::Closing { .. } => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        self.check_room()
    }

    /// Whether a `req` or `ping` may be queued: only while established
    /// (nothing new is started once a close began).
    fn check_can_start(&mut self) -> Result<(), SendError> {
        match self.state {
            State::Established => {}
            State::Closing { .. } | State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        self.check_room()
    }

    pub(super) fn check_room(&mut self) -> Result<(), SendError> {
        if self.out.len() >= self.config.max_outbound {
            self.notify_unblocked = true;
            return Err(SendError::Blocked);
        }
        Ok(())
    }

    /// A `close` came, at any stage: a graceful one (`normal`) while
    /// established starts the drain, any other ends the connection.
    pub(super) fn on_close(&mut self, now: Instant, env: &Envelope<'_>) -> Handled {
        let (code, reason) = code_and_reason(env)?;
        let normal = code == CloseCode::Normal;
        let remote = CloseReason::Remote { code, reason };
        match &self.state {
            State::Established if normal => {
                // The peer closes gracefully: no new requests either way;
                // finish what is in flight, for at most our close timeout.
                self.state = State::Closing { reason: remote };
                self.set_timer(Timer::KeepaliveSend, None);
                self.set_timer(Timer::KeepaliveDeadline, None);
                self.set_timer(Timer::Close, deadline_after(now, self.config.close_timeout));
                self.check_drained();
            }
            State::Closing { .. } if normal => {}
            _ => self.terminate(remote),
        }
        Ok(())
    }

    /// A frame of type `t` came after the handshake (while established or
    /// draining).
    pub(super) fn on_app_frame(
        &mut self,
        now: Instant,
        env: &Envelope<'_>,
        t: std::borrow::Cow<'_, str>,
    ) -> Handled {
        match &*t {
            "msg" => {
                let d = env.body()?;
                self.events.push_back(Event::Message {
                    op: env.op()?,
                    body: RawJson::new(d.to_owned()),
                });
            }
            "req" => {
                let id = env.u64(Key::Id)?;
                let d = env.body()?;
                let op = env.op()?;
                // Inserted first (one lookup on the usual path), taken out
                // again if refused.
                if !self.incoming.insert(id) {
                    return Err(ProtocolError::InvalidField {
                        field: "id",
                        detail: "request id already in flight",
                    });
                }
                let refuse = refusal(
                    matches!(self.state, State::Closing { .. }),
                    self.incoming.len() > self.config.max_incoming_requests,
                );
                if let Some(err) = refuse {
                    self.incoming.remove(&id);
                    // Bounded: the owner stops reading while `wants_input` is false.
                    self.stats.rejected_requests += 1;
                    let _ = self.queue_frame(|o| encode::res(o, id, Err(&err)));
                    return Ok(());
                }
                self.events.push_back(Event::Request {
                    id: PeerRequestId(id),
                    op,
                    body: RawJson::new(d.to_owned()),
                });
            }
            "res" => {
                let id = env.u64(Key::Id)?;
                let result = env.outcome()?;
                match self.pending.remove(&id) {
                    Some(deadline) => {
                        self.deadlines.remove(deadline, id, &self.pending);
                        self.events.push_back(match result {
                            Ok(d) => Event::Response {
                                id: RequestId(id),
                                body: RawJson::new(d.to_owned()),
                            },
                            Err(e) => Event::RequestFailed {
                                id: RequestId(id),
                                error: RequestError::Remote(e),
                            },
                        });
                        self.check_drained();
                    }
                    // Late (after its timeout), unknown, or a duplicate.
                    None => self.stats.dropped_responses += 1,
                }
            }
            "ping" => {
                let data = env.raw(Key::D);
                if data.is_some_and(|d| !d.get().starts_with('{')) {
                    return Err(ProtocolError::InvalidField {
                        field: "d",
                        detail: "ping data must be an object",
                    });
                }
                self.pong_owed = true;
                self.events.push_back(Event::Ping {
                    data: data.map(|d| RawJson::new(d.to_owned())),
                });
            }
            "pong" => {
                self.set_timer(Timer::KeepaliveDeadline, None);
                if let (State::Established, Some(ka)) = (&self.state, &self.config.keepalive) {
                    let at = deadline_after(now, ka.interval);
                    self.set_timer(Timer::KeepaliveSend, at);
                }
                self.events.push_back(Event::Pong);
            }
            other => {
                if let Some(handled) = self.on_relay_frame(env, other) {
                    return handled;
                }
                return Err(ProtocolError::UnexpectedFrame {
                    frame: wire::clip(other, 32),
                    state: self.state.name(),
                });
            }
        }
        Ok(())
    }
}

/// The error answer that replaces an answer of `size` bytes over the
/// requester's `limit` (PROTOCOL.md §14.2): `response_too_large` with the
/// sizes where the requester's `ext` has that extension, else `internal`.
pub(super) fn too_large_error(size: usize, limit: usize, ext: Extensions) -> RemoteError {
    let message = format!(
        "the answer ({size} bytes) is larger than the requester's max_frame ({limit} bytes)"
    );
    if ext.contains(Extension::ResponseTooLarge) {
        RemoteError {
            code: RemoteError::RESPONSE_TOO_LARGE.to_owned(),
            message,
            data: Some(format!(r#"{{"size":{size},"max_frame":{limit}}}"#)),
        }
    } else {
        RemoteError::new(RemoteError::INTERNAL, message)
    }
}

/// The `code` and `reason` of a `close` (or a relay's `leave`): an unknown
/// code keeps its text, a missing one is reported as missing (PROTOCOL.md
/// §14.1); the reason is clipped (§6.10).
pub(super) fn code_and_reason(env: &Envelope<'_>) -> Result<(CloseCode, String), ProtocolError> {
    let code = match env.opt_str(Key::Code)? {
        Some(c) => CloseCode::parse(&c),
        None => CloseCode::Missing,
    };
    let reason = wire::clip(
        &env.opt_str(Key::Reason)?.unwrap_or_default(),
        MAX_REASON_LEN,
    );
    Ok((code, reason))
}

/// The answer the protocol layer gives a peer's request itself
/// (PROTOCOL.md §11.2), if any: `shutting_down` while `closing`, `busy`
/// when `over` its limit of requests in flight.
pub(super) fn refusal(closing: bool, over: bool) -> Option<RemoteError> {
    if closing {
        Some(RemoteError::new(
            RemoteError::SHUTTING_DOWN,
            "connection is closing",
        ))
    } else if over {
        Some(RemoteError::new(
            RemoteError::BUSY,
            "too many requests in flight",
        ))
    } else {
        None
    }
}

/// A message or request body with `op` more than once is refused: the
/// peer would refuse the frame (PROTOCOL.md §11.1).
pub(super) fn check_dispatchable(body: &RawValue) -> Result<(), SendError> {
    if wire::has_duplicate_op(body) {
        return Err(SendError::DuplicateOp);
    }
    Ok(())
}
