//! The audit log: one JSON object per line in `<dir>/YYYY-MM-DD.jsonl` (UTC day), schema
//! [`SCHEMA_VERSION`] (docs/audit.md).
//!
//! A run writes what it saw (`drift_seen`), what policy said (`verdict`), what it decided
//! (`decision`, then `outcome` with the guardrails' word), and for every action an `intent`
//! before the request is sent and a `result` after it. Records are appended in batches, each
//! batch written whole and flushed to disk (`fsync`) before the call returns: an actuator that
//! cannot record its intent does not act ([`AuditLog::intent`] fails, and the log stays broken
//! for the rest of the run). Values are the drift's, already masked by `diff`: a Secret value
//! never reaches a record, and the corrected fields carry their pre-correction live value only
//! when it is not masked, plus a SHA-256 of it for comparisons (for a masked value, a keyed
//! HMAC-SHA256 of the raw live value, [`AuditLog::note_live`]).
//!
//! At open the log removes day files older than the retention and loads the recent history:
//! an `intent` with no `result` (a crash between them) is reported by the next run
//! ([`AuditLog::unfinished`]) and recorded as `unfinished`, once. The history also feeds the
//! breaker on reverted corrections ([`stats::reverts`], [`AuditLog::breaker`]) and
//! `driftwarden stats` ([`stats::compute`]).

pub mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{AuditSettings, TrustSettings};
use crate::forge::ItemKind;
use crate::model::{
    Action, ActionResult, Attribution, ChangeOp, Class, Drift, DriftKind, FIELD_MANAGER, Mode,
    SourceError,
};

/// The version of the record schema (docs/audit.md). Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// How far back a run reads the log at open: the breaker's window and the revert horizon
/// ([`stats::REVERT_HORIZON_SECS`]) both fit in it.
const HISTORY_DAYS: u64 = 3;

/// Why the audit log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the audit directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the audit log {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit log {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode an audit record")]
    Encode(#[source] serde_json::Error),
    #[error("the audit log is unavailable for the rest of this run: {0}")]
    Broken(String),
    /// The process may not write right now (`watch` with leader election: this replica does
    /// not hold the Lease at this instant). Nothing was recorded; the action must not be sent.
    #[error("{0}")]
    NotAllowed(String),
}

impl AuditError {
    /// Why an action whose intent failed is not taken, for its report line.
    pub fn refusal(&self) -> String {
        match self {
            AuditError::NotAllowed(why) => why.clone(),
            e => format!(
                "the audit log cannot be written ({}); nothing is acted on without a record",
                crate::errors::error_chain(e)
            ),
        }
    }
}

/// Asked right before every intent is recorded, that is right before every write any
/// actuator sends: `Err(why)` refuses it. `watch` sets one from its leadership.
#[derive(Clone)]
pub struct WriteGate(pub std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGate")
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`SCHEMA_VERSION`].
    pub v: u32,
    /// The run that wrote it.
    pub run: String,
    /// RFC 3339 UTC, seconds.
    pub time: String,
    /// `reconcile`, `watch`, `trust`.
    pub command: String,
    /// Written by a `--dry-run`: nothing was changed.
    pub dry_run: bool,
    #[serde(flatten)]
    pub event: Event,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A run began; `targets` are the ones it covers.
    RunStarted { targets: Vec<String> },
    /// One drift as the run saw it.
    DriftSeen {
        target: String,
        fingerprint: String,
        /// The resource key (`ResourceId::key`).
        resource: String,
        /// The resource as reports show it.
        display: String,
        kind: DriftKind,
        changes: Vec<ChangeRecord>,
    },
    /// What the policies said about a drift.
    Verdict {
        target: String,
        fingerprint: String,
        /// `None`: no policy ran.
        class: Option<Class>,
        rules: Vec<String>,
        reasons: Vec<String>,
        /// `compiled` or `interpreter`.
        engine: String,
    },
    /// The action `decide` chose, before any guardrail.
    Decision {
        target: String,
        fingerprint: String,
        mode: Mode,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The drift's action after the actuators: the guardrails' outcome.
    Outcome {
        target: String,
        fingerprint: String,
        action: String,
        result: ActionResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// The guardrail that held the action back or escalated it, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guardrail: Option<String>,
    },
    /// An action about to be sent. Written and flushed before the request.
    Intent {
        /// Unique per run; the `result` carries it too.
        id: String,
        target: String,
        fingerprint: String,
        resource: String,
        /// `correct`, `prune`, `pull_request`, `issue`, `rollback`.
        action: String,
        /// How: `server-side apply`, `delete`, `CreateTags, ...`, `forge`.
        operation: String,
        /// `policy` (decided from the verdict) or `drift_revert` (a closed item asked for it).
        trigger: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<Class>,
        rules: Vec<String>,
        /// The fields it changes, with their pre-correction live values.
        fields: Vec<FieldRecord>,
        /// Forge writes on an existing pull request or issue (`close`, `comment`): which.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<ItemRef>,
        /// `delete_branch`: the branch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// How an intent went. Written and flushed after the response.
    Result {
        id: String,
        target: String,
        fingerprint: String,
        /// `done`, `failed`, `skipped` or `planned` (dry run).
        outcome: ActionResult,
        /// Whether a re-read confirmed the change (corrections); `None` where nothing is read
        /// back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirmed: Option<bool>,
        /// The server's message on failure, why on skip, what was done otherwise.
        message: String,
    },
    /// A target's totals in this run (compliance over time).
    TargetChecked {
        target: String,
        checked: usize,
        drifted: usize,
        partial: bool,
        /// Whether this pass listed the target's items on the forge, so that every item it found
        /// closed has an `item_closed` record before this one. `None` in history written before
        /// `item_closed` existed (`stats` then infers merged pull requests).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items_listed: Option<bool>,
    },
    /// A driftwarden pull request or issue found closed by someone else (merged, or closed by a
    /// person), once per item: whether the forge says it was merged.
    ItemClosed {
        target: String,
        /// The drift it was for (its body's marker).
        fingerprint: String,
        /// The resource key, from the drift's last `drift_seen` in the recent history; `None`
        /// when the history no longer holds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        item: ItemRef,
        /// The forge says the pull request was merged (always `false` for an issue).
        merged: bool,
        /// The digest of the drift's changes the item was written for.
        changes: String,
        /// Its labels when found closed (`drift/revert` asks for a revert).
        labels: Vec<String>,
        /// When the forge says it was closed (RFC 3339, as the forge wrote it); `None` when
        /// it does not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        closed_at: Option<String>,
    },
    /// An intent of an earlier run that has no result: the process stopped between them.
    Unfinished {
        id: String,
        target: String,
        fingerprint: String,
        action: String,
        intent_run: String,
        intent_time: String,
        /// The intent's item or branch, for forge writes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<ItemRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// A rule stopped correcting on a target: its corrections were reverted too often.
    BreakerTripped {
        target: String,
        rule: String,
        reverts: u32,
        window_hours: u32,
        reason: String,
    },
    /// Corrections on a target stopped for the run after consecutive failures.
    CorrectionsStopped {
        target: String,
        failures: u32,
        reason: String,
    },
    /// `driftwarden trust reset`: the rule's reverts before this record no longer count.
    TrustReset { target: String, rule: String },
    /// A correction undone (health gate): `fields` re-applied to their pre-correction values.
    Rollback {
        target: String,
        fingerprint: String,
        resource: String,
        fields: Vec<FieldRecord>,
        evidence: String,
        outcome: ActionResult,
    },
    /// A notification sent (or given up on) to a receiver.
    Notification {
        receiver: String,
        event: String,
        /// `done` or `failed`.
        outcome: ActionResult,
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// A pull request or issue on the forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRef {
    /// `pull_request` or `issue`.
    pub kind: ItemKind,
    pub number: u64,
}

impl std::fmt::Display for ItemRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} #{}", self.kind.noun(), self.number)
    }
}

/// A forge write other than a drift's own pull request or issue (those are recorded by
/// [`AuditLog::intent`] with action `pull_request` or `issue`): closing an item, a comment on
/// one, deleting a branch. [`AuditLog::forge_intent`] records it before it is sent and
/// [`AuditLog::forge_result`] after.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgeWrite {
    pub target: String,
    pub fingerprint: String,
    /// The resource key; `None`: looked up in the history (the drift's last `drift_seen`).
    pub resource: Option<String>,
    /// `close`, `comment`, `delete_branch`.
    pub action: &'static str,
    /// How, for people: `comment, close (resolved)`, `DELETE branch`.
    pub operation: String,
    /// `policy`, or `drift_revert` for the comment answering a `drift/revert` request.
    pub trigger: &'static str,
    pub class: Option<Class>,
    pub rules: Vec<String>,
    pub item: Option<ItemRef>,
    pub branch: Option<String>,
}

impl ForgeWrite {
    /// A write for the drift `fingerprint` of `target`, whose resource is looked up in the
    /// history.
    pub fn new(target: &str, fingerprint: &str, action: &'static str, operation: &str) -> Self {
        ForgeWrite {
            target: target.to_string(),
            fingerprint: fingerprint.to_string(),
            resource: None,
            action,
            operation: operation.to_string(),
            trigger: "policy",
            class: None,
            rules: Vec::new(),
            item: None,
            branch: None,
        }
    }

    /// A write about the drift `d`, which is at hand.
    pub fn for_drift(d: &Drift, action: &'static str, operation: &str) -> Self {
        ForgeWrite {
            resource: Some(d.resource.id.key()),
            class: d.verdict.as_ref().map(|v| v.class),
            rules: rules_of(d),
            ..ForgeWrite::new(&d.target, &d.fingerprint, action, operation)
        }
    }

    /// On this pull request or issue.
    pub fn item(mut self, kind: ItemKind, number: u64) -> Self {
        self.item = Some(ItemRef { kind, number });
        self
    }

    /// On this branch.
    pub fn branch(mut self, branch: &str) -> Self {
        self.branch = Some(branch.to_string());
        self
    }

    /// Answering a `drift/revert` request.
    pub fn revert_trigger(mut self) -> Self {
        self.trigger = "drift_revert";
        self
    }
}

/// One changed field of a drift, as the drift carries it (masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub path: String,
    pub op: ChangeOp,
    pub desired: Value,
    pub live: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
    /// SHA-256 of the live value ([`value_hash`]).
    pub live_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
}

/// One field an action changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldRecord {
    pub path: String,
    /// The live value before the action; `null` when masked.
    pub before: Value,
    /// SHA-256 of the live value before ([`value_hash`]).
    pub before_hash: String,
    /// SHA-256 of the value the action sets.
    pub after_hash: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
}

/// SHA-256 (hex) of a value's canonical JSON (object keys sorted).
pub fn value_hash(v: &Value) -> String {
    let mut h = Sha256::new();
    h.update(canonical(v).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (hex, prefixed [`DIGEST_PREFIX`]) of a value's canonical JSON under `key`: how a
/// masked value is compared without being recorded (a plain hash of a short secret could be
/// guessed back).
pub fn keyed_digest(key: &[u8], v: &Value) -> String {
    use hmac::Mac;
    // HMAC takes keys of any length; the error case cannot happen.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(canonical(v).as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{DIGEST_PREFIX}{hex}")
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The changes of a drift as records.
pub fn change_records(d: &Drift) -> Vec<ChangeRecord> {
    d.changes
        .iter()
        .map(|c| ChangeRecord {
            path: c.path.clone(),
            op: c.op,
            desired: c.desired.clone(),
            live: c.live.clone(),
            masked: c.masked,
            live_hash: value_hash(&c.live),
            attribution: c.attribution.clone(),
        })
        .collect()
}

/// The fields a correction of `d` sets, with their live values before it.
pub fn field_records(d: &Drift) -> Vec<FieldRecord> {
    d.changes
        .iter()
        .map(|c| FieldRecord {
            path: c.path.clone(),
            before: if c.masked {
                Value::Null
            } else {
                c.live.clone()
            },
            before_hash: value_hash(&c.live),
            after_hash: value_hash(&c.desired),
            masked: c.masked,
        })
        .collect()
}

/// The records a drift gets once classified and decided: `drift_seen`, `verdict`, `decision`.
pub fn drift_events(d: &Drift, mode: Mode, engine: &str) -> Vec<Event> {
    let mut out = vec![Event::DriftSeen {
        target: d.target.clone(),
        fingerprint: d.fingerprint.clone(),
        resource: d.resource.id.key(),
        display: d.resource.display.clone(),
        kind: d.kind,
        changes: change_records(d),
    }];
    out.push(Event::Verdict {
        target: d.target.clone(),
        fingerprint: d.fingerprint.clone(),
        class: d.verdict.as_ref().map(|v| v.class),
        rules: d
            .verdict
            .as_ref()
            .map(|v| v.rules.clone())
            .unwrap_or_default(),
        reasons: d
            .verdict
            .as_ref()
            .map(|v| v.reasons.clone())
            .unwrap_or_default(),
        engine: engine.to_string(),
    });
    if let Some(a) = &d.action {
        out.push(Event::Decision {
            target: d.target.clone(),
            fingerprint: d.fingerprint.clone(),
            mode,
            action: action_name(&a.action),
            detail: a.detail.clone(),
        });
    }
    out
}

/// The `outcome` record of a drift after the actuators.
pub fn outcome_event(d: &Drift) -> Option<Event> {
    let a = d.action.as_ref()?;
    let guardrail = match &a.action {
        Action::Skip { why } => Some(why.clone()),
        Action::PullRequest | Action::Issue
            if d.verdict.as_ref().map(|v| v.class) == Some(Class::Safe) =>
        {
            a.detail
                .as_deref()
                .map(|s| s.split("; ").next().unwrap_or(s).to_string())
        }
        _ => None,
    };
    Some(Event::Outcome {
        target: d.target.clone(),
        fingerprint: d.fingerprint.clone(),
        action: action_name(&a.action),
        result: a.result.clone(),
        detail: a.detail.clone(),
        guardrail,
    })
}

/// `correct`, `pull_request`, `issue`, `report`, `skip`.
pub fn action_name(a: &Action) -> String {
    match a {
        Action::Skip { .. } => "skip".to_string(),
        other => other.to_string().replace(' ', "_"),
    }
}

/// The rules of a drift's verdict (empty without one).
pub fn rules_of(d: &Drift) -> Vec<String> {
    d.verdict
        .as_ref()
        .map(|v| v.rules.clone())
        .unwrap_or_default()
}

/// How the log is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// `reconcile`, `watch`, `trust`.
    pub command: String,
    /// Records are marked `dry_run`.
    pub dry_run: bool,
    /// Every record is also printed on stdout (`watch`).
    pub mirror_stdout: bool,
    /// The policy engine verdicts come from (`compiled`, `interpreter`), for `verdict` records.
    pub engine: String,
}

/// The run's own figures, for the report summary (docs/report-schema.md, `summary.trust`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// The audit log's directory.
    pub audit_dir: String,
    /// Records written this run.
    pub records: usize,
    /// Corrections sent (an intent recorded; dry runs excluded).
    pub corrections_attempted: usize,
    /// Corrections a re-read confirmed.
    pub corrections_confirmed: usize,
    pub corrections_failed: usize,
    /// Earlier corrections this run saw reverted by another manager.
    pub reverts_detected: usize,
    /// Rules stopped on a target by the revert breaker: `target/rule`.
    pub breakers_tripped: Vec<String>,
    /// Targets whose corrections stopped after consecutive failures.
    pub corrections_stopped: Vec<String>,
    /// Intents of earlier runs found without a result.
    pub unfinished_intents: usize,
    /// Why the log could not be written, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_error: Option<String>,
}

impl RunFigures {
    /// Adds another shard's figures (`report merge`): counts summed, lists joined, the first
    /// audit error kept; `audit_dir` names every distinct directory.
    pub fn add(&mut self, other: &RunFigures) {
        if self.audit_dir.is_empty() {
            self.audit_dir = other.audit_dir.clone();
        } else if !other.audit_dir.is_empty()
            && !self.audit_dir.split(", ").any(|d| d == other.audit_dir)
        {
            self.audit_dir = format!("{}, {}", self.audit_dir, other.audit_dir);
        }
        self.records += other.records;
        self.corrections_attempted += other.corrections_attempted;
        self.corrections_confirmed += other.corrections_confirmed;
        self.corrections_failed += other.corrections_failed;
        self.reverts_detected += other.reverts_detected;
        self.breakers_tripped
            .extend(other.breakers_tripped.iter().cloned());
        self.corrections_stopped
            .extend(other.corrections_stopped.iter().cloned());
        self.unfinished_intents += other.unfinished_intents;
        if self.audit_error.is_none() {
            self.audit_error = other.audit_error.clone();
        }
    }
}

/// The handle every writer shares: the run's id, the open day file, the history read at open,
/// and the per-run breaker state. Thread-safe; writes are serialized.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    run_id: String,
    opts: OpenOptions,
    trust: TrustSettings,
    state: Mutex<State>,
    /// Checked before every intent ([`AuditLog::set_write_gate`]).
    gate: Mutex<Option<WriteGate>>,
}

#[derive(Debug, Default)]
struct State {
    /// Set on the first failure: nothing more is written, nothing more is acted on.
    broken: Option<String>,
    seq: u64,
    /// History read at open plus everything written since.
    history: Vec<Record>,
    /// Consecutive failed corrections per target, this run.
    failures: HashMap<String, u32>,
    /// Breakers already recorded this run (`target/rule`).
    tripped: BTreeSet<String>,
    stopped: BTreeSet<String>,
    figures: RunFigures,
    /// Reverts already counted this run (correction id and path).
    reverts_seen: BTreeSet<(String, String)>,
    /// The key of the masked values' digests ([`SECRET_KEY_FILE`]); `None` when it could not
    /// be read or made (masked values are then never compared).
    key: Option<Vec<u8>>,
    /// Digests of masked live values by target, fingerprint and path ([`AuditLog::note_live`]).
    digests: HashMap<(String, String, String), String>,
    /// Targets whose items the pull-request step listed in the current pass
    /// ([`AuditLog::note_items_listed`]).
    listed: BTreeSet<String>,
}

/// The resource key of the last `drift_seen` of a drift in `history`.
fn last_resource(history: &[Record], target: &str, fingerprint: &str) -> Option<String> {
    history.iter().rev().find_map(|r| match &r.event {
        Event::DriftSeen {
            target: t,
            fingerprint: f,
            resource,
            ..
        } if t == target && f == fingerprint => Some(resource.clone()),
        _ => None,
    })
}

/// The file in `state_dir` holding the key of the masked values' digests: 32 random bytes, hex,
/// readable by the owner only. Deleting it makes earlier digests incomparable. Kept beside the
/// audit directory, which holds day files only.
pub const SECRET_KEY_FILE: &str = "audit-digest.key";

/// How a digest of a masked value starts, to tell it from a plain SHA-256.
pub const DIGEST_PREFIX: &str = "hmac-sha256:";

/// Reads the digest key in `dir` (the state directory), making it on first use.
fn digest_key(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join(SECRET_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let bytes: Option<Vec<u8>> = (0..text.len())
                .step_by(2)
                .map(|i| {
                    text.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            match bytes {
                Some(b) if b.len() == 32 => return Ok(b),
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not 64 hex digits", path.display()),
                    ));
                }
            }
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    // Complete on disk before the name appears: a crash never leaves a partial key.
    match crate::statelock::create_atomic(&path, hex.as_bytes(), 0o600) {
        Ok(()) => Ok(key.to_vec()),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => digest_key(dir),
        Err(e) => Err(e),
    }
}

impl AuditLog {
    /// Opens the log under `settings`' directory: creates it, removes day files past the
    /// retention, reads the recent history. Never fails: a log that cannot be opened is
    /// returned broken ([`AuditLog::broken`]), so the run still reports but acts on nothing.
    pub fn open(
        settings: &AuditSettings,
        trust: &TrustSettings,
        state_dir: &Path,
        opts: OpenOptions,
    ) -> AuditLog {
        let dir = settings.dir(state_dir);
        let log = AuditLog {
            dir: dir.clone(),
            run_id: new_run_id(),
            opts,
            trust: trust.clone(),
            state: Mutex::new(State::default()),
            gate: Mutex::new(None),
        };
        let opened = std::fs::create_dir_all(&dir)
            .map_err(|e| AuditError::Dir {
                path: dir.display().to_string(),
                source: e,
            })
            .and_then(|()| remove_expired(&dir, settings.retention_days, now_unix()))
            .and_then(|()| {
                let since = now_unix().saturating_sub(HISTORY_DAYS * 86_400);
                read_dir(&dir, since)
            });
        let mut st = log.lock();
        st.figures.audit_dir = dir.display().to_string();
        match opened {
            Ok(history) => {
                st.history = history;
                match std::fs::create_dir_all(state_dir).and_then(|()| digest_key(state_dir)) {
                    Ok(k) => st.key = Some(k),
                    Err(e) => {
                        warn!(dir = %dir.display(), error = %e, "no key for the digests of masked values; their reverts are not detected")
                    }
                }
            }
            Err(e) => {
                let msg = crate::errors::error_chain(&e);
                warn!(dir = %dir.display(), error = %msg, "the audit log cannot be opened; nothing is acted on this run");
                st.figures.audit_error = Some(msg.clone());
                st.broken = Some(msg);
            }
        }
        drop(st);
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy engine named in `verdict` records.
    pub fn engine(&self) -> &str {
        &self.opts.engine
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The directory of the day files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the log cannot be written, when it cannot.
    pub fn broken(&self) -> Option<String> {
        self.lock().broken.clone()
    }

    /// The run's figures so far.
    pub fn figures(&self) -> RunFigures {
        self.lock().figures.clone()
    }

    /// Notes the digests of the masked values of `drifts` from the raw live objects (by resource
    /// key, as read, before masking): a keyed HMAC-SHA256 of each masked change's live value, so
    /// that a Secret value set back after a correction is recognized without ever being recorded.
    /// Call it before [`AuditLog::drift_events`] for targets whose reader keeps the raw objects.
    pub fn note_live(&self, drifts: &[Drift], live_by_key: &HashMap<String, Value>) {
        let mut st = self.lock();
        let Some(key) = st.key.clone() else { return };
        for d in drifts {
            let Some(live) = live_by_key.get(&d.resource.id.key()) else {
                continue;
            };
            for c in d.changes.iter().filter(|c| c.masked) {
                let v = live.pointer(&c.path).cloned().unwrap_or(Value::Null);
                st.digests.insert(
                    (d.target.clone(), d.fingerprint.clone(), c.path.clone()),
                    keyed_digest(&key, &v),
                );
            }
        }
    }

    /// The digest [`AuditLog::note_live`] noted for a masked change.
    fn digest(&self, d: &Drift, path: &str) -> Option<String> {
        self.lock()
            .digests
            .get(&(d.target.clone(), d.fingerprint.clone(), path.to_string()))
            .cloned()
    }

    /// The `drift_seen`, `verdict` and `decision` records of a classified and decided drift;
    /// a masked change's `live_hash` is its keyed digest when one was noted.
    pub fn drift_events(&self, d: &Drift, mode: Mode) -> Vec<Event> {
        let mut events = drift_events(d, mode, &self.opts.engine);
        for e in &mut events {
            if let Event::DriftSeen { changes, .. } = e {
                for c in changes.iter_mut().filter(|c| c.masked) {
                    if let Some(digest) = self.digest(d, &c.path) {
                        c.live_hash = digest;
                    }
                }
            }
        }
        events
    }

    /// Appends one batch of records and flushes it to disk. On failure the log is broken for
    /// the rest of the run and the error returned; a broken log writes nothing.
    pub fn write(&self, events: Vec<Event>) -> Result<(), AuditError> {
        let mut st = self.lock();
        self.write_locked(&mut st, events)
    }

    fn write_locked(&self, st: &mut State, events: Vec<Event>) -> Result<(), AuditError> {
        if let Some(why) = &st.broken {
            return Err(AuditError::Broken(why.clone()));
        }
        if events.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        let time = rfc3339(now);
        let records: Vec<Record> = events
            .into_iter()
            .map(|event| Record {
                v: SCHEMA_VERSION,
                run: self.run_id.clone(),
                time: time.clone(),
                command: self.opts.command.clone(),
                dry_run: self.opts.dry_run,
                event,
            })
            .collect();
        let mut text = String::new();
        for r in &records {
            match serde_json::to_string(r) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(e) => return Err(AuditError::Encode(e)),
            }
        }
        let path = self.dir.join(format!("{}.jsonl", day_of(now)));
        let res = append_synced(&path, text.as_bytes()).map_err(|e| AuditError::Write {
            path: path.display().to_string(),
            source: e,
        });
        if let Err(e) = &res {
            let msg = crate::errors::error_chain(e);
            warn!(path = %path.display(), error = %msg, "the audit log cannot be written; no more actions this run");
            st.figures.audit_error = Some(msg.clone());
            st.broken = Some(msg);
            return res;
        }
        if self.opts.mirror_stdout {
            let mut out = std::io::stdout().lock();
            // Mirroring is best effort: the file is the record.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        st.figures.records += records.len();
        st.history.extend(records);
        Ok(())
    }

    /// Every later [`AuditLog::intent`] first asks `gate`, and refuses (records nothing, sends
    /// nothing) when it says no.
    pub fn set_write_gate(&self, gate: WriteGate) {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(gate);
    }

    /// Records an action about to be sent for `d` and returns its id. When this fails the
    /// action must not be sent. `operation` says how (`server-side apply`, `CreateTags`).
    pub fn intent(&self, d: &Drift, action: &str, operation: &str) -> Result<String, AuditError> {
        self.ask_gate()?;
        let mut st = self.lock();
        st.seq += 1;
        let id = format!("{}-{}", self.run_id, st.seq);
        let trigger = if d
            .action
            .as_ref()
            .and_then(|a| a.detail.as_deref())
            .is_some_and(|s| s.starts_with(crate::act::pull_request::REVERT_REQUESTED))
        {
            "drift_revert"
        } else {
            "policy"
        };
        let mut fields = if action == "correct" || action == "prune" {
            field_records(d)
        } else {
            Vec::new()
        };
        for f in fields.iter_mut().filter(|f| f.masked) {
            if let Some(digest) =
                st.digests
                    .get(&(d.target.clone(), d.fingerprint.clone(), f.path.clone()))
            {
                f.before_hash = digest.clone();
            }
        }
        self.write_locked(
            &mut st,
            vec![Event::Intent {
                id: id.clone(),
                target: d.target.clone(),
                fingerprint: d.fingerprint.clone(),
                resource: d.resource.id.key(),
                action: action.to_string(),
                operation: operation.to_string(),
                trigger: trigger.to_string(),
                class: d.verdict.as_ref().map(|v| v.class),
                rules: rules_of(d),
                fields,
                item: None,
                branch: None,
            }],
        )?;
        if (action == "correct" || action == "prune") && !self.opts.dry_run {
            st.figures.corrections_attempted += 1;
        }
        Ok(id)
    }

    /// The write gate's word ([`AuditLog::set_write_gate`]): `Err` refuses the intent.
    fn ask_gate(&self) -> Result<(), AuditError> {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match gate {
            Some(gate) => (gate.0)().map_err(AuditError::NotAllowed),
            None => Ok(()),
        }
    }

    /// Records a forge write about to be sent ([`ForgeWrite`]: closing an item, a comment,
    /// deleting a branch) and returns its id. Like [`AuditLog::intent`], it asks the write gate
    /// first, and when this fails the request must not be sent.
    pub fn forge_intent(&self, w: &ForgeWrite) -> Result<String, AuditError> {
        self.ask_gate()?;
        let mut st = self.lock();
        st.seq += 1;
        let id = format!("{}-{}", self.run_id, st.seq);
        let resource = match &w.resource {
            Some(r) => r.clone(),
            None => last_resource(&st.history, &w.target, &w.fingerprint).unwrap_or_default(),
        };
        self.write_locked(
            &mut st,
            vec![Event::Intent {
                id: id.clone(),
                target: w.target.clone(),
                fingerprint: w.fingerprint.clone(),
                resource,
                action: w.action.to_string(),
                operation: w.operation.clone(),
                trigger: w.trigger.to_string(),
                class: w.class,
                rules: w.rules.clone(),
                fields: Vec::new(),
                item: w.item,
                branch: w.branch.clone(),
            }],
        )?;
        Ok(id)
    }

    /// Records how the forge write `id` ([`AuditLog::forge_intent`]) went: `done`, `failed`
    /// with the server's message, or `skipped` with why.
    pub fn forge_result(
        &self,
        id: &str,
        w: &ForgeWrite,
        outcome: ActionResult,
        message: &str,
    ) -> Result<(), AuditError> {
        self.write(vec![Event::Result {
            id: id.to_string(),
            target: w.target.clone(),
            fingerprint: w.fingerprint.clone(),
            outcome,
            confirmed: None,
            message: message.to_string(),
        }])
    }

    /// Whether item `number` of `target`, closed at `closed_at` (RFC 3339 as the forge wrote
    /// it), still needs its `item_closed` record: the history read at open has none, and it was
    /// closed within that history's days (an item closed earlier may have been recorded beyond
    /// them; the forge's list of closed items reaches further back than the log is read). An
    /// unreadable time counts as recent.
    pub fn item_closed_is_new(&self, target: &str, number: u64, closed_at: &str) -> bool {
        let horizon = now_unix().saturating_sub(HISTORY_DAYS * 86_400);
        if parse_time(closed_at).is_some_and(|t| t < horizon) {
            return false;
        }
        !self.lock().history.iter().any(|r| {
            matches!(&r.event, Event::ItemClosed { target: t, item, .. }
                if t == target && item.number == number)
        })
    }

    /// The resource key of a drift from its last `drift_seen` in the history.
    pub fn resource_of(&self, target: &str, fingerprint: &str) -> Option<String> {
        last_resource(&self.lock().history, target, fingerprint)
    }

    /// The pull-request step listed `target`'s items on the forge in this pass (its
    /// `item_closed` records are written): the next `target_checked` says so.
    pub fn note_items_listed(&self, target: &str) {
        self.lock().listed.insert(target.to_string());
    }

    /// Whether [`AuditLog::note_items_listed`] was called for `target` since the last call, for
    /// its `target_checked` record.
    pub fn take_items_listed(&self, target: &str) -> bool {
        self.lock().listed.remove(target)
    }

    /// Records how the intent `id` for `d` went, from `d.action` as the actuator left it.
    /// `confirmed`: a re-read matched (corrections), `None` where nothing is read back. A failed
    /// correction counts toward the target's consecutive failures; a done one resets them.
    pub fn result(&self, id: &str, d: &Drift, confirmed: Option<bool>) -> Result<(), AuditError> {
        let (outcome, message, correction) = match &d.action {
            Some(a) => (
                match (&a.action, &a.result) {
                    // A correction a guardrail or a conflict turned into a pull request or an
                    // issue did not happen.
                    (Action::PullRequest | Action::Issue, ActionResult::Planned) => {
                        ActionResult::Skipped
                    }
                    (_, r) => r.clone(),
                },
                a.detail.clone().unwrap_or_default(),
                a.action == Action::Correct,
            ),
            None => (ActionResult::Skipped, String::new(), false),
        };
        let mut st = self.lock();
        let res = self.write_locked(
            &mut st,
            vec![Event::Result {
                id: id.to_string(),
                target: d.target.clone(),
                fingerprint: d.fingerprint.clone(),
                outcome: outcome.clone(),
                confirmed,
                message,
            }],
        );
        if correction && !self.opts.dry_run {
            match outcome {
                ActionResult::Done => {
                    if confirmed == Some(true) {
                        st.figures.corrections_confirmed += 1;
                    }
                    st.failures.insert(d.target.clone(), 0);
                }
                // A correction the health gate rolled back failed (src/act/health.rs).
                ActionResult::Failed | ActionResult::RolledBack => {
                    st.figures.corrections_failed += 1;
                    *st.failures.entry(d.target.clone()).or_default() += 1;
                }
                _ => {}
            }
        }
        res
    }

    /// Records a forge write for a whole target about to be sent (the mass-drift issue,
    /// src/act/mass_drift.rs) and returns its id: [`AuditLog::intent`] without a drift, the
    /// write gate asked first. `subject` stands in the `fingerprint` field (`mass-drift`), the
    /// target in `resource`.
    pub fn target_intent(
        &self,
        target: &str,
        subject: &str,
        action: &str,
        operation: &str,
    ) -> Result<String, AuditError> {
        self.ask_gate()?;
        let mut st = self.lock();
        st.seq += 1;
        let id = format!("{}-{}", self.run_id, st.seq);
        self.write_locked(
            &mut st,
            vec![Event::Intent {
                id: id.clone(),
                target: target.to_string(),
                fingerprint: subject.to_string(),
                resource: target.to_string(),
                action: action.to_string(),
                operation: operation.to_string(),
                trigger: "mass_drift".to_string(),
                class: None,
                rules: Vec::new(),
                fields: Vec::new(),
                item: None,
                branch: None,
            }],
        )?;
        Ok(id)
    }

    /// How a [`AuditLog::target_intent`] went.
    pub fn target_result(
        &self,
        id: &str,
        target: &str,
        subject: &str,
        outcome: ActionResult,
        message: String,
    ) -> Result<(), AuditError> {
        self.write(vec![Event::Result {
            id: id.to_string(),
            target: target.to_string(),
            fingerprint: subject.to_string(),
            outcome,
            confirmed: None,
            message,
        }])
    }

    /// Why corrections on `target` stop for the rest of the run (consecutive failures), when
    /// they do. The first time, the stop is recorded.
    pub fn corrections_stopped(&self, target: &str) -> Option<String> {
        let mut st = self.lock();
        let n = st.failures.get(target).copied().unwrap_or(0);
        let max = self.trust.max_consecutive_failures;
        if n < max {
            return None;
        }
        let reason = format!(
            "{n} consecutive corrections failed on target `{target}` (trust.max_consecutive_failures: {max}): no more corrections there this run"
        );
        if st.stopped.insert(target.to_string()) {
            st.figures.corrections_stopped.push(target.to_string());
            warn!(target, failures = n, "corrections stopped for the run");
            // A failed write breaks the log: the next intent fails and nothing more is sent.
            let _ = self.write_locked(
                &mut st,
                vec![Event::CorrectionsStopped {
                    target: target.to_string(),
                    failures: n,
                    reason: reason.clone(),
                }],
            );
        }
        Some(reason)
    }

    /// Intents of earlier runs with no result and not reported yet. Each is recorded as
    /// `unfinished` (so the next run does not report it again) and returned as a report error.
    pub fn report_unfinished(&self) -> Vec<SourceError> {
        let mut st = self.lock();
        let found = unfinished(&st.history, &self.run_id);
        if found.is_empty() {
            return Vec::new();
        }
        st.figures.unfinished_intents += found.len();
        let mut errors = Vec::new();
        let mut events = Vec::new();
        for u in found {
            warn!(id = %u.id, target = %u.target, action = %u.action, "an earlier action has an intent but no result");
            let subject = u.subject();
            errors.push(SourceError {
                target: u.target.clone(),
                side: "audit".to_string(),
                message: format!(
                    "audit: the {} intent {} of {subject} ({} at {}) has no result: the process stopped between sending it and recording how it went; check {subject} by hand",
                    u.action, u.id, u.intent_run, u.intent_time
                ),
            });
            events.push(Event::Unfinished {
                id: u.id,
                target: u.target,
                fingerprint: u.fingerprint,
                action: u.action,
                intent_run: u.intent_run,
                intent_time: u.intent_time,
                item: u.item,
                branch: u.branch,
            });
        }
        if let Err(e) = self.write_locked(&mut st, events) {
            errors.push(SourceError {
                target: String::new(),
                side: "audit".to_string(),
                message: crate::errors::error_chain(&e),
            });
        }
        errors
    }

    /// Counts the reverts the history now shows for drifts of this run (after its `drift_seen`
    /// records were written), once per correction and field.
    pub fn note_reverts(&self) {
        let mut st = self.lock();
        let found = stats::reverts(&st.history);
        let mut new = 0;
        for r in found.iter().filter(|r| r.seen_run == self.run_id) {
            if st
                .reverts_seen
                .insert((r.correction_id.clone(), r.path.clone()))
            {
                new += 1;
            }
        }
        st.figures.reverts_detected += new;
    }

    /// Whether the revert breaker holds a correction of `d` back: the reason when one of its
    /// rules was reverted `max_reverts` times on its target within the window (since the last
    /// `trust reset`). The first time a rule trips in a run, `breaker_tripped` is recorded.
    pub fn breaker(&self, d: &Drift) -> Option<String> {
        let mut st = self.lock();
        let now = now_unix();
        let window = u64::from(self.trust.revert_window_hours) * 3600;
        let reverts = stats::reverts(&st.history);
        for rule in rules_of(d) {
            let n = stats::breaker_count(&st.history, &reverts, &d.target, &rule, now, window);
            if n < self.trust.max_reverts {
                continue;
            }
            let reason = breaker_reason(&rule, n, self.trust.revert_window_hours);
            let key = format!("{}/{rule}", d.target);
            if st.tripped.insert(key.clone()) {
                info!(target = %d.target, rule, reverts = n, "revert breaker open");
                st.figures.breakers_tripped.push(key);
                // A failed write breaks the log: the next intent fails and nothing more is
                // sent.
                let _ = self.write_locked(
                    &mut st,
                    vec![Event::BreakerTripped {
                        target: d.target.clone(),
                        rule: rule.clone(),
                        reverts: n,
                        window_hours: self.trust.revert_window_hours,
                        reason: reason.clone(),
                    }],
                );
            }
            return Some(reason);
        }
        None
    }
}

/// The reason a tripped breaker gives, in the pull request body and the report.
pub fn breaker_reason(rule: &str, reverts: u32, hours: u32) -> String {
    format!(
        "auto-corrections of `{rule}` were reverted {reverts} time{} in {hours} h: someone keeps changing this on purpose",
        if reverts == 1 { "" } else { "s" }
    )
}

/// An intent with no result.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub id: String,
    pub target: String,
    pub fingerprint: String,
    pub resource: String,
    pub action: String,
    pub intent_run: String,
    pub intent_time: String,
    /// A forge write's item or branch.
    pub item: Option<ItemRef>,
    pub branch: Option<String>,
}

impl Unfinished {
    /// What a person should look at: the branch or the item of a forge write, else the
    /// resource.
    pub fn subject(&self) -> String {
        match (&self.branch, &self.item) {
            (Some(b), _) => format!("branch {b}"),
            (None, Some(i)) => i.to_string(),
            (None, None) if self.resource.is_empty() => {
                format!("drift {} of target {}", self.fingerprint, self.target)
            }
            (None, None) => self.resource.clone(),
        }
    }
}

/// The intents in `records` that have no `result` and no `unfinished` record, other than the
/// current run's (`current_run`).
pub fn unfinished(records: &[Record], current_run: &str) -> Vec<Unfinished> {
    let mut closed = BTreeSet::new();
    for r in records {
        match &r.event {
            Event::Result { id, .. } | Event::Unfinished { id, .. } => {
                closed.insert(id.as_str());
            }
            _ => {}
        }
    }
    records
        .iter()
        .filter(|r| r.run != current_run)
        .filter_map(|r| match &r.event {
            Event::Intent {
                id,
                target,
                fingerprint,
                resource,
                action,
                item,
                branch,
                ..
            } if !closed.contains(id.as_str()) => Some(Unfinished {
                id: id.clone(),
                target: target.clone(),
                fingerprint: fingerprint.clone(),
                resource: resource.clone(),
                action: action.clone(),
                intent_run: r.run.clone(),
                intent_time: r.time.clone(),
                item: *item,
                branch: branch.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Appends `bytes` to `path` (created when absent) and flushes them to disk.
fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

/// Removes day files older than `days` days.
fn remove_expired(dir: &Path, days: u32, now: u64) -> Result<(), AuditError> {
    let cutoff = day_of(now.saturating_sub(u64::from(days) * 86_400));
    for (day, path) in day_files(dir)? {
        if day < cutoff {
            std::fs::remove_file(&path).map_err(|e| AuditError::Write {
                path: path.display().to_string(),
                source: e,
            })?;
            info!(file = %path.display(), "audit day file past the retention removed");
        }
    }
    Ok(())
}

/// The day files of a directory, `(YYYY-MM-DD, path)`, oldest first. A missing directory has
/// none.
fn day_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let read_err = |e| AuditError::Read {
        path: dir.display().to_string(),
        source: e,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(day) = name.strip_suffix(".jsonl") {
            if parse_day(day).is_some() {
                out.push((day.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every record of the day files from the day of `since_unix` on, in file order. A line that
/// does not parse (a write cut short by a crash, a newer schema) is skipped with a warning.
pub fn read_dir(dir: &Path, since_unix: u64) -> Result<Vec<Record>, AuditError> {
    let first = day_of(since_unix);
    let mut out = Vec::new();
    for (day, path) in day_files(dir)? {
        if day < first {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| AuditError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(r) => out.push(r),
                Err(e) => {
                    warn!(file = %path.display(), line = i + 1, error = %e, "audit record skipped: not a record of this schema (a write cut short?)");
                }
            }
        }
    }
    Ok(out)
}

/// Writes one record outside a run (`trust reset`).
pub fn append_one(
    settings: &AuditSettings,
    state_dir: &Path,
    command: &str,
    event: Event,
) -> Result<Record, AuditError> {
    let log = AuditLog::open(
        settings,
        &TrustSettings::default(),
        state_dir,
        OpenOptions {
            command: command.to_string(),
            ..OpenOptions::default()
        },
    );
    log.write(vec![event])?;
    let st = log.lock();
    st.history
        .last()
        .cloned()
        .ok_or_else(|| AuditError::Broken("the record was not kept".to_string()))
}

/// A run id: 16 hex digits from the time, the process and a counter, unique per run.
fn new_run_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(n.to_le_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 UTC (`2026-12-07T13:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The UTC day of Unix seconds, `YYYY-MM-DD`.
pub fn day_of(secs: u64) -> String {
    rfc3339(secs)[..10].to_string()
}

/// `YYYY-MM-DD` → days since 1970-01-01.
fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || s.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// RFC 3339 UTC as written by [`rfc3339`] → Unix seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let days = parse_day(s.get(..10)?)?;
    let t = s.get(11..19)?;
    let mut it = t.split(':');
    let h: u64 = it.next()?.parse().ok()?;
    let mi: u64 = it.next()?.parse().ok()?;
    let se: u64 = it.next()?.parse().ok()?;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether a manager is driftwarden's own.
pub fn is_own_manager(a: Option<&Attribution>) -> bool {
    a.is_some_and(|a| a.manager == FIELD_MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_gate_that_says_no_refuses_the_intent_and_records_nothing() {
        use crate::model::{ResourceId, ResourceRef};
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            &AuditSettings::default(),
            &TrustSettings::default(),
            dir.path(),
            OpenOptions::default(),
        );
        let id = ResourceId::Kubernetes {
            cluster: "c".into(),
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("shop".into()),
            name: "app".into(),
        };
        let d = Drift {
            fingerprint: "f".into(),
            target: "t".into(),
            resource: ResourceRef::from(id),
            kind: crate::model::DriftKind::Modified,
            changes: Vec::new(),
            provenance: None,
            verdict: None,
            action: None,
            desired_object: None,
            live_object: None,
        };
        assert!(log.intent(&d, "correct", "server-side apply").is_ok());
        let before = log.lock().history.len();
        let allowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = std::sync::Arc::clone(&allowed);
        log.set_write_gate(WriteGate(std::sync::Arc::new(move || {
            if a.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("this replica does not hold the leader Lease".to_string())
            }
        })));
        let e = log.intent(&d, "correct", "server-side apply").unwrap_err();
        assert!(matches!(e, AuditError::NotAllowed(_)));
        assert_eq!(e.refusal(), "this replica does not hold the leader Lease");
        let close = ForgeWrite::new("t", "f", "close", "comment, close (resolved)")
            .item(ItemKind::PullRequest, 3);
        let e = log.forge_intent(&close).unwrap_err();
        assert!(
            matches!(e, AuditError::NotAllowed(_)),
            "forge writes ask the gate too"
        );
        assert_eq!(log.lock().history.len(), before, "nothing recorded");
        allowed.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(log.intent(&d, "correct", "server-side apply").is_ok());
        assert_eq!(log.lock().history.len(), before + 1);
    }

    #[test]
    fn times_round_trip() {
        for secs in [0u64, 951_782_400, 1_796_650_000] {
            assert_eq!(parse_time(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(day_of(951_782_400 + 86_399), "2000-02-29");
        assert_eq!(parse_day("2000-13-01"), None);
    }

    #[test]
    fn hashes_ignore_key_order() {
        let a = json!({"a": 1, "b": [1, {"x": "y", "c": null}]});
        let b: Value =
            serde_json::from_str(r#"{"b": [1, {"c": null, "x": "y"}], "a": 1}"#).unwrap();
        assert_eq!(value_hash(&a), value_hash(&b));
        assert_ne!(value_hash(&json!(1)), value_hash(&json!("1")));
    }

    #[test]
    fn records_round_trip_with_their_type() {
        let r = Record {
            v: SCHEMA_VERSION,
            run: "r".into(),
            time: rfc3339(0),
            command: "reconcile".into(),
            dry_run: true,
            event: Event::TrustReset {
                target: "t".into(),
                rule: "k.replicas".into(),
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"run":"r","time":"1970-01-01T00:00:00Z","command":"reconcile","dry_run":true,"type":"trust_reset","target":"t","rule":"k.replicas"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        // Records written before the optional fields existed still read.
        let old = r#"{"v":1,"run":"r","time":"1970-01-01T00:00:00Z","command":"reconcile","dry_run":false,"type":"target_checked","target":"t","checked":2,"drifted":0,"partial":false}"#;
        assert!(matches!(
            serde_json::from_str::<Record>(old).unwrap().event,
            Event::TargetChecked {
                items_listed: None,
                ..
            }
        ));
        let old = r#"{"v":1,"run":"r","time":"1970-01-01T00:00:00Z","command":"reconcile","dry_run":false,"type":"intent","id":"r-1","target":"t","fingerprint":"f","resource":"k","action":"pull_request","operation":"forge","trigger":"policy","rules":[],"fields":[]}"#;
        assert!(matches!(
            serde_json::from_str::<Record>(old).unwrap().event,
            Event::Intent {
                item: None,
                branch: None,
                ..
            }
        ));
    }

    #[test]
    fn an_intent_without_result_is_unfinished_once() {
        let rec = |run: &str, event| Record {
            v: 1,
            run: run.into(),
            time: rfc3339(10),
            command: "reconcile".into(),
            dry_run: false,
            event,
        };
        let intent = |id: &str| Event::Intent {
            id: id.into(),
            target: "t".into(),
            fingerprint: "f".into(),
            resource: "k".into(),
            action: "correct".into(),
            operation: "apply".into(),
            trigger: "policy".into(),
            class: Some(Class::Safe),
            rules: vec![],
            fields: vec![],
            item: None,
            branch: None,
        };
        let mut records = vec![
            rec("a", intent("a-1")),
            rec(
                "a",
                Event::Result {
                    id: "a-1".into(),
                    target: "t".into(),
                    fingerprint: "f".into(),
                    outcome: ActionResult::Done,
                    confirmed: Some(true),
                    message: String::new(),
                },
            ),
            rec("a", intent("a-2")),
            rec("b", intent("b-1")),
        ];
        let ids: Vec<String> = unfinished(&records, "b")
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["a-2"]);
        records.push(rec(
            "b",
            Event::Unfinished {
                id: "a-2".into(),
                target: "t".into(),
                fingerprint: "f".into(),
                action: "correct".into(),
                intent_run: "a".into(),
                intent_time: rfc3339(10),
                item: None,
                branch: None,
            },
        ));
        assert!(unfinished(&records, "b").is_empty());
        assert_eq!(unfinished(&records, "c").len(), 1, "b-1 for a later run");
    }
}
