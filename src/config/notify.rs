//! `[[notify]]`: where notifications go (webhook or Slack), and which events each sink and
//! each job sends. A sink's URL and signing key are secrets: they come from a file, an
//! environment variable or a systemd credential, never from the policy file, and are held
//! in [`Secret`]s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::describe::Forbidden;
use super::scalar::PositiveDur;
use super::{ConfigError, JobConfig, Validator};
use crate::secret::Secret;

/// What a sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A JSON body signed as the Standard Webhooks specification says (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`).
    Webhook,
    /// A Slack incoming webhook: a message a person can read.
    Slack,
}

/// What a notification reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A run ended `failed` or `partial`.
    RunFailed,
    /// A plan was refused by `max_actions` or `max_actions_percent` (nothing was done).
    LimitRefused,
    /// Resources were marked under a job's `notice` and will be acted on when it ends.
    Notice,
    /// What a run destroyed or changed (sent only when it did something).
    Digest,
    /// An `enforce_budget` threshold was crossed (its `notify` action): sent once per
    /// budget, threshold and month.
    Budget,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::RunFailed,
        NotifyEvent::LimitRefused,
        NotifyEvent::Notice,
        NotifyEvent::Digest,
        NotifyEvent::Budget,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RunFailed => "run_failed",
            NotifyEvent::LimitRefused => "limit_refused",
            NotifyEvent::Notice => "notice",
            NotifyEvent::Digest => "digest",
            NotifyEvent::Budget => "budget",
        }
    }
}

/// The default `timeout` of a delivery.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `give_up_after`.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(86_400);

/// One `[[notify]]` sink, validated.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: NotifyKind,
    /// Where to POST (a secret: a Slack webhook URL is a credential).
    pub url: Secret,
    /// `webhook` only: the Standard Webhooks key, decoded from `whsec_<base64>`.
    pub key: Option<SigningKey>,
    pub events: Vec<NotifyEvent>,
    /// Only these jobs' events (absent: every job's).
    pub jobs: Option<Vec<String>>,
    pub timeout: Duration,
    pub give_up_after: Duration,
}

/// The bytes of a Standard Webhooks signing key. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Decodes `whsec_<base64>` (the prefix is optional, as the specification allows).
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not `whsec_` followed by base64".to_string())?;
        if bytes.len() < 24 || bytes.len() > 64 {
            return Err(format!(
                "decodes to {} bytes; a Standard Webhooks key has 24 to 64",
                bytes.len()
            ));
        }
        Ok(SigningKey(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which sink a job's event goes to (computed once, when the policy is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRoute {
    pub sink: String,
    pub events: Vec<NotifyEvent>,
    pub give_up_after: Duration,
}

impl JobConfig {
    /// The sinks that get this job's `event`, with how long each may take to deliver it.
    pub fn routes_for(&self, event: NotifyEvent) -> impl Iterator<Item = &NotifyRoute> {
        self.notify
            .iter()
            .filter(move |r| r.events.contains(&event))
    }
}

/// `[[notify]]`: a notification sink. The URL and the signing key come from a file
/// (`*_file`), an environment variable (`*_env`) or a systemd credential (`*_credential`),
/// exactly one of each, and never from this file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notify")]
pub struct RawNotify {
    /// Unique name of the sink (the `sink` label of `neon_steward_notifications_total`).
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: Spanned<String>,
    /// `webhook` (signed JSON) or `slack` (an incoming-webhook message).
    #[schemars(with = "NotifyKind")]
    pub kind: Spanned<NotifyKind>,
    /// A file holding the URL to POST to (relative paths are relative to this file).
    pub url_file: Option<PathBuf>,
    /// An environment variable holding the URL.
    pub url_env: Option<String>,
    /// A systemd credential (in `$CREDENTIALS_DIRECTORY`) holding the URL.
    pub url_credential: Option<String>,
    /// Not allowed: a URL written here (a Slack webhook URL is a credential) would leak with
    /// the file. Use `url_file`, `url_env` or `url_credential`.
    #[schemars(with = "Option<Forbidden>")]
    pub url: Option<Spanned<IgnoredAny>>,
    /// `webhook` only (and required there): a file holding the signing key,
    /// `whsec_<base64>`.
    pub secret_file: Option<PathBuf>,
    /// `webhook` only: an environment variable holding the signing key.
    pub secret_env: Option<String>,
    /// `webhook` only: a systemd credential holding the signing key.
    pub secret_credential: Option<String>,
    /// Not allowed: use `secret_file`, `secret_env` or `secret_credential`.
    #[schemars(with = "Option<Forbidden>")]
    pub secret: Option<Spanned<IgnoredAny>>,
    /// The events this sink gets. Absent: all of them.
    #[schemars(with = "Option<Vec<NotifyEvent>>")]
    pub events: Option<Spanned<Vec<NotifyEvent>>>,
    /// Only these jobs' events. Absent: every job's.
    #[schemars(with = "Option<Vec<String>>")]
    pub jobs: Option<Spanned<Vec<String>>>,
    /// Timeout of one delivery (at most 60s).
    #[schemars(with = "Option<PositiveDur>", extend("default" = "10s"))]
    pub timeout: Option<Spanned<PositiveDur>>,
    /// A notification not delivered this long after it was written is given up (recorded
    /// `failed` in the outbox). Retries back off from 5s to 10m.
    #[schemars(with = "Option<PositiveDur>", extend("default" = "24h"))]
    pub give_up_after: Option<Spanned<PositiveDur>>,
}

const MAX_NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

impl Validator<'_> {
    pub(super) fn sinks(&self, raw: Vec<RawNotify>) -> Result<Vec<SinkConfig>, ConfigError> {
        let mut out: Vec<SinkConfig> = Vec::new();
        for n in raw {
            let name = n.name.get_ref().clone();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(self.err(
                    n.name.span(),
                    format!("invalid sink name `{name}`: use letters, digits, `-`, `_` or `.` (it is a metric label)"),
                ));
            }
            if out.iter().any(|s| s.name == name) {
                return Err(self.err(
                    n.name.span(),
                    format!("duplicate [[notify]] name `{name}`; sink names must be unique"),
                ));
            }
            let kind = *n.kind.get_ref();
            if let Some(u) = &n.url {
                return Err(self.err(
                    u.span(),
                    format!("`url` is not allowed in the policy file (a webhook URL is a credential and would leak with the file); give sink `{name}` `url_file`, `url_env` or `url_credential`"),
                ));
            }
            if let Some(s) = &n.secret {
                return Err(self.err(
                    s.span(),
                    format!("`secret` is not allowed in the policy file (it would leak with the file); give sink `{name}` `secret_file`, `secret_env` or `secret_credential`"),
                ));
            }
            let what = format!("the URL of sink `{name}`");
            let url = self
                .sink_secret(
                    n.name.span(),
                    &what,
                    "url",
                    (&n.url_file, &n.url_env, &n.url_credential),
                )?
                .ok_or_else(|| {
                    self.err(
                        n.name.span(),
                        format!("sink `{name}` has no URL: give `url_file`, `url_env` or `url_credential`"),
                    )
                })?;
            check_sink_url(url.expose())
                .map_err(|why| self.err(n.name.span(), format!("{what} {why}")))?;
            let secret_what = format!("the signing key of sink `{name}`");
            let secret = self.sink_secret(
                n.name.span(),
                &secret_what,
                "secret",
                (&n.secret_file, &n.secret_env, &n.secret_credential),
            )?;
            let key = match (kind, secret) {
                (NotifyKind::Webhook, Some(s)) => Some(
                    SigningKey::parse(s.expose())
                        .map_err(|why| self.err(n.name.span(), format!("{secret_what} {why}")))?,
                ),
                (NotifyKind::Webhook, None) => {
                    return Err(self.err(
                        n.name.span(),
                        format!("webhook sink `{name}` needs a signing key (`whsec_...`): give `secret_file`, `secret_env` or `secret_credential`"),
                    ))
                }
                (NotifyKind::Slack, Some(_)) => {
                    return Err(self.err(
                        n.name.span(),
                        format!("sink `{name}` is `slack`, which is not signed: remove its `secret_*` key"),
                    ))
                }
                (NotifyKind::Slack, None) => None,
            };
            let mut events = n
                .events
                .as_ref()
                .map_or_else(|| NotifyEvent::ALL.to_vec(), |e| e.get_ref().clone());
            events.sort();
            events.dedup();
            let timeout = match &n.timeout {
                Some(t) => self.at_most(
                    t.get_ref().0,
                    t.span(),
                    MAX_NOTIFY_TIMEOUT,
                    "60s",
                    "the sink's `timeout`",
                )?,
                None => DEFAULT_NOTIFY_TIMEOUT,
            };
            out.push(SinkConfig {
                name,
                kind,
                url,
                key,
                events,
                jobs: n.jobs.as_ref().map(|j| j.get_ref().clone()),
                timeout,
                give_up_after: n
                    .give_up_after
                    .as_ref()
                    .map_or(DEFAULT_GIVE_UP_AFTER, |g| g.get_ref().0),
            });
        }
        Ok(out)
    }

    /// Exactly one of a file, an environment variable or a systemd credential.
    fn sink_secret(
        &self,
        span: std::ops::Range<usize>,
        what: &str,
        key: &str,
        (file, env, credential): (&Option<PathBuf>, &Option<String>, &Option<String>),
    ) -> Result<Option<Secret>, ConfigError> {
        let given = [file.is_some(), env.is_some(), credential.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given > 1 {
            return Err(self.err(
                span,
                format!(
                    "{what}: give only one of `{key}_file`, `{key}_env` and `{key}_credential`"
                ),
            ));
        }
        if let Some(f) = file {
            return self.read_secret_file(what, f).map(Some);
        }
        if let Some(var) = env {
            let v = self.env(var).ok_or_else(|| {
                self.err(
                    span.clone(),
                    format!("{what}: the environment variable {var} (`{key}_env`) is not set"),
                )
            })?;
            crate::secret::check_token_shape(v.trim())
                .map_err(|why| self.err(span.clone(), format!("{what} in {var} {why}")))?;
            return Ok(Some(Secret::new(v.trim())));
        }
        if let Some(name) = credential {
            let dir = self.env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                self.err(
                    span.clone(),
                    format!("{what}: `{key}_credential` needs systemd's $CREDENTIALS_DIRECTORY (LoadCredential=), which is not set"),
                )
            })?;
            return self
                .read_secret_file(what, &Path::new(&dir).join(name))
                .map(Some);
        }
        Ok(None)
    }

    /// The routes of one job, from the sinks that take its events.
    pub(super) fn routes(
        &self,
        sinks: &[SinkConfig],
        job: &str,
        job_events: Option<&[NotifyEvent]>,
    ) -> Vec<NotifyRoute> {
        sinks
            .iter()
            .filter(|s| s.jobs.as_ref().is_none_or(|j| j.iter().any(|n| n == job)))
            .map(|s| NotifyRoute {
                sink: s.name.clone(),
                events: s
                    .events
                    .iter()
                    .copied()
                    .filter(|e| job_events.is_none_or(|j| j.contains(e)))
                    .collect(),
                give_up_after: s.give_up_after,
            })
            .filter(|r| !r.events.is_empty())
            .collect()
    }
}

/// A sink URL must be https, or plain http to a loopback host. The URL itself is never
/// shown (a Slack webhook URL is a credential).
fn check_sink_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = url.host_str().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if loopback {
                Ok(())
            } else {
                Err("uses plain http to a host that is not loopback; use https".into())
            }
        }
        other => Err(format!("has scheme `{other}`; expected https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_decode_and_never_show() {
        let k = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(k.expose().len(), 24);
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert!(SigningKey::parse("whsec_not base64!").is_err());
        assert!(SigningKey::parse("whsec_AAAA").is_err(), "too short");
    }

    #[test]
    fn sink_urls_are_https_or_loopback_and_not_shown() {
        assert!(check_sink_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(check_sink_url("http://127.0.0.1:9/x").is_ok());
        let e = check_sink_url("http://example.com/secret-path").unwrap_err();
        assert!(!e.contains("secret-path"), "{e}");
        assert!(check_sink_url("ftp://x").is_err());
    }
}
