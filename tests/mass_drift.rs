//! Mass drift end to end (src/act/mass_drift.rs, docs/pull-requests.md "Mass drift"): a Git
//! repository in a temp dir as the desired source, snapshot files as live, the default policies,
//! and the GitHub REST server on loopback (tests/support/github_server.rs) or the local forge.
//!
//! What it proves: a target whose every object is Missing in `recommend` mode gets exactly one
//! issue and no pull request, branch or correction; the report (JSON, table) and the audit log
//! say so; a second run still in mass drift updates that same issue, and a third with no outside
//! change writes nothing; once the objects exist the issue is closed with a comment saying why.
//! An issue a person closed is not reopened for the same counts. A `watch`-style pass over one
//! object is held back while the last full pass found mass drift. A small target whose drifts
//! are over the share but under `min_mass_drift` gets its pull requests as before. The two
//! settings are validated with their lines (exit 3).

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;

use std::path::{Path, PathBuf};
use std::sync::Once;

use common::{bare_repo_of, root, write};
use driftwarden::config;
use driftwarden::forge::ItemState;
use driftwarden::forge::local::LocalForge;
use driftwarden::model::{Action, ActionResult, Report};
use driftwarden::report::{self, Format, RenderOptions};
use driftwarden::run::{self, Command, RunOptions};
use github_server::GitHubServer;

const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_MASS_TOKEN";
const TOKEN: &str = "ghs_masstoken_3c2d1e0f";

fn set_token() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any test thread reads it (every test calls this first, and the
    // value never changes).
    ONCE.call_once(|| unsafe { std::env::set_var(TOKEN_ENV, TOKEN) });
}

/// A ConfigMap manifest of the application.
fn config_map(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-{i:02}\n  namespace: shop\ndata:\n  LEVEL: \"{i}\"\n"
    )
}

/// The same ConfigMap as the API server returns it.
fn live_config_map(i: usize) -> String {
    format!(
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: settings-{i:02}\n    namespace: shop\n    uid: 00000000-0000-0000-0000-0000000000{i:02}\n    resourceVersion: \"{}\"\n    creationTimestamp: \"2026-11-20T09:14:06Z\"\n  data:\n    LEVEL: \"{i}\"\n",
        100 + i
    )
}

enum ForgeUnderTest {
    GitHub(GitHubServer),
    Local,
}

struct World {
    dir: tempfile::TempDir,
    bare: PathBuf,
    live: PathBuf,
    forge: ForgeUnderTest,
}

impl World {
    /// `n` ConfigMaps in namespace `shop` as `main` of a bare repository; live empty.
    fn new(n: usize, github: bool) -> World {
        set_token();
        let dir = tempfile::tempdir().unwrap();
        let desired = dir.path().join("desired");
        for i in 0..n {
            write(
                &desired,
                &format!("shop/settings-{i:02}.yaml"),
                &config_map(i),
            );
        }
        let bare = dir.path().join("remote.git");
        bare_repo_of(&desired, &bare);
        let live = dir.path().join("live");
        std::fs::create_dir_all(&live).unwrap();
        let forge = if github {
            ForgeUnderTest::GitHub(GitHubServer::start("acme", "gitops", TOKEN, &bare))
        } else {
            ForgeUnderTest::Local
        };
        let w = World {
            dir,
            bare,
            live,
            forge,
        };
        w.set_live(&[]);
        w
    }

    /// Live holds the ConfigMaps `present` (the rest are Missing).
    fn set_live(&self, present: &[usize]) {
        let items: String = present.iter().map(|i| live_config_map(*i)).collect();
        let text = if items.is_empty() {
            "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
                .to_string()
        } else {
            format!(
                "apiVersion: v1\nitems:\n{items}kind: List\nmetadata:\n  resourceVersion: \"\"\n"
            )
        };
        std::fs::write(self.live.join("shop-configmaps.yaml"), text).unwrap();
    }

    fn server(&self) -> &GitHubServer {
        match &self.forge {
            ForgeUnderTest::GitHub(s) => s,
            ForgeUnderTest::Local => panic!("a local-forge world has no server"),
        }
    }

    fn local_dir(&self) -> PathBuf {
        self.dir.path().join("prs")
    }

    fn config_text(&self) -> String {
        let forge = match &self.forge {
            ForgeUnderTest::GitHub(s) => format!(
                "  forge: github\n  repo: acme/gitops\n  api_url: \"{}/api/v3\"\n  token_env: {TOKEN_ENV}\n  write_interval_ms: 0\n",
                s.url()
            ),
            ForgeUnderTest::Local => format!(
                "  forge: local\n  output_dir: \"{}\"\n",
                self.local_dir().display()
            ),
        };
        format!(
            r#"version: 1
policies:
  dirs: ["{policies}"]
state_dir: "{state}"
pull_requests:
{forge}  author: {{name: drift-bot, email: drift-bot@example.com}}
targets:
  - name: shop
    cluster: prod
    mode: recommend
    namespace: shop
    desired:
      git: {{repo: "file://{bare}", ref: main}}
    live:
      snapshot: "{live}"
"#,
            policies = root().join("policies").display(),
            state = self.dir.path().join("state").display(),
            bare = self.bare.display(),
            live = self.live.display(),
        )
    }

    fn run(&self) -> Report {
        let cfg = config::parse(&self.config_text(), "test.yaml", self.dir.path()).unwrap();
        let mut opts = RunOptions::new(Command::Reconcile);
        opts.cache_dir = self.dir.path().join("cache");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run::run(&cfg, &opts))
            .unwrap()
    }

    /// The remote's branches.
    fn branches(&self) -> Vec<String> {
        git2::Repository::open_bare(&self.bare)
            .unwrap()
            .references_glob("refs/heads/*")
            .unwrap()
            .map(|r| r.unwrap().name().unwrap().to_string())
            .collect()
    }

    /// Every audit record the runs wrote.
    fn audit_records(&self) -> Vec<serde_json::Value> {
        let dir = self.dir.path().join("state/audit");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            for line in text.lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }
}

/// Every drift of `r` held back by the mass-drift guardrail, naming the target's issue.
fn assert_all_held(r: &Report, issue: &str) {
    assert!(!r.drifts.is_empty());
    for d in &r.drifts {
        let a = d.action.as_ref().unwrap();
        assert_eq!(
            a.action,
            Action::Skip {
                why: "mass drift".into()
            },
            "{}: {a:?}",
            d.resource.display
        );
        assert_eq!(a.result, ActionResult::Skipped);
        let detail = a.detail.as_deref().unwrap();
        assert!(
            detail.starts_with("held back: mass drift on target shop: ") && detail.contains(issue),
            "{detail}"
        );
    }
}

#[test]
fn every_object_missing_makes_one_issue_updated_while_it_lasts_and_closed_when_it_ends() {
    let w = World::new(12, true);
    let server = w.server();

    // Run 1: live is empty (a deleted namespace, the wrong context).
    let r1 = w.run();
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    assert_eq!(r1.drifts.len(), 12);
    assert!(r1.drifts.iter().all(|d| d.kind.to_string() == "Missing"));
    let items = server.items();
    assert_eq!(items.len(), 1, "exactly one item: {items:?}");
    let issue = &items[0];
    assert!(!issue.is_pr, "an issue, not a pull request");
    assert_eq!(issue.state, "open");
    assert_eq!(
        issue.title,
        "driftwarden: mass drift on target shop: 12 of 12 resources drifted"
    );
    assert!(
        issue.labels.contains(&"drift".to_string())
            && issue.labels.contains(&"drift/mass".to_string())
    );
    for want in [
        "<!-- driftwarden:mass target=shop counts=",
        "12 of 12 resources drifted (100%)",
        "| Missing | 12 |",
        "| `ConfigMap` | 12 |",
        "**Wrong kube context or cluster**",
        "**Namespace deleted or never created**: every declared object of `shop` is missing",
        "**Cluster rebuilt or new**",
        "**Git path changed**",
        "**The report:** Run `driftwarden diff --target shop` for the full report.",
    ] {
        assert!(issue.body.contains(want), "{want:?} not in\n{}", issue.body);
    }
    // No branch, no pull request: nothing proposes deleting the application from Git.
    assert_eq!(w.branches(), vec!["refs/heads/main".to_string()]);
    assert!(
        server
            .log()
            .iter()
            .all(|l| !l.path.contains("/pulls") || l.method == "GET")
    );
    assert_all_held(&r1, "see issue #1");

    // The report says the target is in mass drift.
    assert_eq!(r1.summary.mass_drift.len(), 1);
    let m = &r1.summary.mass_drift[0];
    assert_eq!((m.target.as_str(), m.drifted, m.checked), ("shop", 12, 12));
    assert_eq!(m.rule, "share");
    assert_eq!(m.by_drift_kind.get("Missing"), Some(&12));
    assert!(m.issue.as_deref().unwrap().starts_with("issue #1"), "{m:?}");
    assert_eq!(m.detail, "opened issue #1");
    let json = report::render(&r1, Format::Json, &RenderOptions::default());
    assert!(json.contains("\"mass_drift\": ["), "{json}");
    let table = report::render(&r1, Format::Table, &RenderOptions::default());
    assert!(
        table.contains("MASS DRIFT:\n  shop: 12 of 12 resources drifted (100%: 12 Missing); no pull request, issue or correction per drift; one issue for the target: issue #1"),
        "{table}"
    );
    let md = report::render(&r1, Format::Markdown, &RenderOptions::default());
    assert!(md.contains("> **Mass drift**"), "{md}");

    // The guardrail is in the audit log like the others, and the issue's write is audited.
    let records = w.audit_records();
    let held = records
        .iter()
        .filter(|r| r["type"] == "outcome" && r["guardrail"] == "mass drift")
        .count();
    assert_eq!(held, 12);
    let intent = records
        .iter()
        .find(|r| r["type"] == "intent" && r["action"] == "mass_drift_issue")
        .expect("the issue's intent");
    assert_eq!(intent["target"], "shop");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "result" && r["id"] == intent["id"] && r["outcome"] == "done")
    );

    // Run 2: one object is back, 11 of 12 still Missing: the same issue, updated.
    w.set_live(&[0]);
    let before = server.log().len();
    let r2 = w.run();
    assert!(r2.errors.is_empty(), "{:?}", r2.errors);
    assert_eq!(r2.drifts.len(), 11);
    let items = server.items();
    assert_eq!(items.len(), 1, "still one item: {items:?}");
    assert_eq!(items[0].number, 1);
    assert_eq!(items[0].state, "open");
    assert!(
        items[0].body.contains("11 of 12 resources drifted (91.7%)"),
        "{}",
        items[0].body
    );
    let writes: Vec<String> = server
        .writes_since(before)
        .iter()
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert_eq!(
        writes,
        vec!["PATCH /repos/acme/gitops/issues/1".to_string()]
    );
    assert_all_held(&r2, "see issue #1");
    assert_eq!(
        r2.summary.mass_drift[0].detail,
        "updated issue #1 (the counts changed)"
    );

    // Run 3, no outside change: nothing is written.
    let before = server.log().len();
    let r3 = w.run();
    assert!(
        server.writes_since(before).is_empty(),
        "{:?}",
        server.writes_since(before)
    );
    assert_eq!(r3.summary.mass_drift[0].detail, "issue #1 is up to date");

    // Run 4: every object exists: the issue is closed, saying why.
    w.set_live(&(0..12).collect::<Vec<_>>());
    let r4 = w.run();
    assert!(r4.errors.is_empty(), "{:?}", r4.errors);
    assert!(r4.drifts.is_empty());
    assert!(r4.summary.mass_drift.is_empty());
    let items = server.items();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].state, "closed");
    assert!(items[0].body.contains("closed=ended"), "{}", items[0].body);
    let comments = server.comments_on(1);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(
        comments[0],
        "Closing: the mass drift is over. This run compared the whole target and every one of the target's 12 resources matches Git."
    );
    assert_eq!(w.branches(), vec!["refs/heads/main".to_string()]);
    let json = report::render(&r4, Format::Json, &RenderOptions::default());
    assert!(!json.contains("mass_drift"), "omitted when empty");
}

#[test]
fn the_local_forge_gets_one_issue_and_it_closes_when_the_objects_are_back() {
    let w = World::new(10, false);
    let r1 = w.run();
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    assert_eq!(r1.drifts.len(), 10);
    assert_all_held(&r1, "see issue #1");
    let forge = LocalForge::open(&w.local_dir()).unwrap();
    let items = forge.items(None).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].kind, driftwarden::forge::ItemKind::Issue);
    assert!(items[0].body.contains("10 of 10 resources drifted (100%)"));
    drop(forge);

    // Still all Missing: the same issue, nothing new.
    let r2 = w.run();
    assert_all_held(&r2, "see issue #1");
    let forge = LocalForge::open(&w.local_dir()).unwrap();
    assert_eq!(forge.items(None).unwrap().len(), 1);
    drop(forge);

    // Half of them back: 5 of 10 Missing is under min_mass_drift, so the mass drift is over:
    // the issue closes, and each remaining drift is proposed again.
    w.set_live(&[0, 1, 2, 3, 4]);
    let r3 = w.run();
    assert!(r3.errors.is_empty(), "{:?}", r3.errors);
    assert!(r3.summary.mass_drift.is_empty());
    let forge = LocalForge::open(&w.local_dir()).unwrap();
    let items = forge.items(None).unwrap();
    let mass: Vec<_> = items
        .iter()
        .filter(|i| i.body.contains("driftwarden:mass"))
        .collect();
    assert_eq!(mass.len(), 1);
    assert_eq!(mass[0].state, ItemState::Closed);
    let comments = forge.comments(mass[0].number).unwrap();
    assert!(
        comments[0].body.contains("5 of the target's 10 resources drifted, under the limit, so each drift gets its own pull request or issue again"),
        "{comments:?}"
    );
    let pulls = items
        .iter()
        .filter(|i| {
            i.kind == driftwarden::forge::ItemKind::PullRequest && i.state == ItemState::Open
        })
        .count();
    assert_eq!(pulls, 5, "{items:?}");
}

#[test]
fn a_small_target_over_the_share_but_under_min_mass_drift_gets_its_pull_requests() {
    // 2 of 4 Missing: 50% of the target, but fewer than 10 drifts and live is not empty.
    let w = World::new(4, true);
    w.set_live(&[0, 1]);
    let r = w.run();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.drifts.len(), 2);
    assert!(r.summary.mass_drift.is_empty());
    for d in &r.drifts {
        let a = d.action.as_ref().unwrap();
        assert_eq!(
            (&a.action, &a.result),
            (&Action::PullRequest, &ActionResult::Done),
            "{a:?}"
        );
    }
    let items = w.server().items();
    assert_eq!(items.iter().filter(|i| i.is_pr).count(), 2, "{items:?}");
    assert!(items.iter().all(|i| !i.body.contains("driftwarden:mass")));
}

#[test]
fn the_two_settings_are_validated_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = "pull_requests:\n  forge: local\n  max_proposal_percent: 150\n  min_mass_drift: -1\ntargets:\n  - name: t\n    desired: {dir: d}\n    live: {snapshot: s}\n";
    let path = write(dir.path(), "c.yaml", text);
    let out = common::bin()
        .args(["reconcile", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for want in [
        "c.yaml:3:25: pull_requests.max_proposal_percent: expected a number from 0 to 100",
        "c.yaml:4:19: pull_requests.min_mass_drift: expected a whole number",
    ] {
        assert!(stderr.contains(want), "{want:?} not in\n{stderr}");
    }
    let ok = "pull_requests: {forge: local, max_proposal_percent: 40, min_mass_drift: 3}\ntargets: [{name: t, desired: {dir: d}, live: {snapshot: s}}]\n";
    let p = config::parse(ok, "c.yaml", Path::new("/b"))
        .unwrap()
        .pull_requests
        .unwrap();
    assert_eq!((p.max_proposal_percent, p.min_mass_drift), (40.0, 3));
    let defaults = config::parse(
        "pull_requests: {forge: local}\ntargets: [{name: t, desired: {dir: d}, live: {snapshot: s}}]\n",
        "c.yaml",
        Path::new("/b"),
    )
    .unwrap()
    .pull_requests
    .unwrap();
    assert_eq!(
        (defaults.max_proposal_percent, defaults.min_mass_drift),
        (25.0, 10)
    );
}

/// The local forge's items as its `state.json` holds them: (kind, state, body), by number.
fn local_items(dir: &Path) -> Vec<(String, String, String)> {
    let state = common::read_json(dir.join("state.json"));
    state["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
                i["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_watch_pass_over_some_objects_is_held_back_while_the_target_is_in_mass_drift() {
    use driftwarden::act::{DesiredObjects, pull_request::Session};
    use driftwarden::model::Mode;
    use std::collections::HashSet;

    let w = World::new(12, false);
    // The drifts as a run sees them (classified, with provenance), left undecided by observe.
    let cfg = config::parse(&w.config_text(), "test.yaml", w.dir.path()).unwrap();
    let mut opts = RunOptions::new(Command::Reconcile);
    opts.cache_dir = w.dir.path().join("cache");
    opts.mode = Some(Mode::Observe);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(run::run(&cfg, &opts)).unwrap();
    assert_eq!(seen.drifts.len(), 12);
    // Observe mode writes nothing, yet the report says the target is in mass drift.
    assert_eq!(
        seen.summary.mass_drift[0].detail,
        "observe mode: no issue is written"
    );
    assert!(!w.local_dir().join("state.json").exists());

    // One session for the life of the process, as `watch` keeps it.
    let prs = Session::new(cfg.pull_requests.as_ref(), &cfg.state_dir);
    let audit = run::open_audit_log(&cfg, "watch", false, false, &cfg.targets);
    let desired = DesiredObjects::default();
    let target = &cfg.targets[0];
    let pass = |drifts: &mut Vec<driftwarden::model::Drift>, only: Option<&HashSet<String>>| {
        let mut actx = run::act_context(
            target,
            Mode::Recommend,
            false,
            12,
            &desired,
            false,
            &cfg,
            (&prs, &audit),
        );
        actx.only = only;
        let errors = rt.block_on(run::decide_and_act(&actx, drifts));
        assert!(errors.is_empty(), "{errors:?}");
    };

    // A full cycle: mass drift, one issue.
    let mut all = seen.drifts.clone();
    pass(&mut all, None);
    assert_all_held(
        &Report {
            drifts: all.clone(),
            ..seen.clone()
        },
        "see issue #1",
    );
    assert_eq!(local_items(&w.local_dir()).len(), 1);

    // An event pass over one object: on its own not a mass drift, but the target still is.
    let one = seen.drifts[0].clone();
    let only: HashSet<String> = [one.fingerprint.clone()].into();
    let mut drifts = vec![one.clone()];
    let state_before = std::fs::read(w.local_dir().join("state.json")).unwrap();
    pass(&mut drifts, Some(&only));
    let a = drifts[0].action.as_ref().unwrap();
    assert_eq!(
        a.action,
        Action::Skip {
            why: "mass drift".into()
        }
    );
    let detail = a.detail.as_deref().unwrap();
    assert!(
        detail.contains("the last comparison of the whole target found 12 of 12 resources drifted")
            && detail.contains("; see issue #1"),
        "{a:?}"
    );
    // The issue is left as the full cycle wrote it.
    assert_eq!(
        std::fs::read(w.local_dir().join("state.json")).unwrap(),
        state_before
    );
    let items = local_items(&w.local_dir());
    assert_eq!(items.len(), 1, "no pull request: {items:?}");

    // A full cycle with every object back closes the issue; an event pass is then proposed as
    // usual: its Missing object gets a pull request.
    pass(&mut Vec::new(), None);
    let items = local_items(&w.local_dir());
    assert_eq!(items[0].1, "closed", "{items:?}");
    let mut drifts = vec![one];
    pass(&mut drifts, Some(&only));
    let a = drifts[0].action.as_ref().unwrap();
    assert_eq!(
        (&a.action, &a.result),
        (&Action::PullRequest, &ActionResult::Done),
        "{a:?}"
    );
    let items = local_items(&w.local_dir());
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[1].0.as_str(), items[1].1.as_str()),
        ("pull_request", "open")
    );
}

#[test]
fn an_issue_a_person_closed_is_not_reopened_for_the_same_counts() {
    let w = World::new(12, true);
    let server = w.server();
    w.run();
    assert_eq!(server.items().len(), 1);
    // A person closes the issue while the mass drift lasts.
    server.close_with_labels(1, &[]);
    let before = server.log().len();
    let r = w.run();
    assert!(
        server.writes_since(before).is_empty(),
        "{:?}",
        server.writes_since(before)
    );
    assert_eq!(server.items().len(), 1);
    assert_all_held(&r, "see issue #1");
    assert!(
        r.summary.mass_drift[0].detail.starts_with(
            "issue #1 about this same mass drift was closed by a person; not reopened"
        ),
        "{:?}",
        r.summary.mass_drift
    );
    // Other counts: a new issue, and still no pull request.
    w.set_live(&[3]);
    let r = w.run();
    let items = server.items();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().all(|i| !i.is_pr));
    assert_eq!(items[1].state, "open");
    assert!(items[1].body.contains("11 of 12 resources drifted"));
    assert_all_held(&r, "see issue #2");
}
