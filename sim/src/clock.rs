//! The emulator's notion of "now".
//!
//! Every timestamp the emulator produces or compares (creation times, operation progress,
//! autosuspend, branch and snapshot expiry) is read from a [`Clock`]. A virtual clock only moves
//! when a test (or the admin route) moves it, so time-dependent behaviour is tested without
//! sleeping. A real clock follows the system clock, but can still be shifted forward, which is
//! handy for demos ("what happens tomorrow?").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A cheaply clonable handle on the emulator's clock. All clones share the same time.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Mutex<ClockInner>>,
}

#[derive(Debug, Clone, Copy)]
enum ClockInner {
    /// System time shifted by `offset` (changed by `advance`/`set`).
    Real { offset: TimeDelta },
    /// A frozen instant, moved only explicitly.
    Virtual { now: DateTime<Utc> },
}

impl Clock {
    /// A clock that follows the system clock.
    pub fn real() -> Clock {
        Clock::from_inner(ClockInner::Real {
            offset: TimeDelta::zero(),
        })
    }

    /// A clock frozen at `start`; it moves only through [`Clock::advance`] and [`Clock::set`].
    pub fn virtual_at(start: DateTime<Utc>) -> Clock {
        Clock::from_inner(ClockInner::Virtual { now: start })
    }

    fn from_inner(inner: ClockInner) -> Clock {
        Clock {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockInner> {
        // The guarded value is plain data and stays consistent even if a holder panicked.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match *self.lock() {
            ClockInner::Real { offset } => Utc::now() + offset,
            ClockInner::Virtual { now } => now,
        }
    }

    /// Whether this clock is virtual (only moves when told to).
    pub fn is_virtual(&self) -> bool {
        matches!(*self.lock(), ClockInner::Virtual { .. })
    }

    /// Moves the clock forward by `by`. Durations too large for chrono saturate at ~292 years.
    pub fn advance(&self, by: Duration) {
        let delta = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        let mut inner = self.lock();
        match &mut *inner {
            ClockInner::Real { offset } => *offset = offset.checked_add(&delta).unwrap_or(*offset),
            ClockInner::Virtual { now } => *now = now.checked_add_signed(delta).unwrap_or(*now),
        }
    }

    /// Sets the clock to `to` (which may be in the past: tests sometimes rewind).
    pub fn set(&self, to: DateTime<Utc>) {
        let mut inner = self.lock();
        match &mut *inner {
            ClockInner::Real { offset } => *offset = to - Utc::now(),
            ClockInner::Virtual { now } => *now = to,
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("virtual", &self.is_virtual())
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn virtual_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let clock = Clock::virtual_at(start);
        assert_eq!(clock.now(), start);
        let other = clock.clone();
        other.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + TimeDelta::seconds(90));
        clock.set(start);
        assert_eq!(other.now(), start);
        assert!(clock.is_virtual());
    }

    #[test]
    fn real_clock_can_be_shifted() {
        let clock = Clock::real();
        let before = Utc::now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() >= before + TimeDelta::seconds(3600));
        assert!(!clock.is_virtual());
    }
}
