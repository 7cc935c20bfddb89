//! GitLab's merge request listing: `GET /projects/{url-encoded path}/merge_requests
//! ?state=all&order_by=updated_at&sort=desc&updated_after=...&per_page=100&page=N`, the next
//! page in the `X-Next-Page` header (empty on the last). The number is the merge request's
//! `iid` (what GitLab shows as `!12`), its head ref the `source_branch`.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use reqwest::Url;
use serde::Deserialize;

use super::{ForgeError, Page, PullRequest, PullState, PER_PAGE};

pub(super) fn first_page(
    base: &Url,
    repository: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Url, ForgeError> {
    let mut url = base.clone();
    // One segment: `push` encodes the `/`s of `group/project` as `%2F`, as GitLab wants.
    url.path_segments_mut()
        .map_err(|_| ForgeError::Config("api_url cannot have a path".into()))?
        .pop_if_empty()
        .push("projects")
        .push(repository)
        .push("merge_requests");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("state", "all")
            .append_pair("order_by", "updated_at")
            .append_pair("sort", "desc")
            .append_pair("per_page", &PER_PAGE.to_string());
        if let Some(s) = since {
            q.append_pair(
                "updated_after",
                &s.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
    }
    Ok(url)
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    state: String,
    merged_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    source_branch: String,
}

pub(super) fn parse_page(url: &Url, headers: &HeaderMap, body: &[u8]) -> Result<Page, ForgeError> {
    let mrs: Vec<MergeRequest> = serde_json::from_slice(body)
        .map_err(|e| ForgeError::Decode(format!("a page of merge requests: {e}")))?;
    let pulls = mrs
        .into_iter()
        .map(|m| {
            // `opened`, `locked` (a transient state while open) and anything new keep the
            // branch (fail closed).
            let state = match m.state.as_str() {
                "merged" => PullState::Merged,
                "closed" => PullState::Closed,
                _ => PullState::Open,
            };
            PullRequest {
                number: m.iid,
                state,
                head_ref: m.source_branch,
                updated_at: m.updated_at,
                ended_at: match state {
                    PullState::Merged => m.merged_at.or(m.closed_at),
                    PullState::Closed => m.closed_at,
                    PullState::Open => None,
                },
            }
        })
        .collect();
    let next = match headers.get("x-next-page").map(|v| v.to_str()) {
        None => None,
        Some(Err(_)) => return Err(ForgeError::Decode("an X-Next-Page that is not text".into())),
        Some(Ok(v)) if v.trim().is_empty() => None,
        Some(Ok(v)) => {
            let n: u32 = v.trim().parse().map_err(|_| {
                ForgeError::Decode(format!("X-Next-Page `{v}` is not a page number"))
            })?;
            let mut next = url.clone();
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "page")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            next.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("page", &n.to_string());
            Some(next)
        }
    };
    Ok(Page { pulls, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn pages_states_and_encoded_path() {
        let base = Url::parse("https://gitlab.example.com/api/v4").unwrap();
        let first = first_page(&base, "group/sub/app", None).unwrap();
        assert!(
            first.as_str().starts_with(
                "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fapp/merge_requests?"
            ),
            "{first}"
        );
        let body = br#"[
          {"iid": 5, "state": "merged", "merged_at": "2026-12-01T10:00:00Z", "closed_at": null,
           "updated_at": "2026-12-01T10:00:00Z", "source_branch": "feat/x"},
          {"iid": 4, "state": "locked", "merged_at": null, "closed_at": null,
           "updated_at": "2026-12-01T09:00:00Z", "source_branch": "feat/y"},
          {"iid": 3, "state": "closed", "merged_at": null, "closed_at": "2026-11-01T09:00:00Z",
           "updated_at": "2026-11-01T09:00:00Z", "source_branch": "feat/z"}
        ]"#;
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("2"));
        let p = parse_page(&first, &h, body).unwrap();
        let states: Vec<_> = p.pulls.iter().map(|p| (p.number, p.state)).collect();
        assert_eq!(
            states,
            [
                (5, PullState::Merged),
                (4, PullState::Open),
                (3, PullState::Closed)
            ]
        );
        let next = p.next.unwrap();
        assert!(next.query().unwrap().ends_with("&page=2"), "{next}");
        // Page 3 from page 2: one `page`.
        let p3 = parse_page(
            &next,
            &{
                let mut h = HeaderMap::new();
                h.insert("x-next-page", HeaderValue::from_static("3"));
                h
            },
            b"[]",
        )
        .unwrap()
        .next
        .unwrap();
        assert_eq!(p3.query_pairs().filter(|(k, _)| k == "page").count(), 1);
        let mut last = HeaderMap::new();
        last.insert("x-next-page", HeaderValue::from_static(""));
        assert!(parse_page(&first, &last, b"[]").unwrap().next.is_none());
    }
}
