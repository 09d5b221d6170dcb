//! What a client's handles, its supervisor and its links' hooks share:
//! its configuration and its [`State`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::oneshot;
use jsonlink_proto::CloseReason;
use rustls_pki_types::ServerName;

use crate::client::Target;
use crate::context::LinkCtx;
use crate::error::Error;
use crate::link::Link;
use crate::reconnect::Reconnect;
use crate::runtime::{BoxFuture, Runtime};

/// The hook run after every authentication
/// ([`ClientBuilder::on_connect`](crate::ClientBuilder::on_connect)).
pub(super) type OnConnect = Arc<dyn Fn(Link) -> BoxFuture<'static, ()> + Send + Sync>;

/// Where a client is.
#[derive(Debug, Clone)]
pub(super) enum State {
    Connecting,
    Connected(Link),
    Disconnected,
    /// Ended; `Some` when it ended on an error that retrying cannot fix.
    Closed(Option<Fatal>),
}

/// Why a client stopped by itself, for good: what `wait_connected` and
/// the commands then return.
#[derive(Debug, Clone)]
pub(super) enum Fatal {
    /// The server rejected our credentials ([`Error::Auth`]).
    Auth(CloseReason),
    /// A TLS configuration error before the first authentication
    /// ([`Error::TlsConfig`]).
    Tls {
        error: rustls::Error,
        fix: &'static str,
    },
    /// The target cannot be connected to ([`Error::InvalidTarget`]).
    Target {
        target: String,
        reason: &'static str,
    },
}

impl Fatal {
    /// `e`, if the client stops on it.
    pub(super) fn of(e: &Error) -> Option<Self> {
        match e {
            Error::Auth(r) => Some(Self::Auth(r.clone())),
            Error::TlsConfig { error, fix } => Some(Self::Tls {
                error: error.clone(),
                fix,
            }),
            Error::InvalidTarget { target, reason } => Some(Self::Target {
                target: target.clone(),
                reason,
            }),
            _ => None,
        }
    }

    pub(super) fn error(&self) -> Error {
        match self {
            Self::Auth(r) => Error::Auth(r.clone()),
            Self::Tls { error, fix } => Error::TlsConfig {
                error: error.clone(),
                fix,
            },
            Self::Target { target, reason } => Error::InvalidTarget {
                target: target.clone(),
                reason,
            },
        }
    }
}

/// What a client that has stopped answers commands with.
pub(super) fn closed_error(fatal: &Option<Fatal>) -> Error {
    fatal.as_ref().map_or(Error::Closed, Fatal::error)
}

type FirstSlot = Mutex<Option<oneshot::Sender<Result<(), Error>>>>;

pub(super) struct ClientShared {
    pub(super) rt: Arc<dyn Runtime>,
    pub(super) ctx: Arc<LinkCtx>,
    pub(super) config: Arc<jsonlink_proto::Config>,
    pub(super) target: Target,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) server_name: ServerName<'static>,
    pub(super) reconnect: Reconnect,
    pub(super) wait_for_reconnect: bool,
    pub(super) on_connect: Option<OnConnect>,
    pub(super) state: Mutex<State>,
    /// Notified on every state change.
    pub(super) changed: event_listener::Event,
    /// `connect()` waits on this for the first attempt's outcome.
    pub(super) first: FirstSlot,
    /// The owner called `close`: a link refusing commands is closing for
    /// good, and they fail with [`Error::Closed`].
    pub(super) closing: AtomicBool,
}

impl ClientShared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state unless the client has already closed.
    pub(super) fn set_state(&self, new: State) {
        {
            let mut s = self.state();
            if matches!(*s, State::Closed(_)) {
                return;
            }
            *s = new;
        }
        self.changed.notify(usize::MAX);
    }

    /// Ends the client, for good.
    pub(super) fn set_closed(&self, fatal: Option<Fatal>) {
        *self.state() = State::Closed(fatal);
        self.changed.notify(usize::MAX);
    }

    pub(super) fn take_first(&self) -> Option<oneshot::Sender<Result<(), Error>>> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Tells `connect()` how the first attempt went, if it still waits.
    pub(super) fn first_outcome(&self, outcome: Result<(), Error>) {
        if let Some(first) = self.take_first() {
            let _ = first.send(outcome);
        }
    }

    /// `link` becomes the client's link (`connect()` learns of the first).
    /// With `unless_closing`, not if it stopped taking commands meanwhile
    /// (checked under the state's lock, which its closing hook takes too).
    pub(super) fn connected(&self, link: &Link, unless_closing: bool) {
        {
            let mut s = self.state();
            if matches!(*s, State::Closed(_)) {
                return;
            }
            if unless_closing && (!link.takes_commands() || link.is_closed()) {
                return;
            }
            *s = State::Connected(link.clone());
        }
        self.changed.notify(usize::MAX);
        self.first_outcome(Ok(()));
    }

    /// Whether `link` is the client's current link.
    pub(super) fn is_current(&self, link: &Link) -> bool {
        matches!(&*self.state(), State::Connected(l) if Arc::ptr_eq(&l.inner, &link.inner))
    }
}
