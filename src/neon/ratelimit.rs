//! Client-side token bucket.
//!
//! Neon allows about 700 requests a minute per account with bursts of 40. Staying under that
//! ourselves means the daemon never sees 429 in normal operation, so retries stay reserved for
//! real trouble. Callers *reserve* a token (the balance may go negative) and sleep until their
//! reservation is covered: this keeps callers in arrival order without a wake-up loop, and uses
//! `tokio::time` so tests can run it with paused time.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size: how many requests may go out back to back after a quiet spell.
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// May be negative: tokens already promised to callers that are sleeping.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// At most `per_minute` requests in any 60 s window, `burst` of them back to back.
    ///
    /// A bucket of `burst` refilled at `r` per second sends at most `burst + 60 r` in a
    /// minute, so the refill is `per_minute - burst` a minute: a server counting a strict
    /// one-minute window (as Neon's budget is stated) never sees more than `per_minute`. The
    /// burst is at most half the budget, so the steady rate keeps at least half of it.
    /// `per_minute` and `burst` of 0 are raised to 1 so the limiter always lets requests through.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let per_minute = per_minute.max(1);
        let burst = burst.max(1).min((per_minute / 2).max(1));
        let refill_per_minute = per_minute.saturating_sub(burst).max(1);
        let burst = f64::from(burst);
        RateLimiter {
            rate: f64::from(refill_per_minute) / 60.0,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// How long the caller must wait for its token; the token is reserved either way.
    fn reserve(&self) -> Duration {
        // The lock is held only for arithmetic; poisoning would need a panic in it.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.rate).min(self.burst);
        st.last = now;
        st.tokens -= 1.0;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / self.rate)
        }
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let rl = RateLimiter::new(605, 5); // 5 at once, then 600/min = 10/s
        let start = Instant::now();
        for _ in 0..5 {
            rl.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst goes out at once"
        );
        for _ in 0..10 {
            rl.acquire().await;
        }
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(999) && e <= Duration::from_millis(1001),
            "10 more at 10/s take one second, took {e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refills_after_idle_but_not_beyond_burst() {
        let rl = RateLimiter::new(63, 3); // 3 at once, then 1/s
        for _ in 0..3 {
            rl.acquire().await;
        }
        tokio::time::sleep(Duration::from_secs(100)).await;
        let start = Instant::now();
        for _ in 0..3 {
            rl.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        rl.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let rl = std::sync::Arc::new(RateLimiter::new(122, 2)); // 2 at once, then 2/s
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let rl = rl.clone();
            tasks.push(tokio::spawn(async move { rl.acquire().await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 2 immediately, 4 more at 2/s.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_budget_in_any_60_s_window() {
        // Neon's 700 a minute with bursts of 40, sent as fast as the limiter allows for three
        // minutes: count the requests in every 60 s window starting at a send.
        let rl = RateLimiter::new(700, 40);
        let start = Instant::now();
        let mut sent = Vec::new();
        while start.elapsed() < Duration::from_secs(180) {
            rl.acquire().await;
            sent.push(start.elapsed());
        }
        let most = (0..sent.len())
            .map(|i| {
                sent[i..]
                    .iter()
                    .take_while(|t| **t < sent[i] + Duration::from_secs(60))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 700, "{most} requests in one 60 s window");
        // And the budget is used: the first minute sends the burst plus the refill.
        assert!(most >= 699, "{most}");
    }

    #[test]
    fn a_burst_beyond_half_the_budget_is_capped() {
        let rl = RateLimiter::new(30, 100);
        assert_eq!(rl.burst, 15.0);
        assert!((rl.rate * 60.0 - 15.0).abs() < 1e-9);
    }
}
