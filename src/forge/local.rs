//! The local forge: pull requests and issues as files, for runs without GitHub (the offline demo,
//! air-gapped clusters, trying driftwarden out).
//!
//! Layout of the output directory (default `<state_dir>/prs`):
//!
//! ```text
//! repo.git/                      bare Git repository: the base branch (a mirror of the desired
//!                                source, or a snapshot commit of a desired directory) and one
//!                                branch `driftwarden/<target>/<fingerprint>` per pull request
//! <target>/<fingerprint>.md      the body of the pull request or issue for that drift
//! <target>/<fingerprint>.patch   the pull request's change, as `git diff base...branch`
//! <target>/<fingerprint>.comments.md   comments, when there are any
//! index.md                       every pull request and issue, open and closed
//! state.json                     numbers, states, labels, branches (machine-readable)
//! ```
//!
//! The desired source itself is never written to: not its files, not its branches. To take a
//! branch into a real repository: `git fetch <dir>/repo.git 'refs/heads/driftwarden/*:refs/heads/driftwarden/*'`.
//!
//! Writes are idempotent (a file is rewritten only when its content changes) and the whole
//! directory is locked for the lifetime of a [`LocalForge`], so concurrent runs take turns. The
//! revert loop works here too: set an item's `state` to `closed` and add the label `drift/revert`
//! in `state.json`.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::git::WorkRepo;
use super::{Comment, ForgeError, Item, ItemKind, ItemState, Result, Status};

/// One pull request or issue, as `state.json` keeps it. The body is in `file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalItem {
    number: u64,
    kind: ItemKind,
    state: ItemState,
    #[serde(default)]
    merged: bool,
    title: String,
    /// The body's Markdown file, relative to the output directory.
    file: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    created: String,
    #[serde(default)]
    updated: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    comments: Vec<Comment>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    next_number: u64,
    #[serde(default)]
    next_comment: u64,
    items: Vec<LocalItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<LocalStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalStatus {
    sha: String,
    context: String,
    state: String,
    description: String,
}

/// An exclusive lock on the output directory: a `.lock` file created atomically and holding
/// the owner's process id, removed on drop. A lock whose process is gone (or, where that cannot
/// be told, older than ten minutes) is stale and taken over.
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn acquire(path: &Path) -> Result<DirLock> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match File::options().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(DirLock {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        return Err(io(
                            path,
                            std::io::Error::other(format!(
                                "locked by another driftwarden run for over {}s",
                                LOCK_WAIT.as_secs()
                            )),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io(path, e)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a run waits for another run's lock.
const LOCK_WAIT: Duration = Duration::from_secs(300);

fn lock_is_stale(path: &Path) -> bool {
    let pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let proc_root = Path::new("/proc/self");
    match pid {
        Some(pid) if proc_root.exists() => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600)),
    }
}

/// The local forge of one run. Holds the directory's lock until dropped.
pub struct LocalForge {
    dir: PathBuf,
    _lock: DirLock,
}

impl std::fmt::Debug for LocalForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalForge")
            .field("dir", &self.dir)
            .finish()
    }
}

fn io(path: &Path, e: std::io::Error) -> ForgeError {
    ForgeError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// Writes `bytes` to `path` unless it already holds them; atomically and durably (fsynced temp
/// file and rename, statelock::write_atomic).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    crate::statelock::write_atomic(path, bytes).map_err(|e| io(path, e))?;
    Ok(true)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

impl LocalForge {
    /// Opens (creating) the output directory and takes its lock, waiting for other runs.
    pub fn open(dir: &Path) -> Result<LocalForge> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock = DirLock::acquire(&dir.join(".lock"))?;
        Ok(LocalForge {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The forge's Git repository, where pull-request branches live.
    pub fn repo(&self) -> Result<WorkRepo> {
        Ok(WorkRepo::local(&self.dir.join("repo.git"))?)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn load(&self) -> Result<State> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ForgeError::State {
                path: p.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                next_number: 1,
                next_comment: 1,
                ..State::default()
            }),
            Err(e) => Err(io(&p, e)),
        }
    }

    fn save(&self, st: &State) -> Result<()> {
        let mut text = serde_json::to_string_pretty(st).map_err(|e| ForgeError::State {
            path: self.state_path().display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        write_if_changed(&self.state_path(), text.as_bytes())?;
        write_if_changed(&self.dir.join("index.md"), render_index(st).as_bytes())?;
        Ok(())
    }

    fn to_item(&self, i: &LocalItem) -> Item {
        let path = self.dir.join(&i.file);
        Item {
            number: i.number,
            kind: i.kind,
            state: i.state,
            merged: i.merged,
            title: i.title.clone(),
            body: std::fs::read_to_string(&path).unwrap_or_default(),
            labels: i.labels.clone(),
            branch: i.branch.clone(),
            draft: i.draft,
            url: path.display().to_string(),
            updated: i.updated.clone(),
        }
    }

    /// Every item (in a state, when given).
    pub fn items(&self, state: Option<ItemState>) -> Result<Vec<Item>> {
        let st = self.load()?;
        Ok(st
            .items
            .iter()
            .filter(|i| state.is_none_or(|s| i.state == s))
            .map(|i| self.to_item(i))
            .collect())
    }

    /// The body file for an item: `<target>/<fingerprint>.md` for a driftwarden branch, the
    /// slug when given, else `items/<number>.md`.
    fn file_for(slug: Option<&str>, branch: Option<&str>, number: u64) -> String {
        if let Some(s) = slug {
            return format!("{s}.md");
        }
        if let Some(rest) = branch.and_then(|b| b.strip_prefix("driftwarden/")) {
            return format!("{rest}.md");
        }
        format!("items/{number}.md")
    }

    /// Opens a pull request or issue.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        kind: ItemKind,
        title: &str,
        body: &str,
        labels: &[String],
        head_base: Option<(&str, &str)>,
        draft: bool,
        slug: Option<&str>,
    ) -> Result<Item> {
        let mut st = self.load()?;
        let number = st.next_number.max(1);
        st.next_number = number + 1;
        let branch = head_base.map(|(h, _)| h.to_string());
        let file = Self::file_for(slug, branch.as_deref(), number);
        let now = crate::run::now_rfc3339();
        write_if_changed(&self.dir.join(&file), body.as_bytes())?;
        // A new item for the same file starts without the old one's comments.
        remove_if_exists(&self.dir.join(file.replace(".md", ".comments.md")))?;
        let item = LocalItem {
            number,
            kind,
            state: ItemState::Open,
            merged: false,
            title: title.to_string(),
            file,
            labels: labels.to_vec(),
            branch,
            base: head_base.map(|(_, b)| b.to_string()),
            draft,
            created: now.clone(),
            updated: now,
            comments: Vec::new(),
        };
        if let (ItemKind::PullRequest, Some((h, b))) = (kind, head_base) {
            self.write_patch(&item.file, b, h)?;
        }
        let out = self.to_item(&item);
        st.items.push(item);
        self.save(&st)?;
        Ok(out)
    }

    fn write_patch(&self, file: &str, base: &str, head: &str) -> Result<()> {
        let repo = self.repo()?;
        let patch_path = self.dir.join(file.replace(".md", ".patch"));
        match (repo.tip(base)?, repo.tip(head)?) {
            (Some(_), Some(h)) => {
                // The branch's own parent is the base it was built on.
                let from = repo.parent(h)?.unwrap_or(h);
                let patch = repo.patch(from, h)?;
                write_if_changed(&patch_path, patch.as_bytes())?;
            }
            _ => remove_if_exists(&patch_path)?,
        }
        Ok(())
    }

    fn find(st: &mut State, number: u64) -> Result<&mut LocalItem> {
        st.items
            .iter_mut()
            .find(|i| i.number == number)
            .ok_or_else(|| ForgeError::State {
                path: "state.json".into(),
                message: format!("no item #{number}"),
            })
    }

    /// Replaces title and body (and refreshes the patch of a pull request).
    pub fn update(&self, number: u64, title: &str, body: &str) -> Result<()> {
        let mut st = self.load()?;
        let it = Self::find(&mut st, number)?;
        it.title = title.to_string();
        it.updated = crate::run::now_rfc3339();
        let (file, branch, base) = (it.file.clone(), it.branch.clone(), it.base.clone());
        write_if_changed(&self.dir.join(&file), body.as_bytes())?;
        if let (Some(h), Some(b)) = (branch, base) {
            self.write_patch(&file, &b, &h)?;
        }
        self.save(&st)
    }

    pub fn relabel(&self, number: u64, add: &[String], remove: &[String]) -> Result<()> {
        let mut st = self.load()?;
        let it = Self::find(&mut st, number)?;
        it.labels.retain(|l| !remove.contains(l));
        for a in add {
            if !it.labels.contains(a) {
                it.labels.push(a.clone());
            }
        }
        self.save(&st)
    }

    pub fn comment(&self, number: u64, body: &str) -> Result<()> {
        let mut st = self.load()?;
        let id = st.next_comment.max(1);
        st.next_comment = id + 1;
        let it = Self::find(&mut st, number)?;
        it.comments.push(Comment {
            id,
            body: body.to_string(),
        });
        let file = it.file.clone();
        let comments = it.comments.clone();
        self.write_comments(&file, &comments)?;
        self.save(&st)
    }

    fn write_comments(&self, file: &str, comments: &[Comment]) -> Result<()> {
        let mut text = String::new();
        for c in comments {
            text.push_str(&format!(
                "<!-- comment {} -->\n{}\n\n---\n\n",
                c.id,
                c.body.trim_end()
            ));
        }
        write_if_changed(
            &self.dir.join(file.replace(".md", ".comments.md")),
            text.as_bytes(),
        )?;
        Ok(())
    }

    pub fn comments(&self, number: u64) -> Result<Vec<Comment>> {
        let mut st = self.load()?;
        Ok(Self::find(&mut st, number)?.comments.clone())
    }

    pub fn update_comment(&self, number: u64, id: u64, body: &str) -> Result<()> {
        let mut st = self.load()?;
        let it = Self::find(&mut st, number)?;
        if let Some(c) = it.comments.iter_mut().find(|c| c.id == id) {
            c.body = body.to_string();
        }
        let file = it.file.clone();
        let comments = it.comments.clone();
        self.write_comments(&file, &comments)?;
        self.save(&st)
    }

    /// Whether item `number` was merged (`merged` in `state.json`: the local forge merges
    /// nothing itself; a person marks it).
    pub fn merged(&self, number: u64) -> Result<bool> {
        let mut st = self.load()?;
        Ok(Self::find(&mut st, number)?.merged)
    }

    /// Closes an item, replacing its body when given.
    pub fn close(&self, number: u64, body: Option<&str>) -> Result<()> {
        let mut st = self.load()?;
        let it = Self::find(&mut st, number)?;
        it.state = ItemState::Closed;
        it.updated = crate::run::now_rfc3339();
        let file = it.file.clone();
        if let Some(b) = body {
            write_if_changed(&self.dir.join(file), b.as_bytes())?;
        }
        self.save(&st)
    }

    /// Deletes a branch of the forge's repository and the patch that showed it.
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        let repo = self.repo()?;
        if let Some(tip) = repo.tip(branch)? {
            repo.delete(branch, tip)?;
        }
        if let Some(rest) = branch.strip_prefix("driftwarden/") {
            remove_if_exists(&self.dir.join(format!("{rest}.patch")))?;
        }
        Ok(())
    }

    /// Records a commit status in `state.json`.
    pub fn set_status(&self, s: &Status) -> Result<()> {
        let mut st = self.load()?;
        st.statuses
            .retain(|x| !(x.sha == s.sha && x.context == s.context));
        st.statuses.push(LocalStatus {
            sha: s.sha.clone(),
            context: s.context.clone(),
            state: s.state.as_str().to_string(),
            description: s.description.clone(),
        });
        self.save(&st)
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `index.md`: open items first, then closed ones. Deterministic (no timestamps of its own).
fn render_index(st: &State) -> String {
    let mut out = String::from(
        "# driftwarden: pull requests and issues (local forge)\n\nBranches live in `repo.git`; fetch them with `git fetch <this directory>/repo.git 'refs/heads/driftwarden/*:refs/heads/driftwarden/*'`.\n",
    );
    for (heading, state) in [("Open", ItemState::Open), ("Closed", ItemState::Closed)] {
        let items: Vec<&LocalItem> = st.items.iter().filter(|i| i.state == state).collect();
        out.push_str(&format!("\n## {heading} ({})\n\n", items.len()));
        if items.is_empty() {
            out.push_str("None.\n");
            continue;
        }
        out.push_str("| # | Kind | Title | Labels | Branch | Body |\n| ---: | --- | --- | --- | --- | --- |\n");
        for i in items {
            let kind = match (i.kind, i.draft) {
                (ItemKind::PullRequest, true) => "draft pull request",
                (ItemKind::PullRequest, false) if i.merged => "pull request (merged)",
                (k, _) => k.noun(),
            };
            out.push_str(&format!(
                "| {} | {kind} | {} | {} | {} | [{}]({}) |\n",
                i.number,
                md_cell(&i.title),
                md_cell(&i.labels.join(", ")),
                i.branch
                    .as_deref()
                    .map(|b| format!("`{b}`"))
                    .unwrap_or_default(),
                md_cell(&i.file),
                i.file
            ));
        }
    }
    out
}
