//! The handler budget: how many handler calls one link may have admitted
//! at once, and the body bytes they may hold.

use std::sync::{Arc, Mutex};

/// Counts the handler calls of one link admitted and not finished (request
/// and concurrent message handler tasks running, ordered message calls
/// running or waiting in the link's [`Lane`](super::Lane)) and the body bytes they
/// hold, so a flood of messages cannot spawn tasks, queue calls or hold
/// bodies without bound.
#[derive(Default)]
pub(crate) struct HandlerBudget {
    held: Mutex<Held>,
    freed: event_listener::Event,
}

#[derive(Default)]
struct Held {
    tasks: usize,
    bytes: usize,
}

/// The limits a [`HandlerBudget`] admits handler tasks under.
#[derive(Clone, Copy)]
pub(crate) struct BudgetLimits {
    pub(crate) tasks: usize,
    pub(crate) bytes: usize,
}

/// One admitted handler call; frees its slot and bytes on drop.
pub(crate) struct BudgetGuard {
    budget: Arc<HandlerBudget>,
    bytes: usize,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        {
            let mut held = self.budget.lock();
            held.tasks = held.tasks.saturating_sub(1);
            held.bytes = held.bytes.saturating_sub(self.bytes);
        }
        self.budget.freed.notify(usize::MAX);
    }
}

impl HandlerBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a task holding `bytes` if the link is under both limits; a
    /// task is always admitted when none runs, whatever its size.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        limits: BudgetLimits,
        bytes: usize,
    ) -> Option<BudgetGuard> {
        let mut held = self.lock();
        let fits = held.tasks == 0
            || (held.tasks < limits.tasks.max(1)
                && held.bytes.saturating_add(bytes) <= limits.bytes);
        if !fits {
            return None;
        }
        held.tasks += 1;
        held.bytes = held.bytes.saturating_add(bytes);
        Some(BudgetGuard {
            budget: self.clone(),
            bytes,
        })
    }

    pub(crate) async fn acquire(
        self: Arc<Self>,
        limits: BudgetLimits,
        bytes: usize,
    ) -> BudgetGuard {
        loop {
            if let Some(g) = self.try_acquire(limits, bytes) {
                return g;
            }
            let listener = self.freed.listen();
            if let Some(g) = self.try_acquire(limits, bytes) {
                return g;
            }
            listener.await;
        }
    }
}
