//! A GitHub REST server on loopback for the endpoints driftwarden uses, speaking the real
//! protocol: the response shapes of api.github.com (pulls, issues, labels, comments, statuses,
//! git refs, repositories), its headers (`x-ratelimit-*`, `x-github-request-id`, `Link`
//! pagination), its error bodies (`{"message": ..., "documentation_url": ...}`, 422 "Validation
//! Failed" with `errors`), token auth, and injected rate-limit responses: a 403 secondary limit
//! with `Retry-After` or without it, a 429 with `Retry-After`, and an exhausted primary limit (403
//! with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`).
//!
//! The repository has a numeric id ([`REPO_ID`], the `id` of its JSON) and, like api.github.com,
//! the server names it by that id in the `Link` headers of lists
//! (`<http://HOST/repositories/{id}/pulls?state=open&per_page=100&page=2>; rel="next"`, with
//! `prev`, `next`, `last` and `first` in GitHub's order) and serves `/repositories/{id}/...` as
//! well as `/repos/{owner}/{repo}/...`.
//!
//! Branches live in a bare Git repository (the push remote): creating a pull request checks its
//! head exists there and that no open pull request has the same head and base (422 "A pull request
//! already exists for owner:branch."), `DELETE /git/refs/heads/...` deletes it there, and a commit
//! status is accepted only for a commit there (422 "No commit found for SHA: ..."; see
//! [`commit_known`] for a remote with no branch). Every request is logged (method, path, query,
//! body, the status answered) for assertions; the Authorization header is checked, never kept.
//!
//! Faults are injected either for the next request ([`GitHubServer::inject`]) or for the next
//! request with a given method and path ([`GitHubServer::inject_on`]).
//!
//! Routes may carry a prefix (`/api/v3` for GitHub Enterprise Server); both forms are served.

#![allow(dead_code)]

// Each server includes the shared plumbing itself, so a test binary needs nothing more; one that
// includes two servers compiles it twice, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path without the Enterprise prefix.
    pub path: String,
    pub query: String,
    pub body: String,
    /// The prefix the request used (`""` or `/api/v3`).
    pub prefix: String,
    /// When the server received it.
    pub at: Instant,
    /// The status the server answered (`0` while the answer is being made).
    pub status: u16,
}

impl Logged {
    /// POST, PATCH, PUT or DELETE.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// The repository's numeric id: its JSON's `id`, and the `{id}` of the
/// `/repositories/{id}/...` URLs of `Link` headers.
pub const REPO_ID: u64 = 1_296_269;

/// A response to inject before the next request (or the next matching one) is served normally.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 "You have exceeded a secondary rate limit" with `Retry-After`.
    Secondary403 { retry_after: u64 },
    /// 403 "You have exceeded a secondary rate limit" without `Retry-After`, the primary limit
    /// not exhausted (`x-ratelimit-remaining` above 0): GitHub's docs ask the client to wait at
    /// least a minute, longer on each further limit.
    Secondary403NoRetryAfter,
    /// 429 with `Retry-After`.
    TooMany429 { retry_after: u64 },
    /// 403 with `x-ratelimit-remaining: 0`, resetting in this many seconds.
    PrimaryExhausted { reset_in: u64 },
    /// Any status with a GitHub error message.
    Status { code: u16, message: String },
    /// Not an answer: just before a `POST /pulls` is served, a person opens a pull request with
    /// the request's head and base (a race with the client's listing); the request is then served
    /// normally, so GitHub's own check answers it (422 "A pull request already exists").
    PullOpenedMeanwhile,
}

#[derive(Debug, Clone)]
pub struct ItemRec {
    pub number: u64,
    pub is_pr: bool,
    pub state: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub head: Option<String>,
    pub head_sha: Option<String>,
    pub base: Option<String>,
    pub draft: bool,
    pub merged_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    /// Monotonic update counter, for sort=updated.
    pub tick: u64,
}

impl ItemRec {
    /// A new open issue, created now.
    fn open_issue(
        number: u64,
        title: String,
        body: String,
        labels: Vec<String>,
        tick: u64,
    ) -> Self {
        ItemRec {
            number,
            is_pr: false,
            state: "open".into(),
            title,
            body,
            labels,
            head: None,
            head_sha: None,
            base: None,
            draft: false,
            merged_at: None,
            created_at: now(),
            updated_at: now(),
            closed_at: None,
            tick,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommentRec {
    pub id: u64,
    pub issue: u64,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct StatusRec {
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

#[derive(Debug)]
struct State {
    owner: String,
    repo: String,
    default_branch: String,
    token: String,
    bare: PathBuf,
    next_number: u64,
    next_comment: u64,
    tick: u64,
    items: BTreeMap<u64, ItemRec>,
    comments: Vec<CommentRec>,
    labels: BTreeMap<String, u64>,
    statuses: Vec<StatusRec>,
    log: Vec<Logged>,
    faults: VecDeque<Fault>,
    /// Faults for the next request with this method and path (without the prefix and query).
    faults_on: Vec<(String, String, Fault)>,
    remaining: u64,
    /// The origin `Link` headers name instead of this server's, when set.
    link_origin: Option<String>,
}

/// The server. Dropping it leaves the background thread to die with the test process.
pub struct GitHubServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 2026-11-22T04:00:00Z-style, from a fixed date plus seconds, without a date crate.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn reset_epoch(secs: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + secs
}

impl GitHubServer {
    /// Starts a server for `owner/repo` whose branches live in the bare repository `bare`.
    pub fn start(owner: &str, repo: &str, token: &str, bare: &Path) -> GitHubServer {
        let state = Arc::new(Mutex::new(State {
            owner: owner.into(),
            repo: repo.into(),
            default_branch: "main".into(),
            token: token.into(),
            bare: bare.to_path_buf(),
            next_number: 1,
            next_comment: 9_000_001,
            tick: 0,
            items: BTreeMap::new(),
            comments: Vec::new(),
            labels: BTreeMap::new(),
            statuses: Vec::new(),
            log: Vec::new(),
            faults: VecDeque::new(),
            faults_on: Vec::new(),
            remaining: 5000,
            link_origin: None,
        }));
        let addr = http::start_in_thread(Arc::clone(&state), |st, req| async move {
            handle(&st, req).await
        });
        GitHubServer { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests after the first `from`.
    pub fn log_since(&self, from: usize) -> Vec<Logged> {
        self.log().into_iter().skip(from).collect()
    }

    /// The writes after the first `from` requests.
    pub fn writes_since(&self, from: usize) -> Vec<Logged> {
        self.log_since(from)
            .into_iter()
            .filter(Logged::is_write)
            .collect()
    }

    /// From now on, `Link` headers name `origin` (`http://HOST:PORT`) instead of this server: a
    /// response tampered with on its way, or a proxy that rewrites URLs wrongly.
    pub fn name_pages_at(&self, origin: &str) {
        self.state.lock().unwrap().link_origin = Some(origin.to_string());
    }

    /// A fault for the next request, whatever it is.
    pub fn inject(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    /// A fault for the next request with `method` and `path` (without the Enterprise prefix and
    /// the query, e.g. `POST /repos/acme/gitops/pulls`); faults queued with [`Self::inject`] come
    /// first.
    pub fn inject_on(&self, method: &str, path: &str, f: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults_on
            .push((method.to_string(), path.to_string(), f));
    }

    /// `/repositories/{id}`, the repository's path in `Link` headers (its id: [`REPO_ID`]).
    pub fn repository_path(&self) -> String {
        format!("/repositories/{REPO_ID}")
    }

    pub fn items(&self) -> Vec<ItemRec> {
        self.state.lock().unwrap().items.values().cloned().collect()
    }

    pub fn item(&self, number: u64) -> ItemRec {
        self.state.lock().unwrap().items[&number].clone()
    }

    pub fn comments_on(&self, number: u64) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.issue == number)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn all_comments(&self) -> Vec<CommentRec> {
        self.state.lock().unwrap().comments.clone()
    }

    pub fn statuses(&self) -> Vec<StatusRec> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// What a person does in the UI: close an item, with labels added.
    pub fn close_with_labels(&self, number: u64, labels: &[&str]) {
        let mut st = self.state.lock().unwrap();
        st.tick += 1;
        let tick = st.tick;
        let it = st.items.get_mut(&number).unwrap();
        for l in labels {
            if !it.labels.iter().any(|x| x == l) {
                it.labels.push(l.to_string());
            }
        }
        it.state = "closed".into();
        it.closed_at = Some(now());
        it.updated_at = now();
        it.tick = tick;
    }

    /// What a person does in the UI: merge a pull request.
    pub fn merge(&self, number: u64) {
        let mut st = self.state.lock().unwrap();
        st.tick += 1;
        let tick = st.tick;
        let it = st.items.get_mut(&number).unwrap();
        it.state = "closed".into();
        it.merged_at = Some(now());
        it.closed_at = Some(now());
        it.tick = tick;
    }

    /// Pre-creates an open pull request (as if a person opened it), returns its number.
    pub fn seed_pull(&self, title: &str, head: &str, base: &str) -> u64 {
        let n = self.seed_issue(title, "", &[]);
        let mut st = self.state.lock().unwrap();
        let it = st.items.get_mut(&n).unwrap();
        it.is_pr = true;
        it.head = Some(head.into());
        it.base = Some(base.into());
        n
    }

    /// Pre-creates an item (as if opened by someone else), returns its number.
    pub fn seed_issue(&self, title: &str, body: &str, labels: &[&str]) -> u64 {
        open_item(&mut self.state.lock().unwrap(), title, body, labels)
    }
}

/// Opens an issue as someone else would; returns its number.
fn open_item(st: &mut State, title: &str, body: &str, labels: &[&str]) -> u64 {
    let n = st.next_number;
    st.next_number += 1;
    st.tick += 1;
    let tick = st.tick;
    st.items.insert(
        n,
        ItemRec::open_issue(
            n,
            title.into(),
            body.into(),
            labels.iter().map(|s| s.to_string()).collect(),
            tick,
        ),
    );
    n
}

/// Whether the remote holds the commit `sha` (a full 40-hex id, as production sends), the only
/// commits this server knows of. `None` when the remote has no branch at all: the server then knows
/// no history and cannot tell a commit GitHub would hold from an unknown one, so it accepts any
/// (tests/pr_check.rs posts statuses for the head of a local repository it never pushes, with an
/// empty remote). A remote with a branch is the repository: a commit not in it is unknown.
fn commit_known(bare: &Path, sha: &str) -> Option<bool> {
    let repo = git2::Repository::open_bare(bare).ok()?;
    let has_branch = repo
        .references_glob("refs/heads/*")
        .ok()?
        .flatten()
        .next()
        .is_some();
    if !has_branch {
        return None;
    }
    let full = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    Some(
        full && git2::Oid::from_str(sha)
            .ok()
            .is_some_and(|oid| repo.find_commit(oid).is_ok()),
    )
}

fn branch_sha(bare: &Path, branch: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(bare).ok()?;
    let r = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
    Some(r.peel_to_commit().ok()?.id().to_string())
}

fn respond(
    st: &mut State,
    status: u16,
    body: Value,
    extra: &[(&str, String)],
) -> Response<Full<Bytes>> {
    st.remaining = st.remaining.saturating_sub(1);
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .header("x-github-api-version-selected", "2022-11-28")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", st.remaining.to_string())
        .header("x-ratelimit-reset", reset_epoch(3600).to_string())
        .header("x-ratelimit-used", (5000 - st.remaining).to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-request-id", format!("C0DE:{:X}", st.log.len()));
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(text))).unwrap()
}

fn error(st: &mut State, status: u16, message: &str) -> Response<Full<Bytes>> {
    respond(
        st,
        status,
        json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
        &[],
    )
}

fn validation(st: &mut State, resource: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        st,
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "message": message}],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422"
        }),
        &[],
    )
}

fn query_map(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .map(|(k, v)| (k.to_string(), http::percent_decode(v)))
        .collect()
}

fn user() -> Value {
    json!({"login": "driftwarden-bot", "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=", "type": "Bot", "site_admin": false})
}

fn label_json(st: &mut State, name: &str) -> Value {
    let next = st.labels.len() as u64 + 7_000_001;
    let id = *st.labels.entry(name.to_string()).or_insert(next);
    json!({
        "id": id,
        "node_id": format!("LA_kwDO{id}"),
        "url": format!("https://api.github.com/repos/{}/{}/labels/{}", st.owner, st.repo, name.replace('/', "%2F")),
        "name": name,
        "color": "ededed",
        "default": false,
        "description": null
    })
}

fn repo_json(st: &State) -> Value {
    json!({
        "id": REPO_ID,
        "node_id": "R_kgDOtest",
        "name": st.repo,
        "full_name": format!("{}/{}", st.owner, st.repo),
        "private": true,
        "owner": {"login": st.owner, "id": 1, "type": "Organization"},
        "html_url": format!("https://github.com/{}/{}", st.owner, st.repo),
        "default_branch": st.default_branch,
        "visibility": "private"
    })
}

fn pull_json(st: &mut State, it: &ItemRec) -> Value {
    let labels: Vec<Value> = it
        .labels
        .clone()
        .iter()
        .map(|l| label_json(st, l))
        .collect();
    let base = format!("https://api.github.com/repos/{}/{}", st.owner, st.repo);
    let head_sha = it
        .head
        .as_deref()
        .and_then(|h| branch_sha(&st.bare, h))
        .or_else(|| it.head_sha.clone())
        .unwrap_or_default();
    json!({
        "url": format!("{base}/pulls/{}", it.number),
        "id": 1_000_000 + it.number,
        "node_id": format!("PR_kwDO{}", it.number),
        "html_url": format!("https://github.com/{}/{}/pull/{}", st.owner, st.repo, it.number),
        "diff_url": format!("https://github.com/{}/{}/pull/{}.diff", st.owner, st.repo, it.number),
        "patch_url": format!("https://github.com/{}/{}/pull/{}.patch", st.owner, st.repo, it.number),
        "issue_url": format!("{base}/issues/{}", it.number),
        "number": it.number,
        "state": it.state,
        "locked": false,
        "title": it.title,
        "user": user(),
        "body": it.body,
        "labels": labels,
        "milestone": null,
        "created_at": it.created_at,
        "updated_at": it.updated_at,
        "closed_at": it.closed_at,
        "merged_at": it.merged_at,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "draft": it.draft,
        "head": {
            "label": format!("{}:{}", st.owner, it.head.clone().unwrap_or_default()),
            "ref": it.head,
            "sha": head_sha,
            "user": {"login": st.owner},
            "repo": repo_json(st)
        },
        "base": {
            "label": format!("{}:{}", st.owner, it.base.clone().unwrap_or_default()),
            "ref": it.base,
            "sha": it.base.as_deref().and_then(|b| branch_sha(&st.bare, b)).unwrap_or_default(),
            "user": {"login": st.owner},
            "repo": repo_json(st)
        },
        "author_association": "NONE",
        "auto_merge": null
    })
}

fn issue_json(st: &mut State, it: &ItemRec) -> Value {
    let labels: Vec<Value> = it
        .labels
        .clone()
        .iter()
        .map(|l| label_json(st, l))
        .collect();
    let base = format!("https://api.github.com/repos/{}/{}", st.owner, st.repo);
    let n_comments = st.comments.iter().filter(|c| c.issue == it.number).count();
    let mut v = json!({
        "url": format!("{base}/issues/{}", it.number),
        "repository_url": base,
        "labels_url": format!("{base}/issues/{}/labels{{/name}}", it.number),
        "comments_url": format!("{base}/issues/{}/comments", it.number),
        "events_url": format!("{base}/issues/{}/events", it.number),
        "html_url": format!("https://github.com/{}/{}/{}/{}", st.owner, st.repo, if it.is_pr { "pull" } else { "issues" }, it.number),
        "id": 2_000_000 + it.number,
        "node_id": format!("I_kwDO{}", it.number),
        "number": it.number,
        "title": it.title,
        "user": user(),
        "labels": labels,
        "state": it.state,
        "state_reason": if it.state == "closed" { json!("completed") } else { Value::Null },
        "locked": false,
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "comments": n_comments,
        "created_at": it.created_at,
        "updated_at": it.updated_at,
        "closed_at": it.closed_at,
        "author_association": "NONE",
        "body": it.body,
        "draft": it.draft,
    });
    if it.is_pr {
        v["pull_request"] = json!({
            "url": format!("{base}/pulls/{}", it.number),
            "html_url": format!("https://github.com/{}/{}/pull/{}", st.owner, st.repo, it.number),
            "diff_url": format!("https://github.com/{}/{}/pull/{}.diff", st.owner, st.repo, it.number),
            "patch_url": format!("https://github.com/{}/{}/pull/{}.patch", st.owner, st.repo, it.number),
            "merged_at": it.merged_at,
        });
    }
    v
}

/// Where a list is, for its `Link` header: `/repositories/{id}/...` (the form api.github.com
/// names pages in, whichever path the request used) and the request's raw query.
struct ListAt<'a> {
    path: String,
    query: &'a str,
}

/// A page of a list with GitHub's `Link` header: `prev`, `next`, `last`, `first`, in that order,
/// each where GitHub sends it (none when everything fits on one page); the query as the client
/// sent it with `page` replaced.
fn page(
    st: &mut State,
    at: &ListAt<'_>,
    q: &BTreeMap<String, String>,
    all: Vec<Value>,
) -> Response<Full<Bytes>> {
    let per = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let pg = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per).max(1);
    let items: Vec<Value> = all.into_iter().skip((pg - 1) * per).take(per).collect();
    let kept: Vec<&str> = at
        .query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("page"))
        .collect();
    let url = |p: usize| {
        let mut qs = kept.clone();
        let page = format!("page={p}");
        qs.push(&page);
        format!("<http://HOST{}?{}>", at.path, qs.join("&"))
    };
    let mut links = Vec::new();
    if pg > 1 {
        links.push(format!("{}; rel=\"prev\"", url((pg - 1).min(last))));
    }
    if pg < last {
        links.push(format!("{}; rel=\"next\"", url(pg + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if pg > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    let extra: Vec<(&str, String)> = if links.is_empty() {
        Vec::new()
    } else {
        vec![("link", links.join(", "))]
    };
    respond(st, 200, Value::Array(items), &extra)
}

const SECONDARY_LIMIT: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.";
const SECONDARY_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let full_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let host = http::header(&req, "host").unwrap_or_else(|| "127.0.0.1".to_string());
    let auth = http::header(&req, "authorization").unwrap_or_default();
    let body = http::body_text(req).await;
    let mut st = state.lock().unwrap();
    let (prefix, path) = match full_path.strip_prefix("/api/v3") {
        Some(p) => ("/api/v3".to_string(), p.to_string()),
        None => (String::new(), full_path.clone()),
    };
    let at = st.log.len();
    st.log.push(Logged {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        prefix: prefix.clone(),
        at: Instant::now(),
        status: 0,
    });
    let mut resp = answer(&mut st, &method, &path, &query, &body, &auth);
    // Link headers name this server.
    if let Some(l) = resp
        .headers()
        .get("link")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
    {
        let origin = st
            .link_origin
            .clone()
            .unwrap_or_else(|| format!("http://{host}"));
        let l = l.replace("http://HOST", &format!("{origin}{prefix}"));
        resp.headers_mut().insert("link", l.parse().unwrap());
    }
    st.log[at].status = resp.status().as_u16();
    resp
}

/// The next injected fault for this request: one queued for any request first, then the first
/// queued for its method and path.
fn take_fault(st: &mut State, method: &str, path: &str) -> Option<Fault> {
    if let Some(f) = st.faults.pop_front() {
        return Some(f);
    }
    let i = st
        .faults_on
        .iter()
        .position(|(m, p, _)| m == method && p == path)?;
    Some(st.faults_on.remove(i).2)
}

fn answer(
    st: &mut State,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    auth: &str,
) -> Response<Full<Bytes>> {
    let json_body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match take_fault(st, method, path) {
        None => {}
        Some(Fault::Secondary403 { retry_after }) => {
            return respond(
                st,
                403,
                json!({"message": SECONDARY_LIMIT, "documentation_url": SECONDARY_DOCS, "status": "403"}),
                &[("retry-after", retry_after.to_string())],
            );
        }
        Some(Fault::Secondary403NoRetryAfter) => {
            return respond(
                st,
                403,
                json!({"message": SECONDARY_LIMIT, "documentation_url": SECONDARY_DOCS, "status": "403"}),
                &[],
            );
        }
        Some(Fault::TooMany429 { retry_after }) => {
            return respond(
                st,
                429,
                json!({"message": SECONDARY_LIMIT, "documentation_url": SECONDARY_DOCS, "status": "429"}),
                &[("retry-after", retry_after.to_string())],
            );
        }
        Some(Fault::PrimaryExhausted { reset_in }) => {
            let mut r = error(
                st,
                403,
                "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, please include the request ID.",
            );
            let h = r.headers_mut();
            h.insert("x-ratelimit-remaining", "0".parse().unwrap());
            h.insert("x-ratelimit-used", "5000".parse().unwrap());
            h.insert(
                "x-ratelimit-reset",
                reset_epoch(reset_in).to_string().parse().unwrap(),
            );
            return r;
        }
        Some(Fault::Status { code, message }) => return error(st, code, &message),
        Some(Fault::PullOpenedMeanwhile) => {
            let field = |k: &str| json_body.get(k).and_then(Value::as_str).map(str::to_string);
            if let (Some(head), Some(base)) = (field("head"), field("base")) {
                let n = open_item(st, "Opened by hand", "", &[]);
                let it = st.items.get_mut(&n).unwrap();
                it.is_pr = true;
                it.head = Some(head);
                it.base = Some(base);
            }
        }
    }
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    if token.is_empty() {
        return error(st, 401, "Requires authentication");
    }
    if token != st.token {
        return error(st, 401, "Bad credentials");
    }
    if path == "/rate_limit" {
        let core = json!({"limit": 5000, "used": 5000 - st.remaining, "remaining": st.remaining, "reset": reset_epoch(3600)});
        return respond(
            st,
            200,
            json!({"resources": {"core": core}, "rate": core}),
            &[],
        );
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The repository by name, or by id (the form of the URLs in `Link` headers).
    let rest = match segs.as_slice() {
        ["repos", owner, repo, rest @ ..] if *owner == st.owner && *repo == st.repo => rest,
        ["repositories", id, rest @ ..] if *id == REPO_ID.to_string() => rest,
        _ => return error(st, 404, "Not Found"),
    };
    let list_at = ListAt {
        path: std::iter::once(format!("/repositories/{REPO_ID}"))
            .chain(rest.iter().map(|s| s.to_string()))
            .collect::<Vec<_>>()
            .join("/"),
        query,
    };
    let q = query_map(query);
    route(st, method, rest, &q, &json_body, &list_at)
}

fn touch(st: &mut State, n: u64) {
    st.tick += 1;
    let tick = st.tick;
    if let Some(it) = st.items.get_mut(&n) {
        it.updated_at = now();
        it.tick = tick;
    }
}

fn route(
    st: &mut State,
    method: &str,
    rest: &[&str],
    q: &BTreeMap<String, String>,
    body: &Value,
    list_at: &ListAt<'_>,
) -> Response<Full<Bytes>> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (method, rest) {
        ("GET", []) => {
            let r = repo_json(st);
            respond(st, 200, r, &[])
        }
        ("GET", ["pulls"]) => {
            let state = q.get("state").cloned().unwrap_or_else(|| "open".into());
            let head = q.get("head").cloned();
            let mut items: Vec<ItemRec> = st
                .items
                .values()
                .filter(|i| i.is_pr)
                .filter(|i| state == "all" || i.state == state)
                .filter(|i| match &head {
                    Some(h) => {
                        Some(format!(
                            "{}:{}",
                            st.owner,
                            i.head.clone().unwrap_or_default()
                        )) == Some(h.clone())
                    }
                    None => true,
                })
                .cloned()
                .collect();
            items.sort_by_key(|b| std::cmp::Reverse(b.number));
            let all: Vec<Value> = items.iter().map(|i| pull_json(st, i)).collect();
            page(st, list_at, q, all)
        }
        ("POST", ["pulls"]) => {
            let (Some(title), Some(head), Some(base)) =
                (s(body, "title"), s(body, "head"), s(body, "base"))
            else {
                return validation(st, "PullRequest", "title, head and base are required");
            };
            if branch_sha(&st.bare, &head).is_none() {
                return respond(
                    st,
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"}),
                    &[],
                );
            }
            // One open pull request per head and base: the same head into another base is fine.
            if st.items.values().any(|i| {
                i.is_pr
                    && i.state == "open"
                    && i.head.as_deref() == Some(&head)
                    && i.base.as_deref() == Some(&base)
            }) {
                return validation(
                    st,
                    "PullRequest",
                    &format!("A pull request already exists for {}:{head}.", st.owner),
                );
            }
            let n = st.next_number;
            st.next_number += 1;
            st.tick += 1;
            let it = ItemRec {
                number: n,
                is_pr: true,
                state: "open".into(),
                title,
                body: s(body, "body").unwrap_or_default(),
                labels: Vec::new(),
                head: Some(head),
                head_sha: None,
                base: Some(base),
                draft: body.get("draft").and_then(Value::as_bool).unwrap_or(false),
                merged_at: None,
                created_at: now(),
                updated_at: now(),
                closed_at: None,
                tick: st.tick,
            };
            st.items.insert(n, it.clone());
            let v = pull_json(st, &it);
            respond(
                st,
                201,
                v,
                &[(
                    "location",
                    format!(
                        "https://api.github.com/repos/{}/{}/pulls/{n}",
                        st.owner, st.repo
                    ),
                )],
            )
        }
        ("GET", ["pulls", n]) | ("PATCH", ["pulls", n]) => {
            let Some(n) = n
                .parse::<u64>()
                .ok()
                .filter(|n| st.items.get(n).is_some_and(|i| i.is_pr))
            else {
                return error(st, 404, "Not Found");
            };
            if method == "PATCH" {
                let it = st.items.get_mut(&n).unwrap();
                if let Some(t) = s(body, "title") {
                    it.title = t;
                }
                if let Some(b) = s(body, "body") {
                    it.body = b;
                }
                if let Some(b) = s(body, "base") {
                    it.base = Some(b);
                }
                if let Some(state) = s(body, "state") {
                    if state == "closed" && it.state != "closed" {
                        it.head_sha = it.head.as_deref().and_then(|h| branch_sha(&st.bare, h));
                        it.closed_at = Some(now());
                    }
                    it.state = state;
                }
                touch(st, n);
            }
            let it = st.items[&n].clone();
            let v = pull_json(st, &it);
            respond(st, 200, v, &[])
        }
        ("GET", ["issues"]) => {
            let state = q.get("state").cloned().unwrap_or_else(|| "open".into());
            let want: Vec<String> = q
                .get("labels")
                .map(|l| {
                    l.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let mut items: Vec<ItemRec> = st
                .items
                .values()
                .filter(|i| state == "all" || i.state == state)
                .filter(|i| want.iter().all(|w| i.labels.contains(w)))
                .cloned()
                .collect();
            if q.get("sort").map(String::as_str) == Some("updated") {
                items.sort_by_key(|b| std::cmp::Reverse(b.tick));
                if q.get("direction").map(String::as_str) == Some("asc") {
                    items.reverse();
                }
            } else {
                items.sort_by_key(|b| std::cmp::Reverse(b.number));
            }
            let all: Vec<Value> = items.iter().map(|i| issue_json(st, i)).collect();
            page(st, list_at, q, all)
        }
        ("POST", ["issues"]) => {
            let Some(title) = s(body, "title") else {
                return validation(st, "Issue", "title is required");
            };
            let n = st.next_number;
            st.next_number += 1;
            st.tick += 1;
            let labels: Vec<String> = body
                .get("labels")
                .and_then(Value::as_array)
                .map(|ls| {
                    ls.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let it = ItemRec::open_issue(
                n,
                title,
                s(body, "body").unwrap_or_default(),
                labels,
                st.tick,
            );
            st.items.insert(n, it.clone());
            let v = issue_json(st, &it);
            respond(st, 201, v, &[])
        }
        ("GET", ["issues", n]) | ("PATCH", ["issues", n]) => {
            let Some(n) = n.parse::<u64>().ok().filter(|n| st.items.contains_key(n)) else {
                return error(st, 404, "Not Found");
            };
            if method == "PATCH" {
                let it = st.items.get_mut(&n).unwrap();
                if let Some(t) = s(body, "title") {
                    it.title = t;
                }
                if let Some(b) = s(body, "body") {
                    it.body = b;
                }
                if let Some(state) = s(body, "state") {
                    if state == "closed" && it.state != "closed" {
                        it.closed_at = Some(now());
                    }
                    it.state = state;
                }
                touch(st, n);
            }
            let it = st.items[&n].clone();
            let v = issue_json(st, &it);
            respond(st, 200, v, &[])
        }
        ("POST", ["issues", n, "labels"]) => {
            let Some(n) = n.parse::<u64>().ok().filter(|n| st.items.contains_key(n)) else {
                return error(st, 404, "Not Found");
            };
            let add: Vec<String> = body
                .get("labels")
                .and_then(Value::as_array)
                .map(|ls| {
                    ls.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let it = st.items.get_mut(&n).unwrap();
            for l in add {
                if !it.labels.contains(&l) {
                    it.labels.push(l);
                }
            }
            let labels = it.labels.clone();
            touch(st, n);
            let v: Vec<Value> = labels.iter().map(|l| label_json(st, l)).collect();
            respond(st, 200, Value::Array(v), &[])
        }
        ("DELETE", ["issues", n, "labels", name]) => {
            let name = http::percent_decode(name);
            let Some(n) = n.parse::<u64>().ok().filter(|n| st.items.contains_key(n)) else {
                return error(st, 404, "Not Found");
            };
            let it = st.items.get_mut(&n).unwrap();
            if !it.labels.contains(&name) {
                return error(st, 404, "Label does not exist");
            }
            it.labels.retain(|l| l != &name);
            let labels = it.labels.clone();
            touch(st, n);
            let v: Vec<Value> = labels.iter().map(|l| label_json(st, l)).collect();
            respond(st, 200, Value::Array(v), &[])
        }
        ("GET", ["issues", n, "comments"]) => {
            let n = n.parse::<u64>().unwrap_or(0);
            let all: Vec<Value> = st
                .comments
                .iter()
                .filter(|c| c.issue == n)
                .map(|c| comment_json(st, c))
                .collect();
            page(st, list_at, q, all)
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(n) = n.parse::<u64>().ok().filter(|n| st.items.contains_key(n)) else {
                return error(st, 404, "Not Found");
            };
            let Some(text) = s(body, "body") else {
                return validation(st, "IssueComment", "body is required");
            };
            let c = CommentRec {
                id: st.next_comment,
                issue: n,
                body: text,
            };
            st.next_comment += 1;
            st.comments.push(c.clone());
            touch(st, n);
            let v = comment_json(st, &c);
            respond(st, 201, v, &[])
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id = id.parse::<u64>().unwrap_or(0);
            let Some(text) = s(body, "body") else {
                return validation(st, "IssueComment", "body is required");
            };
            let Some(c) = st.comments.iter_mut().find(|c| c.id == id) else {
                return error(st, 404, "Not Found");
            };
            c.body = text;
            let c = c.clone();
            let v = comment_json(st, &c);
            respond(st, 200, v, &[])
        }
        ("POST", ["statuses", sha]) => {
            let Some(state) = s(body, "state")
                .filter(|x| ["error", "failure", "pending", "success"].contains(&x.as_str()))
            else {
                return validation(st, "Status", "state is invalid");
            };
            if commit_known(&st.bare, sha) == Some(false) {
                return respond(
                    st,
                    422,
                    json!({"message": format!("No commit found for SHA: {sha}"), "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status", "status": "422"}),
                    &[],
                );
            }
            let rec = StatusRec {
                sha: sha.to_string(),
                state,
                context: s(body, "context").unwrap_or_else(|| "default".into()),
                description: s(body, "description").unwrap_or_default(),
                target_url: s(body, "target_url"),
            };
            st.statuses.push(rec.clone());
            let v = json!({
                "url": format!("https://api.github.com/repos/{}/{}/statuses/{sha}", st.owner, st.repo),
                "id": 3_000_000 + st.statuses.len() as u64,
                "state": rec.state,
                "description": rec.description,
                "target_url": rec.target_url,
                "context": rec.context,
                "created_at": now(),
                "updated_at": now(),
                "creator": user()
            });
            respond(st, 201, v, &[])
        }
        ("GET", ["git", "ref", "heads", branch @ ..])
        | ("GET", ["git", "refs", "heads", branch @ ..]) => {
            let b = branch.join("/");
            match branch_sha(&st.bare, &b) {
                Some(sha) => {
                    let v = json!({"ref": format!("refs/heads/{b}"), "node_id": "REF_x", "url": "", "object": {"sha": sha, "type": "commit", "url": ""}});
                    respond(st, 200, v, &[])
                }
                None => error(st, 404, "Not Found"),
            }
        }
        ("DELETE", ["git", "refs", "heads", branch @ ..]) => {
            let b = branch.join("/");
            let repo = git2::Repository::open_bare(&st.bare).unwrap();
            match repo.find_reference(&format!("refs/heads/{b}")) {
                Ok(mut r) => {
                    r.delete().unwrap();
                    respond(st, 204, Value::Null, &[])
                }
                Err(_) => error(st, 422, "Reference does not exist"),
            }
        }
        _ => error(st, 404, "Not Found"),
    }
}

fn comment_json(st: &State, c: &CommentRec) -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{}/{}/issues/comments/{}", st.owner, st.repo, c.id),
        "html_url": format!("https://github.com/{}/{}/issues/{}#issuecomment-{}", st.owner, st.repo, c.issue, c.id),
        "issue_url": format!("https://api.github.com/repos/{}/{}/issues/{}", st.owner, st.repo, c.issue),
        "id": c.id,
        "node_id": format!("IC_kwDO{}", c.id),
        "user": user(),
        "created_at": now(),
        "updated_at": now(),
        "author_association": "NONE",
        "body": c.body
    })
}
