//! Deadlines as instants on the runtime's clock: saturated so that no
//! caller's duration (`Duration::MAX`, say) can overflow an `Instant`, and
//! a future raced against one.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::runtime::Runtime;

/// How far ahead a deadline may lie: about 30 years. A timeout or delay
/// longer than this (`Duration::MAX`, say) means "no deadline": the
/// deadline is saturated here, so no clock arithmetic (ours, the core's or
/// a runtime's timer) can overflow, and [`with_deadline`] arms no timer
/// for it.
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `now + d`, saturated at [`NO_DEADLINE`] ahead; never panics.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    // Only a clock reading within 30 years of the end of `Instant`'s range
    // could overflow here; none does. Then: at once rather than a panic.
    now.checked_add(d.min(NO_DEADLINE)).unwrap_or(now)
}

/// A caller's deadline, clamped to at most [`NO_DEADLINE`] ahead of `now`
/// (so that adding a linger time, or a runtime's rounding, cannot
/// overflow).
pub(crate) fn clamp_deadline(now: Instant, deadline: Instant) -> Instant {
    deadline.min(deadline_after(now, NO_DEADLINE))
}

/// Runs `fut` until `deadline` on `rt`'s clock; `None` if the deadline came
/// first. A deadline half of [`NO_DEADLINE`] ahead or more is none: no
/// timer is armed.
pub(crate) async fn with_deadline<F: Future>(
    rt: &dyn Runtime,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    if deadline.saturating_duration_since(rt.now()) >= NO_DEADLINE / 2 {
        return Some(fut.await);
    }
    let sleep = rt.sleep_until(deadline);
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep.await;
        None
    })
    .await
}
