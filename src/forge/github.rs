//! The GitHub forge: pull requests, issues, labels, comments, statuses and branch deletion over
//! the REST API, through octocrab's client (auth, TLS, timeouts, Enterprise base URLs).
//!
//! Every request goes through [`GitHub::send`], which owns GitHub's rate-limit rules:
//! - **Primary limit**: after any response with `x-ratelimit-remaining: 0`, no request is sent
//!   before `x-ratelimit-reset`; a 403/429 with `remaining: 0` waits for the reset too.
//! - **Secondary limits**: a 429, or a 403 whose body names a secondary rate limit, waits for
//!   `Retry-After` seconds when given, else (the primary limit not exhausted) one minute, doubling
//!   on each further limit of the same request, at most six waits (GitHub's advice: [`limit_wait`]).
//! - Mutating requests (POST, PATCH, PUT, DELETE) are spaced by `write_interval` (GitHub asks
//!   for at least a second between content-creating requests).
//! - A wait longer than `max_wait` is not taken: the request fails with
//!   [`ForgeError::RateLimited`], and the next run continues where this one stopped. Nothing more
//!   is sent before that wait is over: every later request of this client fails the same way
//!   without being sent (GitHub warns that requests sent while limited may get an integration
//!   banned).
//!
//! Lists follow `Link: <...>; rel="next"` pagination to the end, the URL as GitHub gives it, on
//! the API's own origin only (the token goes with it)
//! (api.github.com names the pages by the repository's id, `/repositories/{id}/pulls?...&page=2`,
//! not by `/repos/{owner}/{repo}`). The token comes from an environment variable and is never
//! logged or shown in an error.
//!
//! Every request sent, each page and each rate-limited attempt included, is counted in the
//! process-wide API metrics ([`crate::metrics::record_api_call`]): provider [`METRICS_PROVIDER`],
//! the endpoint as GitHub's documentation names it (`GET /repos/{owner}/{repo}/pulls`, from a
//! fixed set of [`routes`]), and the result ([`transport_result`], the HTTP status, or `ok`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use octocrab::Octocrab;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::{Comment, ForgeError, Item, ItemKind, ItemState, NewIssue, NewPull, Result, Status};

/// The `provider` label of GitHub's requests in the API metrics.
pub const METRICS_PROVIDER: &str = "github";

/// The REST routes the forge calls, as GitHub's documentation writes them: the `endpoint` label
/// of the API metrics is the method and one of these, never a concrete path, so its cardinality
/// is fixed.
pub mod routes {
    pub const REPO: &str = "/repos/{owner}/{repo}";
    pub const PULLS: &str = "/repos/{owner}/{repo}/pulls";
    pub const PULL: &str = "/repos/{owner}/{repo}/pulls/{pull_number}";
    pub const ISSUES: &str = "/repos/{owner}/{repo}/issues";
    pub const ISSUE: &str = "/repos/{owner}/{repo}/issues/{issue_number}";
    pub const ISSUE_LABELS: &str = "/repos/{owner}/{repo}/issues/{issue_number}/labels";
    pub const ISSUE_LABEL: &str = "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}";
    pub const ISSUE_COMMENTS: &str = "/repos/{owner}/{repo}/issues/{issue_number}/comments";
    pub const COMMENT: &str = "/repos/{owner}/{repo}/issues/comments/{comment_id}";
    pub const REF: &str = "/repos/{owner}/{repo}/git/refs/{ref}";
    pub const STATUSES: &str = "/repos/{owner}/{repo}/statuses/{sha}";
}

/// What a GitHub forge needs.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    /// `https://api.github.com` by default; `https://HOST/api/v3` for GitHub Enterprise Server.
    pub api_url: Option<String>,
    pub owner: String,
    pub repo: String,
    /// The environment variable holding the token.
    pub token_env: String,
    /// Least time between two mutating requests.
    pub write_interval: Duration,
    /// The longest rate-limit wait a run accepts.
    pub max_wait: Duration,
}

#[derive(Debug, Default)]
struct RateState {
    last_write: Option<Instant>,
    /// No request before this: the primary limit is exhausted, or a rate-limit wait was past
    /// `max_wait` and not taken.
    blocked_until: Option<SystemTime>,
    /// Which limit `blocked_until` is for (as in [`ForgeError::RateLimited`]).
    blocked_kind: &'static str,
}

/// The most rate-limit waits one request takes: the next limited answer fails it (GitHub: "throw
/// an error after a specific number of retries").
const MAX_LIMITED_ATTEMPTS: u32 = 6;

/// The wait a rate-limited answer asks for, by GitHub's rules, and the limit's kind:
/// - `Retry-After` given: that many seconds (`secondary`);
/// - else `x-ratelimit-remaining: 0`: until `x-ratelimit-reset` plus a second (`primary`);
/// - else at least one minute, doubling with each further limit of the same request
///   (`secondary, no Retry-After`): 60 s, 120 s, 240 s...
///
/// `attempt` counts this request's limited answers, from 1.
pub fn limit_wait(
    retry_after: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    attempt: u32,
    now: SystemTime,
) -> (&'static str, Duration) {
    if let Some(secs) = retry_after {
        return ("secondary", Duration::from_secs(secs));
    }
    if remaining == Some(0) {
        let wait = reset
            .map(|r| UNIX_EPOCH + Duration::from_secs(r))
            .and_then(|u| u.duration_since(now).ok())
            .unwrap_or(Duration::from_secs(1));
        return ("primary", wait + Duration::from_secs(1));
    }
    let doublings = attempt.clamp(1, MAX_LIMITED_ATTEMPTS) - 1;
    (
        "secondary, no Retry-After",
        Duration::from_secs(60 << doublings),
    )
}

/// A GitHub repository's API.
pub struct GitHub {
    /// Boxed: a [`super::Forge`] holds this or the much smaller local forge by value.
    client: Box<Octocrab>,
    /// Where the API is (`https://api.github.com`): the only origin a `Link` URL may name.
    api_origin: String,
    owner: String,
    repo: String,
    write_interval: Duration,
    max_wait: Duration,
    state: Mutex<RateState>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("repo", &self.repo_name())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A response: the headers we read and the body text.
struct Response {
    link: Option<String>,
    body: String,
}

/// Percent-encodes a query value (keeps `/` and `:` readable, as GitHub accepts them).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let is_next = pieces.any(|p| p.trim() == "rel=\"next\"");
        (is_next && url.starts_with('<') && url.ends_with('>'))
            .then(|| url[1..url.len() - 1].to_string())
    })
}

/// The scheme and authority of an absolute URL, lowercased (`https://api.github.com`); `None`
/// for a path.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(format!("{scheme}://{}", &rest[..end]).to_ascii_lowercase())
}

/// Whether a `Link` URL may be followed with the token: a path, or a URL on the API's own
/// origin. Anything else would send the token to another host.
fn link_stays_on(api_origin: &str, url: &str) -> bool {
    match origin(url) {
        Some(o) => o == api_origin,
        None => url.starts_with('/'),
    }
}

fn header(resp: &http_like::Headers, name: &str) -> Option<String> {
    resp.get(name)
}

/// Minimal header access over octocrab's `http` response, without naming the `http` crate.
mod http_like {
    pub struct Headers(pub Vec<(String, String)>);

    impl Headers {
        pub fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }
}

impl GitHub {
    /// A client for `owner/repo`. The token is read from `token_env` now.
    pub fn new(s: &GitHubSettings) -> Result<GitHub> {
        let token = std::env::var(&s.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ForgeError::TokenMissing(s.token_env.clone()))?;
        let mut b = Octocrab::builder()
            .personal_token(token)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)));
        if let Some(url) = &s.api_url {
            b = b.base_uri(url.trim_end_matches('/')).map_err(|e| {
                ForgeError::Config(format!("api_url `{url}` is not a valid URL: {e}"))
            })?;
        }
        let api_origin = s
            .api_url
            .as_deref()
            .and_then(origin)
            .unwrap_or_else(|| "https://api.github.com".to_string());
        let client = b
            .build()
            .map_err(|e| ForgeError::Config(format!("cannot build the GitHub client: {e}")))?;
        Ok(GitHub {
            client: Box::new(client),
            api_origin,
            owner: s.owner.clone(),
            repo: s.repo.clone(),
            write_interval: s.write_interval,
            max_wait: s.max_wait,
            state: Mutex::new(RateState::default()),
        })
    }

    /// `owner/name`.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.repo)
    }

    /// One request with the rate-limit rules; `path` is a path and query, or a full URL from a
    /// `Link` header; `route` is its documented form ([`routes`]), for the metrics.
    async fn send(
        &self,
        method: Method,
        route: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response> {
        let shown = path.split('?').next().unwrap_or(path).to_string();
        let endpoint = format!("{} {route}", method.as_str());
        let count = |result: &str| {
            crate::metrics::record_api_call(METRICS_PROVIDER, &endpoint, result);
        };
        let mut attempt: u32 = 0;
        loop {
            self.wait_turn(method, &shown).await?;
            debug!(method = method.as_str(), path = %shown, "GitHub request");
            let sent = match method {
                Method::Get => self.client._get(path).await,
                Method::Post => self.client._post(path, body).await,
                Method::Patch => self.client._patch(path, body).await,
                Method::Delete => self.client._delete(path, body).await,
            };
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    count(transport_result(&e));
                    return Err(ForgeError::Transport {
                        method: method.as_str().to_string(),
                        path: shown,
                        source: Box::new(e),
                    });
                }
            };
            let status = resp.status().as_u16();
            let headers = http_like::Headers(
                resp.headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        v.to_str()
                            .ok()
                            .map(|v| (k.as_str().to_string(), v.to_string()))
                    })
                    .collect(),
            );
            let text = match self.client.body_to_string(resp).await {
                Ok(text) => text,
                Err(e) => {
                    // The status came, the body did not: a broken or timed-out response.
                    count(match transport_result(&e) {
                        "timeout" => "timeout",
                        _ => "response_error",
                    });
                    return Err(ForgeError::Transport {
                        method: method.as_str().to_string(),
                        path: shown,
                        source: Box::new(e),
                    });
                }
            };
            count(&status_result(status));
            let remaining =
                header(&headers, "x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
            let reset = header(&headers, "x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
            if remaining == Some(0) {
                if let Some(r) = reset {
                    let mut st = self.state.lock().await;
                    st.blocked_until = Some(UNIX_EPOCH + Duration::from_secs(r));
                    st.blocked_kind = "primary";
                }
            }
            let limited = status == 429
                || (status == 403
                    && (remaining == Some(0)
                        || header(&headers, "retry-after").is_some()
                        || text.to_ascii_lowercase().contains("rate limit")));
            if limited {
                attempt += 1;
                let retry_after =
                    header(&headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok());
                let (kind, wait) =
                    limit_wait(retry_after, remaining, reset, attempt, SystemTime::now());
                if wait > self.max_wait || attempt > MAX_LIMITED_ATTEMPTS {
                    // Not waited out: nothing more is sent before that time, in this run.
                    self.block(kind, SystemTime::now() + wait).await;
                    return Err(ForgeError::RateLimited {
                        method: method.as_str().to_string(),
                        path: shown,
                        kind,
                        wait_secs: wait.as_secs(),
                        max_secs: self.max_wait.as_secs(),
                    });
                }
                warn!(
                    method = method.as_str(),
                    path = %shown,
                    status,
                    kind,
                    wait_secs = wait.as_secs_f64(),
                    "GitHub rate limit; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if !(200..300).contains(&status) {
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| {
                        let m = v.get("message")?.as_str()?.to_string();
                        let errors = v
                            .get("errors")
                            .and_then(Value::as_array)
                            .map(|es| {
                                es.iter()
                                    .filter_map(|e| {
                                        e.get("message")
                                            .or_else(|| e.get("code"))
                                            .and_then(Value::as_str)
                                    })
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })
                            .filter(|s| !s.is_empty());
                        Some(match errors {
                            Some(e) => format!("{m} ({e})"),
                            None => m,
                        })
                    })
                    .unwrap_or_else(|| format!("{} bytes of non-JSON body", text.len()));
                return Err(ForgeError::Api {
                    method: method.as_str().to_string(),
                    path: shown,
                    status,
                    message,
                });
            }
            return Ok(Response {
                link: header(&headers, "link"),
                body: text,
            });
        }
    }

    /// Sends nothing before `until` (kept when a later time is already set).
    async fn block(&self, kind: &'static str, until: SystemTime) {
        let mut st = self.state.lock().await;
        if st.blocked_until.is_none_or(|u| u < until) {
            st.blocked_until = Some(until);
            st.blocked_kind = kind;
        }
    }

    /// Waits for the end of a rate limit (a primary-limit reset, or a wait not taken earlier) and
    /// the write spacing; fails at once when the limit ends past `max_wait`.
    async fn wait_turn(&self, method: Method, shown: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        if let Some(until) = st.blocked_until {
            if let Ok(wait) = until.duration_since(SystemTime::now()) {
                let wait = wait + Duration::from_secs(1);
                if wait > self.max_wait {
                    return Err(ForgeError::RateLimited {
                        method: method.as_str().to_string(),
                        path: shown.to_string(),
                        kind: st.blocked_kind,
                        wait_secs: wait.as_secs(),
                        max_secs: self.max_wait.as_secs(),
                    });
                }
                warn!(
                    kind = st.blocked_kind,
                    wait_secs = wait.as_secs(),
                    "GitHub rate limit; waiting for its end"
                );
                tokio::time::sleep(wait).await;
            }
            st.blocked_until = None;
        }
        if method != Method::Get {
            if let Some(last) = st.last_write {
                let since = last.elapsed();
                if since < self.write_interval {
                    tokio::time::sleep(self.write_interval - since).await;
                }
            }
            st.last_write = Some(Instant::now());
        }
        Ok(())
    }

    async fn json(
        &self,
        method: Method,
        route: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let r = self.send(method, route, path, body).await?;
        if r.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&r.body).map_err(|e| ForgeError::Decode {
            method: method.as_str().to_string(),
            path: path.split('?').next().unwrap_or(path).to_string(),
            message: e.to_string(),
        })
    }

    /// Every item of a paginated list, up to `max_pages` pages.
    async fn list(&self, route: &'static str, path: &str, max_pages: usize) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        let mut pages = 0;
        while let Some(p) = next.take() {
            let r = self.send(Method::Get, route, &p, None).await?;
            let v: Value = serde_json::from_str(&r.body).map_err(|e| ForgeError::Decode {
                method: "GET".into(),
                path: path.split('?').next().unwrap_or(path).to_string(),
                message: e.to_string(),
            })?;
            match v {
                Value::Array(items) => out.extend(items),
                other => {
                    return Err(ForgeError::Decode {
                        method: "GET".into(),
                        path: path.split('?').next().unwrap_or(path).to_string(),
                        message: format!("expected a list, got {}", type_name(&other)),
                    });
                }
            }
            pages += 1;
            if pages < max_pages {
                next = r.link.as_deref().and_then(next_link);
                if let Some(url) = next
                    .as_deref()
                    .filter(|u| !link_stays_on(&self.api_origin, u))
                {
                    // Never followed: the request would carry the token to that host.
                    return Err(ForgeError::Decode {
                        method: "GET".into(),
                        path: path.split('?').next().unwrap_or(path).to_string(),
                        message: format!(
                            "the next page's link leaves {} (to {}); not followed",
                            self.api_origin,
                            origin(url).unwrap_or_else(|| "a relative path".into())
                        ),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The repository's default branch.
    pub async fn default_branch(&self) -> Result<String> {
        let v = self
            .json(Method::Get, routes::REPO, &self.repo_path(), None)
            .await?;
        v.get("default_branch")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ForgeError::Decode {
                method: "GET".into(),
                path: self.repo_path(),
                message: "no default_branch".into(),
            })
    }

    pub(super) async fn open_items(&self, branch_prefix: &str, label: &str) -> Result<Vec<Item>> {
        let pulls = self
            .list(
                routes::PULLS,
                &format!("{}/pulls?state=open&per_page=100", self.repo_path()),
                100,
            )
            .await?;
        let mut out: Vec<Item> = pulls
            .iter()
            .filter_map(pull_item)
            .filter(|i| {
                i.branch
                    .as_deref()
                    .is_some_and(|b| b.starts_with(branch_prefix))
            })
            .collect();
        let issues = self
            .list(
                routes::ISSUES,
                &format!(
                    "{}/issues?state=open&labels={}&per_page=100",
                    self.repo_path(),
                    query_escape(label)
                ),
                100,
            )
            .await?;
        out.extend(
            issues
                .iter()
                .filter(|i| i.get("pull_request").is_none())
                .filter_map(issue_item),
        );
        Ok(out)
    }

    pub(super) async fn recently_closed(&self, label: &str) -> Result<Vec<Item>> {
        let items = self
            .list(
                routes::ISSUES,
                &format!(
                    "{}/issues?state=closed&labels={}&sort=updated&direction=desc&per_page=100",
                    self.repo_path(),
                    query_escape(label)
                ),
                3,
            )
            .await?;
        Ok(items.iter().filter_map(issue_item).collect())
    }

    /// `GET /pulls/{number}`: `merged` (every GitHub version answers it on this route), else
    /// whether `merged_at` is set.
    pub(super) async fn pull_merged(&self, number: u64) -> Result<bool> {
        let path = format!("{}/pulls/{number}", self.repo_path());
        let v = self.json(Method::Get, routes::PULL, &path, None).await?;
        if v.get("number").and_then(Value::as_u64) != Some(number) {
            return Err(ForgeError::Decode {
                method: "GET".into(),
                path,
                message: "no pull request in the answer".into(),
            });
        }
        Ok(v.get("merged")
            .and_then(Value::as_bool)
            .unwrap_or_else(|| v.get("merged_at").is_some_and(|m| !m.is_null())))
    }

    pub(super) async fn create_pull(&self, p: &NewPull) -> Result<Item> {
        let v = self
            .json(
                Method::Post,
                routes::PULLS,
                &format!("{}/pulls", self.repo_path()),
                Some(&json!({
                    "title": p.title,
                    "head": p.head,
                    "base": p.base,
                    "body": p.body,
                    "draft": p.draft,
                    "maintainer_can_modify": true,
                })),
            )
            .await?;
        let mut item = pull_item(&v).ok_or_else(|| ForgeError::Decode {
            method: "POST".into(),
            path: format!("{}/pulls", self.repo_path()),
            message: "no pull request in the answer".into(),
        })?;
        if !p.labels.is_empty() {
            self.add_labels(item.number, &p.labels).await?;
            item.labels = p.labels.clone();
        }
        Ok(item)
    }

    pub(super) async fn create_issue(&self, i: &NewIssue) -> Result<Item> {
        let v = self
            .json(
                Method::Post,
                routes::ISSUES,
                &format!("{}/issues", self.repo_path()),
                Some(&json!({"title": i.title, "body": i.body, "labels": i.labels})),
            )
            .await?;
        issue_item(&v).ok_or_else(|| ForgeError::Decode {
            method: "POST".into(),
            path: format!("{}/issues", self.repo_path()),
            message: "no issue in the answer".into(),
        })
    }

    /// An item's path and its route.
    fn item_path(&self, item: &Item) -> (&'static str, String) {
        match item.kind {
            ItemKind::PullRequest => (
                routes::PULL,
                format!("{}/pulls/{}", self.repo_path(), item.number),
            ),
            ItemKind::Issue => (
                routes::ISSUE,
                format!("{}/issues/{}", self.repo_path(), item.number),
            ),
        }
    }

    pub(super) async fn update(&self, item: &Item, title: &str, body: &str) -> Result<()> {
        let (route, path) = self.item_path(item);
        self.send(
            Method::Patch,
            route,
            &path,
            Some(&json!({"title": title, "body": body})),
        )
        .await
        .map(|_| ())
    }

    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<()> {
        self.send(
            Method::Post,
            routes::ISSUE_LABELS,
            &format!("{}/issues/{number}/labels", self.repo_path()),
            Some(&json!({ "labels": labels })),
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn relabel(
        &self,
        item: &Item,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        if !add.is_empty() {
            self.add_labels(item.number, add).await?;
        }
        for l in remove {
            let path = format!(
                "{}/issues/{}/labels/{}",
                self.repo_path(),
                item.number,
                query_escape(l).replace('/', "%2F")
            );
            match self
                .send(Method::Delete, routes::ISSUE_LABEL, &path, None)
                .await
            {
                Ok(_) | Err(ForgeError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn comment(&self, number: u64, body: &str) -> Result<()> {
        self.send(
            Method::Post,
            routes::ISSUE_COMMENTS,
            &format!("{}/issues/{number}/comments", self.repo_path()),
            Some(&json!({ "body": body })),
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn comments(&self, number: u64) -> Result<Vec<Comment>> {
        let items = self
            .list(
                routes::ISSUE_COMMENTS,
                &format!("{}/issues/{number}/comments?per_page=100", self.repo_path()),
                100,
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|c| {
                Some(Comment {
                    id: c.get("id")?.as_u64()?,
                    body: text_of(c, "body"),
                })
            })
            .collect())
    }

    pub(super) async fn update_comment(&self, id: u64, body: &str) -> Result<()> {
        self.send(
            Method::Patch,
            routes::COMMENT,
            &format!("{}/issues/comments/{id}", self.repo_path()),
            Some(&json!({ "body": body })),
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn close(&self, item: &Item, new_body: Option<&str>) -> Result<()> {
        let mut body = match item.kind {
            ItemKind::PullRequest => json!({"state": "closed"}),
            ItemKind::Issue => json!({"state": "closed", "state_reason": "completed"}),
        };
        if let (Some(b), Some(m)) = (new_body, body.as_object_mut()) {
            m.insert("body".into(), Value::String(b.to_string()));
        }
        let (route, path) = self.item_path(item);
        self.send(Method::Patch, route, &path, Some(&body))
            .await
            .map(|_| ())
    }

    pub(super) async fn delete_branch(&self, branch: &str) -> Result<()> {
        let path = format!("{}/git/refs/heads/{branch}", self.repo_path());
        match self.send(Method::Delete, routes::REF, &path, None).await {
            // Already gone (GitHub answers 422 "Reference does not exist").
            Ok(_)
            | Err(ForgeError::Api {
                status: 404 | 422, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn set_status(&self, s: &Status) -> Result<()> {
        let description: String = s.description.chars().take(140).collect();
        let mut body = json!({
            "state": s.state.as_str(),
            "context": s.context,
            "description": description,
        });
        if let (Some(url), Some(m)) = (&s.target_url, body.as_object_mut()) {
            m.insert("target_url".into(), Value::String(url.clone()));
        }
        self.send(
            Method::Post,
            routes::STATUSES,
            &format!("{}/statuses/{}", self.repo_path(), s.sha),
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

/// The metrics' `result` of an answer: `ok` for any 2xx, else the HTTP status (`404`, `422`,
/// `403` and `429` for rate limits).
pub fn status_result(status: u16) -> String {
    if (200..300).contains(&status) {
        "ok".to_string()
    } else {
        status.to_string()
    }
}

/// The metrics' `result` of a request that got no answer, named like the EC2 reader's: `timeout`
/// (the connect or read timeout, anywhere in the error's causes), `dispatch_failure` (the
/// connection failed or broke), `construction_failure` (the request could not be built), else
/// `error`.
pub fn transport_result(e: &octocrab::Error) -> &'static str {
    if timed_out(e) {
        return "timeout";
    }
    match e {
        octocrab::Error::Service { .. } | octocrab::Error::Hyper { .. } => "dispatch_failure",
        octocrab::Error::Http { .. }
        | octocrab::Error::Uri { .. }
        | octocrab::Error::UriParse { .. }
        | octocrab::Error::InvalidHeaderValue { .. }
        | octocrab::Error::Encoder { .. } => "construction_failure",
        _ => "error",
    }
}

/// Whether an I/O timeout is among an error's causes.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn labels_of(v: &Value) -> Vec<String> {
    v.get("labels")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| {
                    l.get("name")
                        .and_then(Value::as_str)
                        .or_else(|| l.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn state_of(v: &Value) -> ItemState {
    if v.get("state").and_then(Value::as_str) == Some("closed") {
        ItemState::Closed
    } else {
        ItemState::Open
    }
}

fn updated_of(v: &Value) -> String {
    v.get("closed_at")
        .and_then(Value::as_str)
        .or_else(|| v.get("updated_at").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

/// A string field, `""` when absent or not a string.
fn text_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The fields the pulls and issues APIs share; the caller gives what they tell differently.
fn item(v: &Value, kind: ItemKind, merged: bool, branch: Option<String>) -> Option<Item> {
    Some(Item {
        number: v.get("number")?.as_u64()?,
        kind,
        state: state_of(v),
        merged,
        title: text_of(v, "title"),
        body: text_of(v, "body"),
        labels: labels_of(v),
        branch,
        draft: v.get("draft").and_then(Value::as_bool).unwrap_or(false),
        url: text_of(v, "html_url"),
        updated: updated_of(v),
    })
}

/// A pull request from the pulls API.
fn pull_item(v: &Value) -> Option<Item> {
    item(
        v,
        ItemKind::PullRequest,
        v.get("merged_at").is_some_and(|m| !m.is_null()),
        v.pointer("/head/ref")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

/// An issue (or a pull request seen through the issues API).
fn issue_item(v: &Value) -> Option<Item> {
    let pr = v.get("pull_request");
    let kind = if pr.is_some() {
        ItemKind::PullRequest
    } else {
        ItemKind::Issue
    };
    let merged = pr
        .and_then(|p| p.get("merged_at"))
        .is_some_and(|m| !m.is_null());
    item(v, kind, merged, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let link = r#"<https://api.github.com/repositories/1/pulls?page=2>; rel="next", <https://api.github.com/repositories/1/pulls?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(next_link(r#"<x?page=1>; rel="prev""#), None);
        // A middle page, as GitHub sends it: prev, next, last, first.
        let link = r#"<https://api.github.com/repositories/1/pulls?state=open&per_page=100&page=1>; rel="prev", <https://api.github.com/repositories/1/pulls?state=open&per_page=100&page=3>; rel="next", <https://api.github.com/repositories/1/pulls?state=open&per_page=100&page=4>; rel="last", <https://api.github.com/repositories/1/pulls?state=open&per_page=100&page=1>; rel="first""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?state=open&per_page=100&page=3")
        );
    }

    #[test]
    fn links_are_followed_only_on_the_api_origin() {
        let api = origin("https://api.github.com").unwrap();
        assert!(link_stays_on(
            &api,
            "https://api.github.com/repositories/1/pulls?page=2"
        ));
        assert!(link_stays_on(&api, "HTTPS://API.GITHUB.COM/x"));
        assert!(link_stays_on(&api, "/repositories/1/pulls?page=2"));
        assert!(!link_stays_on(&api, "https://evil.example/repositories/1"));
        assert!(!link_stays_on(&api, "http://api.github.com/x"));
        assert!(!link_stays_on(
            &api,
            "https://api.github.com.evil.example/x"
        ));
        assert!(!link_stays_on(&api, "https://api.github.com:8443/x"));
        assert!(!link_stays_on(&api, "page=2"));
        let ghes = origin("http://127.0.0.1:4321/api/v3").unwrap();
        assert_eq!(ghes, "http://127.0.0.1:4321");
        assert!(link_stays_on(
            &ghes,
            "http://127.0.0.1:4321/api/v3/repositories/7/issues?page=3"
        ));
        assert!(!link_stays_on(&ghes, "http://127.0.0.2:4321/api/v3/x"));
    }

    #[test]
    fn rate_limit_waits_follow_githubs_rules() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Retry-After first, whatever else the answer says.
        assert_eq!(
            limit_wait(Some(7), Some(0), Some(1_000_500), 3, now),
            ("secondary", Duration::from_secs(7))
        );
        // The primary limit: until the reset, plus a second (a reset already past: two seconds).
        assert_eq!(
            limit_wait(None, Some(0), Some(1_000_100), 1, now),
            ("primary", Duration::from_secs(101))
        );
        assert_eq!(
            limit_wait(None, Some(0), Some(999_000), 1, now),
            ("primary", Duration::from_secs(2))
        );
        // Neither: at least a minute, doubling with each further limit of the same request.
        let waits: Vec<u64> = (1..=7)
            .map(|attempt| {
                let (kind, wait) = limit_wait(None, Some(4321), Some(1_003_600), attempt, now);
                assert_eq!(kind, "secondary, no Retry-After");
                wait.as_secs()
            })
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 1920]);
        // No rate-limit headers at all: the same.
        assert_eq!(
            limit_wait(None, None, None, 1, now),
            ("secondary, no Retry-After", Duration::from_secs(60))
        );
    }

    #[test]
    fn results_are_ok_or_the_status() {
        assert_eq!(status_result(200), "ok");
        assert_eq!(status_result(204), "ok");
        assert_eq!(status_result(403), "403");
        assert_eq!(status_result(429), "429");
        assert_eq!(status_result(404), "404");
    }

    #[test]
    fn routes_are_templates() {
        for r in [
            routes::REPO,
            routes::PULLS,
            routes::PULL,
            routes::ISSUES,
            routes::ISSUE,
            routes::ISSUE_LABELS,
            routes::ISSUE_LABEL,
            routes::ISSUE_COMMENTS,
            routes::COMMENT,
            routes::REF,
            routes::STATUSES,
        ] {
            assert!(r.starts_with("/repos/{owner}/{repo}"), "{r}");
            // Every segment is a fixed word or a placeholder: no number, no name.
            for seg in r.split('/').skip(1) {
                assert!(
                    (seg.starts_with('{') && seg.ends_with('}'))
                        || seg.chars().all(|c| c.is_ascii_lowercase()),
                    "{r}: {seg}"
                );
            }
        }
    }

    fn client(url: &str, read_timeout: Option<Duration>) -> Octocrab {
        Octocrab::builder()
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(read_timeout)
            .base_uri(url)
            .unwrap()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_dispatch_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = client(&format!("http://{addr}"), None)
            ._get("/repos/a/b")
            .await
            .unwrap_err();
        assert_eq!(transport_result(&e), "dispatch_failure", "{e:?}");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and reads, never answers.
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .is_ok_and(|n| n > 0)
            {}
        });
        let e = client(&format!("http://{addr}"), Some(Duration::from_millis(200)))
            ._get("/repos/a/b")
            .await
            .unwrap_err();
        assert_eq!(transport_result(&e), "timeout", "{e:?}");
        server.abort();
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("drift/revert"), "drift/revert");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}
