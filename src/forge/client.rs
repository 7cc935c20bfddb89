//! The forge's HTTP client: one paged listing per run, politely.
//!
//! Every request goes through [`crate::neon::retry::retry`] (the same loop and schedule as
//! Neon's client: bounded full-jitter backoff, `Retry-After` as a minimum, a total budget),
//! retrying 5xx, 429, a 403 that is a rate limit (GitHub's primary and secondary limits),
//! timeouts and connection failures; anything else fails at once. Between pages, a spent
//! quota (`X-RateLimit-Remaining: 0` / GitLab's `RateLimit-Remaining: 0`) waits for its
//! `Reset` when that is within the budget and fails otherwise, rather than sending a
//! request the forge will refuse. A `next` link must stay on the API's origin (the token
//! is never sent elsewhere). The token is sent in a header marked sensitive and appears in
//! no error.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Url;

use super::{ForgeConfig, ForgeError, ForgeKind, PullRequest};
use crate::neon::retry::{parse_retry_after, retry, Label, RetryPolicy};

/// More pages than this in one listing is a runaway (100,000 pull requests updated since the
/// last run); the listing fails instead.
pub const MAX_PAGES: u32 = 1000;
/// Largest page body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct ForgeClient {
    cfg: ForgeConfig,
    http: reqwest::Client,
    policy: RetryPolicy,
    requests: AtomicU32,
}

impl ForgeClient {
    pub fn new(cfg: &ForgeConfig) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("neon-steward/", env!("CARGO_PKG_VERSION")))
            // Redirects would carry the token to wherever they point.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForgeError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(ForgeClient {
            cfg: cfg.clone(),
            http,
            policy: RetryPolicy {
                max_retries: cfg.max_retries,
                ..RetryPolicy::default()
            },
            requests: AtomicU32::new(0),
        })
    }

    /// Requests sent so far (each attempt counts).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every pull request of the repository updated at or after `since` (all of them
    /// without), newest first, page by page.
    pub async fn list_updated_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<PullRequest>, ForgeError> {
        if self.cfg.token.is_none() {
            return Err(ForgeError::NoToken(self.cfg.token_source.clone()));
        }
        let base = Url::parse(&self.cfg.api_url)
            .map_err(|e| ForgeError::Config(format!("api_url: {e}")))?;
        let mut url = match self.cfg.kind {
            ForgeKind::Github => super::github::first_page(&base, &self.cfg.repository)?,
            ForgeKind::Gitlab => super::gitlab::first_page(&base, &self.cfg.repository, since)?,
        };
        let mut out = Vec::new();
        for page_no in 1..=MAX_PAGES {
            let (headers, body) = self.get(&url).await?;
            let page = match self.cfg.kind {
                ForgeKind::Github => super::github::parse_page(&headers, &body)?,
                ForgeKind::Gitlab => super::gitlab::parse_page(&url, &headers, &body)?,
            };
            // Newest first: the first one older than `since` ends the listing.
            let mut reached_older = false;
            for p in page.pulls {
                if since.is_some_and(|s| p.updated_at < s) {
                    reached_older = true;
                    continue;
                }
                out.push(p);
            }
            let Some(next) = page.next else {
                return Ok(out);
            };
            if reached_older {
                return Ok(out);
            }
            if next.origin() != base.origin() {
                return Err(ForgeError::Decode(format!(
                    "the next page is on another host ({}); not followed",
                    next.origin().ascii_serialization()
                )));
            }
            self.wait_for_quota(&headers).await?;
            tracing::debug!(forge = self.cfg.kind.as_str(), repository = %self.cfg.repository, page = page_no + 1, "listing the next page of pull requests");
            url = next;
        }
        Err(ForgeError::Decode(format!(
            "more than {MAX_PAGES} pages of pull requests; listing stopped"
        )))
    }

    /// A spent quota: wait for its reset if the retry budget allows, else fail now.
    async fn wait_for_quota(&self, headers: &HeaderMap) -> Result<(), ForgeError> {
        if header_u64(headers, &["x-ratelimit-remaining", "ratelimit-remaining"]) != Some(0) {
            return Ok(());
        }
        let wait = reset_wait(headers, Utc::now()).unwrap_or(Duration::from_secs(60));
        if wait > self.policy.max_elapsed {
            return Err(ForgeError::RateLimited { wait: Some(wait) });
        }
        tracing::info!(
            forge = self.cfg.kind.as_str(),
            wait_s = wait.as_secs(),
            "forge rate limit spent; waiting for its reset"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn get(&self, url: &Url) -> Result<(HeaderMap, Vec<u8>), ForgeError> {
        let route = match self.cfg.kind {
            ForgeKind::Github => "/repos/{owner}/{repo}/pulls",
            ForgeKind::Gitlab => "/projects/{id}/merge_requests",
        };
        retry(
            &self.policy,
            Label {
                method: "GET",
                route,
            },
            || self.attempt(url),
            |e: &ForgeError| e.retry_reason(),
            |e: &ForgeError| e.retry_after(),
        )
        .await
    }

    async fn attempt(&self, url: &Url) -> Result<(HeaderMap, Vec<u8>), ForgeError> {
        let Some(token) = &self.cfg.token else {
            return Err(ForgeError::NoToken(self.cfg.token_source.clone()));
        };
        let mut req = self.http.get(url.clone());
        let (name, value) = match self.cfg.kind {
            ForgeKind::Github => ("authorization", format!("Bearer {}", token.expose())),
            ForgeKind::Gitlab => ("private-token", token.expose().to_string()),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| ForgeError::Config("the token cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        req = req.header(name, value);
        if self.cfg.kind == ForgeKind::Github {
            req = req
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28");
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if (200..300).contains(&status) {
            let body = resp.bytes().await.map_err(|e| self.transport(e))?;
            if body.len() > MAX_BODY {
                return Err(ForgeError::Decode(format!(
                    "a page of {} bytes (at most {MAX_BODY})",
                    body.len()
                )));
            }
            return Ok((headers, body.to_vec()));
        }
        Err(self.status_error(status, &headers))
    }

    fn transport(&self, e: reqwest::Error) -> ForgeError {
        // Without the URL: it is the configured one, and errors are logged with the job.
        let e = e.without_url();
        if e.is_timeout() {
            ForgeError::Timeout(self.cfg.timeout)
        } else if e.is_connect() {
            ForgeError::Connect(e.to_string())
        } else {
            ForgeError::Transport(e.to_string())
        }
    }

    fn status_error(&self, status: u16, headers: &HeaderMap) -> ForgeError {
        let now = Utc::now();
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let spent =
            header_u64(headers, &["x-ratelimit-remaining", "ratelimit-remaining"]) == Some(0);
        if status == 429 || (status == 403 && (spent || retry_after.is_some())) {
            return ForgeError::RateLimited {
                wait: retry_after.or_else(|| reset_wait(headers, now)),
            };
        }
        let (kind, repo) = (self.cfg.kind.display(), &self.cfg.repository);
        let message = match status {
            401 => format!(
                "{kind} refused the token (401 Unauthorized); check the token in {}",
                self.cfg.token_source
            ),
            403 => format!("{kind} denied access to {repo} (403 Forbidden)"),
            404 => format!(
                "{kind} has no repository {repo}, or the token cannot see it (404 Not Found)"
            ),
            s => format!("{kind} answered {s}"),
        };
        ForgeError::Status { status, message }
    }
}

fn header_u64(headers: &HeaderMap, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| {
        headers
            .get(*n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    })
}

/// How long until a rate-limit window resets (`X-RateLimit-Reset` / `RateLimit-Reset`, Unix
/// seconds).
fn reset_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let reset = header_u64(headers, &["x-ratelimit-reset", "ratelimit-reset"])?;
    let reset = i64::try_from(reset).ok()?;
    Some(Duration::from_secs(
        u64::try_from(reset.saturating_sub(now.timestamp())).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_is_relative_to_now_and_never_negative() {
        let now = Utc::now();
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&(now.timestamp() + 30).to_string()).unwrap(),
        );
        assert_eq!(reset_wait(&h, now), Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("5"));
        assert_eq!(reset_wait(&h, now), Some(Duration::ZERO));
        assert_eq!(reset_wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn what_is_retried() {
        let s = |status| ForgeError::Status {
            status,
            message: String::new(),
        };
        assert_eq!(s(502).retry_reason(), Some("server_error"));
        assert_eq!(s(503).retry_reason(), Some("unavailable"));
        for st in [400, 401, 403, 404, 422] {
            assert_eq!(s(st).retry_reason(), None, "{st}");
        }
        let rl = ForgeError::RateLimited {
            wait: Some(Duration::from_secs(3)),
        };
        assert_eq!(rl.retry_reason(), Some("rate_limited"));
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(ForgeError::NoToken("x".into()).retry_reason(), None);
    }
}
