//! Pull and merge requests on a code forge (GitHub, GitLab): what `expire_branches`'
//! `pull_request = "closed"` condition asks about a preview branch.
//!
//! - [`BranchMapping`]: how a Neon branch name maps to its pull request (a number, or the
//!   head ref), compiled once when the policy is read.
//! - [`ForgeClient`] (`client.rs`): one listing of the repository's pull requests per run,
//!   paged (`github.rs`, `gitlab.rs` hold each forge's URLs and response shapes), only those
//!   updated since the previous run's cursor, under the same retry discipline as Neon's
//!   client (`neon::retry`: bounded full-jitter backoff, `Retry-After` as a minimum) plus
//!   the forges' own `X-RateLimit-*` headers.
//! - [`KnownPulls`]: what the job has learnt about the repository's pull requests over its
//!   runs (state, head ref, when closed), kept in the job's state and brought up to date
//!   by each listing; [`Lookup`] answers a branch's question from it, failing closed.

mod client;
mod error;
mod github;
mod gitlab;
mod mapping;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use client::ForgeClient;
pub use error::ForgeError;
pub use mapping::{BranchMapping, MappingError, PullKey};

use crate::secret::Secret;

/// Which forge a repository is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForgeKind {
    /// GitHub or GitHub Enterprise Server (pull requests).
    Github,
    /// GitLab.com or self-managed GitLab (merge requests).
    Gitlab,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
        }
    }
    /// How people write it in prose.
    pub fn display(self) -> &'static str {
        match self {
            ForgeKind::Github => "GitHub",
            ForgeKind::Gitlab => "GitLab",
        }
    }
    /// The API root when the policy gives no `api_url`.
    pub fn default_api_url(self) -> &'static str {
        match self {
            ForgeKind::Github => "https://api.github.com",
            ForgeKind::Gitlab => "https://gitlab.com/api/v4",
        }
    }
    /// The environment variable that overrides `api_url` (as `NEON_STEWARD_BASE_URL` does
    /// for Neon): for a CI mirror, or `demo`'s fake forge.
    pub fn api_url_env(self) -> &'static str {
        match self {
            ForgeKind::Github => "NEON_STEWARD_GITHUB_API_URL",
            ForgeKind::Gitlab => "NEON_STEWARD_GITLAB_API_URL",
        }
    }
    /// "pull request" / "merge request".
    pub fn noun(self) -> &'static str {
        match self {
            ForgeKind::Github => "pull request",
            ForgeKind::Gitlab => "merge request",
        }
    }
    /// "pull request #12" / "merge request !12".
    pub fn name_of(self, number: u64) -> String {
        match self {
            ForgeKind::Github => format!("pull request #{number}"),
            ForgeKind::Gitlab => format!("merge request !{number}"),
        }
    }
}

/// `[jobs.forge]`, validated.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// `owner/name` (GitHub) or `group/.../name` (GitLab).
    pub repository: String,
    /// The API root, without a trailing `/`.
    pub api_url: String,
    /// `None`: none of the configured sources had one (the condition then keeps every
    /// branch it maps, with that reason; `validate` warns).
    pub token: Option<Secret>,
    /// Where the token is looked for, for messages (never the token).
    pub token_source: String,
    pub branch: BranchMapping,
    /// Retries of one forge request (5xx, 429, connection failures).
    pub max_retries: u32,
    /// One request's timeout.
    pub timeout: std::time::Duration,
}

/// A pull request's state, as far as branches care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    /// Open, draft or (GitLab) locked: its preview branch is in use.
    Open,
    Closed,
    Merged,
}

/// One pull request as a listing returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequest {
    pub number: u64,
    pub state: PullState,
    pub head_ref: String,
    pub updated_at: DateTime<Utc>,
    /// When it was merged or closed (`None` while open).
    pub ended_at: Option<DateTime<Utc>>,
}

/// Pull requests asked for per page (both forges' maximum).
pub const PER_PAGE: u32 = 100;

/// One page as the forge-specific code reads it.
struct Page {
    pub pulls: Vec<PullRequest>,
    pub next: Option<reqwest::Url>,
}

/// What the job knows of one pull request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownPull {
    #[serde(rename = "s")]
    pub state: PullState,
    #[serde(rename = "r")]
    pub head_ref: String,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// The job's record of a repository's pull requests (job state
/// `forge_pulls/{forge}/{repository}`): every pull request seen, and the newest `updated_at`
/// seen, from which the next listing starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnownPulls {
    pub cursor: Option<DateTime<Utc>>,
    pub pulls: BTreeMap<u64, KnownPull>,
}

impl KnownPulls {
    /// The state key of a repository's record.
    pub fn state_key(cfg: &ForgeConfig) -> String {
        format!("forge_pulls/{}/{}", cfg.kind.as_str(), cfg.repository)
    }

    /// Brings the record up to date with a listing of what changed since its cursor (a
    /// reopened pull request is open again). A pure function of the record it is given, so
    /// it can be re-applied to a record another run wrote meanwhile.
    pub fn apply(&mut self, listed: &[PullRequest]) {
        for p in listed {
            self.pulls.insert(
                p.number,
                KnownPull {
                    state: p.state,
                    head_ref: p.head_ref.clone(),
                    ended_at: p.ended_at,
                },
            );
        }
        if let Some(newest) = listed.iter().map(|p| p.updated_at).max() {
            self.cursor = Some(self.cursor.map_or(newest, |c| c.max(newest)));
        }
    }
}

/// What the condition learns about one branch's pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullStatus {
    /// Merged or closed: the preview branch may go. The text names it ("pull request #123
    /// merged 2026-12-01T10:00Z").
    Ended(String),
    /// Still open (or one of the pull requests from that head ref is).
    Open(String),
    /// Not found, or the forge could not be read: the branch is kept, with this reason.
    Unknown(String),
}

/// A run's answers about pull requests: the up-to-date record, or why there is none (the
/// forge could not be listed, its token is missing, the job's record cannot be read).
#[derive(Debug, Clone)]
pub struct Lookup {
    pub kind: ForgeKind,
    pub repository: String,
    pub known: Result<KnownPulls, String>,
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

impl Lookup {
    /// The status of the pull request `key` names. Fails closed: a pull request that is not
    /// known, or a forge that could not be read, is [`PullStatus::Unknown`].
    pub fn status(&self, key: &PullKey) -> PullStatus {
        let (kind, repo) = (self.kind, &self.repository);
        let known = match &self.known {
            Ok(k) => k,
            Err(why) => {
                return PullStatus::Unknown(format!(
                    "{} cannot be read from {} ({why}); kept",
                    key.describe(kind),
                    kind.display()
                ))
            }
        };
        let ended = |n: u64, p: &KnownPull| {
            let verb = if p.state == PullState::Merged {
                "merged"
            } else {
                "closed"
            };
            match p.ended_at {
                Some(t) => format!("{} {verb} {}", kind.name_of(n), minute(t)),
                None => format!("{} {verb}", kind.name_of(n)),
            }
        };
        match key {
            PullKey::Number(n) => match known.pulls.get(n) {
                None => PullStatus::Unknown(format!(
                    "{} is not among the {}s of {repo} on {}; kept",
                    kind.name_of(*n),
                    kind.noun(),
                    kind.display()
                )),
                Some(p) if p.state == PullState::Open => {
                    PullStatus::Open(format!("{} is open", kind.name_of(*n)))
                }
                Some(p) => PullStatus::Ended(ended(*n, p)),
            },
            PullKey::Ref(r) => {
                let from: Vec<(u64, &KnownPull)> = known
                    .pulls
                    .iter()
                    .filter(|(_, p)| p.head_ref == *r)
                    .map(|(n, p)| (*n, p))
                    .collect();
                if let Some((n, _)) = from.iter().find(|(_, p)| p.state == PullState::Open) {
                    return PullStatus::Open(format!("{} from `{r}` is open", kind.name_of(*n)));
                }
                // Every one from this ref has ended: the latest to end names the branch.
                match from.iter().max_by_key(|(n, p)| (p.ended_at, *n)) {
                    Some((n, p)) => PullStatus::Ended(format!("{} (from `{r}`)", ended(*n, p))),
                    None => PullStatus::Unknown(format!(
                        "no {} of {repo} on {} has the head ref `{r}`; kept",
                        kind.noun(),
                        kind.display()
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap()
    }
    fn pr(number: u64, state: PullState, head: &str, updated: u32) -> PullRequest {
        PullRequest {
            number,
            state,
            head_ref: head.into(),
            updated_at: t(updated),
            ended_at: (state != PullState::Open).then(|| t(updated)),
        }
    }
    fn lookup(known: KnownPulls) -> Lookup {
        Lookup {
            kind: ForgeKind::Github,
            repository: "acme/web".into(),
            known: Ok(known),
        }
    }

    #[test]
    fn listing_updates_the_record_and_a_reopened_pull_request_is_open_again() {
        let mut k = KnownPulls::default();
        k.apply(&[
            pr(1, PullState::Merged, "feat-a", 10),
            pr(2, PullState::Closed, "feat-b", 9),
            pr(3, PullState::Open, "feat-c", 8),
        ]);
        assert_eq!(k.cursor, Some(t(10)));
        let l = lookup(k.clone());
        assert_eq!(
            l.status(&PullKey::Number(1)),
            PullStatus::Ended("pull request #1 merged 2026-12-01T10:00Z".into())
        );
        assert!(matches!(l.status(&PullKey::Number(3)), PullStatus::Open(_)));
        assert!(
            matches!(l.status(&PullKey::Number(4)), PullStatus::Unknown(ref w) if w.contains("#4 is not among the pull requests of acme/web")),
            "{:?}",
            l.status(&PullKey::Number(4))
        );
        // #2 reopened later; an empty listing keeps the cursor.
        k.apply(&[pr(2, PullState::Open, "feat-b", 11)]);
        k.apply(&[]);
        assert_eq!(k.cursor, Some(t(11)));
        assert!(matches!(
            lookup(k).status(&PullKey::Number(2)),
            PullStatus::Open(_)
        ));
    }

    #[test]
    fn by_head_ref_any_open_pull_request_keeps_the_branch() {
        let mut k = KnownPulls::default();
        k.apply(&[
            pr(1, PullState::Closed, "feat", 8),
            pr(2, PullState::Merged, "feat", 9),
            pr(3, PullState::Closed, "other", 9),
        ]);
        let l = lookup(k.clone());
        match l.status(&PullKey::Ref("feat".into())) {
            PullStatus::Ended(w) => assert!(w.starts_with("pull request #2 merged"), "{w}"),
            other => panic!("{other:?}"),
        }
        k.apply(&[pr(4, PullState::Open, "feat", 12)]);
        assert!(matches!(
            lookup(k).status(&PullKey::Ref("feat".into())),
            PullStatus::Open(_)
        ));
        assert!(matches!(
            l.status(&PullKey::Ref("nope".into())),
            PullStatus::Unknown(_)
        ));
    }

    #[test]
    fn an_unreadable_forge_is_unknown_never_ended() {
        let l = Lookup {
            kind: ForgeKind::Gitlab,
            repository: "g/p".into(),
            known: Err("503 after 4 retries".into()),
        };
        match l.status(&PullKey::Number(7)) {
            PullStatus::Unknown(w) => {
                assert!(
                    w.contains("merge request !7 cannot be read from GitLab"),
                    "{w}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
