//! How a client follows the life of each of its links (its
//! [`LinkHooks`]): the current link, the connection count, the server's
//! going-away notice, and the `on_connect` hook after every
//! authentication.

use std::sync::Arc;

use futures_channel::oneshot;
use futures_lite::FutureExt as _;
use jsonlink_proto::CloseReason;
use tracing::Instrument as _;

use crate::client::shared::{ClientShared, State};
use crate::driver::LinkHooks;
use crate::link::Link;
use crate::stats::drop_one;

pub(super) struct ClientHooks {
    pub(super) shared: Arc<ClientShared>,
    /// The link, once authenticated.
    pub(super) link: Option<Link>,
    /// Tells the attempt of the server's going-away notice (when the
    /// client reconnects).
    pub(super) notice: Option<oneshot::Sender<CloseReason>>,
    pub(super) released: bool,
}

impl ClientHooks {
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        drop_one(&self.shared.ctx.counters.connections);
        // Only this link: after a going-away notice the next one may be
        // current already.
        if self
            .link
            .as_ref()
            .is_some_and(|l| self.shared.is_current(l))
        {
            self.shared.set_state(State::Disconnected);
        }
    }
}

impl LinkHooks for ClientHooks {
    /// The link becomes the client's link at once, or, with an
    /// `on_connect` hook, once the hook has returned (run in a task of its
    /// own, so the link carries its commands meanwhile).
    fn authenticated(&mut self, link: &Link) {
        self.link = Some(link.clone());
        let Some(hook) = self.shared.on_connect.clone() else {
            self.shared.connected(link, false);
            return;
        };
        let shared = self.shared.clone();
        let link = link.clone();
        let call = std::panic::AssertUnwindSafe(hook(link.clone()));
        self.shared.rt.spawn(Box::pin(
            async move {
                if call.catch_unwind().await.is_err() {
                    tracing::warn!("on_connect hook panicked");
                }
                shared.connected(&link, true);
            }
            .instrument(tracing::Span::current()),
        ));
    }

    fn closing(&mut self, link: &Link, draining: Option<&CloseReason>) {
        // A closing link takes no more commands: no longer the client's
        // link (commands fail NotConnected or wait for the next one).
        if self.shared.is_current(link) {
            self.shared.set_state(State::Disconnected);
        }
        // The server's going-away notice, with work still in flight.
        if let Some(reason) = draining
            && matches!(reason, CloseReason::Remote { .. })
            && reason.is_graceful()
            && let Some(notice) = self.notice.take()
        {
            let _ = notice.send(reason.clone());
        }
    }

    fn closed(&mut self, _link: &Link, _reason: &CloseReason) {
        self.release();
    }
}

impl Drop for ClientHooks {
    fn drop(&mut self) {
        self.release();
    }
}
