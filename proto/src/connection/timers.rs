//! The fixed timers (handshake, keepalive send and deadline, close drain)
//! and how the connection fires them (PROTOCOL.md §12.3: the order on a
//! tie).

use std::time::{Duration, Instant};

use super::{Connection, State};
use crate::error::{CloseCode, CloseReason, RequestError};
use crate::event::{Event, RequestId};
use crate::wire::encode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Handshake,
    KeepaliveSend,
    KeepaliveDeadline,
    Close,
}

/// The fixed timers in the order they fire when their deadlines are equal
/// (after request deadlines, which go first on a tie).
const TIMERS: [Timer; 4] = [
    Timer::Handshake,
    Timer::KeepaliveSend,
    Timer::KeepaliveDeadline,
    Timer::Close,
];

/// The instant `d` after `now`, or `None` (no deadline) when that cannot
/// be represented, as with `Duration::MAX`: no duration a caller or a
/// [`Config`] gives makes the time arithmetic overflow.
pub(super) fn deadline_after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The fixed timer table (`None`: not armed, or no deadline); the next
/// deadline is the minimum.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Timers {
    handshake: Option<Instant>,
    keepalive_send: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    close: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, t: Timer) -> &mut Option<Instant> {
        match t {
            Timer::Handshake => &mut self.handshake,
            Timer::KeepaliveSend => &mut self.keepalive_send,
            Timer::KeepaliveDeadline => &mut self.keepalive_deadline,
            Timer::Close => &mut self.close,
        }
    }

    pub(super) fn get(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::Handshake => self.handshake,
            Timer::KeepaliveSend => self.keepalive_send,
            Timer::KeepaliveDeadline => self.keepalive_deadline,
            Timer::Close => self.close,
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        [
            self.handshake,
            self.keepalive_send,
            self.keepalive_deadline,
            self.close,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest timer due at `now` and its deadline; on a tie the
    /// first in [`TIMERS`] order.
    fn next_due(&self, now: Instant) -> Option<(Instant, Timer)> {
        let mut due: Option<(Instant, Timer)> = None;
        for t in TIMERS {
            if let Some(at) = self.get(t)
                && at <= now
                && due.is_none_or(|(first, _)| at < first)
            {
                due = Some((at, t));
            }
        }
        due
    }
}

impl Connection {
    /// Fires everything due at `now`: the handshake, keepalive and close
    /// timers and request deadlines. Spurious calls are no-ops.
    ///
    /// However late the call (a suspended machine, a stalled event loop),
    /// everything due fires exactly once and in deadline order, as it
    /// would have on time: a request whose deadline came before the
    /// keepalive deadline fails with [`RequestError::Timeout`], and only
    /// those due after whatever ended the connection fail with its error.
    /// On equal deadlines requests go first (by id), then the handshake,
    /// keepalive send, keepalive deadline and close timers. A deadline a
    /// late timer arms counts from `now`, not from when the timer was due:
    /// a late keepalive ping gets its whole pong timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each round takes one due timer or request off its table. Only the
        // keepalive send arms another timer (the pong deadline, which ends
        // the connection), so this ends.
        while !self.is_closed() {
            let timer = self.timers.next_due(now);
            let request = self.deadlines.first_expired(now, &self.pending);
            // A relayed client's deadline (its requests, a graceful leave)
            // due first: after the connection's own requests on a tie,
            // before the fixed timers.
            if self.fire_relay_deadline(now, request, timer.map(|(at, _)| at)) {
                continue;
            }
            match (timer, request) {
                (Some((at, t)), _) if request.is_none_or(|r| at < r) => {
                    *self.timers.slot(t) = None;
                    self.on_timer(now, t);
                }
                (_, Some(_)) => {
                    let Some(id) = self.deadlines.pop_expired(now, &self.pending) else {
                        break;
                    };
                    self.pending.remove(&id);
                    self.events.push_back(Event::RequestFailed {
                        id: RequestId(id),
                        error: RequestError::Timeout,
                    });
                    self.check_drained();
                }
                _ => break,
            }
        }
    }

    pub(super) fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        *self.timers.slot(t) = at;
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Handshake => {
                if self.peer.is_none() {
                    self.queue_close(CloseCode::HandshakeTimeout, "handshake timed out", None);
                    self.terminate(CloseReason::HandshakeTimeout);
                }
            }
            Timer::KeepaliveSend => {
                if let (State::Established, Some(ka)) =
                    (&self.state, self.config.keepalive.as_ref())
                {
                    let timeout = ka.timeout;
                    let config = self.config.clone();
                    let data = config.keepalive.as_ref().and_then(|k| k.data.as_deref());
                    let _ = self.queue_frame(|o| encode::ping(o, data));
                    // From now, when the ping goes out, however late.
                    self.set_timer(Timer::KeepaliveDeadline, deadline_after(now, timeout));
                }
            }
            Timer::KeepaliveDeadline => {
                self.queue_close(
                    CloseCode::KeepaliveTimeout,
                    "no pong within the keepalive timeout",
                    None,
                );
                self.terminate(CloseReason::KeepaliveTimeout);
            }
            Timer::Close => {
                if let State::Closing { reason } = &self.state {
                    let reason = reason.clone();
                    self.terminate(reason);
                }
            }
        }
    }
}
