//! The local clock that lease deadlines are measured on.
//!
//! A holder's deadline must pass before the database's lease ends, and the database's
//! clock keeps running while the holder's host is suspended (a paused VM, a live
//! migration's stop phase, a laptop asleep). The monotonic clock behind
//! [`std::time::Instant`] and tokio's timers (`CLOCK_MONOTONIC` on Linux) stops during a
//! suspend, so a deadline on it alone would pass *after* the database let someone else in.
//!
//! [`now`] is tokio's clock plus the time the host has spent suspended since this process
//! first asked: on Linux, the growth of `CLOCK_BOOTTIME` (which counts suspend) beyond
//! that of `CLOCK_MONOTONIC`. Deadlines compared with [`now`] therefore pass on time after
//! a resume, and every check of a lease reads it. Timers still run on tokio's clock, so a
//! timer armed before a suspend fires late by the suspend's length; the keep-alive task
//! re-reads [`now`] whenever it wakes. Elsewhere the suspended time counts as zero: on
//! macOS and Windows a suspend postpones the deadline by its length (documented in the
//! crate's guarantees).
//!
//! Tokio's clock (not the standard library's) so that tests on paused time control it;
//! the suspended time is measured on the real clocks only, and is zero in such tests.

use std::time::Duration;

use tokio::time::Instant;

/// Now, on the clock lease deadlines are measured on.
pub(crate) fn now() -> Instant {
    Instant::now() + suspended()
}

/// Sleeps until `deadline` (on [`now`]'s clock) has passed, as far as tokio's timer can
/// tell: a suspend during the sleep makes it wake late, so callers check [`now`] again.
pub(crate) async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(to_timer(deadline)).await;
}

/// The tokio instant at which `deadline` (on [`now`]'s clock) will have passed, if the host
/// is not suspended again before then.
pub(crate) fn to_timer(deadline: Instant) -> Instant {
    deadline.checked_sub(suspended()).unwrap_or(deadline)
}

/// How long the host has been suspended since the first call, in whole milliseconds (the
/// two clocks are read one after the other, so finer differences are noise).
fn suspended() -> Duration {
    #[cfg(test)]
    let injected = tests::injected();
    #[cfg(not(test))]
    let injected = Duration::ZERO;
    injected + boot::suspended()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod boot {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use nix::time::{ClockId, clock_gettime};

    fn boottime() -> Option<Duration> {
        clock_gettime(ClockId::CLOCK_BOOTTIME)
            .ok()
            .map(Duration::from)
    }

    pub(super) fn suspended() -> Duration {
        static BASE: OnceLock<Option<(Instant, Duration)>> = OnceLock::new();
        let Some((monotonic_base, boot_base)) =
            *BASE.get_or_init(|| Some((Instant::now(), boottime()?)))
        else {
            return Duration::ZERO;
        };
        let monotonic = monotonic_base.elapsed();
        let Some(boot) = boottime().and_then(|now| now.checked_sub(boot_base)) else {
            return Duration::ZERO;
        };
        let suspended = u64::try_from(boot.saturating_sub(monotonic).as_millis()).unwrap_or(0);
        // Never less than a reading already made, so that `now` never goes back across a
        // millisecond boundary by the jitter between the two clock reads.
        static MOST: AtomicU64 = AtomicU64::new(0);
        let most = MOST.fetch_max(suspended, Ordering::Relaxed).max(suspended);
        Duration::from_millis(most)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod boot {
    use std::time::Duration;

    /// No suspend-aware clock is read on this platform; see the module docs.
    pub(super) fn suspended() -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    static INJECTED: Mutex<Duration> = Mutex::new(Duration::ZERO);

    pub(super) fn injected() -> Duration {
        *INJECTED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pretends the host was suspended for `duration` more (tests of this crate only).
    pub(crate) fn suspend(duration: Duration) {
        *INJECTED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) += duration;
    }

    #[test]
    fn a_suspend_moves_now_forward_and_timers_back() {
        let before = super::now();
        let deadline = before + Duration::from_secs(10);
        suspend(Duration::from_secs(4));
        assert!(super::now() >= before + Duration::from_secs(4));
        assert!(super::to_timer(deadline) <= tokio::time::Instant::now() + Duration::from_secs(6));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn nothing_is_suspended_while_the_host_runs() {
        super::boot::suspended();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(super::boot::suspended(), Duration::ZERO);
    }
}
