//! The shared vocabulary of every stage: which resource, what drifted, what the policy said, and
//! what driftwarden chose to do about it.
//!
//! Nothing here does IO. Every other module speaks in these types, so a new provider (Terraform,
//! EC2) or a new sink (pull requests, SARIF) slots in without touching the others.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The JSON report's schema version. Bump on any incompatible change (docs/report-schema.md).
pub const REPORT_SCHEMA_VERSION: &str = "1";

/// The field manager driftwarden applies with, and whose managedFields entry tells which fields
/// Git declared last time.
pub const FIELD_MANAGER: &str = "driftwarden";

/// Text shown in place of a secret value in every output.
pub const MASK: &str = "(masked)";

/// Which object, per provider. Renders as one stable string ([`ResourceId::key`]); that string
/// hashed is the drift's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum ResourceId {
    /// A Kubernetes object. `group` is empty for the core group.
    Kubernetes {
        cluster: String,
        group: String,
        version: String,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
    },
    /// A Terraform resource instance in a workspace's state.
    Terraform { workspace: String, address: String },
    /// An EC2 resource.
    Ec2 {
        account: String,
        region: String,
        resource_type: String,
        id: String,
    },
}

impl ResourceId {
    /// The stable identity string. The Kubernetes API version is deliberately left out: the same
    /// object read through another version is the same object.
    pub fn key(&self) -> String {
        match self {
            ResourceId::Kubernetes {
                cluster,
                group,
                kind,
                namespace,
                name,
                ..
            } => format!(
                "kubernetes/{cluster}/{}/{kind}/{}/{name}",
                if group.is_empty() { "core" } else { group },
                namespace.as_deref().unwrap_or("_cluster")
            ),
            ResourceId::Terraform { workspace, address } => {
                format!("terraform/{workspace}/{address}")
            }
            ResourceId::Ec2 {
                account,
                region,
                resource_type,
                id,
            } => format!("ec2/{account}/{region}/{resource_type}/{id}"),
        }
    }

    /// The short human form used in tables: `Deployment shop/storefront`.
    pub fn display(&self) -> String {
        match self {
            ResourceId::Kubernetes {
                kind,
                namespace,
                name,
                ..
            } => match namespace {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            },
            ResourceId::Terraform { address, .. } => address.clone(),
            ResourceId::Ec2 {
                resource_type, id, ..
            } => format!("{resource_type} {id}"),
        }
    }

    /// The provider's name as used in policy input and reports.
    pub fn provider(&self) -> &'static str {
        match self {
            ResourceId::Kubernetes { .. } => "kubernetes",
            ResourceId::Terraform { .. } => "terraform",
            ResourceId::Ec2 { .. } => "ec2",
        }
    }

    /// The Kubernetes kind, the Terraform resource type or the EC2 resource type.
    pub fn type_name(&self) -> String {
        match self {
            ResourceId::Kubernetes { kind, .. } => kind.clone(),
            ResourceId::Terraform { address, .. } => terraform_type(address),
            ResourceId::Ec2 { resource_type, .. } => resource_type.clone(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// `module.a.aws_instance.web[0]` → `aws_instance`.
fn terraform_type(address: &str) -> String {
    let mut parts = address.split('.').peekable();
    while let Some(p) = parts.next() {
        if p == "module" {
            parts.next();
            continue;
        }
        if p == "data" {
            continue;
        }
        return p.to_string();
    }
    address.to_string()
}

/// The drift's fingerprint: the first 16 hex digits of SHA-256 over target and resource key.
/// Stable across runs and machines; used for branch names, dedup and remediation history.
pub fn fingerprint(target: &str, id: &ResourceId) -> String {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update([0u8]);
    h.update(id.key().as_bytes());
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What kind of difference a whole resource shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DriftKind {
    /// Both sides exist and declared fields differ.
    Modified,
    /// Declared in Git, absent live.
    Missing,
    /// Live, tracked as ours, absent from Git.
    Unmanaged,
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriftKind::Modified => "Modified",
            DriftKind::Missing => "Missing",
            DriftKind::Unmanaged => "Unmanaged",
        })
    }
}

/// How one field differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Both sides have the field, with different values.
    Changed,
    /// Desired declares the field; live lacks it.
    MissingLive,
    /// Live has a field that desired no longer declares but driftwarden's manager still owns.
    ExtraLive,
}

/// Who changed a field, when the live side can tell (Kubernetes managedFields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub manager: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

impl fmt::Display for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.manager, self.operation)?;
        if let Some(s) = &self.subresource {
            write!(f, ", {s}")?;
        }
        if let Some(t) = &self.time {
            write!(f, ", {t}")?;
        }
        f.write_str(")")
    }
}

/// One differing field. Values are already masked when the field is secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// RFC 6901 JSON pointer into the live object (list items addressed by their live index).
    pub path: String,
    pub op: ChangeOp,
    /// The desired value; `null` when desired lacks the field.
    pub desired: Value,
    /// The live value; `null` when live lacks the field.
    pub live: Value,
    /// True when the values were replaced by [`MASK`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
    /// The class policy gave this one change, when classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
}

/// Whether [`MASK`] stands anywhere in the value: a value holding it is never written.
pub(crate) fn contains_mask(v: &Value) -> bool {
    match v {
        Value::String(s) => s == MASK,
        Value::Array(a) => a.iter().any(contains_mask),
        Value::Object(m) => m.values().any(contains_mask),
        _ => false,
    }
}

/// The unescaped segments of a [`FieldChange::path`] (`/a/b~1c` → `["a", "b/c"]`; `""` → none).
pub(crate) fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Where a desired object came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Repository URL or local path of the source.
    pub source: String,
    /// File path relative to the source root (repository root for Git sources).
    pub file: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
    /// Commit id, for Git sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The policy class. Ordered by severity: `Safe < Risky < Forbidden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Safe,
    Risky,
    Forbidden,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Safe => "safe",
            Class::Risky => "risky",
            Class::Forbidden => "forbidden",
        })
    }
}

/// What a pull request does with one drifted field (a finding's `remedy`, docs/policy.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Remedy {
    /// Write the live value into Git (the default).
    #[default]
    Adopt,
    /// Remove the field from Git: something else owns it live (an autoscaler's replica count).
    Unpin,
    /// Keep Git's value: live should be restored, nothing in Git changes.
    Revert,
}

impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Remedy::Adopt => "adopt",
            Remedy::Unpin => "unpin",
            Remedy::Revert => "revert",
        })
    }
}

/// What the policies concluded about one drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub class: Class,
    pub reasons: Vec<String>,
    /// The rules that fired, as `package.rule` names.
    pub rules: Vec<String>,
    /// The remedy of each change (by its path) that is not [`Remedy::Adopt`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remedies: BTreeMap<String, Remedy>,
}

impl Verdict {
    /// What a pull request does with the change at `path`.
    pub fn remedy(&self, path: &str) -> Remedy {
        self.remedies.get(path).copied().unwrap_or_default()
    }
}

/// The operating mode of a target (ARCHITECTURE.md, promise 4: trust is graduated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report only.
    Observe,
    /// Pull requests and issues, never live writes. The default.
    #[default]
    Recommend,
    /// Correct safe drift in place.
    Autocorrect,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Observe => "observe",
            Mode::Recommend => "recommend",
            Mode::Autocorrect => "autocorrect",
        })
    }
}

/// What `decide` chose for a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Correct live to match Git.
    Correct,
    /// Open or update a pull request that adopts live into Git.
    PullRequest,
    /// Open or update an issue (no honest Git edit exists, or a secret is involved).
    Issue,
    /// Observe only.
    Report,
    /// A guardrail held it back.
    Skip { why: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Correct => f.write_str("correct"),
            Action::PullRequest => f.write_str("pull request"),
            Action::Issue => f.write_str("issue"),
            Action::Report => f.write_str("report"),
            Action::Skip { why } => write!(f, "skip: {why}"),
        }
    }
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Decided but not carried out (`diff`, dry runs, observe mode, or nothing configured to
    /// carry it out, such as a pull request without `pull_requests`).
    Planned,
    Done,
    Failed,
    Skipped,
    /// A correction the health gate undid: the workload was worse after it than before, so the
    /// corrected fields were set back to their live values and the drift escalated
    /// (src/act/health.rs). Counted as a failed correction.
    RolledBack,
}

/// The action chosen for a drift and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: Action,
    pub result: ActionResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One resource that differs between Git and live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub fingerprint: String,
    pub target: String,
    pub resource: ResourceRef,
    pub kind: DriftKind,
    pub changes: Vec<FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRecord>,
    /// The whole desired object, secret values masked. For policy input; not in reports.
    #[serde(skip)]
    pub desired_object: Option<Value>,
    /// The whole live object, secret values masked, server bookkeeping kept.
    #[serde(skip)]
    pub live_object: Option<Value>,
}

/// A resource identity with its display string, as reports carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    #[serde(flatten)]
    pub id: ResourceId,
    pub display: String,
}

impl From<ResourceId> for ResourceRef {
    fn from(id: ResourceId) -> Self {
        let display = id.display();
        ResourceRef { id, display }
    }
}

/// A source that failed to load or parse. Partial failure is data: it shows in the report and
/// blocks every deletion for its target (ARCHITECTURE.md, promise 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    pub target: String,
    /// `desired` or `live`.
    pub side: String,
    pub message: String,
}

/// The per-run figures (docs/report-schema.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub targets: usize,
    /// Resources compared (desired ∪ tracked live).
    pub resources_checked: usize,
    pub in_sync: usize,
    pub drifted: usize,
    pub by_kind: BTreeMap<String, usize>,
    pub by_class: BTreeMap<String, usize>,
    /// Fields dropped by each ignore rule, by rule name.
    pub ignored_fields: BTreeMap<String, usize>,
    pub actions: BTreeMap<String, usize>,
    /// Share of checked resources that match Git, 0.0–100.0.
    pub compliance_score: f64,
    /// True when some source failed to load: nothing was deleted for those targets.
    pub partial: bool,
    /// Targets in mass drift this run (src/act/mass_drift.rs): one issue each instead of a pull
    /// request or issue per drift, and no correction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mass_drift: Vec<MassDrift>,
    /// The run's own audit figures (`reconcile` and `watch`): corrections attempted, confirmed,
    /// failed, reverts detected, breakers (docs/report-schema.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::audit::RunFigures>,
}

/// A target in mass drift: more of its resources drifted in one run than
/// `pull_requests.max_proposal_percent` allows (and at least `min_mass_drift`), or live holds
/// none of them. Its drifts get one issue for the target instead of an item each, and nothing is
/// corrected (docs/pull-requests.md, "Mass drift").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MassDrift {
    pub target: String,
    /// The target's drifts this run.
    pub drifted: usize,
    /// The target's resources compared.
    pub checked: usize,
    /// `drifted * 100 / checked`, one decimal.
    pub percent: f64,
    /// Which rule found it: `share` (over `max_proposal_percent`, at least `min_mass_drift`)
    /// or `live empty` (every resource Missing).
    pub rule: String,
    /// Drifts per drift kind (`Missing`, `Modified`, `Unmanaged`; zero ones left out).
    pub by_drift_kind: BTreeMap<String, usize>,
    /// Drifts per resource kind (`Deployment`, `ConfigMap`, `aws_instance`).
    pub by_resource_kind: BTreeMap<String, usize>,
    /// The likely causes, most likely first, as the issue lists them.
    pub causes: Vec<String>,
    /// The target's mass-drift issue (its URL, or `#N` without one); absent when none was
    /// written (observe mode, `--dry-run`, no `pull_requests`, a forge failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// What became of the issue this run (`opened issue #3`, `issue #3 is up to date`,
    /// `planned: ...`).
    pub detail: String,
}

/// Everything a run found and did. The JSON report is this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: String,
    pub tool_version: String,
    /// The commit the writing binary was built from (`unknown` without one); empty in reports
    /// written before it was recorded.
    #[serde(default)]
    pub tool_commit: String,
    /// The writing binary's build date, `YYYY-MM-DD`; empty in older reports.
    #[serde(default)]
    pub tool_build_date: String,
    pub command: String,
    pub summary: Summary,
    pub drifts: Vec<Drift>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SourceError>,
}

impl Report {
    /// Builds a report and computes its summary from the drifts and per-target counts.
    pub fn new(
        command: &str,
        targets: usize,
        resources_checked: usize,
        ignored_fields: BTreeMap<String, usize>,
        drifts: Vec<Drift>,
        errors: Vec<SourceError>,
    ) -> Report {
        let mut summary = Summary {
            targets,
            resources_checked,
            drifted: drifts.len(),
            in_sync: resources_checked.saturating_sub(drifts.len()),
            ignored_fields,
            partial: !errors.is_empty(),
            ..Summary::default()
        };
        for k in ["Modified", "Missing", "Unmanaged"] {
            summary.by_kind.insert(k.to_string(), 0);
        }
        for d in &drifts {
            *summary.by_kind.entry(d.kind.to_string()).or_default() += 1;
            let class = d
                .verdict
                .as_ref()
                .map(|v| v.class.to_string())
                .unwrap_or_else(|| "unclassified".to_string());
            *summary.by_class.entry(class).or_default() += 1;
            if let Some(a) = &d.action {
                let key = match &a.action {
                    Action::Skip { .. } => "skip".to_string(),
                    other => other.to_string().replace(' ', "_"),
                };
                *summary
                    .actions
                    .entry(format!("{key}:{}", result_name(&a.result)))
                    .or_default() += 1;
            }
        }
        summary.compliance_score = if resources_checked == 0 {
            100.0
        } else {
            let s = summary.in_sync as f64 * 100.0 / resources_checked as f64;
            (s * 10.0).round() / 10.0
        };
        Report {
            schema_version: REPORT_SCHEMA_VERSION.to_string(),
            tool_version: crate::version::VERSION.to_string(),
            tool_commit: crate::version::COMMIT.to_string(),
            tool_build_date: crate::version::BUILD_DATE.to_string(),
            command: command.to_string(),
            summary,
            drifts,
            errors,
        }
    }
}

fn result_name(r: &ActionResult) -> &'static str {
    match r {
        ActionResult::Planned => "planned",
        ActionResult::Done => "done",
        ActionResult::Failed => "failed",
        ActionResult::Skipped => "skipped",
        ActionResult::RolledBack => "rolled_back",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(name: &str) -> ResourceId {
        ResourceId::Kubernetes {
            cluster: "demo".into(),
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    #[test]
    fn fingerprint_is_stable_and_ignores_version() {
        let a = k8s("web");
        let mut b = k8s("web");
        if let ResourceId::Kubernetes { version, .. } = &mut b {
            *version = "v1beta1".into();
        }
        assert_eq!(fingerprint("t", &a), fingerprint("t", &b));
        assert_ne!(fingerprint("t", &a), fingerprint("u", &a));
        assert_eq!(fingerprint("t", &a).len(), 16);
        assert_eq!(a.key(), "kubernetes/demo/apps/Deployment/shop/web");
        assert_eq!(a.display(), "Deployment shop/web");
    }

    #[test]
    fn terraform_type_skips_modules() {
        assert_eq!(
            terraform_type("module.a.aws_instance.web[0]"),
            "aws_instance"
        );
        assert_eq!(terraform_type("data.aws_ami.x"), "aws_ami");
    }

    #[test]
    fn class_orders_by_severity() {
        assert!(Class::Forbidden > Class::Risky && Class::Risky > Class::Safe);
    }
}
