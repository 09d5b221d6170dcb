//! The client's reconnect policy: a pure function from the attempt number
//! (and a random fraction) to the delay before that attempt, testable
//! without sockets or clocks.

use std::time::Duration;

/// Default base delay of [`Reconnect::Backoff`]: 250 ms.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Default cap of [`Reconnect::Backoff`]: 30 s.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// When a client reconnects after its link drops or an attempt fails.
///
/// `attempt` counts attempts since the last successful authentication,
/// starting at 0 for the first reconnect after a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// Never reconnect: the client closes when its link ends.
    Never,
    /// Wait the same interval before every attempt (no jitter).
    Fixed(Duration),
    /// Exponential backoff with full jitter (AWS architecture blog,
    /// "Exponential Backoff And Jitter"): the delay before attempt `n` is
    /// uniform in `[0, min(cap, base * 2^n))`, so many clients that lost
    /// the same server spread their attempts instead of arriving together.
    Backoff {
        /// Ceiling of the first delay. Default [`DEFAULT_BACKOFF_BASE`].
        base: Duration,
        /// Largest ceiling. Default [`DEFAULT_BACKOFF_CAP`].
        cap: Duration,
    },
}

impl Default for Reconnect {
    /// Exponential backoff with full jitter, base 250 ms, cap 30 s.
    fn default() -> Self {
        Self::Backoff {
            base: DEFAULT_BACKOFF_BASE,
            cap: DEFAULT_BACKOFF_CAP,
        }
    }
}

impl Reconnect {
    /// The upper bound of the delay before attempt `attempt` (the jitter
    /// envelope), or `None` if the policy does not reconnect.
    pub fn ceiling(&self, attempt: u32) -> Option<Duration> {
        match *self {
            Self::Never => None,
            Self::Fixed(d) => Some(d),
            Self::Backoff { base, cap } => {
                let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
                Some(base.checked_mul(factor).unwrap_or(cap).min(cap))
            }
        }
    }

    /// The delay before attempt `attempt` given a random fraction
    /// `jitter` in `[0, 1)` (clamped), or `None` if the policy does not
    /// reconnect. [`Fixed`](Self::Fixed) ignores `jitter`. Never more than
    /// [`ceiling`](Self::ceiling), never a panic, whatever the durations
    /// (a delay of about 30 years or more, such as `Duration::MAX`, waits
    /// until the client is closed).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        let ceiling = self.ceiling(attempt)?;
        match self {
            Self::Backoff { .. } => {
                let j = if jitter.is_finite() {
                    jitter.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                // `mul_f64` would panic where the product rounds past
                // `Duration::MAX` (a ceiling of `Duration::MAX`): saturate.
                let d = Duration::try_from_secs_f64(ceiling.as_secs_f64() * j);
                Some(d.map_or(ceiling, |d| d.min(ceiling)))
            }
            _ => Some(ceiling),
        }
    }

    /// [`delay`](Self::delay) with a fresh random fraction.
    pub(crate) fn next_delay(&self, attempt: u32) -> Option<Duration> {
        self.delay(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Reconnect::default();
        let ms = |n| r.ceiling(n).map(|d| d.as_millis());
        assert_eq!(ms(0), Some(250));
        assert_eq!(ms(1), Some(500));
        assert_eq!(ms(6), Some(16_000));
        assert_eq!(ms(7), Some(30_000));
        assert_eq!(ms(1000), Some(30_000));
    }

    #[test]
    fn full_jitter_stays_in_the_envelope() {
        let r = Reconnect::default();
        assert_eq!(r.delay(3, 0.0), Some(Duration::ZERO));
        assert_eq!(r.delay(3, 0.5), Some(Duration::from_millis(1000)));
        assert_eq!(r.delay(3, 7.0), r.ceiling(3));
        assert_eq!(r.delay(3, f64::NAN), Some(Duration::ZERO));
        for n in 0..40 {
            let d = r.next_delay(n).unwrap();
            assert!(d <= r.ceiling(n).unwrap());
        }
    }

    #[test]
    fn fixed_and_never() {
        let f = Reconnect::Fixed(Duration::from_secs(2));
        assert_eq!(f.delay(9, 0.1), Some(Duration::from_secs(2)));
        assert_eq!(Reconnect::Never.delay(0, 0.5), None);
    }
}
