//! GitHub's pull request listing: `GET /repos/{owner}/{repo}/pulls?state=all&sort=updated
//! &direction=desc&per_page=100`, pages linked by `Link: <...>; rel="next"`. GitHub has no
//! `since` on this endpoint, so the listing is read newest-updated first until a pull
//! request older than the cursor (see `ForgeClient::list_updated_since`).

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::Url;
use serde::Deserialize;

use super::{ForgeError, Page, PullRequest, PullState, PER_PAGE};

pub(super) fn first_page(base: &Url, repository: &str) -> Result<Url, ForgeError> {
    let (owner, name) = repository.split_once('/').ok_or_else(|| {
        ForgeError::Config(format!("repository `{repository}` is not owner/name"))
    })?;
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|_| ForgeError::Config("api_url cannot have a path".into()))?
        .pop_if_empty()
        .extend(["repos", owner, name, "pulls"]);
    url.query_pairs_mut()
        .append_pair("state", "all")
        .append_pair("sort", "updated")
        .append_pair("direction", "desc")
        .append_pair("per_page", &PER_PAGE.to_string());
    Ok(url)
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    state: String,
    merged_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    head: Head,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "ref")]
    git_ref: String,
}

pub(super) fn parse_page(headers: &HeaderMap, body: &[u8]) -> Result<Page, ForgeError> {
    let pulls: Vec<Pull> = serde_json::from_slice(body)
        .map_err(|e| ForgeError::Decode(format!("a page of pull requests: {e}")))?;
    let pulls = pulls
        .into_iter()
        .map(|p| {
            // Anything but a plain "closed" keeps the branch (fail closed).
            let state = match (p.state.as_str(), p.merged_at) {
                ("closed", Some(_)) => PullState::Merged,
                ("closed", None) => PullState::Closed,
                _ => PullState::Open,
            };
            PullRequest {
                number: p.number,
                state,
                head_ref: p.head.git_ref,
                updated_at: p.updated_at,
                ended_at: match state {
                    PullState::Open => None,
                    _ => p.merged_at.or(p.closed_at),
                },
            }
        })
        .collect();
    Ok(Page {
        pulls,
        next: next_link(headers)?,
    })
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Result<Option<Url>, ForgeError> {
    let Some(link) = headers.get("link") else {
        return Ok(None);
    };
    let link = link
        .to_str()
        .map_err(|_| ForgeError::Decode("a Link header that is not text".into()))?;
    for part in link.split(',') {
        let mut fields = part.split(';');
        let target = fields.next().unwrap_or("").trim();
        let is_next = fields.any(|f| {
            let f = f.trim();
            f == "rel=\"next\"" || f == "rel=next"
        });
        if is_next {
            let target = target
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .ok_or_else(|| ForgeError::Decode(format!("a Link header entry `{target}`")))?;
            return Url::parse(target)
                .map(Some)
                .map_err(|e| ForgeError::Decode(format!("the next page's URL: {e}")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn pages_and_states() {
        let body = br#"[
          {"number": 3, "state": "open", "merged_at": null, "closed_at": null,
           "updated_at": "2026-12-01T10:00:00Z", "head": {"ref": "feat/c"}},
          {"number": 2, "state": "closed", "merged_at": "2026-12-01T09:00:00Z",
           "closed_at": "2026-12-01T09:00:00Z", "updated_at": "2026-12-01T09:00:00Z",
           "head": {"ref": "feat/b"}, "title": "ignored"},
          {"number": 1, "state": "closed", "merged_at": null, "closed_at": "2026-11-30T09:00:00Z",
           "updated_at": "2026-11-30T09:00:00Z", "head": {"ref": "feat/a"}}
        ]"#;
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/pulls?page=2>; rel=\"next\", <https://api.github.com/repositories/1/pulls?page=5>; rel=\"last\"",
            ),
        );
        let p = parse_page(&h, body).unwrap();
        let states: Vec<_> = p.pulls.iter().map(|p| (p.number, p.state)).collect();
        assert_eq!(
            states,
            [
                (3, PullState::Open),
                (2, PullState::Merged),
                (1, PullState::Closed)
            ]
        );
        assert_eq!(p.pulls[0].ended_at, None);
        assert_eq!(p.next.unwrap().query(), Some("page=2"));
        assert!(parse_page(&HeaderMap::new(), b"[]").unwrap().next.is_none());
        assert!(parse_page(&HeaderMap::new(), b"{\"message\":\"x\"}").is_err());
    }

    #[test]
    fn first_page_keeps_an_enterprise_path() {
        let u = first_page(
            &Url::parse("https://ghe.example.com/api/v3/").unwrap(),
            "acme/web",
        )
        .unwrap();
        assert_eq!(u.path(), "/api/v3/repos/acme/web/pulls");
        assert!(u.query().unwrap().contains("state=all"));
    }
}
