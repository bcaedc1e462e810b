//! Forges: where pull requests, issues, comments and commit statuses live.
//!
//! Two implementations behind one enum, [`Forge`]:
//! - [`github::GitHub`]: the GitHub REST API through octocrab (github.com or an Enterprise
//!   server's `/api/v3`), with primary and secondary rate limits respected.
//! - [`local::LocalForge`]: the embedded default without GitHub. Pull-request branches are
//!   written into a bare Git repository under an output directory and every pull request or
//!   issue becomes a Markdown file there, with a `state.json` and an `index.md`. Nothing leaves
//!   the machine.
//!
//! Branches themselves are built and published by [`git`] (git2): commits are made in a bare
//! work repository, never in anyone's checkout, and pushed with a lease so commits someone else
//! added to a branch are never overwritten.
//!
//! Only `act/` and the `pr-check` command call into this module; it is the only code that writes
//! to a forge. Tokens are read from the environment, never logged, and never part of an error.

pub mod git;
pub mod github;
pub mod local;

use serde::{Deserialize, Serialize};

/// Failures talking to a forge.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The API answered with an error status.
    #[error("GitHub API {method} {path}: HTTP {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// A rate limit would make the run wait longer than it is allowed to.
    #[error(
        "GitHub API {method} {path}: rate limited ({kind}); retry in {wait_secs}s exceeds the {max_secs}s this run waits"
    )]
    RateLimited {
        method: String,
        path: String,
        kind: &'static str,
        wait_secs: u64,
        max_secs: u64,
    },
    /// The request never got an answer.
    #[error("GitHub API {method} {path}")]
    Transport {
        method: String,
        path: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    /// An answer that is not what the API documents.
    #[error("GitHub API {method} {path}: unexpected response: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
    /// The token's environment variable is not set.
    #[error("environment variable {0} (the GitHub token) is not set")]
    TokenMissing(String),
    /// The forge settings cannot work.
    #[error("pull_requests: {0}")]
    Config(String),
    /// The local forge's files.
    #[error("local forge: {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The local forge's state file is damaged.
    #[error("local forge state {path}: {message}")]
    State { path: String, message: String },
    /// Building or publishing a branch.
    #[error(transparent)]
    Git(#[from] git::GitOpError),
}

/// Result alias for this module.
pub type Result<T, E = ForgeError> = std::result::Result<T, E>;

/// A pull request or an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    PullRequest,
    Issue,
}

impl ItemKind {
    /// `pull request` or `issue`.
    pub fn noun(self) -> &'static str {
        match self {
            ItemKind::PullRequest => "pull request",
            ItemKind::Issue => "issue",
        }
    }
}

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Open,
    Closed,
}

/// A pull request or issue as driftwarden needs to see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub number: u64,
    pub kind: ItemKind,
    pub state: ItemState,
    /// A pull request closed by merging.
    #[serde(default)]
    pub merged: bool,
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// The head branch of a pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default)]
    pub draft: bool,
    /// Where a person finds it (a URL, or the local Markdown file).
    #[serde(default)]
    pub url: String,
    /// When it was closed or last updated (RFC 3339), for ordering closed items.
    #[serde(default)]
    pub updated: String,
}

/// A pull request to open.
#[derive(Debug, Clone)]
pub struct NewPull {
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub draft: bool,
    pub labels: Vec<String>,
    /// A stable name for the local forge's files (`<target>/<fingerprint>`); GitHub ignores it.
    pub slug: Option<String>,
}

/// An issue to open.
#[derive(Debug, Clone)]
pub struct NewIssue {
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// A stable name for the local forge's files (`<target>/<fingerprint>`); GitHub ignores it.
    pub slug: Option<String>,
}

/// A comment on a pull request or issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub body: String,
}

/// A commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Success,
    Failure,
    Error,
    Pending,
}

impl StatusState {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
            StatusState::Pending => "pending",
        }
    }
}

/// A commit status to set.
#[derive(Debug, Clone)]
pub struct Status {
    pub sha: String,
    pub state: StatusState,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

/// A forge: GitHub or the local directory.
#[derive(Debug)]
pub enum Forge {
    GitHub(github::GitHub),
    Local(local::LocalForge),
}

impl Forge {
    /// A short name for messages: `github owner/name` or `local DIR`.
    pub fn describe(&self) -> String {
        match self {
            Forge::GitHub(g) => format!("github {}", g.repo_name()),
            Forge::Local(l) => format!("local {}", l.dir().display()),
        }
    }

    /// Open pull requests whose head branch starts with `branch_prefix`, and open issues
    /// labelled `label`.
    pub async fn open_items(&self, branch_prefix: &str, label: &str) -> Result<Vec<Item>> {
        match self {
            Forge::GitHub(g) => g.open_items(branch_prefix, label).await,
            Forge::Local(l) => l.items(Some(ItemState::Open)),
        }
    }

    /// The most recently closed items labelled `label` (pull requests and issues), newest first.
    pub async fn recently_closed(&self, label: &str) -> Result<Vec<Item>> {
        match self {
            Forge::GitHub(g) => g.recently_closed(label).await,
            Forge::Local(l) => {
                let mut items = l.items(Some(ItemState::Closed))?;
                items.retain(|i| i.labels.iter().any(|l| l == label));
                items.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.number.cmp(&a.number)));
                Ok(items)
            }
        }
    }

    /// Whether pull request `number` was merged, as the forge says it now: GitHub's pulls API
    /// (`merged`, else `merged_at`), the local forge's `state.json`.
    pub async fn pull_merged(&self, number: u64) -> Result<bool> {
        match self {
            Forge::GitHub(g) => g.pull_merged(number).await,
            Forge::Local(l) => l.merged(number),
        }
    }

    /// Opens a pull request (labels applied).
    pub async fn create_pull(&self, p: &NewPull) -> Result<Item> {
        match self {
            Forge::GitHub(g) => g.create_pull(p).await,
            Forge::Local(l) => l.create(
                ItemKind::PullRequest,
                &p.title,
                &p.body,
                &p.labels,
                Some((&p.head, &p.base)),
                p.draft,
                p.slug.as_deref(),
            ),
        }
    }

    /// Opens an issue.
    pub async fn create_issue(&self, i: &NewIssue) -> Result<Item> {
        match self {
            Forge::GitHub(g) => g.create_issue(i).await,
            Forge::Local(l) => l.create(
                ItemKind::Issue,
                &i.title,
                &i.body,
                &i.labels,
                None,
                false,
                i.slug.as_deref(),
            ),
        }
    }

    /// Replaces the title and body of a pull request or issue.
    pub async fn update(&self, item: &Item, title: &str, body: &str) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.update(item, title, body).await,
            Forge::Local(l) => l.update(item.number, title, body),
        }
    }

    /// Adds and removes labels.
    pub async fn relabel(&self, item: &Item, add: &[String], remove: &[String]) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.relabel(item, add, remove).await,
            Forge::Local(l) => l.relabel(item.number, add, remove),
        }
    }

    /// Comments on a pull request or issue.
    pub async fn comment(&self, number: u64, body: &str) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.comment(number, body).await,
            Forge::Local(l) => l.comment(number, body),
        }
    }

    /// The comments of a pull request or issue.
    pub async fn comments(&self, number: u64) -> Result<Vec<Comment>> {
        match self {
            Forge::GitHub(g) => g.comments(number).await,
            Forge::Local(l) => l.comments(number),
        }
    }

    /// Replaces a comment's body.
    pub async fn update_comment(&self, number: u64, id: u64, body: &str) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.update_comment(id, body).await,
            Forge::Local(l) => l.update_comment(number, id, body),
        }
    }

    /// Posts a comment carrying `marker`, or updates the one that already does: one sticky
    /// comment per item. Returns true when something was written.
    pub async fn upsert_comment(&self, number: u64, marker: &str, body: &str) -> Result<bool> {
        let existing = self
            .comments(number)
            .await?
            .into_iter()
            .find(|c| c.body.contains(marker));
        match existing {
            Some(c) if c.body == body => Ok(false),
            Some(c) => self.update_comment(number, c.id, body).await.map(|_| true),
            None => self.comment(number, body).await.map(|_| true),
        }
    }

    /// Closes a pull request or issue, replacing its body in the same request when given.
    pub async fn close(&self, item: &Item, body: Option<&str>) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.close(item, body).await,
            Forge::Local(l) => l.close(item.number, body),
        }
    }

    /// Deletes a branch on the forge (after its pull request was closed).
    pub async fn delete_branch(&self, branch: &str) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.delete_branch(branch).await,
            Forge::Local(l) => l.delete_branch(branch),
        }
    }

    /// Sets a commit status.
    pub async fn set_status(&self, s: &Status) -> Result<()> {
        match self {
            Forge::GitHub(g) => g.set_status(s).await,
            Forge::Local(l) => l.set_status(s),
        }
    }
}

/// Cuts a body to GitHub's limit (65,536 characters) at a line boundary, ending with `pointer`
/// (where the full text is). A code fence or `<details>` the kept lines leave open is closed
/// first (with the fence's own length: the Markdown renderer lengthens fences around text that
/// holds backticks), and the result, closers and pointer included, is never over `limit`.
pub fn truncate_body(body: &str, limit: usize, pointer: &str) -> String {
    if body.chars().count() <= limit {
        return body.to_string();
    }
    let note =
        format!("\n\n---\n**Truncated**: this text exceeded {limit} characters. {pointer}\n");
    let note_len = note.chars().count();
    let mut out = String::new();
    let mut used = 0;
    let mut open = OpenBlocks::default();
    for line in body.split_inclusive('\n') {
        let mut next = open.clone();
        next.feed(line);
        let n = line.chars().count();
        if used + n + next.closers().chars().count() + note_len > limit {
            break;
        }
        out.push_str(line);
        used += n;
        open = next;
    }
    // An open code fence or <details> would swallow the note: close them.
    out.push_str(&open.closers());
    out.push_str(&note);
    out
}

/// What a Markdown prefix leaves open: a fenced code block (its character and length) and the
/// `<details>` elements opened outside code.
#[derive(Debug, Clone, Default)]
struct OpenBlocks {
    fence: Option<(char, usize)>,
    details: usize,
}

impl OpenBlocks {
    /// Takes one more line (CommonMark fences: up to three spaces of indent, three or more
    /// backticks or tildes; closed by a line of at least as many of the same character).
    fn feed(&mut self, line: &str) {
        let line = line.trim_end_matches(['\n', '\r']);
        let text = line.trim_start_matches(' ');
        let indented = line.len() - text.len() > 3;
        let run = |c: char| text.chars().take_while(|x| *x == c).count();
        match self.fence {
            Some((c, n)) => {
                if !indented && run(c) >= n && text.trim_end().chars().all(|x| x == c) {
                    self.fence = None;
                }
            }
            None => {
                for c in ['`', '~'] {
                    let k = run(c);
                    // A backtick fence's info string holds no backtick.
                    if !indented && k >= 3 && !(c == '`' && text[k..].contains('`')) {
                        self.fence = Some((c, k));
                        return;
                    }
                }
                self.details += line.matches("<details>").count();
                self.details = self
                    .details
                    .saturating_sub(line.matches("</details>").count());
            }
        }
    }

    /// The text that closes what is open.
    fn closers(&self) -> String {
        let mut s = String::new();
        if let Some((c, n)) = self.fence {
            s.push('\n');
            s.push_str(&c.to_string().repeat(n));
            s.push('\n');
        }
        for _ in 0..self.details {
            s.push_str("\n</details>\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_limit_and_the_pointer() {
        let body = format!("<details>\n```diff\n{}", "- line\n".repeat(20_000));
        let out = truncate_body(&body, 65_536, "See the full report: x.");
        assert!(out.chars().count() <= 65_536, "{}", out.chars().count());
        assert!(out.ends_with("See the full report: x.\n"));
        assert_eq!(out.matches("```").count() % 2, 0);
        assert!(out.contains("</details>"));
        assert_eq!(truncate_body("short", 65_536, "p"), "short");
    }
}
