//! A client's supervisor: the task that connects, runs the link, and
//! reconnects per the policy, reporting each outage's failures once.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_channel::oneshot;
use jsonlink_proto::{CloseReason, Connection, ConnectionParams, Side};
use tracing::Instrument as _;

use crate::client::hooks::ClientHooks;
use crate::client::shared::{ClientShared, Fatal, State};
use crate::deadline::{deadline_after, with_deadline};
use crate::driver::{Driver, DriverSetup, Outcome, new_link};
use crate::error::Error;
use crate::event::Event;
use crate::link::CloseOrder;
use crate::runtime::TlsStream;
use crate::stats::bump;

/// Connects, runs the link, and reconnects per the policy, until the
/// client is closed or dropped (its order channel closes).
pub(super) async fn supervise(
    shared: Arc<ClientShared>,
    order_rx: async_channel::Receiver<CloseOrder>,
) {
    let rt = shared.rt.clone();
    let mut attempt: u32 = 0;
    // The kind of error last reported in this outage, so a long outage
    // reports "connection refused" once, not once per attempt.
    let mut reported: Option<String> = None;
    let mut stopped = false;
    let mut fatal = None;
    let mut draining = Draining::default();
    // Until then, a TLS configuration error ends the client: nothing
    // suggests it will go away. After it, it may be a server rotating its
    // certificate: reported once per outage, retried.
    let mut authenticated_once = false;
    loop {
        shared.set_state(State::Connecting);
        let (result, peer_addr) =
            run_attempt(&shared, &order_rx, &mut stopped, &mut draining).await;
        let error = match result {
            Ok(o) if o.authenticated => {
                authenticated_once = true;
                attempt = 0;
                reported = None;
                // Authenticated, though the link ended before its
                // `on_connect` hook returned.
                shared.first_outcome(Ok(()));
                tracing::info!(reason = %o.reason, "disconnected");
                None
            }
            Ok(o) => Some(Error::from_handshake_close(o.reason)),
            Err(e) => Some(e),
        };
        if stopped {
            break;
        }
        if let Some(e) = error {
            if let Some(first) = shared.take_first() {
                tracing::warn!(error = %e, "connect failed");
                fatal = Fatal::of(&e);
                let _ = first.send(Err(e));
                break;
            }
            if e.is_auth() || (e.is_tls_config() && !authenticated_once) {
                // Retrying with the same secret, or the same TLS
                // configuration before it ever worked, cannot succeed.
                tracing::warn!(error = %e, "connect failed; not reconnecting");
                fatal = Fatal::of(&e);
                shared.ctx.emit_lossy(Event::Error {
                    peer_addr,
                    error: e,
                });
                break;
            }
            let key = error_key(&e);
            if reported.as_deref() != Some(key.as_str()) {
                tracing::warn!(error = %e, "connect failed");
                reported = Some(key);
                shared.ctx.emit_lossy(Event::Error {
                    peer_addr,
                    error: e,
                });
            } else {
                tracing::debug!(error = %e, "connect failed again");
            }
        }
        shared.set_state(State::Disconnected);
        let Some(delay) = shared.reconnect.next_delay(attempt) else {
            break;
        };
        attempt = attempt.saturating_add(1);
        tracing::debug!(attempt, ?delay, "reconnecting");
        shared
            .ctx
            .emit_lossy(Event::ReconnectAttempt { attempt, delay });
        let until = deadline_after(rt.now(), delay);
        if let Some(order) = with_deadline(&*rt, until, order_rx.recv()).await {
            // Closed (or dropped) during backoff: stop at once (links still
            // draining get the order too).
            draining.forward(&owner_order(&shared, order.ok()));
            break;
        }
    }
    // Links still draining after a going-away notice end by their own
    // deadline (or the owner's, forwarded to them); the client has stopped
    // once they have.
    loop {
        let listener = shared.changed.listen();
        if draining.prune() == 0 {
            break;
        }
        listener.await;
    }
    shared.set_closed(fatal);
    shared.first_outcome(Err(Error::Closed));
    tracing::debug!("client stopped");
}

/// What kind of failure `e` is, for reporting once per outage.
fn error_key(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("io:{:?}", io.kind()),
        Error::Resolve { error, .. } => format!("resolve:{:?}", error.kind()),
        Error::Handshake(r) => format!("handshake:{}", r.code()),
        Error::TlsConfig { error, .. } => format!("tls:{error:?}"),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

/// Links of a client still draining after the server's going-away notice,
/// each driven by a task of its own while the client reconnects.
#[derive(Default)]
struct Draining {
    /// Their order channels (closed once a link's driver has ended).
    links: Vec<async_channel::Sender<CloseOrder>>,
}

impl Draining {
    /// Forgets the links that have ended; how many drain still.
    fn prune(&mut self) -> usize {
        self.links.retain(|tx| !tx.is_closed());
        self.links.len()
    }

    /// Passes the owner's order (close, or the client dropped) on.
    fn forward(&mut self, order: &CloseOrder) {
        self.prune();
        for tx in &self.links {
            let _ = tx.try_send(order.clone());
        }
    }
}

/// The owner's order, or the one for a client whose every handle is gone
/// (`None`).
fn owner_order(shared: &ClientShared, order: Option<CloseOrder>) -> CloseOrder {
    order.unwrap_or_else(|| CloseOrder {
        reason: "client dropped",
        deadline: deadline_after(shared.rt.now(), shared.config.close_timeout),
    })
}

/// Wakes the supervisor when a draining link's task ends (or is dropped).
struct DrainEnded(Arc<ClientShared>);

impl Drop for DrainEnded {
    fn drop(&mut self) {
        self.0.changed.notify(usize::MAX);
    }
}

/// TCP + TLS to the target: resolves it (on every attempt), then tries its
/// addresses in order until one connects. If none does, the error of the
/// last one tried, or an earlier one's TLS configuration error (which
/// says what to fix). `tried` is the address tried last.
async fn dial(shared: &ClientShared, tried: &mut Option<SocketAddr>) -> Result<TlsStream, Error> {
    let addrs = shared.target.resolve(&*shared.rt).await?;
    let mut failed: Option<Error> = None;
    for addr in addrs {
        *tried = Some(addr);
        let connect = shared
            .rt
            .connect_tls(addr, shared.tls.clone(), shared.server_name.clone());
        match connect.await {
            Ok(tls) => return Ok(tls),
            Err(e) => {
                let e = Error::from_connect(e);
                tracing::debug!(addr = %addr, error = %e, "connect failed");
                if !failed.as_ref().is_some_and(Error::is_tls_config) {
                    failed = Some(e);
                }
            }
        }
    }
    Err(failed.unwrap_or(Error::NotConnected))
}

/// One attempt: resolution, TCP + TLS (bounded by the handshake deadline),
/// then the driver until the link ends, or until the server's going-away
/// notice (a `close` with code `normal`) when the policy reconnects: then
/// the link goes on draining in a task of its own (its in-flight requests,
/// what the server's handlers still send) and the attempt returns, so the
/// client reconnects at once. An order on `order_rx` (or its closing)
/// during the attempt sets `stopped` and is forwarded to the link and to
/// those still draining. With the outcome, the peer's address (the last
/// one tried).
async fn run_attempt(
    shared: &Arc<ClientShared>,
    order_rx: &async_channel::Receiver<CloseOrder>,
    stopped: &mut bool,
    draining: &mut Draining,
) -> (Result<Outcome, Error>, Option<SocketAddr>) {
    let rt = shared.rt.clone();
    let start = rt.now();
    let deadline = deadline_after(start, shared.config.handshake_timeout);
    bump(&shared.ctx.counters.connections_total, 1);
    let mut tried = None;
    enum Connect {
        Order(Option<CloseOrder>),
        Done(Option<Result<TlsStream, Error>>),
    }
    let step = futures_lite::future::or(
        async { Connect::Order(order_rx.recv().await.ok()) },
        async { Connect::Done(with_deadline(&*rt, deadline, dial(shared, &mut tried)).await) },
    )
    .await;
    let tls = match step {
        Connect::Order(order) => {
            *stopped = true;
            draining.forward(&owner_order(shared, order));
            return (Err(Error::Closed), tried);
        }
        Connect::Done(None) => return (Err(Error::HandshakeTimeout), tried),
        Connect::Done(Some(Err(e))) => return (Err(e), tried),
        Connect::Done(Some(Ok(tls))) => tls,
    };
    let peer_addr = Some(tls.peer_addr);
    let params = ConnectionParams {
        channel_binding: tls.channel_binding,
        ..ConnectionParams::default()
    };
    let conn = Connection::new(shared.config.clone(), Side::Client, start, params);
    let link = new_link(
        rt.clone(),
        0,
        tls.peer_addr,
        &shared.config,
        &shared.ctx.options,
        None,
    );
    let (link_order_tx, link_order_rx) = async_channel::bounded(1);
    // Without reconnecting there is nothing to do meanwhile: the link
    // drains here, and the client ends with it.
    let reconnects = shared.reconnect.ceiling(0).is_some();
    let (notice_tx, notice_rx) = oneshot::channel();
    bump(&shared.ctx.counters.connections, 1);
    let driver = Driver::new(DriverSetup {
        conn,
        stream: tls.stream,
        link,
        order_rx: link_order_rx,
        ctx: shared.ctx.clone(),
        hooks: Box::new(ClientHooks {
            shared: shared.clone(),
            link: None,
            notice: reconnects.then_some(notice_tx),
            released: false,
        }),
    });
    let mut driver = Box::pin(driver.run());
    let mut notice = Some(notice_rx);
    enum Step {
        Ended(Outcome),
        Order(Option<CloseOrder>),
        Notice(Option<CloseReason>),
    }
    loop {
        let listen = !*stopped;
        let step = futures_lite::future::or(
            async { Step::Ended(driver.as_mut().await) },
            futures_lite::future::or(
                async {
                    if listen {
                        Step::Order(order_rx.recv().await.ok())
                    } else {
                        std::future::pending().await
                    }
                },
                async {
                    match notice.as_mut() {
                        Some(rx) => Step::Notice(rx.await.ok()),
                        None => std::future::pending().await,
                    }
                },
            ),
        )
        .await;
        match step {
            Step::Ended(outcome) => return (Ok(outcome), peer_addr),
            Step::Order(order) => {
                *stopped = true;
                let order = owner_order(shared, order);
                draining.forward(&order);
                let _ = link_order_tx.try_send(order);
            }
            // The link ended without one, or the owner is closing the
            // client anyway: it drains here.
            Step::Notice(None) => notice = None,
            Step::Notice(Some(_)) if *stopped => notice = None,
            Step::Notice(Some(reason)) => {
                tracing::info!(
                    reason = %reason,
                    "going-away notice: reconnecting while the link drains"
                );
                let ended = DrainEnded(shared.clone());
                rt.spawn(Box::pin(
                    async move {
                        let _ended = ended;
                        let _ = driver.await;
                    }
                    .instrument(tracing::Span::current()),
                ));
                draining.links.push(link_order_tx);
                let outcome = Outcome {
                    authenticated: true,
                    reason,
                };
                return (Ok(outcome), peer_addr);
            }
        }
    }
}
