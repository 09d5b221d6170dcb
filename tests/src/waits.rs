//! Waiting in tests: for the events of a server or client (each wait
//! names what it expects and fails the test on anything else), for a
//! future within a bound, and — only for counters that have no event to
//! await — [`eventually`].
//!
//! The timers here are tokio's inside a tokio runtime and smol's (async-io,
//! which runs beside any executor) elsewhere, so every wait works on every
//! runtime the harness starts, and a tokio test opens no descriptor for a
//! timer reactor of its own (fd gauges stay put).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonlink_rt::{
    Authenticated, Client, CloseReason, Error, Event, EventKind, Link, Server, ServerBuilder,
};

/// Upper bound on a gauge (fds, connection count) settling after the event
/// that caused the change.
pub const SETTLE: Duration = Duration::from_secs(5);

/// What "at once" means in a test (a loaded 2-core machine included).
pub const AT_ONCE: Duration = Duration::from_secs(2);

/// How long an event a test expects may take before the test fails.
pub const EXPECT_WITHIN: Duration = Duration::from_secs(10);

/// Waits `d`: on tokio's timer inside a tokio runtime, else on smol's.
async fn sleep(d: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(d).await;
    } else {
        smol::Timer::after(d).await;
    }
}

/// `fut`'s output, or `None` if `limit` passes first.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(limit).await;
        None
    })
    .await
}

/// Polls `f` every few milliseconds until it returns true or `timeout`
/// passes; for gauges that have no event to await (fd counts, task counts,
/// counters published after the event that changed them).
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

/// A server or a client: what has an event stream.
pub trait EventSource {
    /// The next event of `kind` (others are skipped).
    fn wait_for(&self, kind: EventKind) -> impl Future<Output = Option<Event>> + Send;
    /// The next event.
    fn next_event(&self) -> impl Future<Output = Option<Event>> + Send;
}

impl EventSource for Server {
    fn wait_for(&self, kind: EventKind) -> impl Future<Output = Option<Event>> + Send {
        Self::wait_for(self, kind)
    }
    fn next_event(&self) -> impl Future<Output = Option<Event>> + Send {
        Self::next_event(self)
    }
}

impl EventSource for Client {
    fn wait_for(&self, kind: EventKind) -> impl Future<Output = Option<Event>> + Send {
        Self::wait_for(self, kind)
    }
    fn next_event(&self) -> impl Future<Output = Option<Event>> + Send {
        Self::next_event(self)
    }
}

/// The next `Authenticated` event: its link.
pub async fn authenticated(events: &impl EventSource) -> Link {
    authenticated_with_info(events).await.0
}

/// The next `Authenticated` event: its link and what was negotiated.
pub async fn authenticated_with_info(events: &impl EventSource) -> (Link, Authenticated) {
    match events.wait_for(EventKind::Authenticated).await {
        Some(Event::Authenticated { link, info }) => (link, info),
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

/// The next `Closed` event: the link and why it closed.
pub async fn closed(events: &impl EventSource) -> (Link, CloseReason) {
    match events.wait_for(EventKind::Closed).await {
        Some(Event::Closed { link, reason }) => (link, reason),
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// The next `Error` event: the peer's address and the error.
pub async fn error_event(events: &impl EventSource) -> (Option<SocketAddr>, Error) {
    match events.wait_for(EventKind::Error).await {
        Some(Event::Error { peer_addr, error }) => (peer_addr, error),
        other => panic!("expected Error, got {other:?}"),
    }
}

/// The server's `Error` event for the connection from `peer` (those of
/// other connections, from earlier cases, are skipped).
pub async fn error_from(server: &Server, peer: SocketAddr) -> Error {
    loop {
        let (from, error) = error_event(server).await;
        if from == Some(peer) {
            return error;
        }
    }
}

/// The next `ReconnectAttempt` event of a client: its number and delay.
pub async fn reconnect_attempt(client: &Client) -> (u32, Duration) {
    match client.wait_for(EventKind::ReconnectAttempt).await {
        Some(Event::ReconnectAttempt { attempt, delay }) => (attempt, delay),
        other => panic!("expected ReconnectAttempt, got {other:?}"),
    }
}

/// The next event of `events`, failing the test (naming what it waited
/// for) if none comes within `limit`.
pub async fn next_event_within(
    events: &impl EventSource,
    limit: Duration,
    waiting_for: &str,
) -> Event {
    within(limit, events.next_event())
        .await
        .unwrap_or_else(|| panic!("no event within {limit:?} while waiting for {waiting_for}"))
        .expect("the event stream ended")
}

/// Binds `builder()` to `addr` again after a server there went away (its
/// listener may take a moment to close).
///
/// The old listener closes when its accept task next runs, which has no
/// event to wait for: this retries (yielding, then every millisecond) for
/// up to [`SETTLE`].
pub async fn rebind(builder: impl Fn() -> ServerBuilder, addr: SocketAddr) -> Server {
    let deadline = Instant::now() + SETTLE;
    let mut tries = 0u32;
    loop {
        match builder().bind(addr).await {
            Ok(s) => return s,
            Err(e) if Instant::now() >= deadline => {
                panic!("could not bind {addr} again after {tries} tries: {e:?}")
            }
            Err(_) if tries < 100 => futures_lite::future::yield_now().await,
            Err(_) => sleep(Duration::from_millis(1)).await,
        }
        tries += 1;
    }
}
