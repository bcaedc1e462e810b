//! Pull requests and issues end to end: the demo's drift against a GitHub REST server on loopback
//! (tests/support/github_server.rs) with a bare Git repository as the push remote, and the local
//! forge through the binary.
//!
//! What it proves: one pull request per risky or forbidden fingerprint with the right body,
//! labels and branch; a second run opens and edits nothing; a changed drift updates its pull
//! request and branch; a resolved drift closes its pull request and deletes its branch; a closed
//! item is not reopened and `drift/revert` turns into a correction; the per-run cap; rate limits
//! waited out (or given up on past the limit, a secondary limit without `Retry-After` included);
//! lists paged through GitHub's `/repositories/{id}` links to the end; a second pull request for
//! the same head and base never asked for, and refused clearly when a race makes it happen;
//! statuses only for commits the repository holds; a branch with someone else's commit is never
//! overwritten; no secret canary in any body, comment, commit, file or log.

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use common::{bare_repo_of, copy_dir, git_text, response_head, root};
use driftwarden::config;
use driftwarden::forge::github::{GitHub, GitHubSettings};
use driftwarden::forge::{Forge, ForgeError, NewPull, Status, StatusState};
use driftwarden::model::{Action, ActionResult, Drift, Remedy, Report};
use driftwarden::run::{self, Command, RunOptions};
use github_server::{Fault, GitHubServer, REPO_ID};

const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_GH_TOKEN";
const TOKEN: &str = "ghs_testtoken_9f8e7d6c5b4a";
const AUTHOR_EMAIL: &str = "drift-bot@example.com";

/// Secret values that exist only live (and the token): in no output, no commit, no file.
const LIVE_CANARIES: &[&str] = &[
    "DEMO-CANARY-5f2b",
    "REVNTy1DQU5BUlktNWYyYg==",
    "CANARY-PR-7731",
    "Q0FOQVJZLVBSLTc3MzE=",
    TOKEN,
];

/// Every secret value of the inputs, decoded and encoded: the demo's Git values too (they are in
/// the remote's `main` already, so commits are checked against [`LIVE_CANARIES`] only).
const CANARIES: &[&str] = &[
    "DEMO-CANARY-5f2b",
    "REVNTy1DQU5BUlktNWYyYg==",
    "demo-payment-key-not-real",
    "ZGVtby1wYXltZW50LWtleS1ub3QtcmVhbA==",
    "demo-db-password-not-real",
    "CANARY-PR-7731",
    "Q0FOQVJZLVBSLTc3MzE=",
    TOKEN,
];

const FP_DEPLOYMENT: &str = "fdee82c74c41a560";
const FP_CONFIGMAP: &str = "0b2240e0985f1df7";
const FP_HOTFIX: &str = "b10790a3239c0cdf";
const FP_SERVICE: &str = "8691a30e9cf82b96";
const FP_SECRET: &str = "8280ae20c4b25927";
/// The worker Deployment made privileged by hand: forbidden.
const FP_WORKER: &str = "d8b06faf8b3a5e6c";

fn set_token() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any test thread reads it (every test calls this first, and the
    // value never changes).
    ONCE.call_once(|| unsafe { std::env::set_var(TOKEN_ENV, TOKEN) });
}

struct World {
    dir: tempfile::TempDir,
    bare: PathBuf,
    live: PathBuf,
    server: GitHubServer,
    extra: String,
}

impl World {
    /// The demo's desired files as `main` of a bare remote, a copy of its live snapshot, and a
    /// GitHub server for `acme/gitops`.
    fn demo(extra: &str) -> World {
        World::new(
            &root().join("fixtures/demo/desired"),
            &root().join("fixtures/demo/live"),
            extra,
        )
    }

    fn new(desired: &Path, live_src: &Path, extra: &str) -> World {
        set_token();
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        bare_repo_of(desired, &bare);
        let live = dir.path().join("live");
        copy_dir(live_src, &live);
        let server = GitHubServer::start("acme", "gitops", TOKEN, &bare);
        World {
            dir,
            bare,
            live,
            server,
            extra: extra.to_string(),
        }
    }

    fn config_text(&self) -> String {
        format!(
            r#"version: 1
policies:
  dirs: ["{policies}"]
state_dir: "{state}"
pull_requests:
  forge: github
  repo: acme/gitops
  api_url: "{api}/api/v3"
  token_env: {TOKEN_ENV}
  author: {{name: drift-bot, email: {AUTHOR_EMAIL}}}
  write_interval_ms: 0
{extra}
targets:
  - name: demo
    cluster: demo
    mode: recommend
    namespace: shop
    desired:
      git: {{repo: "file://{bare}", ref: main}}
    live:
      snapshot: "{live}"
    tracking:
      label: app.kubernetes.io/managed-by=driftwarden
    unmanaged_namespaces: [shop]
"#,
            policies = root().join("policies").display(),
            state = self.dir.path().join("state").display(),
            api = self.server.url(),
            bare = self.bare.display(),
            live = self.live.display(),
            extra = self.extra,
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

    /// [`Self::run`], failing the test rather than hanging when the run has not ended within
    /// `bound` (a rate-limit wait taken that should not have been).
    fn run_within(&self, bound: Duration) -> Report {
        let cfg = config::parse(&self.config_text(), "test.yaml", self.dir.path()).unwrap();
        let mut opts = RunOptions::new(Command::Reconcile);
        opts.cache_dir = self.dir.path().join("cache");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(bound, run::run(&cfg, &opts)).await })
            .unwrap_or_else(|_| panic!("the run was still going after {bound:?}"))
            .unwrap()
    }

    /// Production's GitHub client for this server (through the Enterprise prefix), as a run
    /// builds it, on `rt`; nothing is waited for past `max_wait`.
    fn forge(&self, rt: &tokio::runtime::Runtime, max_wait: Duration) -> Forge {
        set_token();
        let _on = rt.enter();
        Forge::GitHub(
            GitHub::new(&GitHubSettings {
                api_url: Some(format!("{}/api/v3", self.server.url())),
                owner: "acme".into(),
                repo: "gitops".into(),
                token_env: TOKEN_ENV.into(),
                write_interval: Duration::ZERO,
                max_wait,
            })
            .unwrap(),
        )
    }

    /// The remote's branches.
    fn branches(&self) -> Vec<String> {
        self.repo()
            .references_glob("refs/heads/*")
            .unwrap()
            .map(|r| r.unwrap().name().unwrap().to_string())
            .collect()
    }

    fn edit_live(&self, file: &str, from: &str, to: &str) {
        let p = self.live.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn repo(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.bare).unwrap()
    }

    fn tip(&self, branch: &str) -> Option<git2::Oid> {
        self.repo()
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .map(|r| r.peel_to_commit().unwrap().id())
    }

    fn file_at(&self, branch: &str, path: &str) -> String {
        let repo = self.repo();
        let c = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .unwrap()
            .peel_to_commit()
            .unwrap();
        let e = c.tree().unwrap().get_path(Path::new(path)).unwrap();
        String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
    }

    /// The open item whose body carries a fingerprint.
    fn item_for(&self, fp: &str) -> github_server::ItemRec {
        let mut found: Vec<_> = self
            .server
            .items()
            .into_iter()
            .filter(|i| i.body.contains(&format!("fingerprint={fp} ")))
            .collect();
        found.sort_by_key(|i| i.number);
        found.pop().unwrap_or_else(|| panic!("no item for {fp}"))
    }

    /// Every byte sent to the forge: request paths and bodies, items, comments.
    fn forge_text(&self) -> String {
        let mut all = String::new();
        for l in self.server.log() {
            all.push_str(&l.path);
            all.push_str(&l.query);
            all.push_str(&l.body);
        }
        for i in self.server.items() {
            all.push_str(&i.title);
            all.push_str(&i.body);
        }
        for c in self.server.all_comments() {
            all.push_str(&c.body);
        }
        all
    }

    /// Every blob and commit message of every ref of the remote.
    fn git_text(&self) -> String {
        git_text_of(&self.repo())
    }
}

/// Every blob and commit message reachable from any ref of a repository.
fn git_text_of(repo: &git2::Repository) -> String {
    git_text(repo, false)
}

fn drift<'a>(r: &'a Report, fp: &str) -> &'a Drift {
    r.drifts
        .iter()
        .find(|d| d.fingerprint == fp)
        .unwrap_or_else(|| panic!("no drift {fp}"))
}

fn action(r: &Report, fp: &str) -> (Action, ActionResult, String) {
    let a = drift(r, fp).action.clone().unwrap();
    (a.action, a.result, a.detail.unwrap_or_default())
}

fn assert_no_canary(text: &str, where_: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{where_} leaks {c}");
    }
}

fn assert_no_live_canary(text: &str, where_: &str) {
    for c in LIVE_CANARIES {
        assert!(!text.contains(c), "{where_} leaks {c}");
    }
}

#[test]
fn demo_drift_opens_one_pull_request_per_fingerprint_then_stays_quiet() {
    let w = World::demo("");
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // One pull request per risky fingerprint that Git can express, a draft for the forbidden
    // worker, an issue for the Secret, nothing for the safe Ingress (recommend mode reports it).
    for fp in [
        FP_DEPLOYMENT,
        FP_CONFIGMAP,
        FP_HOTFIX,
        FP_SERVICE,
        FP_WORKER,
    ] {
        let (a, res, detail) = action(&report, fp);
        assert_eq!(
            (a, res),
            (Action::PullRequest, ActionResult::Done),
            "{fp}: {detail}"
        );
        let opened = if fp == FP_WORKER {
            "opened draft pull request #"
        } else {
            "opened pull request #"
        };
        assert!(detail.starts_with(opened), "{detail}");
    }
    let (a, res, detail) = action(&report, FP_SECRET);
    assert_eq!((a, res), (Action::Issue, ActionResult::Done), "{detail}");
    assert!(detail.contains("never written to Git"), "{detail}");
    let ingress = report
        .drifts
        .iter()
        .find(|d| d.resource.display == "Ingress shop/bookstore")
        .unwrap();
    assert_eq!(ingress.action.as_ref().unwrap().action, Action::Report);

    let items = w.server.items();
    let pulls: Vec<_> = items.iter().filter(|i| i.is_pr).collect();
    let issues: Vec<_> = items.iter().filter(|i| !i.is_pr).collect();
    assert_eq!((pulls.len(), issues.len()), (5, 1));
    for p in &pulls {
        let forbidden = p.head.as_deref() == Some(&format!("driftwarden/demo/{FP_WORKER}"));
        let class = if forbidden {
            "drift/forbidden"
        } else {
            "drift/risky"
        };
        assert_eq!(p.labels, vec!["drift", class], "#{}", p.number);
        assert_eq!(p.draft, forbidden, "#{}", p.number);
        assert_eq!(p.base.as_deref(), Some("main"));
        let fp = p
            .head
            .as_deref()
            .unwrap()
            .strip_prefix("driftwarden/demo/")
            .unwrap();
        assert!(
            p.body.starts_with(&format!(
                "<!-- driftwarden:item target=demo fingerprint={fp} changes="
            )),
            "{}",
            p.body
        );
        assert!(p.body.contains("**Close with the label `drift/revert`**"));
        assert!(p.body.chars().count() <= 65_536);
    }
    assert_eq!(issues[0].labels, vec!["drift", "drift/risky"]);

    // The Deployment's body: the drift, the masked diff, the class, the reasons, who did it.
    let dep = w.item_for(FP_DEPLOYMENT);
    assert_eq!(
        dep.title,
        "driftwarden: adopt live Deployment shop/bookstore-web (demo)"
    );
    for want in [
        "## Risky drift: `Deployment shop/bookstore-web`",
        "`bookstore/web.yaml` line 17: `/spec/replicas` removed, so Git no longer pins it (remedy `unpin`",
        "`bookstore/web.yaml` line 32: `/spec/template/spec/containers/0/image`",
        "- **Class:** risky: a HorizontalPodAutoscaler manages the replica count; Git should not pin it; container image changed",
        "- **Rules:** `kubernetes.replicas_under_hpa`, `kubernetes.image`",
        "- **Who:** image changed by kubectl-set (Update, 2026-11-21T02:47:10Z)",
        "```diff\n--- desired (Git)\n+++ live",
        "+/spec/replicas: 6",
    ] {
        assert!(dep.body.contains(want), "missing {want:?} in\n{}", dep.body);
    }
    // The Secret's issue shows the masked diff and nothing else.
    let secret = w.item_for(FP_SECRET);
    assert!(
        secret.body.contains("/data/PAYMENT_API_KEY: (masked)"),
        "{}",
        secret.body
    );

    // The branches: one commit on main by the configured author, marked with the fingerprint,
    // touching only the drifted lines.
    let repo = w.repo();
    let main = w.tip("main").unwrap();
    for fp in [FP_DEPLOYMENT, FP_CONFIGMAP, FP_HOTFIX, FP_SERVICE] {
        let c = repo
            .find_commit(w.tip(&format!("driftwarden/demo/{fp}")).unwrap())
            .unwrap();
        assert_eq!(c.parent_id(0).unwrap(), main);
        assert_eq!(c.author().email(), Ok(AUTHOR_EMAIL));
        assert!(
            c.message()
                .unwrap()
                .contains(&format!("Driftwarden-Fingerprint: {fp}"))
        );
    }
    let before =
        std::fs::read_to_string(root().join("fixtures/demo/desired/bookstore/web.yaml")).unwrap();
    let after = w.file_at(
        &format!("driftwarden/demo/{FP_DEPLOYMENT}"),
        "bookstore/web.yaml",
    );
    // The HPA owns the replica count: `replicas` is removed (remedy unpin), the image adopted.
    assert_eq!(
        after,
        before
            .replace("  replicas: 3\n", "")
            .replace("bookstore-web:2.4.1", "bookstore-web:2.4.2-hotfix1")
    );
    assert_eq!(before.lines().count(), after.lines().count() + 1);
    let adopted = w.file_at(
        &format!("driftwarden/demo/{FP_HOTFIX}"),
        "adopted/shop/configmap-bookstore-hotfix-flags.yaml",
    );
    assert!(
        adopted.contains("name: bookstore-hotfix-flags\n  namespace: shop\n"),
        "{adopted}"
    );
    assert!(!adopted.contains("managedFields") && !adopted.contains("resourceVersion"));
    // The forbidden worker: a draft that shows the one line adopting it would change.
    let worker = w.item_for(FP_WORKER);
    assert_eq!(
        worker.title,
        "driftwarden: forbidden drift on Deployment shop/bookstore-worker (demo)"
    );
    assert!(
        worker.body.contains(
            "This drift is **forbidden** by policy: it is never adopted into Git silently."
        ) && worker
            .body
            .contains("- **Class:** forbidden: a container was made privileged"),
        "{}",
        worker.body
    );
    let before =
        std::fs::read_to_string(root().join("fixtures/demo/desired/bookstore/worker.yaml"))
            .unwrap();
    let after = w.file_at(
        &format!("driftwarden/demo/{FP_WORKER}"),
        "bookstore/worker.yaml",
    );
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            "            privileged: false",
            "            privileged: true"
        )]
    );
    assert_eq!(before.lines().count(), after.lines().count());
    let service = w.file_at(
        &format!("driftwarden/demo/{FP_SERVICE}"),
        "bookstore/web.yaml",
    );
    assert!(!service.contains("kind: Service"));
    assert!(service.contains("kind: HorizontalPodAutoscaler"));

    // Every request went through the Enterprise base path.
    assert!(w.server.log().iter().all(|l| l.prefix == "/api/v3"));

    // Second run, nothing changed: nothing opened, nothing edited, nothing pushed.
    let mark = w.server.log().len();
    let tips: Vec<_> = [FP_DEPLOYMENT, FP_CONFIGMAP, FP_HOTFIX, FP_SERVICE]
        .iter()
        .map(|fp| w.tip(&format!("driftwarden/demo/{fp}")))
        .collect();
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        w.server.writes_since(mark).len(),
        0,
        "{:#?}",
        w.server.writes_since(mark)
    );
    for fp in [FP_DEPLOYMENT, FP_CONFIGMAP, FP_HOTFIX, FP_SERVICE] {
        let (_, res, detail) = action(&report, fp);
        assert_eq!(res, ActionResult::Done);
        assert!(detail.contains("is up to date"), "{detail}");
    }
    let tips2: Vec<_> = [FP_DEPLOYMENT, FP_CONFIGMAP, FP_HOTFIX, FP_SERVICE]
        .iter()
        .map(|fp| w.tip(&format!("driftwarden/demo/{fp}")))
        .collect();
    assert_eq!(tips, tips2);

    // The drift changes (another hotfix image): its pull request and branch are updated,
    // nothing else.
    w.edit_live(
        "shop-workloads.yaml",
        "bookstore-web:2.4.2-hotfix1",
        "bookstore-web:2.4.2-hotfix2",
    );
    let mark = w.server.log().len();
    let report = w.run();
    let writes = w.server.writes_since(mark);
    let dep = w.item_for(FP_DEPLOYMENT);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.clone()),
        ("PATCH", format!("/repos/acme/gitops/pulls/{}", dep.number))
    );
    assert!(
        action(&report, FP_DEPLOYMENT)
            .2
            .contains("updated pull request")
    );
    assert!(dep.body.contains(
        "+/spec/template/spec/containers/0/image: ghcr.io/example/bookstore-web:2.4.2-hotfix2"
    ));
    let web = w.file_at(
        &format!("driftwarden/demo/{FP_DEPLOYMENT}"),
        "bookstore/web.yaml",
    );
    assert!(
        web.contains("image: ghcr.io/example/bookstore-web:2.4.2-hotfix2\n")
            && !web.contains("replicas:"),
        "{web}"
    );
    assert_ne!(w.tip(&format!("driftwarden/demo/{FP_DEPLOYMENT}")), tips[0]);
    assert_eq!(w.tip(&format!("driftwarden/demo/{FP_CONFIGMAP}")), tips[1]);

    // The ConfigMap drift is resolved: its pull request is closed with a comment and its branch
    // deleted; the others stay open.
    w.edit_live(
        "shop-config.json",
        "\"SEARCH_TIMEOUT_MS\": \"2500\"",
        "\"SEARCH_TIMEOUT_MS\": \"800\"",
    );
    let cm = w.item_for(FP_CONFIGMAP);
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.drifts.iter().all(|d| d.fingerprint != FP_CONFIGMAP));
    let closed = w.server.item(cm.number);
    assert_eq!(closed.state, "closed");
    assert!(w.server.comments_on(cm.number)[0].starts_with("Closing: the drift is gone"));
    assert_eq!(w.tip(&format!("driftwarden/demo/{FP_CONFIGMAP}")), None);
    assert_eq!(w.item_for(FP_DEPLOYMENT).state, "open");
    assert!(
        closed.body.contains(" closed=resolved -->"),
        "{}",
        closed.body
    );

    // The same hand edit happens again: driftwarden closed the old one itself, so a new pull
    // request is opened (a person's "closed without merging" would have been respected).
    w.edit_live(
        "shop-config.json",
        "\"SEARCH_TIMEOUT_MS\": \"800\"",
        "\"SEARCH_TIMEOUT_MS\": \"2500\"",
    );
    let report = w.run();
    let (_, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!(res, ActionResult::Done, "{detail}");
    assert!(detail.starts_with("opened pull request"), "{detail}");
    assert_ne!(w.item_for(FP_CONFIGMAP).number, cm.number);

    assert_no_canary(&w.forge_text(), "the forge");
    assert_no_live_canary(&w.git_text(), "the remote's commits");
}

/// The remedy agrees with the reason: a Deployment an HPA scales, scaled by hand. The verdict says
/// Git should not pin the count, so the pull request removes the `replicas` line (remedy `unpin`)
/// and touches nothing else, and its body says so.
#[test]
fn the_hpa_drifts_pull_request_removes_the_replicas_line_and_nothing_else() {
    let w = World::demo("");
    // Only the hand scale remains on the Deployment: the hotfix image is undone live.
    w.edit_live(
        "shop-workloads.yaml",
        "image: ghcr.io/example/bookstore-web:2.4.2-hotfix1",
        "image: ghcr.io/example/bookstore-web:2.4.1",
    );
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let d = report
        .drifts
        .iter()
        .find(|d| d.fingerprint == FP_DEPLOYMENT)
        .unwrap();
    let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/spec/replicas"]);
    let verdict = d.verdict.as_ref().unwrap();
    assert_eq!(verdict.rules, ["kubernetes.replicas_under_hpa"]);
    assert_eq!(verdict.remedy("/spec/replicas"), Remedy::Unpin);
    let (a, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!(
        (a, res),
        (Action::PullRequest, ActionResult::Done),
        "{detail}"
    );

    let before =
        std::fs::read_to_string(root().join("fixtures/demo/desired/bookstore/web.yaml")).unwrap();
    let after = w.file_at(
        &format!("driftwarden/demo/{FP_DEPLOYMENT}"),
        "bookstore/web.yaml",
    );
    // Exactly one line gone, every other byte (comments included) the same, and the live
    // count (6) nowhere.
    let removed = "  replicas: 3\n";
    assert_eq!(before.matches(removed).count(), 1);
    assert_eq!(after, before.replacen(removed, "", 1));
    assert!(!after.contains("replicas: 6"));
    // The other files of the commit are untouched: only bookstore/web.yaml changed.
    let repo = w.repo();
    let tip = repo
        .find_commit(w.tip(&format!("driftwarden/demo/{FP_DEPLOYMENT}")).unwrap())
        .unwrap();
    let parent = tip.parent(0).unwrap();
    let diff = repo
        .diff_tree_to_tree(
            Some(&parent.tree().unwrap()),
            Some(&tip.tree().unwrap()),
            None,
        )
        .unwrap();
    let files: Vec<String> = diff
        .deltas()
        .map(|d| d.new_file().path().unwrap().display().to_string())
        .collect();
    assert_eq!(files, ["bookstore/web.yaml"]);

    let pr = w.item_for(FP_DEPLOYMENT);
    for want in [
        "a field Git should not pin is **removed** from the manifest (remedy `unpin`)",
        "- `bookstore/web.yaml` line 17: `/spec/replicas` removed, so Git no longer pins it (remedy `unpin`; the live value is not written to Git)",
        "a HorizontalPodAutoscaler manages the replica count; Git should not pin it",
    ] {
        assert!(pr.body.contains(want), "missing {want:?} in\n{}", pr.body);
    }
}

#[test]
fn closed_items_are_not_reopened_and_drift_revert_waits_for_autocorrect_mode() {
    let w = World::demo("");
    w.run();
    let dep = w.item_for(FP_DEPLOYMENT);
    let cm = w.item_for(FP_CONFIGMAP);
    let svc = w.item_for(FP_SERVICE);
    w.server.close_with_labels(dep.number, &["drift/revert"]);
    w.server.close_with_labels(cm.number, &[]);
    w.server.merge(svc.number);

    let mark = w.server.log().len();
    let report = w.run();
    // Revert requested, but the target is in recommend mode, which makes no live writes: the
    // drift is not corrected, it waits for a run in autocorrect mode (see the next test). Said
    // in the report and on the closed pull request, which stays closed; no new pull request.
    let (a, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!(
        (a, res),
        (
            Action::Skip {
                why: "revert waits for autocorrect mode".into()
            },
            ActionResult::Skipped
        )
    );
    assert!(
        detail.starts_with(&format!("revert requested: pull request #{} was closed with the label drift/revert; not corrected: recommend mode makes no live writes, so a run in autocorrect mode restores Git's state (the pull request stays closed)", dep.number)),
        "{detail}"
    );
    let comments = w.server.comments_on(dep.number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].contains("Revert requested by the label `drift/revert`")
            && comments[0].contains("is **skipped**")
            && comments[0].contains("recommend mode makes no live writes"),
        "{}",
        comments[0]
    );
    let closed = w.server.item(dep.number);
    assert_eq!(closed.state, "closed");
    assert!(closed.labels.iter().any(|l| l == "drift/revert"));
    // Closed without merging: left alone. Merged: waiting for the desired source.
    let (_, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!(res, ActionResult::Skipped);
    assert!(
        detail.contains("was closed without merging; not reopened"),
        "{detail}"
    );
    let (_, res, detail) = action(&report, FP_SERVICE);
    assert_eq!(res, ActionResult::Skipped);
    assert!(detail.contains("was merged"), "{detail}");
    let writes = w.server.writes_since(mark);
    assert_eq!(writes.len(), 1, "only the revert comment: {writes:#?}");
    assert_eq!(
        w.server
            .items()
            .iter()
            .filter(|i| i.state == "open")
            .count(),
        3
    );

    // Again: the revert comment is not repeated.
    let mark = w.server.log().len();
    w.run();
    assert_eq!(w.server.writes_since(mark).len(), 0);

    // The drift changes: a new pull request is opened for it.
    w.edit_live(
        "shop-config.json",
        "\"SEARCH_TIMEOUT_MS\": \"2500\"",
        "\"SEARCH_TIMEOUT_MS\": \"3000\"",
    );
    let report = w.run();
    let (_, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!(res, ActionResult::Done, "{detail}");
    assert!(detail.starts_with("opened pull request"), "{detail}");
}

/// The revert loop within the guardrails: only `autocorrect` mode turns `drift/revert`
/// into a correction despite the class (planned here: a snapshot target has no live writer;
/// tests/kube_live.rs shows the write against an API server).
#[test]
fn drift_revert_in_autocorrect_mode_turns_into_a_correction() {
    let w = World::demo("");
    w.run();
    let dep = w.item_for(FP_DEPLOYMENT);
    w.server.close_with_labels(dep.number, &["drift/revert"]);

    // The same target, now in autocorrect mode.
    let text = w.config_text();
    assert!(text.contains("    mode: recommend\n"));
    let text = text.replace("    mode: recommend\n", "    mode: autocorrect\n");
    let cfg = config::parse(&text, "test.yaml", w.dir.path()).unwrap();
    let mut opts = RunOptions::new(Command::Reconcile);
    opts.cache_dir = w.dir.path().join("cache");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mark = w.server.log().len();
    let report = rt.block_on(run::run(&cfg, &opts)).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!((a, res), (Action::Correct, ActionResult::Planned));
    assert_eq!(
        detail,
        format!(
            "revert requested: pull request #{} was closed with the label drift/revert; restoring Git's state despite class risky, within the guardrails",
            dep.number
        )
    );
    let comments = w.server.comments_on(dep.number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].contains("Revert requested by the label `drift/revert`")
            && comments[0].contains("is **planned**"),
        "{}",
        comments[0]
    );
    // The closed pull request stays closed, and none is opened for the drift.
    assert_eq!(w.server.item(dep.number).state, "closed");
    assert_eq!(w.item_for(FP_DEPLOYMENT).number, dep.number);
    let writes = w.server.writes_since(mark);
    assert_eq!(writes.len(), 1, "only the revert comment: {writes:#?}");

    // Again: nothing new to say.
    let mark = w.server.log().len();
    let report = rt.block_on(run::run(&cfg, &opts)).unwrap();
    let (a, res, _) = action(&report, FP_DEPLOYMENT);
    assert_eq!((a, res), (Action::Correct, ActionResult::Planned));
    assert_eq!(w.server.writes_since(mark).len(), 0);
}

#[test]
fn the_per_run_cap_spreads_new_items_over_runs() {
    let w = World::demo("  max_new_per_run: 2");
    let count = |r: &Report, result: ActionResult| {
        r.drifts
            .iter()
            .filter(|d| {
                d.action.as_ref().is_some_and(|a| {
                    matches!(a.action, Action::PullRequest | Action::Issue) && a.result == result
                })
            })
            .count()
    };
    let r = w.run();
    assert_eq!(
        (
            count(&r, ActionResult::Done),
            count(&r, ActionResult::Skipped)
        ),
        (2, 4)
    );
    let skipped = r
        .drifts
        .iter()
        .filter_map(|d| d.action.as_ref())
        .find(|a| a.result == ActionResult::Skipped)
        .unwrap();
    assert!(
        skipped
            .detail
            .as_deref()
            .unwrap()
            .contains("per-run cap reached: at most 2")
    );
    assert_eq!(w.server.items().len(), 2);
    let r = w.run();
    assert_eq!(
        (
            count(&r, ActionResult::Done),
            count(&r, ActionResult::Skipped)
        ),
        (4, 2)
    );
    let r = w.run();
    assert_eq!(
        (
            count(&r, ActionResult::Done),
            count(&r, ActionResult::Skipped)
        ),
        (6, 0)
    );
    assert_eq!(w.server.items().len(), 6);
}

#[test]
fn rate_limits_are_waited_out_and_given_up_past_the_limit() {
    let w = World::demo("");
    w.server.inject(Fault::Secondary403 { retry_after: 1 });
    w.server.inject(Fault::TooMany429 { retry_after: 1 });
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let log = w.server.log();
    assert_eq!(log[0].path, log[1].path);
    assert_eq!(log[1].path, log[2].path);
    // Each retry came after the Retry-After the server asked for (1 s), as the server saw it.
    for pair in log[..3].windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    }
    assert_eq!(w.server.items().len(), 6);

    // An exhausted primary limit resetting in an hour: this run does not wait that long.
    let w = World::demo("  max_rate_limit_wait_secs: 5");
    w.server.inject(Fault::PrimaryExhausted { reset_in: 3600 });
    let report = w.run();
    assert!(!report.errors.is_empty());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.message.contains("rate limited (primary)")),
        "{:?}",
        report.errors
    );
    let (_, res, _) = action(&report, FP_DEPLOYMENT);
    assert_eq!(res, ActionResult::Failed);
    assert_eq!(w.server.items().len(), 0);
}

#[test]
fn a_branch_with_someone_elses_commit_is_never_overwritten() {
    let w = World::demo("");
    w.run();
    let branch = format!("driftwarden/demo/{FP_DEPLOYMENT}");
    // Alice pushes a fix-up onto driftwarden's branch.
    let repo = w.repo();
    let tip = repo.find_commit(w.tip(&branch).unwrap()).unwrap();
    let blob = repo.blob(b"# note from alice\n").unwrap();
    let mut tb = repo.treebuilder(Some(&tip.tree().unwrap())).unwrap();
    tb.insert("NOTE.md", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let alice = git2::Signature::now("Alice", "alice@example.com").unwrap();
    let hers = repo
        .commit(
            Some(&format!("refs/heads/{branch}")),
            &alice,
            &alice,
            "keep replicas at 6",
            &tree,
            &[&tip],
        )
        .unwrap();

    // The drift changes: driftwarden would rebuild the branch, but it is not its own any more.
    w.edit_live(
        "shop-workloads.yaml",
        "\n    replicas: 6\n",
        "\n    replicas: 9\n",
    );
    let mark = w.server.log().len();
    let report = w.run();
    let (a, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!((a, res), (Action::PullRequest, ActionResult::Skipped));
    assert!(
        detail.contains("carries 1 commit(s) driftwarden did not make"),
        "{detail}"
    );
    assert!(detail.contains("Alice <alice@example.com>"), "{detail}");
    assert_eq!(w.tip(&branch), Some(hers));
    assert!(w.server.writes_since(mark).is_empty());

    // Resolved: the pull request closes, but Alice's branch stays.
    w.edit_live(
        "shop-workloads.yaml",
        "\n    replicas: 9\n",
        "\n    replicas: 3\n",
    );
    w.edit_live(
        "shop-workloads.yaml",
        "image: ghcr.io/example/bookstore-web:2.4.2-hotfix1",
        "image: ghcr.io/example/bookstore-web:2.4.1",
    );
    let dep = w.item_for(FP_DEPLOYMENT);
    w.run();
    assert_eq!(w.server.item(dep.number).state, "closed");
    assert_eq!(w.tip(&branch), Some(hers));
    assert!(
        w.server.comments_on(dep.number)[0]
            .contains("is kept: it carries commits driftwarden did not make")
    );
}

#[test]
fn forbidden_drift_is_a_draft_labelled_forbidden_and_secrets_stay_out() {
    // A container made privileged by hand (forbidden), and a hand-made Secret carrying a
    // canary (unmanaged: never adopted into Git).
    let dir = tempfile::tempdir().unwrap();
    let desired = dir.path().join("desired");
    std::fs::create_dir_all(desired.join("apps")).unwrap();
    std::fs::write(
        desired.join("apps/api.yaml"),
        "# The API.\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\n  labels:\n    app.kubernetes.io/managed-by: driftwarden\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api\n          image: api:1\n          securityContext:\n            privileged: false # never\n",
    )
    .unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(
        live.join("objects.json"),
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "api", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                                 "labels": {"app.kubernetes.io/managed-by": "driftwarden"}},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                             "template": {"metadata": {"labels": {"app": "api"}},
                                          "spec": {"containers": [{"name": "api", "image": "api:1",
                                                                   "securityContext": {"privileged": true}}]}}}
                },
                {
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "hotfix-token", "namespace": "shop", "uid": "u2", "resourceVersion": "9",
                                 "labels": {"app.kubernetes.io/managed-by": "driftwarden"}},
                    "type": "Opaque",
                    "data": {"TOKEN": "Q0FOQVJZLVBSLTc3MzE="}
                }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let w = World::new(&desired, &live, "");
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let dep = report
        .drifts
        .iter()
        .find(|d| d.resource.display == "Deployment shop/api")
        .unwrap();
    assert_eq!(
        dep.verdict.as_ref().unwrap().class,
        driftwarden::model::Class::Forbidden
    );
    let pr = w.item_for(&dep.fingerprint);
    assert!(pr.is_pr && pr.draft);
    assert_eq!(pr.labels, vec!["drift", "drift/forbidden"]);
    assert!(
        pr.title
            .starts_with("driftwarden: forbidden drift on Deployment shop/api")
    );
    assert!(pr.body.contains("This drift is **forbidden** by policy"));
    assert!(
        pr.body.contains("a container was made privileged"),
        "{}",
        pr.body
    );
    let branch = format!("driftwarden/demo/{}", dep.fingerprint);
    assert!(
        w.file_at(&branch, "apps/api.yaml")
            .contains("            privileged: true # never\n")
    );

    let secret = report
        .drifts
        .iter()
        .find(|d| d.resource.display == "Secret shop/hotfix-token")
        .unwrap();
    let item = w.item_for(&secret.fingerprint);
    assert!(!item.is_pr, "a Secret is never adopted into Git");
    assert!(
        item.body
            .contains("a Secret's values are never written to Git")
    );
    assert_no_canary(&w.forge_text(), "the forge");
    assert_no_live_canary(&w.git_text(), "the remote's commits");
}

/// Runs the binary in `cwd` with a config file.
fn binary(cwd: &Path, args: &[&str]) -> std::process::Output {
    common::bin()
        .args(args)
        .current_dir(cwd)
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_local_forge_writes_the_demos_pull_requests_idempotently() {
    let cwd = tempfile::tempdir().unwrap();
    let config = root().join("fixtures/demo/driftwarden.yaml");
    let desired_before = files_under(&root().join("fixtures/demo/desired"));
    let out = binary(
        cwd.path(),
        &[
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "reconcile",
            "-c",
            config.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stdout.contains("actions           issue 1 done; pull request 5 done; report 1 planned"),
        "{stdout}"
    );
    assert_no_canary(&stdout, "stdout");
    assert_no_canary(&stderr, "the trace log");

    let prs = cwd.path().join(".driftwarden/prs");
    for fp in [
        FP_DEPLOYMENT,
        FP_CONFIGMAP,
        FP_HOTFIX,
        FP_SERVICE,
        FP_WORKER,
    ] {
        let body = std::fs::read_to_string(prs.join(format!("demo/{fp}.md"))).unwrap();
        assert!(body.contains(&format!("fingerprint={fp}")));
        let patch = std::fs::read_to_string(prs.join(format!("demo/{fp}.patch"))).unwrap();
        assert!(patch.starts_with("diff --git"), "{patch}");
    }
    let dep_patch =
        std::fs::read_to_string(prs.join(format!("demo/{FP_DEPLOYMENT}.patch"))).unwrap();
    assert!(
        dep_patch.contains(" spec:\n-  replicas: 3\n   selector:\n")
            && !dep_patch.contains("+  replicas"),
        "{dep_patch}"
    );
    let issue = std::fs::read_to_string(prs.join(format!("demo/{FP_SECRET}.md"))).unwrap();
    assert!(issue.contains("(masked)"));
    assert!(!prs.join(format!("demo/{FP_SECRET}.patch")).exists());
    let index = std::fs::read_to_string(prs.join("index.md")).unwrap();
    assert!(index.contains("## Open (6)"), "{index}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prs.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["items"].as_array().unwrap().len(), 6);
    let repo = git2::Repository::open_bare(prs.join("repo.git")).unwrap();
    let branches: Vec<String> = repo
        .references_glob("refs/heads/driftwarden/*")
        .unwrap()
        .map(|r| r.unwrap().name().unwrap().to_string())
        .collect();
    assert_eq!(branches.len(), 5, "{branches:?}");

    // Idempotent: a second run changes no file and no branch.
    let snapshot = files_under(&prs);
    let out = binary(
        cwd.path(),
        &["reconcile", "-c", config.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    let mut proposals = 0;
    for d in &report.drifts {
        if let Some(a) = &d.action {
            if a.action != Action::Report {
                proposals += 1;
                assert!(
                    a.detail.as_deref().unwrap().contains("is up to date"),
                    "{:?}",
                    a.detail
                );
            }
        }
    }
    // The first run's five pull requests (one a forbidden draft) and one issue, each found up to
    // date.
    assert_eq!(proposals, 6, "{:?}", report.drifts);
    let again: Vec<_> = files_under(&prs)
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".lock"))
        .collect();
    let snapshot: Vec<_> = snapshot
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".lock"))
        .collect();
    assert_eq!(again.len(), snapshot.len());
    for ((p1, b1), (p2, b2)) in snapshot.iter().zip(&again) {
        assert_eq!(p1, p2);
        assert!(b1 == b2, "{} changed on the second run", p1.display());
    }
    // The repository's own desired files were never touched.
    assert_eq!(
        files_under(&root().join("fixtures/demo/desired")),
        desired_before
    );
    for (p, bytes) in files_under(&prs) {
        assert_no_canary(&String::from_utf8_lossy(&bytes), &p.display().to_string());
    }
    assert_no_live_canary(&git_text_of(&repo), "the local forge's repository");
}

#[test]
fn the_pull_requests_section_is_validated_with_every_line() {
    let text = "pull_requests:\n  forge: gitlab\n  repos: acme/gitops\n  author: {name: bot, email: not-an-address}\n  max_new_per_run: -1\n  labels: [\"a,b\"]\ntargets:\n  - name: t\n    desired: {dir: d}\n    live: {snapshot: s}\n";
    let err = config::parse(text, "c.yaml", Path::new("/base")).unwrap_err();
    let msg = err.to_string();
    for want in [
        "c.yaml:2:10: pull_requests.forge: `gitlab` is not one of: local, github",
        "c.yaml:3:3: pull_requests: unknown key `repos` (did you mean `repo`?)",
        "c.yaml:4:30: pull_requests.author.email: `not-an-address` is not an email address",
        "c.yaml:5:20: pull_requests.max_new_per_run: expected a whole number",
        "c.yaml:6:11: pull_requests.labels: `a,b` is not a valid label",
    ] {
        assert!(msg.contains(want), "missing {want:?} in\n{msg}");
    }
    let github_without_repo = "pull_requests: {forge: github}\ntargets: [{name: t, desired: {dir: d}, live: {snapshot: s}}]\n";
    let msg = config::parse(github_without_repo, "c.yaml", Path::new("/b"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`forge: github` needs `repo: owner/name`"),
        "{msg}"
    );
    let local_with_api = "pull_requests: {forge: local, api_url: \"https://ghe.example.com/api/v3\", repo: a/b}\ntargets: [{name: t, desired: {dir: d}, live: {snapshot: s}}]\n";
    let msg = config::parse(local_with_api, "c.yaml", Path::new("/b"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pull_requests.api_url: only used with `forge: github`"),
        "{msg}"
    );
    assert!(
        msg.contains("pull_requests.repo: only used with `forge: github`"),
        "{msg}"
    );
    let ok = "pull_requests:\n  forge: github\n  repo: acme/gitops\n  api_url: https://ghe.example.com/api/v3\n  output_dir: prs\ntargets: [{name: t, desired: {dir: d}, live: {snapshot: s}}]\n";
    let cfg = config::parse(ok, "c.yaml", Path::new("/b")).unwrap();
    let p = cfg.pull_requests.unwrap();
    assert_eq!(p.forge, config::ForgeKind::GitHub);
    assert_eq!(p.max_new_per_run, 10);
    assert_eq!(p.token_env, "GITHUB_TOKEN");
    assert_eq!(p.output_dir, Some(PathBuf::from("/b/prs")));
    // The demo uses the local forge.
    let demo = config::embedded_default().unwrap();
    assert_eq!(demo.pull_requests.unwrap().forge, config::ForgeKind::Local);
}

#[test]
fn terraform_drift_edits_the_literal_and_an_unmanaged_instance_gets_an_import_block() {
    use driftwarden::act::{self, ActContext, pull_request::Session};
    use driftwarden::model::{
        ChangeOp, Class, DriftKind, FieldChange, Mode, Provenance, ResourceId, ResourceRef,
        Verdict, fingerprint,
    };
    use serde_json::json;

    let main_tf = "# Web tier.\nresource \"aws_instance\" \"web\" {\n  ami           = \"ami-0abc\" # pinned\n  instance_type = \"t3.medium\"\n}\n\nresource \"aws_instance\" \"api\" {\n  ami  = \"ami-0abc\"\n  tags = {\n    Name = \"api-${var.env}\"\n  }\n}\n";
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("main.tf"), main_tf).unwrap();
    std::fs::write(src.path().join("plan.json"), "{}").unwrap();
    let w = World::new(src.path(), src.path(), "");
    let text = format!(
        "state_dir: \"{state}\"\npull_requests:\n  forge: github\n  repo: acme/gitops\n  api_url: \"{api}\"\n  token_env: {TOKEN_ENV}\n  write_interval_ms: 0\ntargets:\n  - name: infra\n    desired:\n      git: {{repo: \"file://{bare}\", ref: main}}\n      terraform: {{plan: plan.json}}\n",
        state = w.dir.path().join("state").display(),
        api = w.server.url(),
        bare = w.bare.display(),
    );
    let cfg = config::parse(&text, "tf.yaml", w.dir.path()).unwrap();
    let target = &cfg.targets[0];
    let risky = |rule: &str| Verdict {
        class: Class::Risky,
        reasons: vec![format!("{rule} changed")],
        rules: vec![format!("aws.{rule}")],
        remedies: Default::default(),
    };
    let tf = |address: &str,
              path: &str,
              desired: serde_json::Value,
              live: serde_json::Value,
              rule: &str| {
        let id = ResourceId::Terraform {
            workspace: "default".into(),
            address: address.into(),
        };
        let mut d = Drift {
            fingerprint: fingerprint("infra", &id),
            target: "infra".into(),
            resource: ResourceRef::from(id),
            kind: DriftKind::Modified,
            changes: vec![FieldChange {
                path: path.into(),
                op: ChangeOp::Changed,
                desired,
                live,
                masked: false,
                attribution: None,
                class: None,
            }],
            provenance: Some(Provenance {
                source: "state".into(),
                file: "terraform.tfstate".into(),
                line: 1,
                commit: None,
            }),
            verdict: Some(risky(rule)),
            action: None,
            desired_object: None,
            live_object: None,
        };
        d.action = Some(act::decide(&d, Mode::Recommend));
        d
    };
    let ec2_id = ResourceId::Ec2 {
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        resource_type: "instance".into(),
        id: "i-0abc123".into(),
    };
    let mut unmanaged = Drift {
        fingerprint: fingerprint("infra", &ec2_id),
        target: "infra".into(),
        resource: ResourceRef::from(ec2_id),
        kind: DriftKind::Unmanaged,
        changes: Vec::new(),
        provenance: None,
        verdict: Some(risky("unmanaged")),
        action: None,
        desired_object: None,
        live_object: Some(
            json!({"InstanceId": "i-0abc123", "ImageId": "ami-0fff", "InstanceType": "t3.micro", "Tags": [{"Key": "Name", "Value": "hand-made"}]}),
        ),
    };
    unmanaged.action = Some(act::decide(&unmanaged, Mode::Recommend));
    let mut drifts = vec![
        tf(
            "aws_instance.web",
            "/instance_type",
            json!("t3.medium"),
            json!("t3.large"),
            "instance_type",
        ),
        tf(
            "aws_instance.api",
            "/tags/Name",
            json!("api-prod"),
            json!("api-hotfix"),
            "tag",
        ),
        unmanaged,
    ];
    let session = Session::new(cfg.pull_requests.as_ref(), &cfg.state_dir);
    let desired = act::DesiredObjects::default();
    let audit = driftwarden::audit::AuditLog::open(
        &cfg.audit,
        &cfg.trust,
        &cfg.state_dir,
        driftwarden::audit::OpenOptions::default(),
    );
    let ctx = ActContext {
        target,
        mode: Mode::Recommend,
        partial: false,
        dry_run: false,
        state_dir: &cfg.state_dir,
        desired: &desired,
        checked: 3,
        pull_requests: Some(&session),
        audit: &audit,
        only: None,
        handoff: None,
    };
    let errors = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(act::act(&ctx, &mut drifts));
    assert!(errors.is_empty(), "{errors:?}");

    // The literal: one line of main.tf changes, its alignment and comment kept.
    let web = &drifts[0];
    let a = web.action.as_ref().unwrap();
    assert_eq!(
        (&a.action, &a.result),
        (&Action::PullRequest, &ActionResult::Done),
        "{:?}",
        a.detail
    );
    let after = w.file_at(&format!("driftwarden/infra/{}", web.fingerprint), "main.tf");
    assert_eq!(
        after,
        main_tf.replace(
            "instance_type = \"t3.medium\"",
            "instance_type = \"t3.large\""
        )
    );
    // A template: no honest edit, an issue.
    let api = drifts[1].action.as_ref().unwrap();
    assert_eq!(
        (&api.action, &api.result),
        (&Action::Issue, &ActionResult::Done)
    );
    assert!(
        api.detail.as_deref().unwrap().contains("template"),
        "{:?}",
        api.detail
    );
    // The unmanaged instance: an import block and a skeleton in a new file.
    let ec2 = &drifts[2];
    assert_eq!(
        ec2.action.as_ref().unwrap().result,
        ActionResult::Done,
        "{:?}",
        ec2.action
    );
    let import = w.file_at(
        &format!("driftwarden/infra/{}", ec2.fingerprint),
        "import_aws_instance_i_0abc123.tf",
    );
    assert!(
        import.contains("import {\n  to = aws_instance.i_0abc123\n  id = \"i-0abc123\"\n}"),
        "{import}"
    );
    assert!(import.contains("instance_type = \"t3.micro\""), "{import}");
    assert_eq!(w.server.items().iter().filter(|i| i.is_pr).count(), 2);
}

#[test]
fn every_github_request_is_counted_in_the_metrics() {
    /// The documented route of a request the test server logged (path without the Enterprise
    /// prefix), worked out here from GitHub's REST reference, independently of the forge.
    fn route(method: &str, path: &str) -> String {
        // A page after the first is requested where its `Link` header says: the repository by id.
        let rest = path
            .strip_prefix("/repos/acme/gitops")
            .or_else(|| path.strip_prefix(&format!("/repositories/{REPO_ID}")))
            .unwrap_or_else(|| panic!("a request outside the repository: {method} {path}"));
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let tail = match segs.as_slice() {
            [] => String::new(),
            ["pulls"] => "/pulls".into(),
            ["pulls", _] => "/pulls/{pull_number}".into(),
            ["issues"] => "/issues".into(),
            ["issues", "comments", _] => "/issues/comments/{comment_id}".into(),
            ["issues", _] => "/issues/{issue_number}".into(),
            ["issues", _, "labels"] => "/issues/{issue_number}/labels".into(),
            ["issues", _, "labels", _] => "/issues/{issue_number}/labels/{name}".into(),
            ["issues", _, "comments"] => "/issues/{issue_number}/comments".into(),
            ["git", "refs", ..] => "/git/refs/{ref}".into(),
            ["statuses", _] => "/statuses/{sha}".into(),
            _ => panic!("a request the forge is not known to send: {method} {path}"),
        };
        format!("{method} /repos/{{owner}}/{{repo}}{tail}")
    }

    /// `driftwarden_api_requests_total{provider="github",...}` samples: (endpoint, result) → n.
    fn github_samples(metrics: &str) -> std::collections::BTreeMap<(String, String), u64> {
        let mut out = std::collections::BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("driftwarden_api_requests_total{") else {
                continue;
            };
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let mut map = std::collections::BTreeMap::new();
            let mut s = labels;
            while let Some((key, after)) = s.split_once("=\"") {
                let (v, next) = after.split_once('"').unwrap();
                map.insert(key.trim_start_matches(',').to_string(), v.to_string());
                s = next;
            }
            if map.get("provider").map(String::as_str) != Some("github") {
                continue;
            }
            let prev = out.insert(
                (map["endpoint"].clone(), map["result"].clone()),
                value.parse::<u64>().unwrap(),
            );
            assert!(prev.is_none(), "a series twice: {line}");
        }
        out
    }

    // A real run through the binary (the counter is per process): the demo's drift against the
    // test server, the first request answered by a secondary rate limit and retried.
    let w = World::demo("");
    w.server.inject(Fault::Secondary403 { retry_after: 1 });
    let config = w.dir.path().join("driftwarden.yaml");
    std::fs::write(&config, w.config_text()).unwrap();
    let metrics = w.dir.path().join("metrics.prom");
    let out = common::bin()
        .current_dir(w.dir.path())
        .env(TOKEN_ENV, TOKEN)
        .env("XDG_CACHE_HOME", w.dir.path().join("cache"))
        .args(["reconcile", "-o", "json", "--config"])
        .arg(&config)
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(w.server.items().len(), 6, "the run opened its items");

    let log = w.server.log();
    let mut want = std::collections::BTreeMap::new();
    for (i, l) in log.iter().enumerate() {
        let result = if i == 0 { "403" } else { "ok" };
        *want
            .entry((route(&l.method, &l.path), result.to_string()))
            .or_insert(0u64) += 1;
    }
    // Reads, pages, writes and the rate-limited attempt are all there.
    assert!(want.keys().any(|(e, _)| e.starts_with("GET ")), "{want:?}");
    assert!(want.keys().any(|(e, _)| e.starts_with("POST ")), "{want:?}");
    assert_eq!(log[0].path, log[1].path, "the limited request was retried");

    let text = std::fs::read_to_string(&metrics).unwrap();
    let got = github_samples(&text);
    assert_eq!(got, want, "metrics:\n{text}");
    assert_eq!(got.values().sum::<u64>(), log.len() as u64);
    // Low cardinality: no owner, repository, number, branch or label in an endpoint.
    for (endpoint, _) in got.keys() {
        assert!(
            !endpoint.contains("acme") && !endpoint.chars().any(|c| c.is_ascii_digit()),
            "{endpoint}"
        );
    }
}

/// One answer of the test server to a raw HTTP/1.1 GET with the token: status, headers (names in
/// lower case), body.
fn raw_get(server: &GitHubServer, path_and_query: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/vnd.github+json\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status, headers) = response_head(head);
    (status, headers, body.to_string())
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn lists_longer_than_a_page_are_followed_through_the_repository_id_links_to_the_end() {
    let w = World::demo("");
    let api = format!("http://{}/api/v3", w.server.addr);
    let by_id = format!("/repositories/{REPO_ID}");

    // The server names pages as api.github.com does: by the repository's id (its JSON's `id`),
    // with `prev`, `next`, `last` and `first` in GitHub's order, the client's query kept.
    for i in 0..250 {
        w.server
            .seed_pull(&format!("someone's {i}"), &format!("feature/{i}"), "main");
    }
    let (status, _, body) = raw_get(&w.server, "/api/v3/repos/acme/gitops");
    assert_eq!(status, 200);
    let repo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(repo["id"], REPO_ID);
    let (status, headers, _) = raw_get(
        &w.server,
        "/api/v3/repos/acme/gitops/pulls?state=open&per_page=100",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header_of(&headers, "link"),
        Some(
            format!(
                "<{api}{by_id}/pulls?state=open&per_page=100&page=2>; rel=\"next\", <{api}{by_id}/pulls?state=open&per_page=100&page=3>; rel=\"last\""
            )
            .as_str()
        )
    );
    let (status, headers, body) = raw_get(
        &w.server,
        &format!("/api/v3{by_id}/pulls?state=open&per_page=100&page=2"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        100
    );
    assert_eq!(
        header_of(&headers, "link"),
        Some(
            format!(
                "<{api}{by_id}/pulls?state=open&per_page=100&page=1>; rel=\"prev\", <{api}{by_id}/pulls?state=open&per_page=100&page=3>; rel=\"next\", <{api}{by_id}/pulls?state=open&per_page=100&page=3>; rel=\"last\", <{api}{by_id}/pulls?state=open&per_page=100&page=1>; rel=\"first\""
            )
            .as_str()
        )
    );
    let (_, headers, body) = raw_get(
        &w.server,
        &format!("/api/v3{by_id}/pulls?state=open&per_page=100&page=3"),
    );
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        header_of(&headers, "link"),
        Some(
            format!(
                "<{api}{by_id}/pulls?state=open&per_page=100&page=2>; rel=\"prev\", <{api}{by_id}/pulls?state=open&per_page=100&page=1>; rel=\"first\""
            )
            .as_str()
        )
    );
    // Another repository's id is not this one.
    let (status, _, _) = raw_get(&w.server, "/api/v3/repositories/1/pulls?state=open");
    assert_eq!(status, 404);

    // Production follows those links to the end: every open pull request of the target (among
    // others') and every open drift issue, each seen once.
    let mut want = BTreeSet::new();
    for i in 0..130 {
        want.insert(w.server.seed_pull(
            &format!("drift {i}"),
            &format!("driftwarden/demo/{i:016x}"),
            "main",
        ));
        w.server
            .seed_issue(&format!("someone's issue {i}"), "", &["bug"]);
    }
    for i in 0..210 {
        want.insert(
            w.server
                .seed_issue(&format!("drift issue {i}"), "", &["drift"]),
        );
    }
    let mark = w.server.log().len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let forge = w.forge(&rt, Duration::from_secs(5));
    let items = rt
        .block_on(forge.open_items("driftwarden/demo/", "drift"))
        .unwrap();
    let seen: Vec<u64> = items.iter().map(|i| i.number).collect();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "an item seen twice");
    assert_eq!(unique, want);
    let asked: Vec<(String, String, u16)> = w
        .server
        .log_since(mark)
        .into_iter()
        .map(|l| (l.path, l.query, l.status))
        .collect();
    let pulls = "state=open&per_page=100";
    let issues = "state=open&labels=drift&per_page=100";
    assert_eq!(
        asked,
        vec![
            ("/repos/acme/gitops/pulls".into(), pulls.into(), 200),
            (format!("{by_id}/pulls"), format!("{pulls}&page=2"), 200),
            (format!("{by_id}/pulls"), format!("{pulls}&page=3"), 200),
            (format!("{by_id}/pulls"), format!("{pulls}&page=4"), 200),
            ("/repos/acme/gitops/issues".into(), issues.into(), 200),
            (format!("{by_id}/issues"), format!("{issues}&page=2"), 200),
            (format!("{by_id}/issues"), format!("{issues}&page=3"), 200),
        ]
    );

    // A whole run: the demo's pull requests, then 150 of other people's opened after them, so
    // the demo's are on the second page. The next run finds each of them there: nothing is
    // opened or written again.
    let w = World::demo("");
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for i in 0..150 {
        w.server
            .seed_pull(&format!("someone's {i}"), &format!("feature/{i}"), "main");
    }
    let mark = w.server.log().len();
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for fp in [FP_DEPLOYMENT, FP_CONFIGMAP, FP_HOTFIX, FP_SERVICE] {
        let (_, res, detail) = action(&report, fp);
        assert_eq!(res, ActionResult::Done, "{detail}");
        assert!(detail.contains("is up to date"), "{detail}");
    }
    let writes = w.server.writes_since(mark);
    assert!(writes.is_empty(), "{writes:#?}");
    let log = w.server.log_since(mark);
    assert!(
        log.iter()
            .any(|l| l.path == format!("{by_id}/pulls") && l.query.ends_with("&page=2")),
        "{log:#?}"
    );
    assert!(log.iter().all(|l| l.status == 200), "{log:#?}");
}

#[test]
fn a_next_page_link_to_another_host_is_never_followed_with_the_token() {
    let w = World::demo("");
    for i in 0..150 {
        w.server
            .seed_pull(&format!("someone's {i}"), &format!("feature/{i}"), "main");
    }
    // Another loopback server, where the tampered links point: it records every connection.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    other.set_nonblocking(true).unwrap();
    w.server.name_pages_at(&format!("http://{other_addr}"));

    let report = w.run_within(Duration::from_secs(60));
    let said = format!(
        "pull requests: GitHub API GET /repos/acme/gitops/pulls: unexpected response: the next page's link leaves http://{} (to http://{other_addr}); not followed",
        w.server.addr
    );
    assert!(
        report.errors.iter().any(|e| e.message == said),
        "{:?}",
        report.errors
    );
    let (_, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!(res, ActionResult::Failed, "{detail}");
    assert!(
        matches!(other.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a request went to the other host"
    );
    // The pull requests' first page was the last request; nothing was proposed or pushed.
    let log = w.server.log();
    let last = log.last().unwrap();
    assert_eq!(
        (last.path.as_str(), last.query.as_str()),
        ("/repos/acme/gitops/pulls", "state=open&per_page=100"),
        "{log:#?}"
    );
    assert!(log.iter().all(|l| !l.is_write()), "{log:#?}");
    assert_eq!(w.server.items().len(), 150);
    assert_eq!(w.branches(), vec!["refs/heads/main"]);
}

#[test]
fn a_secondary_limit_without_retry_after_is_not_waited_past_the_cap() {
    // GitHub asks for at least a minute when a secondary limit comes without Retry-After; this
    // run waits at most 30 s, so it gives up at once: the listing is the first request, so
    // nothing is proposed, pushed or written, and nothing more is sent.
    let w = World::demo("  max_rate_limit_wait_secs: 30");
    w.server.inject(Fault::Secondary403NoRetryAfter);
    let report = w.run_within(Duration::from_secs(45));
    let said =
        "rate limited (secondary, no Retry-After); retry in 60s exceeds the 30s this run waits";
    assert!(
        report.errors.iter().any(|e| e.message
            == format!("pull requests: GitHub API GET /repos/acme/gitops/pulls: {said}")),
        "{:?}",
        report.errors
    );
    for fp in [
        FP_DEPLOYMENT,
        FP_CONFIGMAP,
        FP_HOTFIX,
        FP_SERVICE,
        FP_SECRET,
    ] {
        let (_, res, detail) = action(&report, fp);
        assert_eq!(res, ActionResult::Failed, "{fp}: {detail}");
        assert!(
            detail.starts_with("cannot list pull requests: GitHub API GET /repos/acme/gitops/pulls: rate limited (secondary, no Retry-After)"),
            "{detail}"
        );
    }
    let log = w.server.log();
    assert_eq!(log.len(), 1, "a retry or another request: {log:#?}");
    assert_eq!(log[0].status, 403);
    assert!(w.server.items().is_empty());
    assert_eq!(w.branches(), vec!["refs/heads/main"]);

    // The limit hits the first pull request the run opens: that drift fails with the limit
    // named, and the run sends nothing more (GitHub warns that requests sent while limited may
    // get an integration banned): the other drifts fail without a request.
    let w = World::demo("  max_rate_limit_wait_secs: 30");
    w.server.inject_on(
        "POST",
        "/repos/acme/gitops/pulls",
        Fault::Secondary403NoRetryAfter,
    );
    let report = w.run_within(Duration::from_secs(45));
    let (a, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!((a, res), (Action::PullRequest, ActionResult::Failed));
    assert_eq!(
        detail,
        format!("GitHub API POST /repos/acme/gitops/pulls: {said}")
    );
    let log = w.server.log();
    let limited: Vec<_> = log.iter().filter(|l| l.status == 403).collect();
    assert_eq!(limited.len(), 1, "{log:#?}");
    let last = log.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("POST", "/repos/acme/gitops/pulls", 403),
        "a request after the limit: {log:#?}"
    );
    assert!(last.body.contains(FP_CONFIGMAP));
    for fp in [FP_DEPLOYMENT, FP_HOTFIX, FP_SERVICE, FP_SECRET] {
        let (_, res, detail) = action(&report, fp);
        assert_eq!(res, ActionResult::Failed, "{fp}: {detail}");
        assert_eq!(
            detail,
            format!(
                "not proposed this run, nothing pushed: GitHub API POST /repos/acme/gitops/pulls: {said}"
            )
        );
    }
    assert!(w.server.items().is_empty());
    // Only the limited drift's branch was pushed (before its pull request was asked for): no
    // later drift's branch waits on the remote without its pull request.
    let mut branches = w.branches();
    branches.sort();
    assert_eq!(
        branches,
        vec![
            format!(
                "refs/heads/{}",
                driftwarden::act::pull_request::branch_name("demo", FP_CONFIGMAP)
            ),
            "refs/heads/main".to_string(),
        ],
        "{branches:?}"
    );
    assert!(
        report.errors.iter().any(|e| e
            .message
            .starts_with("pull requests: resolved items not closed")),
        "{:?}",
        report.errors
    );

    // The next run (a new client) continues where this one stopped.
    let mark = w.server.log().len();
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(w.server.items().len(), 6);
    assert!(w.server.log_since(mark).iter().all(|l| l.status < 400));
}

#[test]
fn a_second_pull_request_for_the_same_head_and_base_is_never_asked_for() {
    let w = World::demo("");
    w.run();
    // The second run lists the open pull requests first and finds every one: it asks for none,
    // so GitHub never answers "already exists".
    let mark = w.server.log().len();
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let log = w.server.log_since(mark);
    assert!(
        !log.iter()
            .any(|l| l.method == "POST" && l.path == "/repos/acme/gitops/pulls"),
        "{log:#?}"
    );
    assert!(w.server.log().iter().all(|l| l.status != 422));

    // GitHub refuses a second open pull request with the same head and base, not one into
    // another base.
    let branch = format!("driftwarden/demo/{FP_DEPLOYMENT}");
    let repo = w.repo();
    let main = repo.find_commit(w.tip("main").unwrap()).unwrap();
    repo.branch("release", &main, false).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let forge = w.forge(&rt, Duration::from_secs(5));
    let pull = |base: &str| NewPull {
        title: "again".into(),
        body: String::new(),
        head: branch.clone(),
        base: base.into(),
        draft: false,
        labels: Vec::new(),
        slug: None,
    };
    let err = rt.block_on(forge.create_pull(&pull("main"))).unwrap_err();
    assert!(
        matches!(err, ForgeError::Api { status: 422, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "GitHub API POST /repos/acme/gitops/pulls: HTTP 422: Validation Failed (A pull request already exists for acme:{branch}.)"
        )
    );
    let release = rt.block_on(forge.create_pull(&pull("release"))).unwrap();
    assert_eq!(
        w.server.item(release.number).base.as_deref(),
        Some("release")
    );
}

#[test]
fn a_pull_request_opened_meanwhile_fails_that_drift_clearly_and_nothing_else_is_done_for_it() {
    // Between the run's listing and its request, a person opens a pull request from the drift's
    // branch into main: GitHub answers 422 "already exists".
    let w = World::demo("");
    w.server.inject_on(
        "POST",
        "/repos/acme/gitops/pulls",
        Fault::PullOpenedMeanwhile,
    );
    let report = w.run();
    let branch = format!("driftwarden/demo/{FP_CONFIGMAP}");
    let (a, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!((a, res), (Action::PullRequest, ActionResult::Failed));
    let said = format!(
        "GitHub API POST /repos/acme/gitops/pulls: HTTP 422: Validation Failed (A pull request already exists for acme:{branch}.)"
    );
    assert_eq!(detail, said);
    assert!(
        report.errors.iter().any(|e| e.message.ends_with(&said)),
        "{:?}",
        report.errors
    );
    // The person's pull request is left as it is, and nothing else is made for the drift.
    let theirs: Vec<_> = w
        .server
        .items()
        .into_iter()
        .filter(|i| i.head.as_deref() == Some(branch.as_str()))
        .collect();
    assert_eq!(theirs.len(), 1);
    let theirs = theirs[0].clone();
    assert_eq!(
        (theirs.title.as_str(), theirs.body.as_str()),
        ("Opened by hand", "")
    );
    assert!(theirs.labels.is_empty());
    assert!(w.server.comments_on(theirs.number).is_empty());
    let n = theirs.number.to_string();
    let writes = w.server.writes_since(0);
    assert!(
        !writes.iter().any(|l| l.path.split('/').any(|seg| seg == n)),
        "{writes:#?}"
    );
    assert!(
        !w.server
            .items()
            .iter()
            .any(|i| i.body.contains(&format!("fingerprint={FP_CONFIGMAP} "))),
        "no issue or other item for the drift"
    );
    assert_eq!(w.server.log().iter().filter(|l| l.status == 422).count(), 1);
    // The other drifts are proposed as usual.
    for fp in [FP_DEPLOYMENT, FP_HOTFIX, FP_SERVICE, FP_SECRET] {
        let (_, res, detail) = action(&report, fp);
        assert_eq!(res, ActionResult::Done, "{fp}: {detail}");
    }

    // The next run finds that pull request by its branch and takes it over; it asks for none.
    let mark = w.server.log().len();
    let report = w.run();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (_, res, detail) = action(&report, FP_CONFIGMAP);
    assert_eq!(res, ActionResult::Done, "{detail}");
    assert!(
        detail.starts_with(&format!("updated pull request #{}", theirs.number)),
        "{detail}"
    );
    let theirs = w.server.item(theirs.number);
    assert_eq!(theirs.labels, vec!["drift", "drift/risky"]);
    assert!(
        theirs
            .body
            .contains(&format!("fingerprint={FP_CONFIGMAP} "))
    );
    let log = w.server.log_since(mark);
    assert!(
        !log.iter()
            .any(|l| l.method == "POST" && l.path == "/repos/acme/gitops/pulls"),
        "{log:#?}"
    );
    assert!(log.iter().all(|l| l.status < 400), "{log:#?}");
}

#[test]
fn commit_statuses_are_set_only_on_commits_the_repository_holds() {
    let w = World::demo("");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let forge = w.forge(&rt, Duration::from_secs(5));
    let status = |sha: &str| Status {
        sha: sha.into(),
        state: StatusState::Success,
        context: "driftwarden/policy".into(),
        description: "no forbidden change".into(),
        target_url: None,
    };
    let main = w.tip("main").unwrap().to_string();
    rt.block_on(forge.set_status(&status(&main))).unwrap();
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = rt.block_on(forge.set_status(&status(unknown))).unwrap_err();
    assert!(
        matches!(err, ForgeError::Api { status: 422, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "GitHub API POST /repos/acme/gitops/statuses/{unknown}: HTTP 422: No commit found for SHA: {unknown}"
        )
    );
    let statuses = w.server.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].sha, main);
}
