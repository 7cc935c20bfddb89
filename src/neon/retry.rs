//! When and how long to retry, and how often to poll: every wait of the Neon client and of
//! the jobs' calls is scheduled here, on [`backon`]'s retry loop.
//!
//! Neon's guidance: 429 and 503 are always safe to retry; connection failures before anything
//! was sent too. Other 5xx and timeouts are retried only when repeating the call cannot do
//! harm (GET, PUT, DELETE, PATCH, and POSTs that set a state, like suspend). A create that may
//! have happened is never repeated blindly: the caller checks for it first (see
//! `NeonClient::create_snapshot`).
//!
//! 423 (a conflicting operation of the project is running) is handled in one layer only, and
//! not by the client's backoff: waiting a few seconds at random says nothing about when the
//! operation ends. [`retry_when_locked`] (used by every job's mutation) waits for the
//! project's operations to finish and calls again, a bounded number of times. A quota 423
//! (`QUOTA_EXCEEDED`) is neither retried nor waited on (see `ApiError::is_locked`).
//!
//! Delays are exponential with *full jitter* (uniform in `[0, min(cap, base * 2^n)]`), which
//! spreads out clients that failed together, and bounded both in count and in total time. A
//! `Retry-After` is honoured as a minimum, the jittered delay added on top.
//!
//! # Worst case per action
//!
//! With a retry budget `max_elapsed` (120 s by default), a per-request timeout `T`, the jobs'
//! operation deadline `D` and 3 locked attempts:
//!
//! - one client call `C`: no retry starts whose delay would end more than `max_elapsed` after
//!   the first attempt began, so a call ends within `C = max_elapsed + T`; a snapshot create
//!   (a listing first, then its own retries of an ambiguous failure, each a create and a
//!   listing, within one more `max_elapsed`) within `max_elapsed + 3 C`;
//! - one poll ([`poll_until`]) ends within `D + C`: its deadline is checked before each sleep,
//!   and the last request (itself a call) may start just before it;
//! - one job mutation ([`retry_when_locked`]): at most 3 calls and 2 waits for the project,
//!   so `3 C + 2 (D + C)`; then waiting for the operations the call started, `D + C` more.
//!
//! Before 423 was handled here alone, each locked call was first retried by the client for up
//! to 120 s, then waited on: about `3 * (120 s + D)` per action.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use backon::Retryable;
use rand::Rng;
use tokio::time::Instant;

use super::error::ApiError;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry is started if it would end later than this after the first attempt began.
    pub max_elapsed: Duration,
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Upper bound of any single delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            max_elapsed: Duration::from_secs(120),
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter delay before retry number `retry`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// The jittered delays of one call, `max_retries` of them, as a [`backon::Backoff`].
    fn schedule(&self) -> FullJitter {
        FullJitter {
            policy: self.clone(),
            retry: 0,
        }
    }

    /// The delay before the next retry given the scheduled `backoff` and the server's
    /// `retry_after`, or `None` when it would end past `max_elapsed` (`elapsed` is the time
    /// since the first attempt began).
    fn admit(
        &self,
        elapsed: Duration,
        backoff: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        // Saturating: `Retry-After` is whatever the server sent, and a delay beyond the
        // budget just means giving up now.
        let delay = retry_after.map_or(backoff, |ra| ra.saturating_add(backoff));
        (elapsed.saturating_add(delay) <= self.max_elapsed).then_some(delay)
    }
}

/// Full-jitter exponential delays (backon's own jitter adds to the delay instead).
#[derive(Debug)]
struct FullJitter {
    policy: RetryPolicy,
    retry: u32,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retry >= self.policy.max_retries {
            return None;
        }
        let delay = self.policy.backoff(self.retry);
        self.retry += 1;
        Some(delay)
    }
}

/// Whether a failed attempt may be repeated by the client, and the reason label for
/// telemetry. 423 is not: see the module documentation.
pub fn retry_reason(err: &ApiError, idempotent: bool) -> Option<&'static str> {
    match err {
        ApiError::Status { status, .. } => match *status {
            429 => Some("rate_limited"),
            503 => Some("unavailable"),
            s if s >= 500 && idempotent => Some("server_error"),
            _ => None,
        },
        ApiError::Connect { .. } => Some("connect"),
        ApiError::Transport { .. } if idempotent => Some("connect"),
        ApiError::Timeout { .. } if idempotent => Some("timeout"),
        _ => None,
    }
}

/// What a retry is reported as.
#[derive(Clone, Copy, Debug)]
pub struct Label<'a> {
    pub method: &'a str,
    pub route: &'a str,
}

/// Makes `attempt` until it succeeds, fails with an error `reason` does not name, or the
/// policy's budget is spent (then its last error is returned). `retry_after` gives an error's
/// `Retry-After`, a minimum for the next delay. Every retry is reported (an `ApiRetry`
/// event), and so is a spent budget.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    label: Label<'_>,
    attempt: F,
    reason: impl Fn(&E) -> Option<&'static str>,
    retry_after: impl Fn(&E) -> Option<Duration>,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut retries = 0u32;
    let result = attempt
        .retry(policy.schedule())
        .sleep(tokio::time::sleep)
        .when(|e| reason(e).is_some())
        .adjust(|e, backoff| policy.admit(started.elapsed(), backoff?, retry_after(e)))
        .notify(|e, delay| {
            retries += 1;
            crate::telemetry::events::ApiRetry {
                method: label.method,
                route: label.route,
                reason: reason(e).unwrap_or("server_error"),
                attempt: retries,
                delay,
            }
            .emit();
        })
        .await;
    if let Err(e) = &result {
        if reason(e).is_some() {
            tracing::warn!(
                method = label.method,
                route = label.route,
                retries,
                "neon api retry budget exhausted"
            );
        }
    }
    result
}

/// How often to poll for a state. The first poll comes after the time the awaited work is
/// `expected` to take (within `initial..=max`; `initial` when nothing is expected), then the
/// interval doubles from a quarter of that (at least `initial`) up to `max`, until a deadline.
/// Nothing waits a fixed time: with operations that end at once the first poll comes after
/// `initial`, with Neon's operations of a few seconds after about their usual length.
#[derive(Clone, Copy, Debug)]
pub struct PollPolicy {
    /// The shortest interval, and the first one when nothing is expected.
    pub initial: Duration,
    /// The longest interval.
    pub max: Duration,
    /// How long the awaited work usually takes (see [`OperationPace`]).
    pub expected: Option<Duration>,
}

impl PollPolicy {
    /// The intervals between polls, in order (endless; the deadline ends the polling).
    pub fn intervals(&self) -> impl Iterator<Item = Duration> {
        let max = self.max.max(self.initial);
        let first = self
            .expected
            .unwrap_or(self.initial)
            .clamp(self.initial, max);
        let mut step = self.initial.max(first / 4);
        std::iter::once(first).chain(std::iter::from_fn(move || {
            step = step.saturating_mul(2).min(max);
            Some(step)
        }))
    }
}

/// How long a client's operations have taken lately: a moving average of the durations Neon
/// reports for finished operations (`updated_at - created_at`, both Neon's clock), which
/// [`PollPolicy::expected`] uses so that the first poll of the next operation comes when it
/// has probably ended. Shared by the clones of one client.
#[derive(Debug)]
pub struct OperationPace {
    /// Microseconds; `u64::MAX` until an operation has been seen to finish.
    micros: std::sync::atomic::AtomicU64,
}

impl Default for OperationPace {
    fn default() -> Self {
        OperationPace {
            micros: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl OperationPace {
    /// Adds an operation that took `took` (the newest counts for a quarter).
    pub fn observe(&self, took: Duration) {
        use std::sync::atomic::Ordering;
        // Longer than a day is no typical operation: cap it so the average stays meaningful.
        let took = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .min(86_400_000_000);
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == u64::MAX {
                    took
                } else {
                    (old.saturating_mul(3).saturating_add(took)) / 4
                })
            });
    }

    /// The usual duration, once one operation has been seen to finish.
    pub fn expected(&self) -> Option<Duration> {
        match self.micros.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            m => Some(Duration::from_micros(m)),
        }
    }
}

/// Polls until `step` breaks with a value: sleeps (see [`PollPolicy`] for how long), calls
/// `step` with the state the last call continued with, and so on. Starting a sleep at or
/// past `deadline` after `started` ends it with `Ok(Err((state, elapsed)))`; the last sleep
/// is cut to end at the deadline, so one more `step` is made there. An error of `step` ends
/// it at once.
pub async fn poll_until<S, T, E, F, Fut>(
    policy: PollPolicy,
    started: Instant,
    deadline: Duration,
    mut state: S,
    mut step: F,
) -> Result<Result<T, (S, Duration)>, E>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<ControlFlow<T, S>, E>>,
{
    let mut intervals = policy.intervals();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Ok(Err((state, elapsed)));
        }
        let interval = intervals.next().unwrap_or(policy.max);
        tokio::time::sleep(interval.min(deadline - elapsed)).await;
        state = match step(state).await? {
            ControlFlow::Break(done) => return Ok(Ok(done)),
            ControlFlow::Continue(state) => state,
        };
    }
}

/// Makes a project's mutation `call`; when the project is locked (a 423 other than a quota
/// one), waits for its operations with `wait_idle` and calls again, `attempts` calls in all.
/// The last 423 is returned as is; an error of `wait_idle` ends it.
pub async fn retry_when_locked<T, F, Fut, W, WFut>(
    attempts: u32,
    mut call: F,
    mut wait_idle: W,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
    W: FnMut(u32) -> WFut,
    WFut: Future<Output = Result<(), ApiError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_locked() && attempt < attempts => {
                wait_idle(attempt).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            // Too large for a Duration (`1e30`): longer than any budget, so the longest.
            return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_retry_after_gives_up_instead_of_panicking() {
        let now = chrono::Utc::now();
        assert_eq!(parse_retry_after("1e30", now), Some(Duration::MAX));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(
            parse_retry_after("2.5", now),
            Some(Duration::from_millis(2500))
        );
        let p = RetryPolicy::default();
        // A Retry-After longer than the whole budget: the error is returned, no wait.
        assert_eq!(
            p.admit(Duration::ZERO, Duration::ZERO, Some(Duration::MAX)),
            None
        );
        assert_eq!(
            p.admit(
                Duration::ZERO,
                Duration::from_secs(1),
                Some(Duration::from_secs(u64::MAX))
            ),
            None
        );
        assert!(p
            .admit(Duration::ZERO, Duration::ZERO, Some(Duration::ZERO))
            .is_some());
    }

    fn status(s: u16) -> ApiError {
        ApiError::Status {
            status: s,
            code: None,
            message: String::new(),
            request_id: None,
            route: "/x",
        }
    }

    #[test]
    fn backoff_stays_within_full_jitter_bounds() {
        let p = RetryPolicy {
            max_retries: 10,
            max_elapsed: Duration::from_secs(600),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(2));
        assert_eq!(
            p.ceiling(60),
            Duration::from_secs(2),
            "no overflow for large n"
        );
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = p.backoff(3);
            assert!(d <= Duration::from_millis(800));
            seen_low |= d < Duration::from_millis(200);
            seen_high |= d > Duration::from_millis(600);
        }
        assert!(seen_low && seen_high, "delays spread over the whole range");
    }

    const LABEL: Label<'static> = Label {
        method: "GET",
        route: "/x",
    };

    /// Runs `retry` over `errors` (one per attempt, then success), with `Retry-After` `ra`
    /// on each; returns the outcome and the attempts made.
    async fn run(p: &RetryPolicy, errors: u32, ra: Option<Duration>) -> (Result<(), u16>, u32) {
        let made = std::cell::Cell::new(0u32);
        let result = retry(
            p,
            LABEL,
            || {
                made.set(made.get() + 1);
                let fail = made.get() <= errors;
                async move {
                    if fail {
                        Err(503u16)
                    } else {
                        Ok(())
                    }
                }
            },
            |s: &u16| (*s == 503).then_some("unavailable"),
            |_| ra,
        )
        .await;
        (result, made.get())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_bounds_attempts_and_time() {
        let p = RetryPolicy {
            max_retries: 3,
            max_elapsed: Duration::from_secs(600),
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        };
        assert_eq!(run(&p, 3, None).await, (Ok(()), 4), "3 retries suffice");
        assert_eq!(run(&p, 4, None).await, (Err(503), 4), "max_retries reached");

        let p = RetryPolicy {
            max_retries: 100,
            max_elapsed: Duration::from_secs(10),
            ..p
        };
        // Retry-After is a minimum: 4 s, then 4 s more would pass 10 s with the jitter.
        let t = Instant::now();
        assert_eq!(run(&p, 1, Some(Duration::from_secs(4))).await, (Ok(()), 2));
        assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
        let t = Instant::now();
        assert_eq!(
            run(&p, 100, Some(Duration::from_secs(4))).await,
            (Err(503), 3),
            "a third retry would end after max_elapsed"
        );
        assert!(t.elapsed() >= Duration::from_secs(8), "{:?}", t.elapsed());
        assert!(p
            .admit(
                Duration::from_secs(4),
                Duration::ZERO,
                Some(Duration::from_secs(7))
            )
            .is_none());
        let d = p
            .admit(
                Duration::from_secs(4),
                Duration::from_millis(10),
                Some(Duration::from_secs(5)),
            )
            .unwrap();
        assert_eq!(d, Duration::from_millis(5010));

        // An error the classifier does not name is not retried.
        let made = std::cell::Cell::new(0u32);
        let r: Result<(), u16> = retry(
            &p,
            LABEL,
            || {
                made.set(made.get() + 1);
                async { Err(404u16) }
            },
            |s: &u16| (*s == 503).then_some("unavailable"),
            |_| None,
        )
        .await;
        assert_eq!((r, made.get()), (Err(404), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn polling_doubles_up_to_max_and_stops_at_the_deadline() {
        let policy = PollPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            expected: None,
        };
        let started = Instant::now();
        let seen = std::cell::RefCell::new(Vec::new());
        let out: Result<Result<(), (u32, Duration)>, ()> =
            poll_until(policy, started, Duration::from_secs(20), 0u32, |n| {
                seen.borrow_mut().push(started.elapsed().as_secs());
                async move { Ok(ControlFlow::Continue(n + 1)) }
            })
            .await;
        // Sleeps of 1, 2, 4, 4, 4, 4 s, and the last one cut to end at the deadline.
        assert_eq!(*seen.borrow(), vec![1, 3, 7, 11, 15, 19, 20]);
        let (n, elapsed) = out.unwrap().unwrap_err();
        assert_eq!(n, 7);
        assert!(elapsed >= Duration::from_secs(20));

        let out: Result<Result<u32, (u32, Duration)>, ()> = poll_until(
            policy,
            Instant::now(),
            Duration::from_secs(20),
            0u32,
            |n| async move {
                Ok(if n == 2 {
                    ControlFlow::Break(n)
                } else {
                    ControlFlow::Continue(n + 1)
                })
            },
        )
        .await;
        assert_eq!(out, Ok(Ok(2)));
        let out: Result<Result<u32, (u32, Duration)>, &str> = poll_until(
            policy,
            Instant::now(),
            Duration::from_secs(20),
            0u32,
            |_| async { Err("boom") },
        )
        .await;
        assert_eq!(out, Err("boom"), "an error ends the polling at once");
    }

    #[test]
    fn the_first_poll_comes_when_operations_usually_end() {
        let ms = Duration::from_millis;
        let take = |p: PollPolicy, n: usize| p.intervals().take(n).collect::<Vec<_>>();
        // Nothing known: the first poll soon, then doubling.
        let p = PollPolicy {
            initial: ms(5),
            max: ms(5_000),
            expected: None,
        };
        assert_eq!(take(p, 5), vec![ms(5), ms(10), ms(20), ms(40), ms(80)]);
        // Operations of about 2 s: the first poll at 2 s, then from a quarter of it.
        let p = PollPolicy {
            expected: Some(ms(2_000)),
            ..p
        };
        assert_eq!(take(p, 4), vec![ms(2_000), ms(1_000), ms(2_000), ms(4_000)]);
        assert_eq!(p.intervals().nth(10), Some(ms(5_000)), "capped at max");
        // Instant operations: never sooner than `initial`; longer ones: never past `max`.
        let p = PollPolicy {
            expected: Some(Duration::ZERO),
            ..p
        };
        assert_eq!(take(p, 2), vec![ms(5), ms(10)]);
        let p = PollPolicy {
            expected: Some(Duration::from_secs(60)),
            ..p
        };
        assert_eq!(take(p, 2), vec![ms(5_000), ms(2_500)]);
    }

    #[test]
    fn the_pace_follows_what_operations_took() {
        let pace = OperationPace::default();
        assert_eq!(pace.expected(), None, "nothing seen yet");
        pace.observe(Duration::from_millis(2_000));
        assert_eq!(pace.expected(), Some(Duration::from_millis(2_000)));
        pace.observe(Duration::ZERO);
        assert_eq!(pace.expected(), Some(Duration::from_millis(1_500)));
        for _ in 0..40 {
            pace.observe(Duration::from_millis(100));
        }
        let e = pace.expected().unwrap();
        assert!(
            e >= Duration::from_millis(100) && e < Duration::from_millis(101),
            "{e:?}"
        );
        pace.observe(Duration::MAX);
        assert!(pace.expected().unwrap() <= Duration::from_secs(86_400));
    }

    fn locked(code: Option<&str>) -> ApiError {
        ApiError::Status {
            status: 423,
            code: code.map(Into::into),
            message: String::new(),
            request_id: None,
            route: "/x",
        }
    }

    #[tokio::test]
    async fn a_locked_call_is_waited_on_and_repeated_a_bounded_number_of_times() {
        let calls = std::cell::Cell::new(0u32);
        let waits = std::cell::Cell::new(0u32);
        let r: Result<(), ApiError> = retry_when_locked(
            3,
            || {
                calls.set(calls.get() + 1);
                async { Err(locked(None)) }
            },
            |_| {
                waits.set(waits.get() + 1);
                async { Ok(()) }
            },
        )
        .await;
        assert!(r.unwrap_err().is_locked());
        assert_eq!((calls.get(), waits.get()), (3, 2));

        calls.set(0);
        waits.set(0);
        let r = retry_when_locked(
            3,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 2 {
                        Err(locked(None))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| {
                waits.set(waits.get() + 1);
                async { Ok(()) }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(waits.get(), 1);

        // A quota 423 is neither waited on nor repeated.
        calls.set(0);
        waits.set(0);
        let r: Result<(), ApiError> = retry_when_locked(
            3,
            || {
                calls.set(calls.get() + 1);
                async { Err(locked(Some("QUOTA_EXCEEDED"))) }
            },
            |_| {
                waits.set(waits.get() + 1);
                async { Ok(()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!((calls.get(), waits.get()), (1, 0));
    }

    #[test]
    fn what_is_retried() {
        for s in [429, 503] {
            assert!(retry_reason(&status(s), false).is_some(), "{s} always");
        }
        // 423 is the jobs' to wait on (`retry_when_locked`), not the client's to retry.
        assert_eq!(retry_reason(&status(423), true), None);
        assert_eq!(retry_reason(&locked(None), true), None);
        assert_eq!(retry_reason(&status(500), true), Some("server_error"));
        assert_eq!(
            retry_reason(&status(500), false),
            None,
            "POST 500 not blindly"
        );
        assert_eq!(retry_reason(&status(404), true), None);
        assert_eq!(retry_reason(&status(400), true), None);
        let t = ApiError::Timeout {
            route: "/x",
            request_id: "r".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(retry_reason(&t, true), Some("timeout"));
        assert_eq!(retry_reason(&t, false), None);
        let c = ApiError::Connect {
            route: "/x",
            detail: String::new(),
        };
        assert_eq!(retry_reason(&c, false), Some("connect"));
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 00:00:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
