//! What every link of one server or client shares: [`LinkCtx`], made
//! together with the event stream its links report to.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::config::LinkOptions;
use crate::dispatch::Handlers;
use crate::event::{Event, EventStream};
use crate::event_queue::EventSender;
use crate::runtime::Runtime;
use crate::stats::{Counters, bump};

/// What every link of one server or client shares.
pub(crate) struct LinkCtx {
    pub(crate) rt: Arc<dyn Runtime>,
    pub(crate) handlers: Handlers,
    pub(crate) events: Option<EventSender>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) options: LinkOptions,
    /// Whether a link that ends before authenticating emits
    /// [`Event::Error`] itself (the server); a client's supervisor reports
    /// failed attempts instead, once per outage.
    pub(crate) report_handshake_errors: bool,
    /// A [`Multiplexer`](crate::Multiplexer)'s view of every link.
    pub(crate) observer: Option<Arc<dyn crate::driver::LinkObserver>>,
}

impl LinkCtx {
    /// The context of one owner's links, and the receiving end of their
    /// event stream (none when [`LinkOptions::events`] is off).
    pub(crate) fn new(
        rt: Arc<dyn Runtime>,
        handlers: Handlers,
        options: LinkOptions,
        report_handshake_errors: bool,
        observer: Option<Arc<dyn crate::driver::LinkObserver>>,
    ) -> (Arc<Self>, EventStream) {
        let (events, rx) = if options.events {
            let (tx, rx) = crate::event_queue::channel(options.event_capacity);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let ctx = Self {
            rt,
            handlers,
            events,
            counters: Arc::new(Counters::default()),
            options,
            report_handshake_errors,
            observer,
        };
        (Arc::new(ctx), EventStream::new(rx))
    }

    /// Emits a lifecycle event without waiting: when the stream holds its
    /// capacity of lifecycle events, the oldest is dropped and counted.
    pub(crate) fn emit_lossy(&self, ev: Event) {
        debug_assert!(ev.is_lifecycle(), "data events wait for room");
        if let Some(tx) = &self.events {
            let mut dropped = 0;
            // A closed stream (its receiver gone) needs no count.
            let _ = tx.push_batch(&mut VecDeque::from([ev]), &mut dropped);
            bump(&self.counters.dropped_events, dropped as u64);
        }
    }
}
