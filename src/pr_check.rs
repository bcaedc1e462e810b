//! `driftwarden pr-check`: the pull-request bot. What a pull request changes in desired state is
//! classified with the same policies as drift, and a forbidden change fails the check.
//!
//! Inputs: two refs of a local Git repository (`--base`, `--head`, or the `pull_request` event at
//! `$GITHUB_EVENT_PATH` in a workflow), read straight from the object database like any Git
//! source, and optionally a Terraform plan (`terraform show -json`). Every Kubernetes object that
//! differs between the two refs becomes a drift-shaped value with the **base as desired** and the
//! **head as live**: the proposal plays the part of the change that arrived, so each policy rule
//! that asks "what did live introduce?" asks "what does this pull request introduce?". An object
//! the head adds is `Unmanaged` (its fields all introduced), one it removes is `Missing`. A plan's
//! `resource_changes` are read the same way (before = desired, after = live).
//!
//! Outputs: the same report as every command; with a GitHub context (a pull-request number, a
//! repository and a token), one sticky comment on the pull request (found again by a marker and
//! updated in place) and a commit status on the head (`failure` when a change is forbidden).
//! Secrets are masked before anything is classified, printed or posted.
//!
//! Exit codes: 0 when nothing is forbidden, 2 when a change is forbidden, 1 for runtime failures,
//! 3 for invalid input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSetBuilder};
use serde_json::Value;
use tracing::{info, warn};

use crate::config::{GitSource, PolicySettings};
use crate::desired::git::{self, GitError};
use crate::desired::manifests::{self, ManifestError, RawObject};
use crate::diff::mask;
use crate::errors::error_chain;
use crate::forge::github::{GitHub, GitHubSettings};
use crate::forge::{Forge, ForgeError, Status, StatusState, truncate_body};
use crate::k8s::{self, Scopes};
use crate::model::{
    Action, ActionRecord, ActionResult, ChangeOp, Class, Drift, DriftKind, FieldChange, Provenance,
    Report, ResourceRef, fingerprint, pointer_segments,
};
use crate::policy::{self, RunContext};
use crate::report::{self, Format, RenderOptions};

/// The target name pr-check drifts carry (fingerprints, policy input).
pub const TARGET: &str = "pr-check";

/// The marker of the sticky comment.
pub const COMMENT_MARKER: &str = "<!-- driftwarden:pr-check -->";

/// The commit status context.
pub const STATUS_CONTEXT: &str = "driftwarden/policy";

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pull_request event {path}: {message}")]
    Event { path: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("reading {reference}")]
    Git {
        reference: String,
        #[source]
        source: GitError,
    },
    #[error("at {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("policy")]
    Policy(#[source] policy::PolicyError),
    #[error("terraform plan")]
    Plan(#[source] crate::terraform::plan::PlanError),
    #[error("posting to GitHub")]
    Forge(#[source] ForgeError),
}

impl Error {
    /// 3 for input the user can fix, 1 for the environment.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Event { .. }
            | Error::Usage(_)
            | Error::Manifest { .. }
            | Error::Policy(_)
            | Error::Plan(_) => 3,
            Error::Git { source, .. } if source.is_invalid_input() => 3,
            Error::Git { .. } | Error::Forge(_) => 1,
        }
    }
}

/// Where to post, for a check run against GitHub.
#[derive(Debug, Clone)]
pub struct GitHubContext {
    pub api_url: Option<String>,
    /// `owner/name`.
    pub repo: String,
    pub token_env: String,
    pub pr: u64,
    /// A link for the status (the workflow run).
    pub target_url: Option<String>,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The local repository holding both refs.
    pub repo: PathBuf,
    pub base: Option<String>,
    pub head: Option<String>,
    /// Subdirectory of the manifests.
    pub path: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// A Terraform plan JSON to check too.
    pub plan: Option<PathBuf>,
    /// A `pull_request` event file (`$GITHUB_EVENT_PATH`).
    pub event: Option<PathBuf>,
    /// Namespace of objects that name none.
    pub namespace: String,
    pub policies: PolicySettings,
    /// Where to post, when known (a number may also come from the event).
    pub github: Option<GitHubContext>,
    /// Post the comment and the status when a GitHub context is complete.
    pub post: bool,
}

impl Options {
    /// Defaults: the current directory, every YAML/JSON file, policies in `policies/`.
    pub fn new() -> Options {
        Options {
            repo: PathBuf::from("."),
            base: None,
            head: None,
            path: String::new(),
            include: vec!["**/*.yaml".into(), "**/*.yml".into(), "**/*.json".into()],
            exclude: Vec::new(),
            plan: None,
            event: None,
            namespace: "default".into(),
            policies: PolicySettings {
                dirs: vec![crate::config::PolicyDirSetting {
                    path: PathBuf::from("policies"),
                    rego_v0: false,
                }],
                data: Vec::new(),
                interpreter: false,
                strict_builtins: false,
            },
            github: None,
            post: true,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

/// What a check found and did.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    /// Changes classified forbidden.
    pub forbidden: usize,
    /// The base and head commits compared.
    pub base: String,
    pub head: String,
    /// What was posted, when anything was.
    pub posted: Option<String>,
}

impl Outcome {
    /// 2 when a change is forbidden, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.forbidden > 0 { 2 } else { 0 }
    }
}

/// The parts of a `pull_request` event pr-check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub number: u64,
    pub base_sha: String,
    pub head_sha: String,
    /// `owner/name` of the base repository.
    pub repo: String,
    /// The head branch lives in a fork: its token cannot comment or set statuses.
    pub fork: bool,
}

/// Reads a `pull_request` (or `pull_request_target`) event payload (`$GITHUB_EVENT_PATH`).
pub fn read_event(path: &Path) -> Result<Event, Error> {
    let e = crate::report::github_actions::PullRequestEvent::from_file(path).map_err(|e| {
        Error::Event {
            path: path.display().to_string(),
            message: error_chain(&e),
        }
    })?;
    Ok(Event {
        number: e.number,
        fork: e.is_fork(),
        base_sha: e.base_sha,
        head_sha: e.head_sha,
        repo: e.repository,
    })
}

/// The manifests at one ref.
fn objects_at(opts: &Options, reference: &str) -> Result<(String, Vec<RawObject>), Error> {
    let src = GitSource {
        repo: opts.repo.display().to_string(),
        reference: reference.to_string(),
        token_env: None,
        ssh_key: None,
    };
    let build = |globs: &[String]| -> Result<globset::GlobSet, Error> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            b.add(Glob::new(g).map_err(|e| Error::Usage(format!("invalid glob `{g}`: {e}")))?);
        }
        b.build()
            .map_err(|e| Error::Usage(format!("invalid globs: {e}")))
    };
    let inc = build(&opts.include)?;
    let exc = build(&opts.exclude)?;
    let keep = |rel: &str| inc.is_match(rel) && !exc.is_match(rel);
    let cache = std::env::temp_dir();
    let tree = match git::read_tree(&src, &opts.path, &cache, &keep) {
        Ok(t) => t,
        // The pull request adds (or removes) the whole directory.
        Err(GitError::PathNotFound { .. }) => {
            let commit = resolve_commit(opts, reference)?;
            return Ok((commit, Vec::new()));
        }
        Err(e) => {
            return Err(Error::Git {
                reference: reference.to_string(),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for (file, bytes) in &tree.files {
        out.extend(
            manifests::parse_file(file, bytes, false).map_err(|e| Error::Manifest {
                reference: reference.to_string(),
                source: e,
            })?,
        );
    }
    Ok((tree.commit, out))
}

fn resolve_commit(opts: &Options, reference: &str) -> Result<String, Error> {
    let repo = git2::Repository::open(&opts.repo).map_err(|e| {
        Error::Usage(format!(
            "cannot open repository {}: {}",
            opts.repo.display(),
            e.message()
        ))
    })?;
    repo.revparse_single(reference)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|_| {
            Error::Usage(format!(
                "`{reference}` is not a commit in {} (in a workflow, check out with fetch-depth: 0 so the base is there)",
                opts.repo.display()
            ))
        })
}

/// Changes between two values of one object: maps by key, lists item by item when their length
/// is the same, else the whole list.
fn diff_values(base: &Value, head: &Value, path: &mut Vec<String>, out: &mut Vec<FieldChange>) {
    match (base, head) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                path.push(k.clone());
                match b.get(k) {
                    Some(bv) => diff_values(av, bv, path, out),
                    None => out.push(change(path, ChangeOp::MissingLive, av, &Value::Null)),
                }
                path.pop();
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    path.push(k.clone());
                    out.push(change(path, ChangeOp::ExtraLive, &Value::Null, bv));
                    path.pop();
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                path.push(i.to_string());
                diff_values(av, bv, path, out);
                path.pop();
            }
        }
        _ if base == head => {}
        _ => out.push(change(path, ChangeOp::Changed, base, head)),
    }
}

fn change(path: &[String], op: ChangeOp, desired: &Value, live: &Value) -> FieldChange {
    FieldChange {
        path: crate::diff::managed::pointer(path),
        op,
        desired: desired.clone(),
        live: live.clone(),
        masked: false,
        attribution: None,
        class: None,
    }
}

/// The Kubernetes changes between two sets of objects, as drifts (base = desired, head = live).
pub fn kubernetes_changes(
    base: &[RawObject],
    head: &[RawObject],
    namespace: &str,
    base_commit: &str,
    head_commit: &str,
    source: &str,
) -> (Vec<Drift>, usize) {
    let mut scopes = Scopes::default();
    scopes.learn(base.iter().chain(head).map(|o| &o.value), false);
    let index = |objs: &[RawObject]| -> BTreeMap<String, (crate::model::ResourceId, RawObject)> {
        objs.iter()
            .map(|o| {
                let id = k8s::resource_id(TARGET, &o.value, namespace, &scopes);
                (id.key(), (id, o.clone()))
            })
            .collect()
    };
    let b = index(base);
    let h = index(head);
    let keys: BTreeSet<&String> = b.keys().chain(h.keys()).collect();
    let checked = keys.len();
    let mut drifts = Vec::new();
    for key in keys {
        let (id, kind, desired, live, prov) = match (b.get(key), h.get(key)) {
            (Some((id, bo)), Some((_, ho))) => {
                if bo.value == ho.value {
                    continue;
                }
                (
                    id,
                    DriftKind::Modified,
                    Some(&bo.value),
                    Some(&ho.value),
                    (ho, head_commit),
                )
            }
            (Some((id, bo)), None) => (
                id,
                DriftKind::Missing,
                Some(&bo.value),
                None,
                (bo, base_commit),
            ),
            (None, Some((id, ho))) => (
                id,
                DriftKind::Unmanaged,
                None,
                Some(&ho.value),
                (ho, head_commit),
            ),
            (None, None) => continue,
        };
        let secret = mask::is_secret(id);
        let mut changes = Vec::new();
        match kind {
            DriftKind::Modified => {
                if let (Some(d), Some(l)) = (desired, live) {
                    diff_values(d, l, &mut Vec::new(), &mut changes);
                }
            }
            // Everything a new object declares is introduced by the pull request.
            DriftKind::Unmanaged => {
                if let Some(Value::Object(m)) = live {
                    for (k, v) in m {
                        if k != "apiVersion" && k != "kind" {
                            changes.push(change(
                                std::slice::from_ref(k),
                                ChangeOp::ExtraLive,
                                &Value::Null,
                                v,
                            ));
                        }
                    }
                }
            }
            DriftKind::Missing => {}
        }
        changes.retain(|c| !c.path.starts_with("/status"));
        if secret {
            for c in &mut changes {
                let segs = pointer_segments(&c.path);
                mask::mask_change(c, &segs);
            }
        }
        let masker = |v: &Value| {
            if secret {
                mask::mask_secret(v)
            } else {
                mask::mask_object(v)
            }
        };
        drifts.push(Drift {
            fingerprint: fingerprint(TARGET, id),
            target: TARGET.to_string(),
            resource: ResourceRef::from(id.clone()),
            kind,
            changes,
            provenance: Some(Provenance {
                source: source.to_string(),
                file: prov.0.file.clone(),
                line: prov.0.line,
                commit: Some(prov.1.to_string()),
            }),
            verdict: None,
            action: None,
            desired_object: desired.map(masker),
            live_object: live.map(masker),
        });
    }
    (drifts, checked)
}

/// A plan's proposed changes as drifts oriented like pr-check's: before = desired, after = live
/// (the terraform module reads them the other way round, proposal as desired).
fn plan_changes(path: &Path) -> Result<(Vec<Drift>, usize), Error> {
    let plan = crate::terraform::plan::load(path).map_err(Error::Plan)?;
    let mut drifts = crate::terraform::plan::change_drifts(&plan, TARGET, "plan");
    let checked = drifts.len();
    for d in &mut drifts {
        std::mem::swap(&mut d.desired_object, &mut d.live_object);
        d.kind = match d.kind {
            DriftKind::Missing => DriftKind::Unmanaged,
            DriftKind::Unmanaged => DriftKind::Missing,
            k => k,
        };
        for c in &mut d.changes {
            std::mem::swap(&mut c.desired, &mut c.live);
            c.op = match c.op {
                ChangeOp::MissingLive => ChangeOp::ExtraLive,
                ChangeOp::ExtraLive => ChangeOp::MissingLive,
                op => op,
            };
        }
    }
    Ok((drifts, checked))
}

fn action_for(d: &Drift) -> ActionRecord {
    let (detail, result) = match d.verdict.as_ref().map(|v| v.class) {
        Some(Class::Forbidden) => ("forbidden: fails the check", ActionResult::Failed),
        Some(Class::Safe) => ("safe", ActionResult::Done),
        _ => (
            "risky: a reviewer should look (does not fail the check)",
            ActionResult::Done,
        ),
    };
    ActionRecord {
        action: Action::Report,
        result,
        detail: Some(detail.to_string()),
    }
}

/// The sticky comment: the marker, a verdict line, the Markdown report.
fn comment_body(report: &Report, forbidden: usize, base: &str, head: &str) -> String {
    let short = |s: &str| s.chars().take(12).collect::<String>();
    let verdict = if forbidden > 0 {
        format!(
            "**driftwarden: {forbidden} forbidden change{}** — this pull request fails the policy check.",
            if forbidden == 1 { "" } else { "s" }
        )
    } else if report.drifts.is_empty() {
        "**driftwarden: no desired-state change** — nothing to check.".to_string()
    } else {
        "**driftwarden: no forbidden change** — the policy check passes.".to_string()
    };
    let md = report::render(report, Format::Markdown, &RenderOptions::default());
    let body = format!(
        "{COMMENT_MARKER}\n{verdict}\n\nCompared `{}` (base) with `{}` (head); every change is classified by the same policies as drift.\n\n{md}",
        short(base),
        short(head)
    );
    truncate_body(
        &body,
        crate::act::pull_request::BODY_LIMIT,
        "The full report is in the check's log (`driftwarden pr-check`).",
    )
}

fn status_description(report: &Report, forbidden: usize) -> String {
    let by = &report.summary.by_class;
    let n = |k: &str| by.get(k).copied().unwrap_or(0);
    if forbidden > 0 {
        format!(
            "{forbidden} forbidden change(s); {} risky, {} safe",
            n("risky"),
            n("safe")
        )
    } else {
        format!(
            "no forbidden change; {} risky, {} safe",
            n("risky"),
            n("safe")
        )
    }
}

/// Runs the check: reads both refs (and the plan), classifies, and posts when it can.
pub async fn run(opts: &Options) -> Result<Outcome, Error> {
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        // A container action sees the workspace owned by the runner's user, not its own, and
        // libgit2 refuses such a repository (git's `safe.directory`). actions/checkout marks the
        // workspace safe for git; do the same for libgit2. pr-check only reads objects: libgit2
        // runs no hooks and no configured commands.
        // SAFETY: a process-wide libgit2 option, set before any repository is opened here.
        if let Err(e) = unsafe { git2::opts::set_verify_owner_validation(false) } {
            warn!(error = %e, "cannot relax libgit2's repository owner check");
        }
    }
    let event = match &opts.event {
        Some(p) => Some(read_event(p)?),
        None => None,
    };
    let base = opts
        .base
        .clone()
        .or_else(|| event.as_ref().map(|e| e.base_sha.clone()))
        .ok_or_else(|| {
            Error::Usage(
                "give --base and --head, or run in a pull_request workflow ($GITHUB_EVENT_PATH)"
                    .into(),
            )
        })?;
    let head = opts
        .head
        .clone()
        .or_else(|| event.as_ref().map(|e| e.head_sha.clone()))
        .ok_or_else(|| Error::Usage("give --head (or run in a pull_request workflow)".into()))?;

    let (base_commit, base_objs) = objects_at(opts, &base)?;
    let (head_commit, head_objs) = objects_at(opts, &head)?;
    let source = opts.repo.display().to_string();
    let (mut drifts, mut checked) = kubernetes_changes(
        &base_objs,
        &head_objs,
        &opts.namespace,
        &base_commit,
        &head_commit,
        &source,
    );
    if let Some(plan) = &opts.plan {
        let (more, n) = plan_changes(plan)?;
        drifts.extend(more);
        checked += n;
    }

    // No policy directory: the empty engine gives every change the fail-safe `risky` verdict
    // (run::load_policies warns), so nothing passes as safe and nothing fails the check.
    let engine = crate::run::load_policies(&opts.policies, false).map_err(|e| match e {
        crate::run::Error::Policy(p) => Error::Policy(p),
        other => Error::Usage(other.to_string()),
    })?;
    if let Some(engine) = &engine {
        let mut ctx = RunContext {
            time: crate::run::now_rfc3339(),
            command: "pr-check".to_string(),
            ..RunContext::default()
        };
        ctx.related.insert(
            TARGET.to_string(),
            policy::Related::from_objects(head_objs.iter().map(|o| &o.value)),
        );
        // The gate runs on the interpreter: a pull request changes few objects, and a rule that
        // fails at run time must stop the check with its file and line, never read as undefined.
        engine
            .classify_interpreted(&mut drifts, &ctx)
            .map_err(Error::Policy)?;
    }
    for d in &mut drifts {
        d.action = Some(action_for(d));
    }
    drifts.sort_by_cached_key(|d| d.resource.id.key());
    let forbidden = drifts
        .iter()
        .filter(|d| {
            d.verdict
                .as_ref()
                .is_some_and(|v| v.class == Class::Forbidden)
        })
        .count();
    let report = Report::new("pr-check", 1, checked, BTreeMap::new(), drifts, Vec::new());
    info!(base = %base_commit, head = %head_commit, changed = report.drifts.len(), forbidden, "pr-check compared");

    let mut posted = None;
    let gh = opts.github.clone().map(|mut g| {
        if g.pr == 0 {
            g.pr = event.as_ref().map(|e| e.number).unwrap_or(0);
        }
        g
    });
    if event.as_ref().is_some_and(|e| e.fork) && opts.post {
        warn!(
            "the pull request comes from a fork: its token cannot comment or set statuses; printing only"
        );
    }
    let can_post = opts.post && !event.as_ref().is_some_and(|e| e.fork);
    if let Some(g) = gh.filter(|g| can_post && g.pr > 0) {
        let (owner, name) = g
            .repo
            .split_once('/')
            .ok_or_else(|| Error::Usage(format!("`{}` is not owner/name", g.repo)))?;
        let client = GitHub::new(&GitHubSettings {
            api_url: g.api_url.clone(),
            owner: owner.to_string(),
            repo: name.to_string(),
            token_env: g.token_env.clone(),
            write_interval: Duration::from_millis(0),
            max_wait: Duration::from_secs(300),
        })
        .map_err(Error::Forge)?;
        let forge = Forge::GitHub(client);
        let body = comment_body(&report, forbidden, &base_commit, &head_commit);
        let wrote = forge
            .upsert_comment(g.pr, COMMENT_MARKER, &body)
            .await
            .map_err(Error::Forge)?;
        forge
            .set_status(&Status {
                sha: head_commit.clone(),
                state: if forbidden > 0 {
                    StatusState::Failure
                } else {
                    StatusState::Success
                },
                context: STATUS_CONTEXT.to_string(),
                description: status_description(&report, forbidden),
                target_url: g.target_url.clone(),
            })
            .await
            .map_err(Error::Forge)?;
        posted = Some(format!(
            "{} the comment on {}#{} and set status {} on {}",
            if wrote { "posted" } else { "kept" },
            g.repo,
            g.pr,
            if forbidden > 0 { "failure" } else { "success" },
            &head_commit[..head_commit.len().min(12)]
        ));
    }
    Ok(Outcome {
        report,
        forbidden,
        base: base_commit,
        head: head_commit,
        posted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_diff_sees_additions_removals_and_changes() {
        let mut out = Vec::new();
        diff_values(
            &json!({"a": 1, "b": {"c": [1, 2]}, "gone": true}),
            &json!({"a": 2, "b": {"c": [1, 3]}, "new": "x"}),
            &mut Vec::new(),
            &mut out,
        );
        let got: Vec<(String, ChangeOp)> = out.iter().map(|c| (c.path.clone(), c.op)).collect();
        assert_eq!(
            got,
            vec![
                ("/a".into(), ChangeOp::Changed),
                ("/b/c/1".into(), ChangeOp::Changed),
                ("/gone".into(), ChangeOp::MissingLive),
                ("/new".into(), ChangeOp::ExtraLive),
            ]
        );
    }
}
