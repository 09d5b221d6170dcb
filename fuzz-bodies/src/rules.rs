//! The rules every connection keeps, checked by both kinds of body: the
//! order of its events, and its getters against what its events said.

use jsonlink_proto::{CloseReason, Connection, Event};

/// The order of one connection's events: nothing after `Closed`, one
/// `Authenticated`, and traffic (messages, requests, pings, pongs) only
/// after it. `authenticated` and `closed` are what came before `ev`.
pub(crate) fn check_event_order(
    name: &str,
    authenticated: bool,
    closed: Option<&CloseReason>,
    ev: &Event,
) {
    assert!(closed.is_none(), "{name}: {ev:?} after {closed:?}");
    match ev {
        Event::Authenticated(_) => assert!(!authenticated, "{name}: Authenticated twice"),
        Event::Message { .. } | Event::Request { .. } | Event::Ping { .. } | Event::Pong => {
            assert!(authenticated, "{name}: {ev:?} before Authenticated");
        }
        _ => {}
    }
}

/// What the events of one connection said so far.
pub(crate) struct Seen<'a> {
    /// Names the side in messages.
    pub(crate) name: &'a str,
    /// `Authenticated` came.
    pub(crate) authenticated: bool,
    /// `Closed` came.
    pub(crate) closed: bool,
    /// The peer's requests seen and not answered.
    pub(crate) open: usize,
    /// The incoming request limit in force.
    pub(crate) max_incoming: usize,
    /// Our requests not resolved yet.
    pub(crate) unresolved: usize,
}

/// The getters agree with the events: closed and authenticated as they
/// said, every request counted, nothing in flight and no deadline after
/// `Closed`, and an unauthenticated connection under a handshake deadline.
pub(crate) fn check_getters(conn: &Connection, seen: &Seen<'_>) {
    let name = seen.name;
    assert_eq!(conn.is_closed(), seen.closed, "{name}: is_closed vs Closed");
    assert_eq!(
        conn.is_authenticated(),
        seen.authenticated,
        "{name}: is_authenticated vs Authenticated"
    );
    assert_eq!(
        conn.requests_in_flight(),
        seen.unresolved,
        "{name}: requests in flight vs unresolved"
    );
    if seen.closed {
        assert_eq!(
            conn.incoming_in_flight(),
            0,
            "{name}: incoming after Closed"
        );
        assert_eq!(conn.poll_timeout(), None, "{name}: a deadline after Closed");
    } else {
        assert_eq!(conn.incoming_in_flight(), seen.open, "{name}: incoming");
        assert!(
            seen.open <= seen.max_incoming,
            "{name}: incoming over the limit"
        );
        if !seen.authenticated {
            assert!(
                conn.poll_timeout().is_some(),
                "{name}: no handshake deadline"
            );
        }
    }
}
