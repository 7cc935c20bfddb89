//! This replica's own view of how long it still holds a run.
//!
//! The store fences every write of a run whose lease has lapsed, but Neon cannot be fenced: a
//! replica paused (SIGSTOP, a stalled runtime, a store it could not reach) between recording
//! an action's intent and sending its call would, once resumed, send a call that a survivor
//! has already reconciled as not made. So the client checks this replica's clock right
//! before each request of a run's mutation (after every retry wait and rate-limit wait) and
//! sends nothing once the lease may have lapsed. A pause can still fall between that check
//! and the request leaving the socket: the window shrinks from "anywhere in the action" to
//! those microseconds. The clock is `CLOCK_MONOTONIC`, which counts a process's stop but not
//! a suspended machine or, usually, a virtual machine paused by its host.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::store::LeaseTiming;

/// Until when this replica may take its hold of a run for granted, by its monotonic clock
/// (which runs on while the process is stopped): when the claim or the last renewal that
/// succeeded was asked, plus the lease, less one heartbeat (clocks that run at slightly
/// different rates, and a renewal that comes late). The default is unbounded: a run no
/// lease guards (a test, the bench).
#[derive(Clone, Debug, Default)]
pub struct LeaseWatch(Option<Arc<Mutex<Instant>>>);

impl LeaseWatch {
    /// A run whose claim was asked at `asked` (its lease, by the store's clock, began when
    /// the claim's statement ran: later).
    pub fn claimed_at(asked: Instant, timing: LeaseTiming) -> Self {
        LeaseWatch(Some(Arc::new(Mutex::new(Self::until(asked, timing)))))
    }

    /// A renewal asked at `asked` succeeded.
    pub fn renewed(&self, asked: Instant, timing: LeaseTiming) {
        if let Some(m) = &self.0 {
            let mut until = m.lock().unwrap_or_else(|p| p.into_inner());
            *until = (*until).max(Self::until(asked, timing));
        }
    }

    /// Whether the lease is surely still this replica's.
    pub fn live(&self) -> bool {
        match &self.0 {
            Some(m) => Instant::now() < *m.lock().unwrap_or_else(|p| p.into_inner()),
            None => true,
        }
    }

    fn until(from: Instant, timing: LeaseTiming) -> Instant {
        from + timing.lease.saturating_sub(timing.heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TIMING: LeaseTiming = LeaseTiming {
        heartbeat: Duration::from_secs(10),
        lease: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_taken_for_granted_one_heartbeat_less_than_it_lasts() {
        let w = LeaseWatch::claimed_at(Instant::now(), TIMING);
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(w.live());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!w.live(), "20 s after the claim, with no renewal");
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_it_from_when_it_was_asked() {
        let w = LeaseWatch::claimed_at(Instant::now(), TIMING);
        tokio::time::advance(Duration::from_secs(15)).await;
        let asked = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        w.renewed(asked, TIMING);
        tokio::time::advance(Duration::from_secs(17)).await;
        assert!(w.live(), "34 s: the renewal asked at 15 s holds until 35 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!w.live());
        // A late answer to an older renewal never shortens it.
        w.renewed(asked - Duration::from_secs(10), TIMING);
        assert!(!w.live());
    }

    #[test]
    fn the_default_guards_nothing() {
        assert!(LeaseWatch::default().live());
    }
}
