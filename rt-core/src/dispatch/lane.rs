//! A link's ordered lane: where its message handlers run one at a time,
//! in arrival order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::dispatch::{BudgetGuard, Message, MessageFn};
use crate::runtime::BoxFuture;

/// Ordered calls the lane makes before it yields to the executor, so a
/// long burst of quick handlers does not hold a thread.
const LANE_CALLS_PER_YIELD: usize = 64;

/// One link's ordered lane: the calls of its message handlers
/// ([`Handlers::on_message`](super::Handlers::on_message)), run one at a time in the order the messages
/// arrived, by one task spawned when the first call arrives and ending
/// when no call is left.
///
/// Bounded by the link's [`HandlerBudget`]: each waiting call holds a slot and
/// its body's bytes from the moment the driver queues it, so when the lane
/// is full the driver waits for a slot (the link stops reading).
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    calls: VecDeque<LaneCall>,
    /// A task is draining the lane (it runs the calls pushed meanwhile).
    draining: bool,
}

/// One message handler call waiting in a [`Lane`].
pub(crate) struct LaneCall {
    pub(crate) handler: Arc<MessageFn>,
    pub(crate) message: Message,
    pub(crate) guard: BudgetGuard,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a call behind those waiting. Returns the future to spawn
    /// when no task is draining the lane (its caller spawns it), `None`
    /// when the running one will take the call.
    pub(crate) fn push(self: &Arc<Self>, call: LaneCall) -> Option<BoxFuture<'static, ()>> {
        let mut s = self.lock();
        s.calls.push_back(call);
        if s.draining {
            return None;
        }
        s.draining = true;
        drop(s);
        Some(Box::pin(self.clone().drain()))
    }

    /// Takes the next call, or marks the lane idle when none is left.
    fn next(&self) -> Option<LaneCall> {
        let mut s = self.lock();
        let call = s.calls.pop_front();
        if call.is_none() {
            s.draining = false;
        }
        call
    }

    /// Runs the waiting calls one after the other until none is left. A
    /// handler that panics is logged; the lane goes on with the next call.
    async fn drain(self: Arc<Self>) {
        use futures_lite::FutureExt as _;
        /// If the task is dropped before the lane is empty (its runtime
        /// shutting down), the lane is left idle with nothing waiting.
        struct Drainer {
            lane: Arc<Lane>,
            idle: bool,
        }
        impl Drop for Drainer {
            fn drop(&mut self) {
                if self.idle {
                    return;
                }
                let rest = {
                    let mut s = self.lane.lock();
                    s.draining = false;
                    std::mem::take(&mut s.calls)
                };
                drop(rest);
            }
        }
        let mut drainer = Drainer {
            lane: self,
            idle: false,
        };
        let mut calls = 0usize;
        loop {
            let Some(LaneCall {
                handler,
                message,
                guard,
            }) = drainer.lane.next()
            else {
                // `next` marked the lane idle under its lock: a call pushed
                // from now on spawns a new task.
                drainer.idle = true;
                return;
            };
            // The handler is called inside the guarded future, so a panic
            // in its synchronous part is caught as well.
            let call = std::panic::AssertUnwindSafe(async move { handler(message).await });
            if call.catch_unwind().await.is_err() {
                tracing::warn!("message handler panicked");
            }
            drop(guard);
            calls += 1;
            if calls.is_multiple_of(LANE_CALLS_PER_YIELD) {
                futures_lite::future::yield_now().await;
            }
        }
    }
}
