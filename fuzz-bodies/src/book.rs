//! What the `session` body knows about each side of the pair, and the
//! checks it makes of their events and counters.

use std::collections::{BTreeMap, HashMap, VecDeque};

use jsonlink_proto::testing::{Pair, Peer, Who};
use jsonlink_proto::{CloseReason, Config, Event, RemoteError, RequestError, RequestId};

use crate::rules::{Seen, check_event_order, check_getters};

/// An app frame one side sent, for checking delivery order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Msg(String),
    Req(u64, String),
}

/// How one side answered a peer request.
#[derive(Debug)]
pub(crate) enum Answer {
    Value(String),
    Error(RemoteError),
    /// Too large for the peer: replaced by the connection's own error answer.
    TooLarge,
}

/// What the fuzz driver knows about one side of the pair.
pub(crate) struct Book {
    pub(crate) name: &'static str,
    pub(crate) max_requests: usize,
    pub(crate) max_incoming: usize,
    pub(crate) authenticated: bool,
    pub(crate) closed: Option<CloseReason>,
    /// Our request ids, and how often each resolved.
    pub(crate) issued: BTreeMap<u64, u32>,
    /// Of which not resolved yet (checked after every operation: counted,
    /// not recomputed).
    pub(crate) unresolved: usize,
    /// The peer's requests we have seen and not answered, oldest first.
    pub(crate) open: Vec<u64>,
    /// A command returned `Blocked`; `SendUnblocked` (or `Closed`) is due.
    pub(crate) blocked: bool,
    /// Messages and requests sent and not yet seen by the peer.
    pub(crate) sent: VecDeque<Sent>,
    /// Our answers to the peer's requests, by id.
    pub(crate) answered: HashMap<u64, Answer>,
}

impl Book {
    pub(crate) fn new(name: &'static str, cfg: &Config) -> Self {
        Self {
            name,
            max_requests: cfg.max_requests_in_flight,
            max_incoming: cfg.max_incoming_requests,
            authenticated: false,
            closed: None,
            issued: BTreeMap::new(),
            unresolved: 0,
            open: Vec::new(),
            blocked: false,
            sent: VecDeque::new(),
            answered: HashMap::new(),
        }
    }

    fn resolve(&mut self, id: RequestId) {
        let n = self.issued.get_mut(&id.0);
        let n = n.unwrap_or_else(|| panic!("{}: outcome for request {id}, never sent", self.name));
        *n += 1;
        assert_eq!(*n, 1, "{}: request {id} resolved twice", self.name);
        self.unresolved -= 1;
    }

    pub(crate) fn issue(&mut self, id: RequestId) {
        let fresh = self.issued.insert(id.0, 0).is_none();
        assert!(fresh, "{}: request id {id} reused", self.name);
        self.unresolved += 1;
    }

    /// The peer saw `got`: it must be the oldest frame we sent that it has
    /// not seen, except for requests it refused (busy, shutting down),
    /// which surface as no event there.
    fn delivered(&mut self, got: &Sent) {
        loop {
            let front = self.sent.pop_front();
            let front = front.unwrap_or_else(|| {
                panic!("{}'s peer saw {got:?}, never sent or seen twice", self.name)
            });
            if &front == got {
                return;
            }
            assert!(
                matches!(front, Sent::Req(..)),
                "{}'s {front:?} lost: the peer saw {got:?} next",
                self.name
            );
        }
    }
}

fn on_event(me: &mut Book, peer: &mut Book, clean: bool, ev: Event) {
    let name = me.name;
    check_event_order(name, me.authenticated, me.closed.as_ref(), &ev);
    match ev {
        Event::Authenticated(_) => me.authenticated = true,
        Event::Message { body, .. } => {
            if clean {
                peer.delivered(&Sent::Msg(body.get().to_owned()));
            }
        }
        Event::Request { id, body, .. } => {
            assert!(
                !me.open.contains(&id.0),
                "{name}: request {id} twice in flight"
            );
            me.open.push(id.0);
            if clean {
                peer.delivered(&Sent::Req(id.0, body.get().to_owned()));
            }
        }
        Event::Response { id, body } => {
            me.resolve(id);
            if clean {
                match peer.answered.get(&id.0) {
                    Some(Answer::Value(v)) => assert_eq!(v, body.get(), "{name}: response {id}"),
                    other => {
                        panic!("{name}: response {id} {body:?}, but the peer answered {other:?}")
                    }
                }
            }
        }
        Event::RequestFailed { id, error } => {
            me.resolve(id);
            if let (true, RequestError::Remote(got)) = (clean, &error) {
                match peer.answered.get(&id.0) {
                    Some(Answer::Error(want)) => {
                        assert_eq!((&got.code, &got.message), (&want.code, &want.message));
                        // PROTOCOL.md: `"data":null` is the same as no `data`.
                        let want_data = want.data.as_deref().filter(|d| *d != "null");
                        assert_eq!(got.data.as_deref(), want_data, "{name}: data of {id}");
                    }
                    Some(Answer::TooLarge) => assert!(
                        got.code == RemoteError::RESPONSE_TOO_LARGE
                            || got.code == RemoteError::INTERNAL,
                        "{name}: request {id} failed with {got:?}, answered too large"
                    ),
                    Some(Answer::Value(v)) => {
                        panic!(
                            "{name}: request {id} failed with {got:?}, but the peer answered {v}"
                        )
                    }
                    // Refused by the peer itself: busy or shutting down.
                    None => assert!(
                        got.code == RemoteError::BUSY || got.code == RemoteError::SHUTTING_DOWN,
                        "{name}: request {id} failed with {got:?}, the peer never answered it"
                    ),
                }
            }
        }
        Event::Ping { .. } | Event::Pong => {}
        Event::SendUnblocked => {
            assert!(me.blocked, "{name}: SendUnblocked, but nothing was blocked");
            me.blocked = false;
        }
        Event::Closed(r) => {
            me.closed = Some(r);
            me.open.clear();
            me.blocked = false;
        }
        // `Event` is non-exhaustive: a new event needs its rules here.
        other => panic!("{name}: an event this body does not know: {other:?}"),
    }
}

/// Takes every event out of the pair and checks both sides.
pub(crate) fn harvest(pair: &mut Pair, books: &mut [Book; 2], clean: bool) {
    let [cb, sb] = books;
    harvest_one(pair.peer(Who::Client), cb, sb, clean);
    harvest_one(pair.peer(Who::Server), sb, cb, clean);
}

fn harvest_one(p: &mut Peer, me: &mut Book, peer: &mut Book, clean: bool) {
    let mut events = p.take_events();
    while let Some(e) = p.conn.poll_event() {
        events.push(e);
    }
    for e in events {
        on_event(me, peer, clean, e);
    }
    let seen = Seen {
        name: me.name,
        authenticated: me.authenticated,
        closed: me.closed.is_some(),
        open: me.open.len(),
        max_incoming: me.max_incoming,
        unresolved: me.unresolved,
    };
    check_getters(&p.conn, &seen);
    assert!(
        p.conn.requests_in_flight() <= me.max_requests,
        "{}: requests in flight over the limit",
        me.name
    );
}
