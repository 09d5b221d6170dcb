//! Adapter-level limits and options, with their defaults as named constants.
//!
//! Protocol limits (frame sizes, handshake timeout, keepalive, request
//! timeout, in-flight requests, outbound bound, close timeout) live in
//! [`jsonlink_proto::Config`] and are set through the builders
//! ([`ServerBuilder`](crate::ServerBuilder),
//! [`ClientBuilder`](crate::ClientBuilder)); their defaults are
//! [`jsonlink_proto::DEFAULT_MAX_FRAME`] and friends.

use std::time::Duration;

/// Default limit on simultaneous connections to a server (including those
/// still in TLS or authentication).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default capacity of a server's or client's event stream (for each of
/// its two kinds of event, data and lifecycle).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;
/// Default limit on the commands (sends, requests, pings) queued on one
/// link by its handles before its driver has applied them.
pub const DEFAULT_COMMAND_CAPACITY: usize = 1024;
/// Default limit on the body bytes of the commands queued on one link.
pub const DEFAULT_COMMAND_BYTES: usize = 1024 * 1024;
/// Default limit on handler calls admitted at once for one link (tasks
/// running, ordered message calls waiting); past it the link stops
/// reading until one finishes.
pub const DEFAULT_MAX_HANDLER_TASKS: usize = 256;
/// Default limit on the body bytes held by one link's admitted handler
/// calls; past it the link stops reading until one finishes.
pub const DEFAULT_MAX_HANDLER_BYTES: usize = 16 * 1024 * 1024;
/// Default size of the read buffer (one per runtime thread, shared by the
/// links it drives).
pub const DEFAULT_READ_BUFFER: usize = 16 * 1024;
/// Default time a closed link keeps trying to flush its last bytes (the
/// close frame) and TLS `close_notify` before dropping the socket.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Options for every link of one server or client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkOptions {
    /// Whether the event stream exists. With it off there are no events at
    /// all: messages without a handler are dropped (and counted) and
    /// requests without a handler are answered
    /// [`no_handler`](jsonlink_proto::RemoteError::NO_HANDLER).
    /// Default `true`.
    pub events: bool,
    /// Whether the application **consumes** the event stream: declares
    /// that something reads [`Server::next_event`](crate::Server::next_event)
    /// (or [`Client::next_event`](crate::Client::next_event), or their
    /// batch and `wait_for` forms) for the data events,
    /// [`Event::Message`](crate::Event::Message) and
    /// [`Event::Request`](crate::Event::Request).
    ///
    /// - `false` (the default): **nothing ever waits for a reader**. A
    ///   message no handler takes is dropped and counted in
    ///   [`Stats::dropped_messages`](crate::Stats::dropped_messages); a
    ///   request no handler takes (with or without an `op`) is answered
    ///   [`no_handler`](jsonlink_proto::RemoteError::NO_HANDLER) at once.
    ///   Lifecycle events still go to the stream (if
    ///   [`events`](Self::events) is on), within their own bound, oldest
    ///   dropped first (see [`event_capacity`](Self::event_capacity)), so
    ///   an application that never reads it loses nothing else.
    /// - `true`: those messages and requests go to the stream and wait for
    ///   room there: a link whose data event finds the stream full stops
    ///   reading until the consumer catches up (nothing is lost), while
    ///   other links read on. Needs [`events`](Self::events) on (the
    ///   builders' `consume_events(true)` turns it on).
    ///
    /// Default `false`.
    pub consume_events: bool,
    /// Capacity of the event stream, counted separately for its two kinds
    /// of event, so one kind never takes the other's room (at most twice
    /// this many events wait in it):
    ///
    /// - data events (messages and requests no handler took, only with
    ///   [`consume_events`](Self::consume_events)) wait for room: the link
    ///   stops reading meanwhile, and resumes once the stream holds half
    ///   its capacity of data events or fewer;
    /// - lifecycle events (authenticated, closed, error, ping, pong,
    ///   keepalive timeout, reconnect attempt) never wait and never stop a
    ///   link from reading: when `event_capacity` of them are waiting, the
    ///   oldest is dropped to make room for the new one and counted in
    ///   [`Stats::dropped_events`](crate::Stats::dropped_events).
    ///
    /// A link hands its events over in batches (one lock and at most one
    /// wake-up of the consumer per batch of up to 64). Events a link has
    /// decoded but not handed over yet wait in the link (up to 64 plus
    /// what its last read decoded; it reads nothing more meanwhile).
    /// Default [`DEFAULT_EVENT_CAPACITY`].
    pub event_capacity: usize,
    /// Commands (sends, requests, pings) that handles may queue on one link
    /// before its driver has applied them; past it (or past
    /// [`command_bytes`](Self::command_bytes)) `send().await` and
    /// `request().await` wait for room and `broadcast` skips the link. The
    /// queue holds no memory while empty. Default
    /// [`DEFAULT_COMMAND_CAPACITY`].
    pub command_capacity: usize,
    /// Body bytes those queued commands may carry together; one command
    /// larger than this is still queued when the queue is empty. Default
    /// [`DEFAULT_COMMAND_BYTES`].
    pub command_bytes: usize,
    /// Handler calls admitted at once per link: request handler tasks and
    /// [concurrent](crate::Handlers::on_message_concurrent) message handler
    /// tasks running, plus [ordered](crate::Handlers::on_message) message
    /// handler calls running or waiting in the link's ordered lane. Past
    /// it the link stops reading until one finishes. Default
    /// [`DEFAULT_MAX_HANDLER_TASKS`].
    pub max_handler_tasks: usize,
    /// Body bytes that one link's admitted handler calls may hold together
    /// (each counts its message's or request's body until it finishes,
    /// including ordered message calls waiting in the lane). Past it the
    /// link stops reading until one finishes; a single body larger than
    /// this still runs when no other handler call is admitted.
    /// With [`max_handler_tasks`](Self::max_handler_tasks) this bounds what
    /// slow handlers can make a link hold. Default
    /// [`DEFAULT_MAX_HANDLER_BYTES`].
    pub max_handler_bytes: usize,
    /// Size of the read buffer. There is one per runtime thread, shared by
    /// the links that thread drives: a link reads into it and hands the
    /// bytes to its core at once, so idle links hold no read buffer. A
    /// larger buffer means fewer reads per burst. Default
    /// [`DEFAULT_READ_BUFFER`].
    pub read_buffer: usize,
    /// Flush time after close (saturated at about 30 years: `Duration::MAX`
    /// never panics). Default [`DEFAULT_LINGER`].
    pub linger: Duration,
    /// Whether requests whose `op` has no handler go to the event stream
    /// (as [`Event::Request`](crate::Event::Request)) instead of being
    /// answered `no_handler`; only with
    /// [`consume_events`](Self::consume_events). Requests without an `op`
    /// always go to the stream when a consumer is declared. Default
    /// `false`.
    pub unhandled_ops_to_events: bool,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            events: true,
            consume_events: false,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            command_bytes: DEFAULT_COMMAND_BYTES,
            max_handler_tasks: DEFAULT_MAX_HANDLER_TASKS,
            max_handler_bytes: DEFAULT_MAX_HANDLER_BYTES,
            read_buffer: DEFAULT_READ_BUFFER,
            linger: DEFAULT_LINGER,
            unhandled_ops_to_events: false,
        }
    }
}

/// Saturates the protocol configuration's durations at about 30 years
/// ([`NO_DEADLINE`](crate::deadline::NO_DEADLINE)): a longer one (`Duration::MAX`)
/// means "no deadline", and no `Instant + Duration` made from it, here or in
/// the core, can overflow. Applied when a server binds or a client starts,
/// after every setter (including [`proto_config`](crate::ServerBuilder::proto_config)).
pub(crate) fn saturate_durations(config: &mut jsonlink_proto::Config) {
    let cap = |d: &mut Duration| *d = (*d).min(crate::deadline::NO_DEADLINE);
    cap(&mut config.handshake_timeout);
    cap(&mut config.request_timeout);
    cap(&mut config.close_timeout);
    if let Some(k) = config.keepalive.as_mut() {
        cap(&mut k.interval);
        cap(&mut k.timeout);
    }
}

/// Builder setters for the protocol configuration, shared by
/// [`ServerBuilder`](crate::ServerBuilder) and
/// [`ClientBuilder`](crate::ClientBuilder).
macro_rules! proto_setters {
    () => {
        /// Largest frame accepted after authentication (bytes, excluding
        /// `\n`). Default [`jsonlink_proto::DEFAULT_MAX_FRAME`].
        pub fn max_frame(mut self, bytes: usize) -> Self {
            self.config.max_frame = bytes;
            self
        }

        /// Largest frame accepted before authentication. Default
        /// [`jsonlink_proto::DEFAULT_PRE_AUTH_MAX_FRAME`].
        pub fn pre_auth_max_frame(mut self, bytes: usize) -> Self {
            self.config.pre_auth_max_frame = bytes;
            self
        }

        /// Deepest nesting of arrays and objects accepted and sent in any
        /// value of a frame (see [`jsonlink_proto::Config::max_depth`]).
        /// Default [`jsonlink_proto::DEFAULT_MAX_DEPTH`] (127, what
        /// serde_json parses).
        pub fn max_depth(mut self, levels: usize) -> Self {
            self.config.max_depth = levels;
            self
        }

        /// Deadline for TCP + TLS + authentication, counted from accept
        /// (server) or from the start of connect (client). Default
        /// [`jsonlink_proto::DEFAULT_HANDSHAKE_TIMEOUT`]. As for every
        /// duration here, one longer than about 30 years (`Duration::MAX`)
        /// means no deadline.
        pub fn handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.handshake_timeout = timeout;
            self
        }

        /// Keepalive settings; `None` sends no pings (pings from the peer
        /// are still answered); durations longer than about 30 years mean
        /// never. Default: interval
        /// [`jsonlink_proto::DEFAULT_KEEPALIVE_INTERVAL`], timeout
        /// [`jsonlink_proto::DEFAULT_KEEPALIVE_TIMEOUT`].
        pub fn keepalive(mut self, keepalive: Option<jsonlink_proto::Keepalive>) -> Self {
            self.config.keepalive = keepalive;
            self
        }

        /// Timeout of requests that name none (longer than about 30 years,
        /// e.g. `Duration::MAX`: none). Default
        /// [`jsonlink_proto::DEFAULT_REQUEST_TIMEOUT`].
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.request_timeout = timeout;
            self
        }

        /// Our requests in flight per link; past it requests fail at once
        /// with [`Error::Busy`](crate::Error::Busy). Default
        /// [`jsonlink_proto::DEFAULT_MAX_REQUESTS_IN_FLIGHT`].
        pub fn max_requests_in_flight(mut self, n: usize) -> Self {
            self.config.max_requests_in_flight = n;
            self
        }

        /// The peer's requests in flight per link; past it the core answers
        /// `busy` itself. Default
        /// [`jsonlink_proto::DEFAULT_MAX_INCOMING_REQUESTS`].
        pub fn max_incoming_requests(mut self, n: usize) -> Self {
            self.config.max_incoming_requests = n;
            self
        }

        /// Bound on encoded bytes waiting to be written per link; past it
        /// `send`/`request` wait and the link stops reading. Default
        /// [`jsonlink_proto::DEFAULT_MAX_OUTBOUND`].
        pub fn max_outbound(mut self, bytes: usize) -> Self {
            self.config.max_outbound = bytes;
            self
        }

        /// Time a graceful close waits for requests in flight (longer than
        /// about 30 years: until they are done). Default
        /// [`jsonlink_proto::DEFAULT_CLOSE_TIMEOUT`].
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.close_timeout = timeout;
            self
        }

        /// Signing policy. Default [`jsonlink_proto::Policy::Optional`].
        pub fn signing(mut self, policy: jsonlink_proto::Policy) -> Self {
            self.config.signing = policy;
            self
        }

        /// Second-layer encryption policy. Default
        /// [`jsonlink_proto::Policy::Optional`].
        pub fn encryption(mut self, policy: jsonlink_proto::Policy) -> Self {
            self.config.encryption = policy;
            self
        }

        /// Signing algorithms accepted, in order of preference (see
        /// [`jsonlink_proto::Config::sign_algs`]; default AES-256-GMAC,
        /// then HMAC-SHA256).
        pub fn sign_algs(
            mut self,
            algs: impl IntoIterator<Item = jsonlink_proto::SignAlg>,
        ) -> Self {
            self.config.sign_algs = algs.into_iter().collect();
            self
        }

        /// Protocol extensions offered (client) or accepted (server), see
        /// [`jsonlink_proto::Config::extensions`]. Default: all of them
        /// ([`jsonlink_proto::Extensions::ALL`]).
        pub fn extensions(mut self, extensions: jsonlink_proto::Extensions) -> Self {
            self.config.extensions = extensions;
            self
        }

        /// Edits the whole protocol configuration.
        pub fn proto_config(mut self, f: impl FnOnce(&mut jsonlink_proto::Config)) -> Self {
            f(&mut self.config);
            self
        }

        /// Replaces the adapter-level link options.
        pub fn link_options(mut self, options: $crate::LinkOptions) -> Self {
            self.options = options;
            self
        }

        /// Turns the event stream on or off (see [`LinkOptions::events`](crate::LinkOptions::events)).
        pub fn events(mut self, on: bool) -> Self {
            self.options.events = on;
            self
        }

        /// Declares whether the application consumes the event stream's
        /// data events (messages and requests no handler takes); `true`
        /// also turns the stream on. Without it (the default) nothing
        /// waits for a reader: such messages are dropped and counted,
        /// such requests answered `no_handler` at once. See
        /// [`LinkOptions::consume_events`](crate::LinkOptions::consume_events).
        pub fn consume_events(mut self, on: bool) -> Self {
            self.options.consume_events = on;
            if on {
                self.options.events = true;
            }
            self
        }

        /// Capacity of the event stream (see
        /// [`LinkOptions::event_capacity`](crate::LinkOptions::event_capacity)).
        pub fn event_capacity(mut self, n: usize) -> Self {
            self.options.event_capacity = n;
            self
        }

        /// Commands queued per link (see
        /// [`LinkOptions::command_capacity`](crate::LinkOptions::command_capacity)).
        pub fn command_capacity(mut self, n: usize) -> Self {
            self.options.command_capacity = n;
            self
        }

        /// Body bytes of the commands queued per link (see
        /// [`LinkOptions::command_bytes`](crate::LinkOptions::command_bytes)).
        pub fn command_bytes(mut self, n: usize) -> Self {
            self.options.command_bytes = n;
            self
        }

        /// Handler calls admitted at once per link (see
        /// [`LinkOptions::max_handler_tasks`](crate::LinkOptions::max_handler_tasks)).
        pub fn max_handler_tasks(mut self, n: usize) -> Self {
            self.options.max_handler_tasks = n;
            self
        }

        /// Body bytes held by one link's admitted handler calls (see
        /// [`LinkOptions::max_handler_bytes`](crate::LinkOptions::max_handler_bytes)).
        pub fn max_handler_bytes(mut self, n: usize) -> Self {
            self.options.max_handler_bytes = n;
            self
        }

        /// Uses `handlers`'s handlers (it can be shared and edited later).
        pub fn handlers(mut self, handlers: $crate::Handlers) -> Self {
            self.handlers = handlers;
            self
        }
    };
}

pub(crate) use proto_setters;
