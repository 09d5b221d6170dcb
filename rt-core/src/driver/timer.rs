//! The driver's one timer, reset to the next deadline every round.

use std::task::Context;
use std::time::Instant;

use crate::deadline::{NO_DEADLINE, deadline_after};
use crate::runtime::{BoxFuture, Runtime};

/// One sleep on the runtime's clock, kept while the deadline stays the
/// same and replaced only when it moves.
#[derive(Default)]
pub(super) struct Timer {
    armed: Option<(Instant, BoxFuture<'static, ()>)>,
}

impl Timer {
    /// Arms the timer at `at` (`None` disarms it) and polls it; whether it
    /// fired.
    pub(super) fn poll_at(
        &mut self,
        rt: &dyn Runtime,
        cx: &mut Context<'_>,
        now: Instant,
        at: Option<Instant>,
    ) -> bool {
        let Some(at) = at else {
            self.armed = None;
            return false;
        };
        if self.armed.as_ref().is_none_or(|(d, _)| *d != at) {
            // A deadline that far ahead is none (a timeout of
            // `Duration::MAX`): a timer at the horizon, which no runtime's
            // arithmetic overflows, and it is re-armed when it fires.
            let until = at.min(deadline_after(now, NO_DEADLINE));
            self.armed = Some((at, rt.sleep_until(until)));
        }
        if let Some((_, sleep)) = self.armed.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            self.armed = None;
            return true;
        }
        false
    }
}
