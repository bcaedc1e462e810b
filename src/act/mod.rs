//! Acting on drift. Today: `decide`, which picks the action each drift leads to from the
//! target's mode and the policy class. Actuators (server-side apply, EC2 calls, pull requests)
//! slot in beside it; this is the only module that will ever change anything.

use std::path::Path;

use crate::config::Target;
use crate::model::{Action, ActionRecord, ActionResult, Class, Drift, Mode, SourceError};

/// What the actuators of one target need to know.
#[derive(Debug)]
pub struct ActContext<'a> {
    pub target: &'a Target,
    pub mode: Mode,
    /// Some source read was partial: nothing may be deleted or pruned.
    pub partial: bool,
    /// Ask the servers what they would change instead of changing it.
    pub dry_run: bool,
    /// Where run history lives.
    pub state_dir: &'a Path,
}

/// Carries out the decided actions of one target's drifts and records each outcome in
/// `drift.action`. Returns the failures that should appear in the report's `errors`.
///
/// Actuators plug in here by provider and action; a drift whose action no actuator handles
/// stays `planned`.
pub async fn act(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let _ = (ctx, drifts);
    Vec::new()
}

/// The action a drift leads to under `mode`, before any actuator runs. Fail safe: a drift with
/// no verdict is treated as risky.
pub fn decide(drift: &Drift, mode: Mode) -> ActionRecord {
    let class = drift
        .verdict
        .as_ref()
        .map(|v| v.class)
        .unwrap_or(Class::Risky);
    let secret = drift.changes.iter().any(|c| c.masked);
    let (action, detail) = match (mode, class) {
        (Mode::Observe, _) => (Action::Report, "observe mode: report only".to_string()),
        (Mode::Autocorrect, Class::Safe) => (
            Action::Correct,
            "would re-apply the desired object (field manager driftwarden)".to_string(),
        ),
        (Mode::Recommend, Class::Safe) => (
            Action::Report,
            "safe: would be corrected in autocorrect mode; recommend mode makes no live writes"
                .to_string(),
        ),
        (_, Class::Risky) if secret => (
            Action::Issue,
            "a secret value is never adopted into Git: would open an issue with the masked diff"
                .to_string(),
        ),
        (_, Class::Risky) => (
            Action::PullRequest,
            "would open a pull request adopting the live change into Git".to_string(),
        ),
        (_, Class::Forbidden) => (
            Action::Issue,
            "forbidden: would open a draft pull request or issue labelled drift/forbidden"
                .to_string(),
        ),
    };
    ActionRecord {
        action,
        result: ActionResult::Planned,
        detail: Some(detail),
    }
}
