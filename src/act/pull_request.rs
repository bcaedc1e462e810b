//! Pull requests and issues for drift that is not corrected in place (docs/pull-requests.md).
//!
//! For every drift whose decided action is a pull request or an issue:
//! 1. **Adoption edit** ([`super::edit_yaml`], [`super::edit_hcl`]): the file in Git is changed so
//!    desired equals live for the drifted fields, touching only the lines that differ. A Missing
//!    object's document is removed; an Unmanaged object gets a new manifest; an Unmanaged EC2
//!    resource gets an `import` block and a resource skeleton. Where no honest edit exists (a
//!    secret, a Helm/Kustomize render, an anchor, an expression), an **issue** is opened instead,
//!    with the same body.
//! 2. **Branch** `driftwarden/<target>/<fingerprint>`: one commit on the base, by the configured
//!    author, published with a lease ([`crate::forge::git`]). A branch that carries someone
//!    else's commit is never rewritten: the drift is skipped with the reason.
//! 3. **Forge**: the open pull request of the branch is found again and updated when the drift
//!    changed (body, labels, branch), or one is opened (labels `drift` and `drift/risky` or
//!    `drift/forbidden`; forbidden ones as drafts), within the per-run cap on new items.
//! 4. **Closing**: when a target's read was complete, every open item of that target whose drift
//!    is gone (or was corrected in place this run) is closed with a comment, and its branch
//!    deleted unless someone else committed to it. Items someone else closed are recorded once
//!    in the audit log (`item_closed`) with whether the forge says they were merged.
//! 5. **Revert loop** ([`prepare`], before the correctors run): a pull request or issue closed
//!    with the label `drift/revert` for the same drift makes a run in `autocorrect` mode correct
//!    it despite its class, within the target's guardrails (the mode is one: `recommend` makes
//!    no live writes, so there the drift is skipped with the reason and waits for an
//!    `autocorrect` run; `observe` does not look). The report says so and a comment on the
//!    closed item tells the result.
//!
//! Every forge write is recorded in the audit log before it is sent and after (src/audit): the
//! drift's own item as one `pull_request` or `issue` action, and each close, comment and branch
//! deletion on its own ([`audited`]); a write whose intent cannot be recorded is not sent.
//!
//! A closed item for the same drift (same changes) is not reopened: merged, it waits for the
//! desired source to catch up; closed without `drift/revert`, a person decided to leave it.
//! Bodies carry a marker comment (`<!-- driftwarden:item target=… fingerprint=… changes=… -->`)
//! by which items are found again; bodies over GitHub's 65,536 characters are truncated with a
//! pointer to the full report. Secret values never reach a body, a commit or a log: drifts
//! arrive masked, and a masked change is never adopted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use git2::Oid;
use globset::{Glob, GlobSetBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::ActContext;
use super::edit_hcl::{self, HclError};
use super::edit_yaml::{self, DocRef, EditError};
use crate::audit::{ForgeWrite, ItemRef};
use crate::config::{DesiredLocation, ForgeKind, PullRequestSettings, Target};
use crate::diff::is_secret;
use crate::errors::error_chain;
use crate::forge::git::{Author, FINGERPRINT_TRAILER, FileChange, Remote, WorkRepo};
use crate::forge::github::{GitHub, GitHubSettings};
use crate::forge::local::LocalForge;
use crate::forge::{Forge, ForgeError, Item, ItemKind, NewIssue, NewPull, truncate_body};
use crate::model::{
    Action, ActionRecord, ActionResult, ChangeOp, Class, Drift, DriftKind, Mode, Remedy,
    ResourceId, SourceError, pointer_segments,
};
use crate::report::RenderOptions;
use crate::report::markdown;

/// Every driftwarden item carries this label.
pub const LABEL_DRIFT: &str = "drift";
/// The label of risky drift.
pub const LABEL_RISKY: &str = "drift/risky";
/// The label of forbidden drift.
pub const LABEL_FORBIDDEN: &str = "drift/forbidden";
/// Closing an item with this label asks the next run to restore Git's state.
pub const LABEL_REVERT: &str = "drift/revert";
/// GitHub's limit on a pull request or issue body, in characters.
pub const BODY_LIMIT: usize = 65_536;
/// The marker that starts every body driftwarden writes.
pub const ITEM_MARKER: &str = "<!-- driftwarden:item";

/// The branch of a drift's pull request.
pub fn branch_name(target: &str, fingerprint: &str) -> String {
    format!("driftwarden/{target}/{fingerprint}")
}

/// What a body's marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub target: String,
    pub fingerprint: String,
    /// The digest of the drift's changes the item was written for.
    pub changes: String,
    /// Why driftwarden itself closed the item (`resolved`, `superseded`); `None` when a person
    /// closed it, or it is open.
    pub closed: Option<String>,
}

/// Reads the marker of a body written by driftwarden.
pub fn parse_marker(body: &str) -> Option<Marker> {
    let start = body.find(ITEM_MARKER)? + ITEM_MARKER.len();
    let end = start + body[start..].find("-->")?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for tok in body[start..end].split_whitespace() {
        if let Some((k, v)) = tok.split_once('=') {
            fields.insert(k, v);
        }
    }
    Some(Marker {
        target: fields.get("target")?.to_string(),
        fingerprint: fields.get("fingerprint")?.to_string(),
        changes: fields.get("changes").unwrap_or(&"").to_string(),
        closed: fields.get("closed").map(|c| c.to_string()),
    })
}

/// The body with `closed=<why>` added to its marker: driftwarden closed it, not a person, so the
/// same drift coming back later opens a new item.
pub fn mark_closed(body: &str, why: &str) -> String {
    let Some(start) = body.find(ITEM_MARKER) else {
        return body.to_string();
    };
    let Some(end) = body[start..].find("-->").map(|e| start + e) else {
        return body.to_string();
    };
    if body[start..end].contains(" closed=") {
        return body.to_string();
    }
    let head = body[..end].trim_end();
    format!("{head} closed={why} {}", &body[end..])
}

/// A stable digest of what drifted: kind, paths, operations and (masked) values. Attribution is
/// left out: the same drift seen again at another time is the same drift.
pub fn changes_digest(d: &Drift) -> String {
    let changes: Vec<Value> = d
        .changes
        .iter()
        .map(|c| json!([c.path, c.op, c.desired, c.live, c.masked]))
        .collect();
    let doc = json!([d.kind, changes]);
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One run's pull-request machinery, shared by every target: the forge (opened on first use),
/// the per-run count of new items and the reverts granted before the correctors ran.
pub struct Session {
    settings: Option<PullRequestSettings>,
    state_dir: PathBuf,
    forge: tokio::sync::OnceCell<Result<Forge, String>>,
    new_items: AtomicUsize,
    /// Fingerprint → the closed item that asked for a revert.
    reverts: Mutex<HashMap<String, (u64, ItemKind)>>,
    /// The targets found in mass drift, for the report (src/act/mass_drift.rs).
    mass: Mutex<Vec<crate::model::MassDrift>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("forge", &self.settings.as_ref().map(|s| s.forge))
            .field("new_items", &self.new_items.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a config's `pull_requests` settings (none: every action stays planned).
    pub fn new(settings: Option<&PullRequestSettings>, state_dir: &Path) -> Session {
        Session {
            settings: settings.cloned(),
            state_dir: state_dir.to_path_buf(),
            forge: tokio::sync::OnceCell::new(),
            new_items: AtomicUsize::new(0),
            mass: Mutex::new(Vec::new()),
            reverts: Mutex::new(HashMap::new()),
        }
    }

    /// A session that does nothing.
    pub fn disabled() -> Session {
        Session::new(None, Path::new("."))
    }

    /// The settings, when pull requests are configured.
    pub fn settings(&self) -> Option<&PullRequestSettings> {
        self.settings.as_ref()
    }

    pub(crate) async fn forge(&self) -> Result<&Forge, String> {
        let Some(s) = &self.settings else {
            return Err("pull requests are not configured".into());
        };
        self.forge
            .get_or_init(|| async { open_forge(s, &self.state_dir).await })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    fn author(&self) -> Author {
        match &self.settings {
            Some(s) => Author {
                name: s.author_name.clone(),
                email: s.author_email.clone(),
            },
            None => Author {
                name: "driftwarden".into(),
                email: "driftwarden@users.noreply.github.com".into(),
            },
        }
    }

    /// Takes one slot of the per-run cap on new items; false when the cap is reached.
    fn take_new_slot(&self, max: usize) -> bool {
        self.new_items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A new cycle of a long-running `watch`: the per-run cap on new items starts over.
    pub fn begin_cycle(&self) {
        self.new_items.store(0, Ordering::SeqCst);
    }

    /// A new pass of a long-running `watch` (a cycle or one event's objects): the reverts the
    /// revert loop found are looked up again, so none is commented twice.
    pub fn begin_pass(&self) {
        if let Ok(mut r) = self.reverts.lock() {
            r.clear();
        }
    }

    /// Notes a target found in mass drift (the last note of a target wins: `watch` passes).
    pub(crate) fn note_mass_drift(&self, m: crate::model::MassDrift) {
        if let Ok(mut v) = self.mass.lock() {
            v.retain(|x| x.target != m.target);
            v.push(m);
        }
    }

    /// The mass drift last noted for `target` (by the last pass over the whole target, in
    /// `watch`), if any.
    pub(crate) fn mass_drift_of(&self, target: &str) -> Option<crate::model::MassDrift> {
        self.mass
            .lock()
            .ok()
            .and_then(|v| v.iter().find(|m| m.target == target).cloned())
    }

    /// Forgets `target`'s mass drift: a pass over the whole target found none.
    pub(crate) fn clear_mass_drift(&self, target: &str) {
        if let Ok(mut v) = self.mass.lock() {
            v.retain(|m| m.target != target);
        }
    }

    /// The targets this run found in mass drift, by target name, for the report's
    /// `summary.mass_drift`.
    pub fn mass_drift(&self) -> Vec<crate::model::MassDrift> {
        let mut v = self.mass.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    /// How many new pull requests and issues this run opened so far.
    pub fn opened(&self) -> usize {
        self.new_items.load(Ordering::SeqCst)
    }
}

/// Opens the configured forge (the local one takes its directory's lock, waiting for other runs).
pub async fn open_forge(s: &PullRequestSettings, state_dir: &Path) -> Result<Forge, String> {
    match s.forge {
        ForgeKind::GitHub => {
            let repo = s.repo.clone().unwrap_or_default();
            let (owner, name) = repo.split_once('/').unwrap_or((repo.as_str(), ""));
            GitHub::new(&GitHubSettings {
                api_url: s.api_url.clone(),
                owner: owner.to_string(),
                repo: name.to_string(),
                token_env: s.token_env.clone(),
                write_interval: Duration::from_millis(s.write_interval_ms),
                max_wait: Duration::from_secs(s.max_rate_limit_wait_secs),
            })
            .map(Forge::GitHub)
            .map_err(|e| error_chain(&e))
        }
        ForgeKind::Local => {
            let dir = s.local_dir(state_dir);
            tokio::task::spawn_blocking(move || LocalForge::open(&dir))
                .await
                .map_err(|e| format!("local forge: {e}"))?
                .map(Forge::Local)
                .map_err(|e| error_chain(&e))
        }
    }
}

fn class_of(d: &Drift) -> Class {
    d.verdict.as_ref().map(|v| v.class).unwrap_or(Class::Risky)
}

fn is_candidate(d: &Drift) -> bool {
    d.action.as_ref().is_some_and(|a| {
        matches!(a.action, Action::PullRequest | Action::Issue) && a.result == ActionResult::Planned
    })
}

fn set_action(d: &mut Drift, action: Action, result: ActionResult, detail: String) {
    d.action = Some(ActionRecord {
        action,
        result,
        detail: Some(detail),
    });
}

/// Records `result` under the drift's decided action (a pull request when none was decided).
fn set_result(d: &mut Drift, result: ActionResult, detail: String) {
    let action = d
        .action
        .as_ref()
        .map(|a| a.action.clone())
        .unwrap_or(Action::PullRequest);
    set_action(d, action, result, detail);
}

/// Marks every candidate drift failed (`{what}: {reason}`) when nothing can be proposed for the
/// target, and returns the source error the run reports for it (`pull requests: {reason}`).
fn fail_candidates(
    ctx: &ActContext<'_>,
    drifts: &mut [Drift],
    what: &str,
    reason: &str,
) -> SourceError {
    for d in drifts.iter_mut().filter(|d| is_candidate(d)) {
        set_result(d, ActionResult::Failed, format!("{what}: {reason}"));
    }
    source_error(ctx, format!("pull requests: {reason}"))
}

fn source_error(ctx: &ActContext<'_>, message: String) -> SourceError {
    SourceError {
        target: ctx.target.name.clone(),
        side: "pull_requests".into(),
        message,
    }
}

pub(crate) fn session<'a>(ctx: &ActContext<'a>) -> Option<&'a Session> {
    ctx.pull_requests.filter(|s| s.settings.is_some())
}

// ---------------------------------------------------------------------------------------------
// The revert loop
// ---------------------------------------------------------------------------------------------

/// Before the correctors run: a drift whose pull request or issue was closed with the label
/// `drift/revert`, for the same changes, is decided `Correct` despite its class, in `autocorrect`
/// mode only; the correctors apply their guardrails as for any correction. In `recommend` mode
/// (no live writes) the drift is skipped with the reason, and the closed item is left as it is
/// until a run in `autocorrect` mode reverts it. Nothing in `observe` mode or a dry run.
pub async fn prepare(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let Some(session) = session(ctx) else {
        return Vec::new();
    };
    if ctx.mode == Mode::Observe || ctx.dry_run || !drifts.iter().any(is_candidate) {
        return Vec::new();
    }
    let forge = match session.forge().await {
        Ok(f) => f,
        Err(e) => return vec![source_error(ctx, format!("pull requests: {e}"))],
    };
    let closed = match forge.recently_closed(LABEL_REVERT).await {
        Ok(c) => c,
        Err(e) => {
            return vec![source_error(
                ctx,
                format!(
                    "pull requests: cannot list closed items: {}",
                    error_chain(&e)
                ),
            )];
        }
    };
    for d in drifts.iter_mut().filter(|d| is_candidate(d)) {
        let digest = changes_digest(d);
        let asked = closed.iter().find(|i| {
            !i.merged
                && i.labels.iter().any(|l| l == LABEL_REVERT)
                && parse_marker(&i.body).is_some_and(|m| {
                    m.target == ctx.target.name
                        && m.fingerprint == d.fingerprint
                        && m.changes == digest
                })
        });
        let Some(item) = asked else { continue };
        let class = class_of(d);
        let requested = revert_requested(item.kind, item.number);
        if ctx.mode == Mode::Autocorrect {
            info!(target = %ctx.target.name, fingerprint = %d.fingerprint, number = item.number, "revert requested");
            set_action(
                d,
                Action::Correct,
                ActionResult::Planned,
                format!(
                    "{requested}; restoring Git's state despite class {class}, within the guardrails"
                ),
            );
        } else {
            info!(target = %ctx.target.name, fingerprint = %d.fingerprint, number = item.number, mode = %ctx.mode, "revert requested; waiting for autocorrect mode");
            set_action(
                d,
                Action::Skip {
                    why: REVERT_WAITS.to_string(),
                },
                ActionResult::Skipped,
                format!(
                    "{requested}; not corrected: {} mode makes no live writes, so a run in autocorrect mode restores Git's state (the {} stays closed)",
                    ctx.mode,
                    item.kind.noun()
                ),
            );
        }
        if let Ok(mut r) = session.reverts.lock() {
            r.insert(d.fingerprint.clone(), (item.number, item.kind));
        }
    }
    Vec::new()
}

/// Why a requested revert waits: the guardrail that holds it back outside `autocorrect` mode.
pub const REVERT_WAITS: &str = "revert waits for autocorrect mode";

/// How the detail of every drift the revert loop picked up starts.
pub const REVERT_REQUESTED: &str = "revert requested: ";

/// The start of every detail of a drift the revert loop picked up.
fn revert_requested(kind: ItemKind, number: u64) -> String {
    format!(
        "{REVERT_REQUESTED}{} #{number} was closed with the label {LABEL_REVERT}",
        kind.noun()
    )
}

/// After the correctors: the outcome they recorded for a correction the revert loop granted (or
/// the guardrail that held it back) keeps saying why it ran, in the report and in the comment on
/// the closed item. A drift escalated to a pull request or issue is left alone: the pull-request
/// step names the closed item itself.
fn note_reverts(ctx: &ActContext<'_>, session: &Session, drifts: &mut [Drift]) {
    let granted: HashMap<String, (u64, ItemKind)> = match session.reverts.lock() {
        Ok(r) => r.clone(),
        Err(_) => return,
    };
    for d in drifts.iter_mut().filter(|d| d.target == ctx.target.name) {
        let Some((number, kind)) = granted.get(&d.fingerprint) else {
            continue;
        };
        let Some(a) = d.action.as_mut() else { continue };
        if matches!(a.action, Action::PullRequest | Action::Issue) {
            continue;
        }
        let requested = revert_requested(*kind, *number);
        a.detail = Some(match a.detail.take() {
            Some(detail) if detail.starts_with(&requested) => detail,
            Some(detail) if !detail.is_empty() => format!("{requested}; {detail}"),
            _ => requested,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Adoption plans
// ---------------------------------------------------------------------------------------------

/// What Git change adopts a drift.
#[derive(Debug, Clone)]
enum Plan {
    /// A commit with these file changes; `summary` lists where (for the body).
    Pull {
        changes: Vec<FileChange>,
        summary: Vec<String>,
    },
    /// No honest Git edit: an issue, for this reason.
    Issue { reason: String },
    /// The file no longer says what the drift was read from: nothing this run.
    Stale { reason: String },
}

fn hcl_plan(e: HclError) -> Plan {
    match e {
        HclError::NoHonestEdit(r) => Plan::Issue { reason: r },
        HclError::Stale(r) => Plan::Stale { reason: r },
        HclError::Invalid(m) => Plan::Issue {
            reason: format!("the Terraform file is not valid HCL: {m}"),
        },
    }
}

fn yaml_plan(e: EditError) -> Plan {
    match e {
        EditError::NoHonestEdit(r) => Plan::Issue { reason: r },
        EditError::Stale(r) => Plan::Stale { reason: r },
        EditError::Invalid { line, message, .. } => Plan::Issue {
            reason: format!("the manifest is not valid YAML (line {line}: {message})"),
        },
    }
}

fn read_text(repo: &WorkRepo, base: Oid, path: &str) -> Result<Option<String>, ForgeError> {
    Ok(repo
        .read(base, path)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Where an adopted Unmanaged object's manifest goes: `<path>/adopted/<namespace>/<kind>-<name>.yaml`.
fn adopted_path(target: &Target, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let rel = format!(
        "adopted/{}/{}-{}.yaml",
        namespace.unwrap_or("_cluster"),
        kind.to_ascii_lowercase(),
        name
    );
    if target.desired.path.is_empty() {
        rel
    } else {
        format!("{}/{rel}", target.desired.path)
    }
}

/// Whether the target's include/exclude globs read a path relative to its `path`.
fn target_reads(target: &Target, rel: &str) -> bool {
    let build = |globs: &[String]| {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            if let Ok(g) = Glob::new(g) {
                b.add(g);
            }
        }
        b.build().ok()
    };
    let inc = build(&target.desired.include);
    let exc = build(&target.desired.exclude);
    inc.is_some_and(|i| i.is_match(rel)) && !exc.is_some_and(|e| e.is_match(rel))
}

/// Computes the adoption of one drift against the base commit.
fn plan_adoption(
    target: &Target,
    d: &Drift,
    repo: &WorkRepo,
    base: Oid,
) -> Result<Plan, ForgeError> {
    if let Some(c) = d.changes.iter().find(|c| c.masked) {
        return Ok(Plan::Issue {
            reason: format!(
                "`{}` holds a secret value, which is never written to Git; update the secret at its source",
                c.path
            ),
        });
    }
    match &d.resource.id {
        ResourceId::Kubernetes {
            kind,
            namespace,
            name,
            ..
        } => {
            if is_secret(&d.resource.id) {
                return Ok(Plan::Issue {
                    reason: "a Secret's values are never written to Git".into(),
                });
            }
            if target.desired.render.is_some() {
                return Ok(Plan::Issue {
                    reason: "the target's manifests are rendered by Helm or Kustomize: no file holds these values literally, so the chart's values or the overlay must change".into(),
                });
            }
            plan_kubernetes(target, d, repo, base, kind, namespace.as_deref(), name)
        }
        ResourceId::Terraform { address, .. } => plan_terraform(target, d, repo, base, address),
        ResourceId::Ec2 {
            resource_type, id, ..
        } => plan_ec2(target, d, resource_type, id),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_kubernetes(
    target: &Target,
    d: &Drift,
    repo: &WorkRepo,
    base: Oid,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Plan, ForgeError> {
    match d.kind {
        DriftKind::Unmanaged => {
            let Some(live) = &d.live_object else {
                return Ok(Plan::Issue {
                    reason: "the live object was not kept for this drift".into(),
                });
            };
            let path = adopted_path(target, kind, namespace, name);
            let rel = path
                .strip_prefix(&format!("{}/", target.desired.path))
                .unwrap_or(&path);
            if !target_reads(target, rel) {
                return Ok(Plan::Issue {
                    reason: format!(
                        "a new manifest `{path}` would not be read by the target's include/exclude globs"
                    ),
                });
            }
            if repo.read(base, &path)?.is_some() {
                return Ok(Plan::Stale {
                    reason: format!("`{path}` already exists on the base branch"),
                });
            }
            let header = format!(
                "Adopted from live by driftwarden: {} existed in the cluster but not in Git.\nReview it: server defaults the API server filled in are included.",
                d.resource.display
            );
            match edit_yaml::adopted_manifest(live, &header) {
                Ok(text) => Ok(Plan::Pull {
                    summary: vec![format!("new file `{path}`")],
                    changes: vec![FileChange::Write {
                        path,
                        bytes: text.into_bytes(),
                    }],
                }),
                Err(e) => Ok(yaml_plan(e)),
            }
        }
        DriftKind::Missing | DriftKind::Modified => {
            let Some(prov) = &d.provenance else {
                return Ok(Plan::Issue {
                    reason: "the drift does not say which file declares the object".into(),
                });
            };
            let Some(text) = read_text(repo, base, &prov.file)? else {
                return Ok(Plan::Stale {
                    reason: format!("`{}` is not on the base branch", prov.file),
                });
            };
            let doc = DocRef {
                kind,
                name,
                namespace,
                line: Some(prov.line),
            };
            if d.kind == DriftKind::Missing {
                return Ok(match edit_yaml::remove_document(&text, &doc) {
                    Ok(Some(new)) => Plan::Pull {
                        summary: vec![format!(
                            "`{}`: the document of {} removed (line {})",
                            prov.file, d.resource.display, prov.line
                        )],
                        changes: vec![FileChange::Write {
                            path: prov.file.clone(),
                            bytes: new.into_bytes(),
                        }],
                    },
                    Ok(None) => Plan::Pull {
                        summary: vec![format!("`{}` deleted (its only object)", prov.file)],
                        changes: vec![FileChange::Delete {
                            path: prov.file.clone(),
                        }],
                    },
                    Err(e) => yaml_plan(e),
                });
            }
            // The remedy policy gave each change (docs/policy.md): adopt the live value, unpin
            // (remove the field from Git), or revert (Git keeps its value).
            let remedy = |path: &str| {
                d.verdict
                    .as_ref()
                    .map(|v| v.remedy(path))
                    .unwrap_or_default()
            };
            if !d.changes.is_empty() && d.changes.iter().all(|c| remedy(&c.path) == Remedy::Revert)
            {
                return Ok(Plan::Issue {
                    reason: "policy's remedy is to restore Git's value live (remedy `revert`), so Git keeps what it has".into(),
                });
            }
            match edit_yaml::apply_remedies(&text, &doc, &d.changes, d.live_object.as_ref(), |c| {
                remedy(&c.path)
            }) {
                Ok(edited) if edited.text == text => Ok(Plan::Stale {
                    reason: format!(
                        "`{}` on the base branch already holds the live values",
                        prov.file
                    ),
                }),
                Ok(edited) => Ok(Plan::Pull {
                    summary: edited
                        .touched
                        .iter()
                        .map(|(p, line)| match remedy(p) {
                            Remedy::Unpin => format!(
                                "`{}` line {line}: `{p}` removed, so Git no longer pins it (remedy `unpin`; the live value is not written to Git)",
                                prov.file
                            ),
                            _ => format!("`{}` line {line}: `{p}`", prov.file),
                        })
                        .chain(d.changes.iter().filter(|c| remedy(&c.path) == Remedy::Revert).map(|c| {
                            format!(
                                "`{}`: `{}` left as Git has it (remedy `revert`: live should be restored)",
                                prov.file, c.path
                            )
                        }))
                        .collect(),
                    changes: vec![FileChange::Write {
                        path: prov.file.clone(),
                        bytes: edited.text.into_bytes(),
                    }],
                }),
                Err(e) => Ok(yaml_plan(e)),
            }
        }
    }
}

fn plan_terraform(
    target: &Target,
    d: &Drift,
    repo: &WorkRepo,
    base: Oid,
    address: &str,
) -> Result<Plan, ForgeError> {
    if d.kind != DriftKind::Modified {
        return Ok(Plan::Issue {
            reason: match d.kind {
                DriftKind::Missing => "the resource is missing live: `terraform apply` re-creates it, or remove it from the configuration".into(),
                _ => "the resource is in no configuration: write it and import it".into(),
            },
        });
    }
    if let Err(e) = edit_hcl::parse_address(address) {
        return Ok(hcl_plan(e));
    }
    let mut found = None;
    for f in repo.files(base, &target.desired.path)? {
        if !f.ends_with(".tf") {
            continue;
        }
        if let Some(text) = read_text(repo, base, &f)? {
            if edit_hcl::declares(&text, address) {
                found = Some((f, text));
                break;
            }
        }
    }
    let Some((file, text)) = found else {
        return Ok(Plan::Issue {
            reason: format!("no `.tf` file on the base branch declares `{address}`"),
        });
    };
    let mut current = text.clone();
    let mut summary = Vec::new();
    for c in &d.changes {
        let segs = pointer_segments(&c.path);
        let res = match c.op {
            ChangeOp::Changed | ChangeOp::ExtraLive => {
                edit_hcl::set_attribute(&current, address, &segs, &c.live)
            }
            ChangeOp::MissingLive => edit_hcl::remove_attribute(&current, address, &segs),
        };
        match res {
            Ok(t) => current = t,
            Err(e) => return Ok(hcl_plan(e)),
        }
        summary.push(format!("`{file}`: `{address}` `{}`", c.path));
    }
    if current == text {
        return Ok(Plan::Stale {
            reason: format!("`{file}` on the base branch already holds the live values"),
        });
    }
    Ok(Plan::Pull {
        changes: vec![FileChange::Write {
            path: file,
            bytes: current.into_bytes(),
        }],
        summary,
    })
}

fn plan_ec2(target: &Target, d: &Drift, resource_type: &str, id: &str) -> Result<Plan, ForgeError> {
    if d.kind != DriftKind::Unmanaged {
        return Ok(Plan::Issue {
            reason: "an EC2 drift without its Terraform address has no file to edit".into(),
        });
    }
    let Some(tf_type) = edit_hcl::terraform_type(resource_type) else {
        return Ok(Plan::Issue {
            reason: format!("driftwarden writes no import skeleton for EC2 `{resource_type}`"),
        });
    };
    let live = d.live_object.clone().unwrap_or(Value::Null);
    let attrs = edit_hcl::skeleton_attributes(tf_type, &live);
    let name = edit_hcl::resource_name(id);
    let header = format!(
        "Adopted by driftwarden: {} exists in AWS but in no Terraform state.\nReview the skeleton, then `terraform plan` shows the import.",
        d.resource.display
    );
    match edit_hcl::import_file(tf_type, &name, id, &attrs, &header) {
        Ok(text) => {
            let file = format!("import_{tf_type}_{name}.tf");
            let path = if target.desired.path.is_empty() {
                file
            } else {
                format!("{}/{file}", target.desired.path)
            };
            Ok(Plan::Pull {
                summary: vec![format!(
                    "new file `{path}` (an `import` block and a resource skeleton)"
                )],
                changes: vec![FileChange::Write {
                    path,
                    bytes: text.into_bytes(),
                }],
            })
        }
        Err(e) => Ok(hcl_plan(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// Inline code with a fence longer than any backtick run inside, on one line.
pub(crate) fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    if longest == 0 {
        format!("{fence}{s}{fence}")
    } else {
        format!("{fence} {s} {fence}")
    }
}

/// A title: one line, no control characters, at most 200 characters.
pub(crate) fn title_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

fn pr_title(d: &Drift) -> String {
    match class_of(d) {
        Class::Forbidden => title_text(&format!(
            "driftwarden: forbidden drift on {} ({})",
            d.resource.display, d.target
        )),
        _ => title_text(&format!(
            "driftwarden: adopt live {} ({})",
            d.resource.display, d.target
        )),
    }
}

fn issue_title(d: &Drift) -> String {
    title_text(&format!(
        "driftwarden: {} drifted ({}, {})",
        d.resource.display,
        d.target,
        class_of(d)
    ))
}

/// Where the full report is, for truncated bodies.
pub(crate) fn report_pointer(s: Option<&PullRequestSettings>, target: &str) -> String {
    if let Some(url) = s.and_then(|s| s.report_url.as_deref()) {
        return format!("The full report: {url}");
    }
    if let (Ok(server), Ok(repo), Ok(run)) = (
        std::env::var("GITHUB_SERVER_URL"),
        std::env::var("GITHUB_REPOSITORY"),
        std::env::var("GITHUB_RUN_ID"),
    ) {
        return format!(
            "The full report is in the workflow run: {server}/{repo}/actions/runs/{run}"
        );
    }
    format!("Run `driftwarden diff --target {target}` for the full report.")
}

/// The body of a pull request or issue for a drift. Deterministic: it changes only when the
/// drift, its verdict or the adoption changes (never with the time of the run).
fn render_body(
    d: &Drift,
    plan: &Plan,
    settings: Option<&PullRequestSettings>,
    escalated: Option<&str>,
) -> String {
    let class = class_of(d);
    let mut out = Vec::<String>::new();
    out.push(format!(
        "{ITEM_MARKER} target={} fingerprint={} changes={} -->",
        d.target,
        d.fingerprint,
        changes_digest(d)
    ));
    let what = match d.kind {
        DriftKind::Modified => "differs from Git",
        DriftKind::Missing => "is declared in Git but missing live",
        DriftKind::Unmanaged => "exists live but is not declared in Git",
    };
    out.push(format!(
        "## {} drift: {}",
        match class {
            Class::Forbidden => "Forbidden",
            Class::Risky => "Risky",
            Class::Safe => "Escalated",
        },
        code(&d.resource.display)
    ));
    out.push(String::new());
    out.push(format!(
        "The live state of {} in target {} {what}.",
        code(&d.resource.display),
        code(&d.target)
    ));
    out.push(String::new());
    // A safe drift lands here only when a guardrail or the revert breaker held its correction
    // back: the body says why.
    if let Some(why) = escalated.filter(|_| class == Class::Safe) {
        out.push(format!(
            "**Why it was not corrected automatically:** {why}."
        ));
        out.push(String::new());
    }
    match plan {
        Plan::Pull { summary, .. } => {
            if class == Class::Forbidden {
                out.push("This drift is **forbidden** by policy: it is never adopted into Git silently. This draft pull request shows what adopting it would take; a person decides.".to_string());
            } else if d
                .verdict
                .as_ref()
                .is_some_and(|v| d.changes.iter().any(|c| v.remedy(&c.path) != Remedy::Adopt))
            {
                out.push("This pull request changes Git as policy's remedy for each field says, changing only the drifted lines: a field Git should not pin is **removed** from the manifest (remedy `unpin`), the others **adopt the live state**:".to_string());
            } else {
                out.push("This pull request **adopts the live state into Git**, changing only the drifted lines:".to_string());
            }
            out.push(String::new());
            for s in summary {
                out.push(format!("- {s}"));
            }
            out.push(String::new());
            out.push("**What to do**".to_string());
            out.push(String::new());
            out.push("- **Merge** to keep the live change: Git then matches live.".to_string());
            out.push(format!(
                "- **Close with the label {}** to restore Git's state: the next driftwarden run in `autocorrect` mode corrects the drift (within the target's guardrails) and comments here.",
                code(LABEL_REVERT)
            ));
            out.push("- **Close without the label** to leave it: driftwarden does not reopen a pull request for the same drift.".to_string());
        }
        Plan::Issue { reason } | Plan::Stale { reason } => {
            out.push(format!(
                "No Git change can adopt it honestly: {}.",
                reason.trim_end_matches('.')
            ));
            out.push(String::new());
            out.push("**What to do**".to_string());
            out.push(String::new());
            out.push("- Change Git (or the value's source) so it matches live, or fix live by hand; driftwarden closes this issue when the drift is gone.".to_string());
            out.push(format!(
                "- **Close with the label {}** to restore Git's state: the next driftwarden run in `autocorrect` mode corrects the drift (within the target's guardrails) and comments here.",
                code(LABEL_REVERT)
            ));
        }
    }
    out.push(String::new());
    out.push("### The drift".to_string());
    out.push(String::new());
    // The action is what this body is part of: leave it out, so the body depends on the drift
    // only.
    let mut shown = d.clone();
    shown.action = None;
    out.push(markdown::render_drift(&shown, &RenderOptions::default()));
    out.push(
        "<sub>Written by driftwarden: updated when the drift changes, closed when it is gone. Keep the first line (a hidden marker) as it is.</sub>"
            .to_string(),
    );
    let body = out.join("\n") + "\n";
    truncate_body(&body, BODY_LIMIT, &report_pointer(settings, &d.target))
}

fn commit_message(d: &Drift, summary: &[String]) -> String {
    let mut m = format!(
        "driftwarden: adopt live {}\n\nSets Git to the live state of the drifted fields (target {}):\n",
        title_text(&d.resource.display),
        d.target
    );
    for s in summary {
        m.push_str(&format!("- {}\n", s.replace('`', "")));
    }
    m.push_str(&format!(
        "\nDriftwarden-Target: {}\n{FINGERPRINT_TRAILER}: {}\n",
        d.target, d.fingerprint
    ));
    m
}

fn same_body(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace("\r\n", "\n").trim_end().to_string();
    norm(a) == norm(b)
}

// ---------------------------------------------------------------------------------------------
// The work repository and base branch
// ---------------------------------------------------------------------------------------------

/// The desired Git source of a target, if it has one.
fn desired_git(target: &Target) -> Option<&crate::config::GitSource> {
    match &target.desired.location {
        DesiredLocation::Git(g) => Some(g),
        DesiredLocation::Dir(_) => target.terraform.as_ref().and_then(|t| t.git.as_ref()),
    }
}

/// The HTTPS clone URL of a GitHub repository, from the API URL.
fn github_clone_url(api_url: Option<&str>, repo: &str) -> String {
    match api_url {
        Some(u) if !u.contains("api.github.com") => {
            let host = u.trim_end_matches('/').trim_end_matches("/api/v3");
            format!("{host}/{repo}.git")
        }
        _ => format!("https://github.com/{repo}.git"),
    }
}

/// Prepares the work repository and the base commit for a target.
async fn work_repo(
    session: &Session,
    forge: &Forge,
    target: &Target,
) -> Result<(WorkRepo, String, Oid), String> {
    let Some(s) = session.settings() else {
        return Err("pull requests are not configured".into());
    };
    let git = desired_git(target);
    let configured_base = s.base.clone().or_else(|| {
        git.map(|g| g.reference.clone())
            .filter(|r| r != "HEAD" && !r.starts_with("refs/") && !looks_like_sha(r))
    });
    let author = session.author();
    match forge {
        Forge::GitHub(gh) => {
            let base = match configured_base {
                Some(b) => b,
                None => gh.default_branch().await.map_err(|e| error_chain(&e))?,
            };
            let url = s
                .remote
                .clone()
                .or_else(|| git.map(|g| g.repo.clone()))
                .unwrap_or_else(|| {
                    github_clone_url(s.api_url.as_deref(), s.repo.as_deref().unwrap_or(""))
                });
            let remote = Remote {
                token_env: Some(s.token_env.clone()),
                ssh_key: s
                    .ssh_key
                    .clone()
                    .or_else(|| git.and_then(|g| g.ssh_key.clone())),
                url,
            };
            let repo = WorkRepo::for_remote(&session.state_dir.join("git"), remote)
                .map_err(|e| error_chain(&e))?;
            repo.fetch(&base, &format!("driftwarden/{}", target.name))
                .map_err(|e| error_chain(&e))?;
            let oid = repo.base_commit(&base).map_err(|e| error_chain(&e))?;
            Ok((repo, base, oid))
        }
        Forge::Local(l) => {
            let base = configured_base.unwrap_or_else(|| "main".to_string());
            let repo = l.repo().map_err(|e| error_chain(&e))?;
            let oid = match (&target.desired.location, git) {
                (DesiredLocation::Git(g), _) => repo.mirror(
                    &Remote {
                        url: g.repo.clone(),
                        token_env: g.token_env.clone(),
                        ssh_key: g.ssh_key.clone(),
                    },
                    &g.reference,
                    &base,
                ),
                (DesiredLocation::Dir(dir), _) => {
                    // Only what the target reads (and Terraform configuration): never state
                    // files, variable files or anything else that may hold secrets.
                    let keep = |rel: &str| snapshot_keeps(target, rel);
                    repo.snapshot_dir(dir, &base, &author, &keep)
                }
            }
            .map_err(|e| error_chain(&e))?;
            Ok((repo, base, oid))
        }
    }
}

/// Which files of a desired directory the local forge's snapshot holds: the manifests the target
/// reads, and `.tf` configuration (never `.tfstate` or `.tfvars`).
fn snapshot_keeps(target: &Target, rel: &str) -> bool {
    let path = &target.desired.path;
    let inside = if path.is_empty() {
        Some(rel)
    } else {
        rel.strip_prefix(&format!("{path}/"))
    };
    let manifest = inside.is_some_and(|r| target_reads(target, r));
    let terraform = rel.ends_with(".tf") || rel.ends_with(".tf.json");
    manifest || terraform
}

fn looks_like_sha(r: &str) -> bool {
    r.len() >= 7 && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------
// The actuator
// ---------------------------------------------------------------------------------------------

/// What the forge holds for one target.
struct Listing {
    /// Open items by fingerprint (a pull request by its branch, an issue by its marker).
    open: BTreeMap<String, Vec<Item>>,
    /// Closed items by fingerprint, newest first.
    closed: BTreeMap<String, Vec<Item>>,
}

async fn listing(forge: &Forge, target: &str) -> Result<Listing, ForgeError> {
    let prefix = format!("driftwarden/{target}/");
    let mut open: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in forge.open_items(&prefix, LABEL_DRIFT).await? {
        let fp = match (item.kind, &item.branch) {
            (ItemKind::PullRequest, Some(b)) => b.strip_prefix(&prefix).map(str::to_string),
            _ => parse_marker(&item.body)
                .filter(|m| m.target == target)
                .map(|m| m.fingerprint),
        };
        if let Some(fp) = fp {
            open.entry(fp).or_default().push(item);
        }
    }
    let mut closed: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in forge.recently_closed(LABEL_DRIFT).await? {
        if let Some(m) = parse_marker(&item.body).filter(|m| m.target == target) {
            closed.entry(m.fingerprint).or_default().push(item);
        }
    }
    Ok(Listing { open, closed })
}

fn labels_for(d: &Drift, settings: &PullRequestSettings) -> Vec<String> {
    let mut labels = vec![
        LABEL_DRIFT.to_string(),
        if class_of(d) == Class::Forbidden {
            LABEL_FORBIDDEN
        } else {
            LABEL_RISKY
        }
        .to_string(),
    ];
    for l in &settings.labels {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    labels
}

/// Carries out the pull requests and issues of one target, then closes the items of drifts that
/// are gone. Records each outcome in `drift.action`; returns forge failures for the report.
pub async fn run(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let Some(session) = session(ctx) else {
        return Vec::new();
    };
    let Some(settings) = session.settings() else {
        return Vec::new();
    };
    if ctx.mode == Mode::Observe || ctx.dry_run {
        return Vec::new();
    }
    note_reverts(ctx, session, drifts);
    let forge = match session.forge().await {
        Ok(f) => f,
        Err(e) => {
            let reason = e.to_string();
            return vec![fail_candidates(
                ctx,
                drifts,
                "the forge is unavailable",
                &reason,
            )];
        }
    };
    let listed = match listing(forge, &ctx.target.name).await {
        Ok(l) => l,
        Err(e) => {
            let msg = error_chain(&e);
            return vec![fail_candidates(
                ctx,
                drifts,
                "cannot list pull requests",
                &msg,
            )];
        }
    };
    record_closed_items(ctx, forge, &listed).await;
    let needs_repo = drifts.iter().any(is_candidate)
        || listed
            .open
            .values()
            .flatten()
            .any(|i| i.kind == ItemKind::PullRequest);
    let repo = if needs_repo {
        match work_repo(session, forge, ctx.target).await {
            Ok(r) => Some(r),
            Err(e) => {
                let reason = e.to_string();
                return vec![fail_candidates(
                    ctx,
                    drifts,
                    "cannot prepare the branch",
                    &reason,
                )];
            }
        }
    } else {
        None
    };

    let mut errors = Vec::new();
    let mut order: Vec<usize> = (0..drifts.len())
        .filter(|i| is_candidate(&drifts[*i]))
        .collect();
    order.sort_by(|a, b| drifts[*a].fingerprint.cmp(&drifts[*b].fingerprint));
    // Set once the forge refuses a rate-limit wait: the forge sends nothing more before the
    // limit ends, so nothing more is prepared either (no branch pushed without its pull request).
    let mut limited: Option<String> = None;
    for i in order {
        let Some(d) = drifts.get_mut(i) else { continue };
        let Some((repo, base_name, base)) = repo.as_ref() else {
            continue;
        };
        if let Some(limit) = &limited {
            set_result(
                d,
                ActionResult::Failed,
                format!("not proposed this run, nothing pushed: {limit}"),
            );
            errors.push(source_error(
                ctx,
                format!("{}: not proposed: {limit}", d.resource.display),
            ));
            continue;
        }
        // The forge writes of this drift: intent before, result after (src/audit).
        let kind = match d.action.as_ref().map(|a| &a.action) {
            Some(Action::Issue) => "issue",
            _ => "pull_request",
        };
        let id = match ctx.audit.intent(d, kind, "forge") {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("not proposed: {}", e.refusal());
                set_result(d, ActionResult::Failed, msg.clone());
                errors.push(source_error(ctx, format!("{}: {msg}", d.resource.display)));
                continue;
            }
        };
        let acted = act_on(
            ctx, session, settings, forge, repo, base_name, *base, &listed, d,
        )
        .await;
        if let Err(e) = &acted {
            set_result(d, ActionResult::Failed, error_chain(e));
        }
        if let Err(e) = ctx.audit.result(&id, d, None) {
            errors.push(source_error(
                ctx,
                format!(
                    "{}: the result of the forge write could not be recorded: {}",
                    d.resource.display,
                    error_chain(&e)
                ),
            ));
        }
        if let Err(e) = acted {
            let msg = error_chain(&e);
            warn!(target = %ctx.target.name, fingerprint = %d.fingerprint, error = %msg, "pull request failed");
            if matches!(e, WriteError::Forge(ForgeError::RateLimited { .. })) {
                limited = Some(msg.clone());
            }
            set_result(d, ActionResult::Failed, msg.clone());
            errors.push(source_error(ctx, format!("{}: {msg}", d.resource.display)));
        }
    }
    if let Some(limit) = limited {
        warn!(target = %ctx.target.name, "GitHub rate limit: the rest of this target's pull requests wait for the next run");
        errors.push(source_error(
            ctx,
            format!(
                "pull requests: resolved items not closed and reverts not commented this run: {limit}"
            ),
        ));
        return errors;
    }

    errors.extend(close_resolved(ctx, session, forge, repo.as_ref(), &listed, drifts).await);
    errors.extend(comment_reverts(ctx, session, forge, drifts).await);
    errors
}

/// Opens, updates or leaves the item of one drift.
#[allow(clippy::too_many_arguments)]
async fn act_on(
    ctx: &ActContext<'_>,
    session: &Session,
    settings: &PullRequestSettings,
    forge: &Forge,
    repo: &WorkRepo,
    base_name: &str,
    base: Oid,
    listed: &Listing,
    d: &mut Drift,
) -> Result<(), WriteError> {
    let plan = plan_adoption(ctx.target, d, repo, base)?;
    if let Plan::Stale { reason } = &plan {
        set_result(
            d,
            ActionResult::Skipped,
            format!("not proposed this run: {reason}"),
        );
        return Ok(());
    }
    let digest = changes_digest(d);
    let escalated = super::guardrails::escalation_reason(d, ctx).map(str::to_string);
    let body = render_body(d, &plan, Some(settings), escalated.as_deref());
    let labels = labels_for(d, settings);
    let open = listed.open.get(&d.fingerprint).cloned().unwrap_or_default();
    let open_pr = open
        .iter()
        .find(|i| i.kind == ItemKind::PullRequest)
        .cloned();
    let open_issue = open.iter().find(|i| i.kind == ItemKind::Issue).cloned();
    let wanted_kind = match plan {
        Plan::Pull { .. } => ItemKind::PullRequest,
        _ => ItemKind::Issue,
    };
    let action = match wanted_kind {
        ItemKind::PullRequest => Action::PullRequest,
        ItemKind::Issue => Action::Issue,
    };

    // A closed item for this very drift is not reopened.
    let existing = match wanted_kind {
        ItemKind::PullRequest => open_pr.clone(),
        ItemKind::Issue => open_issue.clone(),
    };
    if existing.is_none() {
        if let Some(closed) = listed.closed.get(&d.fingerprint).and_then(|c| {
            c.iter().find(|i| {
                parse_marker(&i.body).is_some_and(|m| m.changes == digest && m.closed.is_none())
            })
        }) {
            let why = if closed.merged {
                format!(
                    "pull request #{} adopting this drift was merged; waiting for the desired source to include it",
                    closed.number
                )
            } else if closed.labels.iter().any(|l| l == LABEL_REVERT) {
                format!(
                    "{} #{} asked for a revert (label {LABEL_REVERT}); the correction did not run for this target",
                    closed.kind.noun(),
                    closed.number
                )
            } else {
                format!(
                    "{} #{} for this same drift was closed without merging; not reopened (it reopens when the drift changes)",
                    closed.kind.noun(),
                    closed.number
                )
            };
            set_action(d, action, ActionResult::Skipped, why);
            return Ok(());
        }
    }

    let (number, url, detail) = match &plan {
        Plan::Pull { changes, summary } => {
            let branch = branch_name(&ctx.target.name, &d.fingerprint);
            let tip = repo.tip(&branch)?;
            if let Some(t) = tip {
                let foreign = repo.foreign_commits(base, t, &session.author(), &d.fingerprint)?;
                if let Some(f) = foreign.first() {
                    set_action(
                        d,
                        Action::PullRequest,
                        ActionResult::Skipped,
                        format!(
                            "branch {branch} carries {} commit(s) driftwarden did not make (first: {} by {}); not overwritten",
                            foreign.len(),
                            &f.id[..f.id.len().min(12)],
                            f.author
                        ),
                    );
                    return Ok(());
                }
            }
            let current = match tip {
                Some(t) => repo.holds(t, changes)?,
                None => false,
            };
            if open_pr.is_none() && !session.take_new_slot(settings.max_new_per_run) {
                set_action(
                    d,
                    Action::PullRequest,
                    ActionResult::Skipped,
                    format!(
                        "per-run cap reached: at most {} new pull requests and issues per run (pull_requests.max_new_per_run); the next run opens it",
                        settings.max_new_per_run
                    ),
                );
                return Ok(());
            }
            let pushed = if current {
                false
            } else {
                let commit = repo.commit(
                    base,
                    changes,
                    &commit_message(d, summary),
                    &session.author(),
                )?;
                repo.publish(&branch, commit, tip)?;
                true
            };
            match &open_pr {
                Some(pr) => {
                    let body_changed = !same_body(&pr.body, &body);
                    let title = pr_title(d);
                    if body_changed || pr.title != title || pushed {
                        forge.update(pr, &title, &body).await?;
                    }
                    ensure_labels(forge, pr, &labels).await?;
                    let detail = if body_changed || pushed {
                        format!("updated pull request #{} (the drift changed)", pr.number)
                    } else {
                        format!("pull request #{} is up to date", pr.number)
                    };
                    (pr.number, pr.url.clone(), detail)
                }
                None => {
                    let item = forge
                        .create_pull(&NewPull {
                            title: pr_title(d),
                            body: body.clone(),
                            head: branch.clone(),
                            base: base_name.to_string(),
                            draft: class_of(d) == Class::Forbidden,
                            labels: labels.clone(),
                            slug: Some(format!("{}/{}", ctx.target.name, d.fingerprint)),
                        })
                        .await?;
                    let draft = if item.draft { "draft " } else { "" };
                    (
                        item.number,
                        item.url.clone(),
                        format!(
                            "opened {draft}pull request #{} on branch {branch}",
                            item.number
                        ),
                    )
                }
            }
        }
        Plan::Issue { reason } | Plan::Stale { reason } => match &open_issue {
            Some(issue) => {
                let title = issue_title(d);
                let changed = !same_body(&issue.body, &body) || issue.title != title;
                if changed {
                    forge.update(issue, &title, &body).await?;
                }
                ensure_labels(forge, issue, &labels).await?;
                let detail = if changed {
                    format!(
                        "updated issue #{} (the drift changed): {reason}",
                        issue.number
                    )
                } else {
                    format!("issue #{} is up to date: {reason}", issue.number)
                };
                (issue.number, issue.url.clone(), detail)
            }
            None => {
                if !session.take_new_slot(settings.max_new_per_run) {
                    set_action(
                        d,
                        Action::Issue,
                        ActionResult::Skipped,
                        format!(
                            "per-run cap reached: at most {} new pull requests and issues per run (pull_requests.max_new_per_run); the next run opens it",
                            settings.max_new_per_run
                        ),
                    );
                    return Ok(());
                }
                let item = forge
                    .create_issue(&NewIssue {
                        title: issue_title(d),
                        body: body.clone(),
                        labels: labels.clone(),
                        slug: Some(format!("{}/{}", ctx.target.name, d.fingerprint)),
                    })
                    .await?;
                (
                    item.number,
                    item.url.clone(),
                    format!("opened issue #{}: {reason}", item.number),
                )
            }
        },
    };

    // An item of the other kind for the same drift is superseded.
    let other = match wanted_kind {
        ItemKind::PullRequest => open_issue,
        ItemKind::Issue => open_pr,
    };
    if let Some(o) = other {
        let text = format!(
            "Superseded by {} #{number}: the drift changed and is now proposed there.",
            wanted_kind.noun()
        );
        let body = mark_closed(&o.body, "superseded");
        let w =
            ForgeWrite::for_drift(d, "close", "comment, close (superseded)").item(o.kind, o.number);
        let done = format!(
            "closed {} #{}: superseded by {} #{number}",
            o.kind.noun(),
            o.number,
            wanted_kind.noun()
        );
        audited(ctx, &w, &done, || async {
            forge.comment(o.number, &text).await?;
            forge.close(&o, Some(&body)).await
        })
        .await?;
        if let (ItemKind::PullRequest, Some(branch)) = (o.kind, &o.branch) {
            delete_branch_if_ours(
                ctx,
                forge,
                repo,
                base,
                branch,
                &session.author(),
                &d.fingerprint,
            )
            .await?;
        }
    }

    let detail = if url.is_empty() {
        detail
    } else {
        format!("{detail}: {url}")
    };
    set_action(d, action, ActionResult::Done, detail);
    Ok(())
}

async fn ensure_labels(forge: &Forge, item: &Item, labels: &[String]) -> Result<(), ForgeError> {
    let add: Vec<String> = labels
        .iter()
        .filter(|l| !item.labels.contains(l))
        .cloned()
        .collect();
    let remove: Vec<String> = [LABEL_RISKY, LABEL_FORBIDDEN]
        .iter()
        .filter(|l| item.labels.iter().any(|x| x == *l) && !labels.iter().any(|x| x == *l))
        .map(|l| l.to_string())
        .collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    forge.relabel(item, &add, &remove).await
}

/// Why a forge write of this module did not happen or failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// Its intent could not be recorded (the audit log cannot be written, or a `watch` replica
    /// does not hold the Lease): nothing was sent.
    #[error("not sent: {0}")]
    NotRecorded(String),
}

impl From<crate::forge::git::GitOpError> for WriteError {
    fn from(e: crate::forge::git::GitOpError) -> Self {
        WriteError::Forge(e.into())
    }
}

/// Sends one forge write with its audit records (src/audit): the intent before `send` runs (a
/// refused intent sends nothing), the result after it: `done` with `done`, or `failed` with the
/// forge's message. A result that cannot be recorded breaks the log, which the run reports (the
/// target's outcome records fail) and which holds back every later write.
async fn audited<T, Fut>(
    ctx: &ActContext<'_>,
    w: &ForgeWrite,
    done: &str,
    send: impl FnOnce() -> Fut,
) -> Result<T, WriteError>
where
    Fut: std::future::Future<Output = Result<T, ForgeError>>,
{
    let id = ctx
        .audit
        .forge_intent(w)
        .map_err(|e| WriteError::NotRecorded(e.refusal()))?;
    let res = send().await;
    let (outcome, message) = match &res {
        Ok(_) => (ActionResult::Done, done.to_string()),
        Err(e) => (ActionResult::Failed, error_chain(e)),
    };
    if let Err(e) = ctx.audit.forge_result(&id, w, outcome, &message) {
        warn!(target = %w.target, id, error = %error_chain(&e), "the result of a forge write could not be recorded");
    }
    Ok(res?)
}

/// Deletes a pull request's branch on the forge unless someone else committed to it; `false`
/// when it is kept. Recorded as `delete_branch` (a kept branch: intent and result `skipped`,
/// with why; nothing is sent).
async fn delete_branch_if_ours(
    ctx: &ActContext<'_>,
    forge: &Forge,
    repo: &WorkRepo,
    base: Oid,
    branch: &str,
    author: &Author,
    fingerprint: &str,
) -> Result<bool, WriteError> {
    let Some(tip) = repo.tip(branch)? else {
        return Ok(true);
    };
    let w = ForgeWrite::new(
        &ctx.target.name,
        fingerprint,
        "delete_branch",
        "delete branch",
    )
    .branch(branch);
    let foreign = repo.foreign_commits(base, tip, author, fingerprint)?;
    if let Some(f) = foreign.first() {
        // Nothing is sent; the record says why. A refused intent records nothing.
        if let Ok(id) = ctx.audit.forge_intent(&w) {
            let why = format!(
                "kept: the branch carries {} commit(s) driftwarden did not make (first: {} by {})",
                foreign.len(),
                &f.id[..f.id.len().min(12)],
                f.author
            );
            if let Err(e) = ctx.audit.forge_result(&id, &w, ActionResult::Skipped, &why) {
                warn!(target = %w.target, id, error = %error_chain(&e), "the result of a forge write could not be recorded");
            }
        }
        return Ok(false);
    }
    audited(ctx, &w, &format!("deleted branch {branch}"), || {
        forge.delete_branch(branch)
    })
    .await?;
    Ok(true)
}

/// Records, once per item, the target's driftwarden items someone else closed (merged, or
/// closed by a person) as `item_closed`, with whether the forge says it was merged: asked of
/// the pulls API for a pull request the list of closed items does not show merged (the figures'
/// `merged_pull_request` comes from this record, docs/audit.md). Items driftwarden closed
/// itself (`closed=` in the marker) have their `close` intent and result instead. Then notes
/// that the target's items were listed, for its `target_checked` record. A record that cannot
/// be written breaks the log, which the run reports.
async fn record_closed_items(ctx: &ActContext<'_>, forge: &Forge, listed: &Listing) {
    let target = &ctx.target.name;
    let mut events = Vec::new();
    for (fp, items) in &listed.closed {
        for item in items {
            let Some(marker) = parse_marker(&item.body) else {
                continue;
            };
            if marker.closed.is_some()
                || !ctx
                    .audit
                    .item_closed_is_new(target, item.number, &item.updated)
            {
                continue;
            }
            let merged = match item.kind {
                ItemKind::Issue => false,
                ItemKind::PullRequest if item.merged => true,
                ItemKind::PullRequest => match forge.pull_merged(item.number).await {
                    Ok(m) => m,
                    Err(e) => {
                        // Recorded next run, once the forge answers.
                        warn!(target = %target, number = item.number, error = %error_chain(&e), "cannot ask the forge whether a closed pull request was merged");
                        continue;
                    }
                },
            };
            info!(target = %target, number = item.number, kind = item.kind.noun(), merged, "driftwarden item found closed");
            events.push(crate::audit::Event::ItemClosed {
                target: target.clone(),
                fingerprint: fp.clone(),
                resource: ctx.audit.resource_of(target, fp),
                item: ItemRef {
                    kind: item.kind,
                    number: item.number,
                },
                merged,
                changes: marker.changes,
                labels: item.labels.clone(),
                closed_at: (!item.updated.is_empty()).then(|| item.updated.clone()),
            });
        }
    }
    if let Err(e) = ctx.audit.write(events) {
        warn!(target = %target, error = %error_chain(&e), "closed items could not be recorded");
        return;
    }
    ctx.audit.note_items_listed(target);
}

/// Closes the open items of drifts that are gone (only after a complete read), and of drifts
/// corrected in place this run.
async fn close_resolved(
    ctx: &ActContext<'_>,
    session: &Session,
    forge: &Forge,
    repo: Option<&(WorkRepo, String, Oid)>,
    listed: &Listing,
    drifts: &[Drift],
) -> Vec<SourceError> {
    let mut errors = Vec::new();
    if ctx.partial {
        if !listed.open.is_empty() {
            info!(target = %ctx.target.name, "partial read: no pull request or issue is closed this run");
        }
        return errors;
    }
    let present: HashSet<&str> = drifts
        .iter()
        .filter(|d| {
            !d.action
                .as_ref()
                .is_some_and(|a| a.action == Action::Correct && a.result == ActionResult::Done)
        })
        .map(|d| d.fingerprint.as_str())
        .collect();
    let corrected: HashSet<&str> = drifts
        .iter()
        .filter(|d| {
            d.action
                .as_ref()
                .is_some_and(|a| a.action == Action::Correct && a.result == ActionResult::Done)
        })
        .map(|d| d.fingerprint.as_str())
        .collect();
    for (fp, items) in &listed.open {
        if present.contains(fp.as_str()) || ctx.only.is_some_and(|only| !only.contains(fp)) {
            continue;
        }
        let why = if corrected.contains(fp.as_str()) {
            "driftwarden corrected the drift in place this run: live matches Git again"
        } else {
            "the drift is gone: live matches Git again (someone fixed live, or Git now declares the live state)"
        };
        for item in items {
            let res: Result<(), WriteError> = async {
                let mut text = format!("Closing: {why}.");
                if let (ItemKind::PullRequest, Some(branch), Some((r, _, base))) =
                    (item.kind, &item.branch, repo)
                {
                    let ours = delete_branch_if_ours(ctx, forge, r, *base, branch, &session.author(), fp).await?;
                    if !ours {
                        text.push_str(&format!(
                            " The branch {} is kept: it carries commits driftwarden did not make.",
                            code(branch)
                        ));
                    }
                }
                let body = mark_closed(&item.body, "resolved");
                let w = ForgeWrite::new(&ctx.target.name, fp, "close", "comment, close (resolved)")
                    .item(item.kind, item.number);
                let done = format!("closed {} #{}: {why}", item.kind.noun(), item.number);
                audited(ctx, &w, &done, || async {
                    forge.comment(item.number, &text).await?;
                    forge.close(item, Some(&body)).await
                })
                .await?;
                info!(target = %ctx.target.name, number = item.number, kind = item.kind.noun(), "closed: drift gone");
                Ok(())
            }
            .await;
            if let Err(e) = res {
                errors.push(source_error(
                    ctx,
                    format!(
                        "closing {} #{}: {}",
                        item.kind.noun(),
                        item.number,
                        error_chain(&e)
                    ),
                ));
            }
        }
    }
    errors
}

/// Tells a closed item that asked for a revert how the correction went (once per result;
/// `planned` when no corrector acts on this target, such as a snapshot or a dry run).
async fn comment_reverts(
    ctx: &ActContext<'_>,
    session: &Session,
    forge: &Forge,
    drifts: &[Drift],
) -> Vec<SourceError> {
    let asked: Vec<(String, u64, ItemKind)> = match session.reverts.lock() {
        Ok(r) => r.iter().map(|(fp, (n, k))| (fp.clone(), *n, *k)).collect(),
        Err(_) => Vec::new(),
    };
    let mut errors = Vec::new();
    for (fp, number, kind) in asked {
        let Some(d) = drifts
            .iter()
            .find(|d| d.fingerprint == fp && d.target == ctx.target.name)
        else {
            continue;
        };
        let Some(a) = &d.action else { continue };
        let result = match a.result {
            ActionResult::Done => "done",
            ActionResult::Failed => "failed",
            ActionResult::Skipped => "skipped",
            ActionResult::Planned => "planned",
            ActionResult::RolledBack => "rolled_back",
        };
        let marker = format!(
            "<!-- driftwarden:revert fingerprint={fp} changes={} result={result} -->",
            changes_digest(d)
        );
        let text = format!(
            "{marker}\nRevert requested by the label {}: driftwarden's correction of {} is **{result}**{}.",
            code(LABEL_REVERT),
            code(&d.resource.display),
            a.detail
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
        let res = async {
            let done = forge
                .comments(number)
                .await?
                .iter()
                .any(|c| c.body.contains(&marker));
            if !done {
                let w = ForgeWrite::for_drift(d, "comment", "comment (revert result)")
                    .item(kind, number)
                    .revert_trigger();
                let what = format!(
                    "commented on {} #{number}: the correction is {result}",
                    kind.noun()
                );
                audited(ctx, &w, &what, || forge.comment(number, &text)).await?;
            }
            Ok::<(), WriteError>(())
        }
        .await;
        if let Err(e) = res {
            errors.push(source_error(
                ctx,
                format!(
                    "commenting on {} #{number}: {}",
                    kind.noun(),
                    error_chain(&e)
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let body = "<!-- driftwarden:item target=demo fingerprint=abc123 changes=0011 -->\n## x";
        assert_eq!(
            parse_marker(body),
            Some(Marker {
                target: "demo".into(),
                fingerprint: "abc123".into(),
                changes: "0011".into(),
                closed: None,
            })
        );
        assert_eq!(parse_marker("no marker"), None);
        let closed = mark_closed(body, "resolved");
        assert_eq!(
            closed,
            "<!-- driftwarden:item target=demo fingerprint=abc123 changes=0011 closed=resolved -->\n## x"
        );
        assert_eq!(
            parse_marker(&closed).unwrap().closed.as_deref(),
            Some("resolved")
        );
        assert_eq!(mark_closed(&closed, "again"), closed);
        assert_eq!(branch_name("demo", "abc"), "driftwarden/demo/abc");
    }

    #[test]
    fn local_snapshots_hold_only_what_the_target_reads() {
        let cfg = crate::config::parse(
            "targets:\n  - name: t\n    desired: {dir: d, path: apps, exclude: [\"**/secret*.yaml\"]}\n    live: {snapshot: s}\n",
            "c.yaml",
            Path::new("/b"),
        )
        .unwrap();
        let t = &cfg.targets[0];
        assert!(snapshot_keeps(t, "apps/web.yaml"));
        assert!(snapshot_keeps(t, "main.tf"));
        assert!(!snapshot_keeps(t, "apps/secret-values.yaml"));
        assert!(!snapshot_keeps(t, "other/web.yaml"));
        assert!(!snapshot_keeps(t, "terraform.tfstate"));
        assert!(!snapshot_keeps(t, "prod.tfvars"));
    }

    #[test]
    fn clone_urls_follow_the_api() {
        assert_eq!(github_clone_url(None, "o/r"), "https://github.com/o/r.git");
        assert_eq!(
            github_clone_url(Some("https://ghe.example.com/api/v3"), "o/r"),
            "https://ghe.example.com/o/r.git"
        );
    }
}
