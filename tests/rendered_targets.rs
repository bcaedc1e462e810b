//! Two paths of the pull-request actuator end to end, through the binary:
//!
//! - **Rendered targets**: a Git target rendered by `kustomize build` has no file holding the
//!   drifted values literally, so a risky drift becomes an issue (never a pull request or a
//!   branch) in the local forge, with the masked diff, class, reasons and why no edit exists; a
//!   second run writes nothing; a machine without `kustomize` gets a clear error and no item is
//!   closed on the strength of that failed read; a drift that goes away closes its issue.
//!   Neither helm nor kustomize is installed where these tests run: a small shell script on PATH
//!   stands in for the external tool (it prints the already-rendered overlay for `build DIR`).
//! - **Body limits**: a ConfigMap whose live value is 200 KB becomes a pull request on the test
//!   GitHub server whose body is cut to 65,536 characters at a line, its code fence and
//!   `<details>` closed, ending with the pointer to the full report (which has the whole diff),
//!   and a second run edits nothing.

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{bare_repo_of, code, commit_files, root, stderr, stdout, write};
use driftwarden::forge::truncate_body;
use driftwarden::model::{Action, ActionResult, Drift, Report};
use github_server::GitHubServer;

const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_GH_TOKEN";
const TOKEN: &str = "ghs_renderedtargets_7a1c";
const BODY_LIMIT: usize = 65_536;

/// A Secret value that exists only live: it must appear in no output and no file.
const SECRET_CANARY: &str = "RENDER-CANARY-41d9";
/// Its base64 form, as the Secret's `data` carries it.
const SECRET_CANARY_B64: &str = "UkVOREVSLUNBTkFSWS00MWQ5";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs the binary in `cwd` with `PATH` set to `path` (the stand-in renderer's directory, or
/// none) and the test token.
fn driftwarden(cwd: &Path, path: &str, args: &[&str]) -> Output {
    let out = common::bin()
        .args(args)
        .current_dir(cwd)
        .env("PATH", path)
        .env(TOKEN_ENV, TOKEN)
        // Outside a workflow: the pointer in a cut body comes from `report_url` alone.
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_SERVER_URL")
        .env_remove("GITHUB_REPOSITORY")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("GITHUB_OUTPUT")
        .output()
        .expect("the binary runs");
    assert!(
        !stderr(&out).contains("panicked"),
        "panic:\n{}",
        stderr(&out)
    );
    out
}

fn report_of(out: &Output) -> Report {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

fn drift_of<'a>(r: &'a Report, display: &str) -> &'a Drift {
    r.drifts
        .iter()
        .find(|d| d.resource.display == display)
        .unwrap_or_else(|| panic!("no drift for {display} in {:#?}", r.drifts))
}

fn action_of(d: &Drift) -> (Action, ActionResult, String) {
    let a = d.action.clone().expect("an action");
    (a.action, a.result, a.detail.unwrap_or_default())
}

/// Every file under `dir` with its bytes, sorted; the local forge's `.lock` left out.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".lock") {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The branches of a repository whose names start with `refs/heads/driftwarden/`.
fn driftwarden_branches(repo: &git2::Repository) -> Vec<String> {
    repo.references_glob("refs/heads/driftwarden/*")
        .unwrap()
        .map(|r| r.unwrap().name().unwrap().to_string())
        .collect()
}

/// Where a body's Markdown leaves blocks open, line by line as GitHub reads it: the code fence
/// open (its backtick count) and the `<details>` opened outside fences minus those closed.
/// Returns the state just before the first line for which `stop` holds (or at the end).
fn open_blocks(body: &str, stop: impl Fn(&str) -> bool) -> (Option<usize>, i64) {
    let mut fence: Option<usize> = None;
    let mut details = 0i64;
    for line in body.lines() {
        if stop(line) {
            break;
        }
        let t = line.trim_start_matches(' ');
        let indented = line.len() - t.len() > 3;
        let ticks = t.chars().take_while(|c| *c == '`').count();
        match fence {
            None if !indented && ticks >= 3 => fence = Some(ticks),
            Some(n) if !indented && ticks >= n && t.trim_end().chars().all(|c| c == '`') => {
                fence = None
            }
            Some(_) => {}
            None => {
                details += t.matches("<details>").count() as i64;
                details -= t.matches("</details>").count() as i64;
            }
        }
    }
    (fence, details)
}

// ---------------------------------------------------------------------------------------------
// Rendered targets
// ---------------------------------------------------------------------------------------------

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n  - deployment.yaml\nimages:\n  - name: ghcr.io/example/web\n    newTag: 1.4.0\nsecretGenerator:\n  - name: web-creds\n    literals: [password=git-value-not-secret]\n    options: {disableNameSuffixHash: true}\n";

const BASE_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: ghcr.io/example/web\n";

/// What `kustomize build apps/shop` prints for the files above.
const RENDERED: &str = "apiVersion: v1\ndata:\n  password: Z2l0LXZhbHVlLW5vdC1zZWNyZXQ=\nkind: Secret\nmetadata:\n  name: web-creds\n  namespace: shop\ntype: Opaque\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n    app: web\n  name: web\n  namespace: shop\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - image: ghcr.io/example/web:1.4.0\n        name: web\n";

/// The cluster: the Deployment runs a hand-set image, the Secret a hand-set password.
fn live_objects(image: &str, password_b64: &str) -> String {
    format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata:\n    name: web\n    namespace: shop\n    labels:\n      app: web\n    resourceVersion: \"4711\"\n    uid: 0b7c6a52-5d1e-4c1e-9a43-2f0d3c9b1e10\n  spec:\n    replicas: 2\n    selector:\n      matchLabels:\n        app: web\n    template:\n      metadata:\n        labels:\n          app: web\n      spec:\n        containers:\n        - image: {image}\n          name: web\n          imagePullPolicy: IfNotPresent\n  status:\n    readyReplicas: 2\n- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: web-creds\n    namespace: shop\n    resourceVersion: \"4712\"\n  type: Opaque\n  data:\n    password: {password_b64}\n"
    )
}

/// A stand-in for the `kustomize` binary: `kustomize build DIR` prints `rendered` when DIR holds
/// the overlay's files; anything else fails with a message. Every call is logged to `log`.
fn kustomize_stand_in(bin: &Path, rendered: &Path, log: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         # Stands in for kustomize: only `kustomize build DIR` is emulated.\n\
         echo \"$*\" >> '{log}'\n\
         if [ \"$#\" -eq 2 ] && [ \"$1\" = build ] && [ -f \"$2/kustomization.yaml\" ] && [ -f \"$2/deployment.yaml\" ]; then\n\
         \x20 exec cat '{rendered}'\n\
         fi\n\
         echo \"kustomize (test stand-in): only 'build DIR' with the overlay's files is emulated; got: $*\" >&2\n\
         exit 64\n",
        log = log.display(),
        rendered = rendered.display(),
    );
    let path = write(bin, "kustomize", &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_kustomize_rendered_target_gets_an_issue_with_the_body_and_no_branch() {
    let w = tempfile::tempdir().unwrap();
    let dir = w.path();

    // The GitOps repository: an overlay under apps/shop on `main`.
    let gitops = dir.join("gitops");
    let repo = git2::Repository::init(&gitops).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let commit = commit_files(
        &repo,
        &[
            ("apps/shop/kustomization.yaml", KUSTOMIZATION),
            ("apps/shop/deployment.yaml", BASE_DEPLOYMENT),
            ("README.md", "# gitops\n"),
        ],
        "shop overlay",
    );

    let bin = dir.join("bin");
    let calls = dir.join("kustomize-calls.log");
    let rendered = write(dir, "rendered.yaml", RENDERED);
    kustomize_stand_in(&bin, &rendered, &calls);
    let with_kustomize = format!("{}:/usr/bin:/bin", bin.display());
    let without_kustomize = dir.join("empty-bin");
    std::fs::create_dir_all(&without_kustomize).unwrap();
    let without_kustomize = without_kustomize.display().to_string();

    write(
        dir,
        "live/shop.yaml",
        &live_objects("ghcr.io/example/web:1.4.1-hotfix", SECRET_CANARY_B64),
    );
    let config = format!(
        "version: 1\npolicies:\n  dirs: [\"{policies}\"]\nstate_dir: state\npull_requests:\n  forge: local\n  author: {{name: drift-bot, email: drift-bot@example.com}}\ntargets:\n  - name: shop\n    cluster: prod\n    mode: recommend\n    namespace: shop\n    desired:\n      git: {{repo: \"{gitops}\", ref: main}}\n      path: apps/shop\n      kustomize: true\n    live:\n      snapshot: live\n",
        policies = root().join("policies").display(),
        gitops = gitops.display(),
    );
    write(dir, "driftwarden.yaml", &config);
    let args = ["reconcile", "-c", "driftwarden.yaml", "-o", "json"];

    // First run: the overlay is rendered by the stand-in, in a private directory.
    let out = driftwarden(dir, &with_kustomize, &args);
    assert_eq!(code(&out), 2, "stderr:\n{}", stderr(&out));
    let report = report_of(&out);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let log = std::fs::read_to_string(&calls).unwrap();
    let call = log.lines().next().unwrap();
    let overlay_dir = call
        .strip_prefix("build ")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(overlay_dir.ends_with("/apps/shop"), "{log}");
    assert!(
        !Path::new(overlay_dir).starts_with(&gitops),
        "kustomize must run in a private copy, not the repository: {log}"
    );

    // The image drift: risky, an issue because no file holds the image literally.
    let dep = drift_of(&report, "Deployment shop/web");
    let (action, result, detail) = action_of(dep);
    assert_eq!(
        (action, result),
        (Action::Issue, ActionResult::Done),
        "{detail}"
    );
    assert!(detail.starts_with("opened issue #"), "{detail}");
    assert!(detail.contains("rendered by Helm or Kustomize"), "{detail}");
    let provenance = dep.provenance.as_ref().unwrap();
    assert_eq!(
        provenance.commit.as_deref(),
        Some(commit.to_string().as_str())
    );
    assert!(
        provenance.file.contains("kustomize build apps/shop"),
        "{provenance:?}"
    );
    // The Secret: an issue too, its value masked.
    let secret = drift_of(&report, "Secret shop/web-creds");
    let (action, result, detail) = action_of(secret);
    assert_eq!(
        (action, result),
        (Action::Issue, ActionResult::Done),
        "{detail}"
    );

    let prs = dir.join("state/prs");
    let state: serde_json::Value =
        serde_json::from_str(&common::read(&prs.join("state.json"))).unwrap();
    let items = state["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{state:#}");
    for item in items {
        assert_eq!(item["kind"], "issue", "{item:#}");
        assert_eq!(item["state"], "open", "{item:#}");
        assert!(
            item.get("branch").is_none(),
            "an issue has no branch: {item:#}"
        );
        assert_eq!(
            item["labels"],
            serde_json::json!(["drift", "drift/risky"]),
            "{item:#}"
        );
    }

    let body = common::read(&prs.join(format!("shop/{}.md", dep.fingerprint)));
    for want in [
        format!(
            "<!-- driftwarden:item target=shop fingerprint={} changes=",
            dep.fingerprint
        ),
        "## Risky drift: `Deployment shop/web`".to_string(),
        "No Git change can adopt it honestly: the target's manifests are rendered by Helm or Kustomize: no file holds these values literally, so the chart's values or the overlay must change.".to_string(),
        "- **Class:** risky: container image changed".to_string(),
        "- **Rules:** `kubernetes.image`".to_string(),
        "kustomize build apps/shop (rendered)".to_string(),
        "```diff\n--- desired (Git)\n+++ live".to_string(),
        "-/spec/template/spec/containers/0/image: ghcr.io/example/web:1.4.0".to_string(),
        "+/spec/template/spec/containers/0/image: ghcr.io/example/web:1.4.1-hotfix".to_string(),
    ] {
        assert!(body.contains(&want), "missing {want:?} in\n{body}");
    }
    assert!(
        !body.contains("**Merge**"),
        "an issue offers nothing to merge:\n{body}"
    );
    assert!(body.chars().count() <= BODY_LIMIT);
    let secret_body = common::read(&prs.join(format!("shop/{}.md", secret.fingerprint)));
    assert!(
        secret_body.contains("/data/password: (masked)"),
        "{secret_body}"
    );
    assert!(
        secret_body.contains("never written to Git"),
        "{secret_body}"
    );

    // No branch and no patch anywhere: not in the forge's repository, not in the source.
    for fp in [&dep.fingerprint, &secret.fingerprint] {
        assert!(!prs.join(format!("shop/{fp}.patch")).exists());
    }
    let forge_repo = git2::Repository::open_bare(prs.join("repo.git")).unwrap();
    assert_eq!(driftwarden_branches(&forge_repo), Vec::<String>::new());
    assert_eq!(driftwarden_branches(&repo), Vec::<String>::new());
    assert_eq!(repo.head().unwrap().target(), Some(commit));

    // No secret value in the output or any file the run wrote.
    for (p, bytes) in files_under(&prs)
        .into_iter()
        .chain([(PathBuf::from("stdout"), out.stdout.clone())])
        .chain([(PathBuf::from("stderr"), out.stderr.clone())])
    {
        let text = String::from_utf8_lossy(&bytes);
        for canary in [SECRET_CANARY, SECRET_CANARY_B64] {
            assert!(!text.contains(canary), "{} leaks {canary}", p.display());
        }
    }

    // Second run, nothing changed: every item up to date, not one byte written.
    let before = files_under(&prs);
    let out = driftwarden(dir, &with_kustomize, &args);
    assert_eq!(code(&out), 2, "stderr:\n{}", stderr(&out));
    let report = report_of(&out);
    for display in ["Deployment shop/web", "Secret shop/web-creds"] {
        let (action, result, detail) = action_of(drift_of(&report, display));
        assert_eq!((action, result), (Action::Issue, ActionResult::Done));
        assert!(detail.contains("is up to date"), "{display}: {detail}");
    }
    assert_eq!(
        files_under(&prs),
        before,
        "the second run wrote to the forge"
    );

    // No kustomize on this machine: a clear error naming the binary, the read is partial, and
    // the open issues are not closed on the strength of it.
    let out = driftwarden(dir, &without_kustomize, &args);
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 1, "stdout:\n{out_text}\nstderr:\n{err_text}");
    let report = report_of(&out);
    assert!(report.summary.partial, "{:?}", report.summary);
    let errors = serde_json::to_string(&report.errors).unwrap();
    assert!(
        errors.contains("`kustomize` was not found on PATH"),
        "{errors}\nstderr:\n{err_text}"
    );
    assert_eq!(files_under(&prs), before, "a failed read changed the forge");

    // The drift is gone (live set back): both issues are closed with a comment.
    write(
        dir,
        "live/shop.yaml",
        &live_objects("ghcr.io/example/web:1.4.0", "Z2l0LXZhbHVlLW5vdC1zZWNyZXQ="),
    );
    let out = driftwarden(dir, &with_kustomize, &args);
    assert_eq!(code(&out), 0, "stderr:\n{}", stderr(&out));
    let state: serde_json::Value =
        serde_json::from_str(&common::read(&prs.join("state.json"))).unwrap();
    let items = state["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{state:#}");
    for item in items {
        assert_eq!(item["state"], "closed", "{item:#}");
        assert!(!item["comments"].as_array().unwrap().is_empty(), "{item:#}");
    }
    assert_eq!(driftwarden_branches(&forge_repo), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Body limits
// ---------------------------------------------------------------------------------------------

/// 34 shell snippets in fenced blocks, one long line each: about 204 KB on 103 lines (few
/// enough for the report's whole diff), with code fences inside, which make the body's own
/// diff fence four backticks long.
fn huge_runbook() -> String {
    let mut s = String::from("# Runbook");
    for i in 0..34 {
        s.push_str(&format!(
            "\n```sh\necho step-{i:03} {}\n```",
            "abcdefghij".repeat(600)
        ));
    }
    s
}

#[test]
fn a_huge_drift_gets_a_body_cut_to_githubs_limit_pointing_to_the_full_report() {
    let w = tempfile::tempdir().unwrap();
    let dir = w.path();
    let desired = dir.join("desired");
    write(
        &desired,
        "shop/runbook.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: runbook\n  namespace: shop\ndata:\n  runbook.md: see the wiki\n",
    );
    let bare = dir.join("remote.git");
    bare_repo_of(&desired, &bare);
    let runbook = huge_runbook();
    assert!(runbook.len() > 200_000);
    let live = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "runbook", "namespace": "shop", "resourceVersion": "90210"},
        "data": {"runbook.md": runbook},
    });
    write(dir, "live/runbook.json", &live.to_string());
    let server = GitHubServer::start("acme", "gitops", TOKEN, &bare);
    let report_file = dir.join("report.md");
    let report_url = format!("file://{}", report_file.display());
    let config = format!(
        "version: 1\npolicies:\n  dirs: [\"{policies}\"]\noutput:\n  format: markdown\n  file: report.md\nstate_dir: state\npull_requests:\n  forge: github\n  repo: acme/gitops\n  api_url: \"{api}/api/v3\"\n  token_env: {TOKEN_ENV}\n  write_interval_ms: 0\n  report_url: \"{report_url}\"\ntargets:\n  - name: shop\n    cluster: prod\n    mode: recommend\n    namespace: shop\n    desired:\n      git: {{repo: \"file://{bare}\", ref: main}}\n    live:\n      snapshot: live\n",
        policies = root().join("policies").display(),
        api = server.url(),
        bare = bare.display(),
    );
    write(dir, "driftwarden.yaml", &config);
    let path = std::env::var("PATH").unwrap_or_default();
    let args = ["reconcile", "-c", "driftwarden.yaml"];

    let out = driftwarden(dir, &path, &args);
    assert_eq!(code(&out), 2, "stderr:\n{}", stderr(&out));
    let items = server.items();
    assert_eq!(items.len(), 1, "{items:#?}");
    let pr = &items[0];
    assert!(pr.is_pr, "a ConfigMap's value can be adopted: {pr:#?}");
    let branch = pr.head.clone().unwrap();

    // The body GitHub received: within the limit, cut at a line, its blocks closed, the marker
    // first and the pointer to the full report last.
    let body = &pr.body;
    let chars = body.chars().count();
    assert!(chars <= BODY_LIMIT, "{chars} characters");
    assert!(chars > BODY_LIMIT - 8_000, "cut far too early: {chars}");
    assert!(
        body.starts_with("<!-- driftwarden:item target=shop fingerprint="),
        "the marker is how the item is found again"
    );
    let pointer = format!("The full report: {report_url}");
    assert!(
        body.trim_end().ends_with(&pointer),
        "no pointer at the end:\n{}",
        &body[body.len().saturating_sub(400)..]
    );
    assert!(
        body.contains("**Truncated**: this text exceeded 65536 characters."),
        "{}",
        &body[body.len().saturating_sub(400)..]
    );
    assert!(
        body.contains("````diff\n--- desired (Git)\n+++ live"),
        "the diff is in the body, fenced with four backticks"
    );
    assert!(
        body.contains("+  echo step-000 "),
        "the diff starts in the body"
    );
    assert!(!body.contains("echo step-033"), "the diff's end cannot fit");
    let (fence, details) = open_blocks(body, |l| l.starts_with("**Truncated**"));
    assert_eq!(
        fence,
        None,
        "the pointer is swallowed by an open code fence:\n{}",
        &body[body.len().saturating_sub(400)..]
    );
    assert_eq!(details, 0, "a <details> is left open before the pointer");

    // The report it points to has the whole diff.
    let report = common::read(&report_file);
    for i in 0..34 {
        let line = format!("+  echo step-{i:03} {}\n", "abcdefghij".repeat(600));
        assert!(report.contains(&line), "the report lacks step {i:03}");
    }
    assert!(!report.contains("more diff lines not shown"));

    // The branch adopts the whole value.
    let repo = git2::Repository::open_bare(&bare).unwrap();
    let tip = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let entry = tip
        .tree()
        .unwrap()
        .get_path(Path::new("shop/runbook.yaml"))
        .unwrap();
    let adopted =
        String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap();
    assert!(adopted.contains("echo step-033"), "the adoption is cut too");

    // Second run: the cut body is the same body, so nothing is written.
    let mark = server.log().len();
    let out = driftwarden(dir, &path, &args);
    assert_eq!(code(&out), 2, "stderr:\n{}", stderr(&out));
    let writes = server.writes_since(mark);
    assert!(writes.is_empty(), "{writes:#?}");
    assert_eq!(
        repo.find_reference(&format!("refs/heads/{branch}"))
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id(),
        tip.id()
    );
}

/// The cut against every alignment of the lines with the limit: never one character over, the
/// pointer never inside a code fence, whatever length the fence has.
#[test]
fn a_cut_body_never_exceeds_the_limit_and_never_swallows_the_pointer() {
    let pointer = "The full report: https://example.com/r/1";
    for fence in ["```", "````", "`````"] {
        for pad in 0..120 {
            let mut body = format!(
                "<!-- marker -->\n## Drift\n\n<details>\n<summary>x</summary>\n\n{fence}diff\n{}\n",
                "p".repeat(pad)
            );
            for i in 0..1_000 {
                body.push_str(&format!("+  ```line {i:04} {}\n", "z".repeat(90)));
            }
            body.push_str(&format!("{fence}\n\n</details>\n"));
            let out = truncate_body(&body, BODY_LIMIT, pointer);
            let n = out.chars().count();
            assert!(n <= BODY_LIMIT, "fence {fence}, pad {pad}: {n} characters");
            assert!(
                out.ends_with(&format!("{pointer}\n")),
                "fence {fence}, pad {pad}"
            );
            let (open, details) = open_blocks(&out, |l| l.starts_with("**Truncated**"));
            assert_eq!(
                open, None,
                "fence {fence}, pad {pad}: the pointer is in code"
            );
            assert_eq!(details, 0, "fence {fence}, pad {pad}: <details> left open");
        }
    }
}

/// An overlay that builds on a base outside the target's directory (`resources: [../../base]`,
/// the usual Kustomize layout, and this repository's own deploy/overlays/sharded) renders: the
/// renderer gets the whole commit, while the target's own files still pass its `exclude` globs.
#[test]
fn an_overlay_reaching_a_base_outside_the_target_renders() {
    let w = tempfile::tempdir().unwrap();
    let dir = w.path();
    let gitops = dir.join("gitops");
    let repo = git2::Repository::init(&gitops).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    commit_files(
        &repo,
        &[
            (
                "apps/shop/base/kustomization.yaml",
                "resources:\n  - deployment.yaml\n",
            ),
            ("apps/shop/base/deployment.yaml", BASE_DEPLOYMENT),
            (
                "apps/shop/overlays/prod/kustomization.yaml",
                "namespace: shop\nresources:\n  - ../../base\n",
            ),
            (
                "apps/shop/overlays/prod/notes.txt",
                "excluded by the target\n",
            ),
        ],
        "base and overlay",
    );

    // The stand-in renders only when the overlay, its base and the base's files are all there,
    // and the excluded file is not.
    let bin = dir.join("bin");
    let rendered = write(dir, "rendered.yaml", RENDERED);
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = build ] && [ -f \"$2/kustomization.yaml\" ] \
         && [ -f \"$2/../../base/kustomization.yaml\" ] && [ -f \"$2/../../base/deployment.yaml\" ] \
         && [ ! -e \"$2/notes.txt\" ]; then\n\
         \x20 exec cat '{rendered}'\n\
         fi\n\
         echo \"kustomize (test stand-in): accumulating resources: ../../base: no such directory\" >&2\n\
         exit 1\n",
        rendered = rendered.display(),
    );
    let path = write(&bin, "kustomize", &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let with_kustomize = format!("{}:/usr/bin:/bin", bin.display());

    write(
        dir,
        "live/shop.yaml",
        &live_objects("ghcr.io/example/web:1.4.0", "Z2l0LXZhbHVlLW5vdC1zZWNyZXQ="),
    );
    let config = format!(
        "version: 1\npolicies:\n  dirs: [\"{policies}\"]\nstate_dir: state\ntargets:\n  - name: shop\n    cluster: prod\n    namespace: shop\n    desired:\n      git: {{repo: \"{gitops}\", ref: main}}\n      path: apps/shop/overlays/prod\n      exclude: [\"*.txt\"]\n      kustomize: true\n    live:\n      snapshot: live\n",
        policies = root().join("policies").display(),
        gitops = gitops.display(),
    );
    write(dir, "driftwarden.yaml", &config);
    let out = driftwarden(
        dir,
        &with_kustomize,
        &["diff", "-c", "driftwarden.yaml", "-o", "json"],
    );
    assert_eq!(
        code(&out),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report = report_of(&out);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.summary.resources_checked, 2, "{}", stdout(&out));
    assert_eq!(report.summary.drifted, 0, "{}", stdout(&out));
}
