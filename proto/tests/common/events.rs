//! Readers of a peer's events, each naming what it picks out.

use jsonlink_proto::testing::{Pair, Peer};
use jsonlink_proto::{
    Authenticated, CloseCode, CloseReason, Event, PeerRequestId, ProtocolError, RawJson,
    RemoteError, RequestError, RequestId,
};

/// The bodies of the messages `p` received, in order.
pub fn messages(p: &Peer) -> Vec<String> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Message { body, .. } => Some(body.get().to_owned()),
            _ => None,
        })
        .collect()
}

/// The data of each ping `p` received, in order (`None`: a ping without).
pub fn pings(p: &Peer) -> Vec<Option<String>> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Ping { data } => Some(data.as_ref().map(|d| d.get().to_owned())),
            _ => None,
        })
        .collect()
}

/// How many pongs `p` received.
pub fn pongs(p: &Peer) -> usize {
    p.events.iter().filter(|e| matches!(e, Event::Pong)).count()
}

/// A request a peer received, as its handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The id to answer it by.
    pub id: PeerRequestId,
    /// Its body's `op`, if it names one.
    pub op: Option<String>,
    /// Its body, as JSON text.
    pub body: String,
}

/// The requests `p` received, in order.
pub fn requests(p: &Peer) -> Vec<Received> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Request { id, op, body } => Some(Received {
                id: *id,
                op: op.clone().map(String::from),
                body: body.get().to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// The ids of the requests `p` received, in order.
pub fn request_ids(p: &Peer) -> Vec<PeerRequestId> {
    requests(p).into_iter().map(|r| r.id).collect()
}

/// The id of the last request `p` received.
pub fn last_request(p: &Peer) -> PeerRequestId {
    let Some(last) = requests(p).pop() else {
        panic!("no request received: {:?}", p.events)
    };
    last.id
}

/// How one of our requests ended: answered, or failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The request's id.
    pub id: RequestId,
    /// Its answer, or why it failed (a remote error included).
    pub outcome: Result<RawJson, RequestError>,
}

impl Resolution {
    /// Request `id` answered with this JSON text.
    pub fn answered(id: RequestId, json: &str) -> Self {
        Self {
            id,
            outcome: Ok(RawJson::from_json(json).unwrap()),
        }
    }

    /// Request `id` failed with `error`.
    pub fn failed(id: RequestId, error: RequestError) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }

    /// The answer's JSON text, if it was answered.
    pub fn answer(&self) -> Option<&str> {
        self.outcome.as_ref().ok().map(RawJson::get)
    }

    /// The peer's error answer, if it sent one.
    pub fn remote_error(&self) -> Option<&RemoteError> {
        match &self.outcome {
            Err(RequestError::Remote(e)) => Some(e),
            _ => None,
        }
    }
}

/// Every resolution (answer or failure) of `p`'s requests, in order.
pub fn resolutions(p: &Peer) -> Vec<Resolution> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Response { id, body } => Some(Resolution {
                id: *id,
                outcome: Ok(body.clone()),
            }),
            Event::RequestFailed { id, error } => Some(Resolution::failed(*id, error.clone())),
            _ => None,
        })
        .collect()
}

/// The last resolution of `p`'s requests.
pub fn last_resolution(p: &Peer) -> Resolution {
    let Some(last) = resolutions(p).pop() else {
        panic!("no request resolved: {:?}", p.events)
    };
    last
}

/// The outcomes among `events`, in order, as text: `#1 answered`, `#2
/// Timeout` (a failure's error) and `Closed(…)` (the close reason).
pub fn outcomes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RequestFailed { id, error } => Some(format!("#{} {error:?}", id.0)),
            Event::Response { id, .. } => Some(format!("#{} answered", id.0)),
            Event::Closed(r) => Some(format!("Closed({r:?})")),
            _ => None,
        })
        .collect()
}

/// Asserts `Closed` was emitted exactly once and last.
pub fn assert_closed_last(p: &Peer) {
    let n = p
        .events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert_eq!(n, 1, "exactly one Closed: {:?}", p.events);
    assert!(
        matches!(p.events.last(), Some(Event::Closed(_))),
        "Closed is last: {:?}",
        p.events
    );
}

/// Asserts that on both sides of `p`, `Closed` came exactly once and last.
pub fn assert_both_closed_last(p: &Pair) {
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
}

/// Why `p` closed, after asserting `Closed` came exactly once and last.
pub fn closed_with(p: &Peer) -> CloseReason {
    assert_closed_last(p);
    p.closed().cloned().unwrap()
}

/// The protocol error `p` closed with, after asserting `Closed` came
/// exactly once and last.
pub fn protocol_error(p: &Peer) -> ProtocolError {
    match closed_with(p) {
        CloseReason::Protocol(e) => e,
        other => panic!("closed without a protocol error: {other:?}"),
    }
}

/// Whether `p` closed (once, last) because negotiation failed.
pub fn failed_negotiation(p: &Peer) -> bool {
    matches!(protocol_error(p), ProtocolError::NegotiationFailed { .. })
}

/// Asserts that the server refused the client's proof (`AuthFailed`) and
/// told the client so (`auth_failed`).
pub fn assert_auth_failed(p: &Pair, case: &str) {
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed)),
        "the server refuses the client's proof: {case}"
    );
    assert_eq!(
        close_code(&p.client),
        Some(CloseCode::AuthFailed),
        "the client is told: {case}"
    );
}

/// The close code `p` ended with, if it ended.
pub fn close_code(p: &Peer) -> Option<CloseCode> {
    p.closed().map(CloseReason::code)
}

/// Asserts that both sides of `p` ended with close code `code`.
pub fn assert_both_closed_with(p: &Pair, code: CloseCode, case: &str) {
    assert_eq!(
        close_code(&p.client),
        Some(code.clone()),
        "the client's close code: {case}"
    );
    assert_eq!(
        close_code(&p.server),
        Some(code),
        "the server's close code: {case}"
    );
}

/// The `Authenticated` event `p` saw first (its handshake's outcome).
pub fn authentication(p: &Peer) -> Authenticated {
    let Some(Event::Authenticated(a)) = p.events.first() else {
        panic!("not authenticated: {:?}", p.events)
    };
    a.clone()
}

/// Whether `p` authenticated.
pub fn authenticated(p: &Peer) -> bool {
    p.events
        .iter()
        .any(|e| matches!(e, Event::Authenticated(_)))
}

/// Moves the events `p`'s connection has queued into `p.events` (as the
/// pair does after each step), for input fed to the connection directly.
pub fn poll_events(p: &mut Peer) {
    while let Some(e) = p.conn.poll_event() {
        p.events.push(e);
    }
}
