//! `driftwarden pr-check`, the pull-request bot, through the binary: the changes between two refs
//! of a real Git repository (and a Terraform plan) are classified with the default policies; a
//! forbidden change fails (exit 2, status `failure`), a harmless one passes; one sticky comment
//! per pull request, updated in place; the `pull_request` event drives it in a workflow; secrets
//! stay masked.

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use common::{root, text};
use github_server::GitHubServer;

const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_GH_TOKEN";
const TOKEN: &str = "ghs_prcheck_token_1234";
const MARKER: &str = "<!-- driftwarden:pr-check -->";

const DEPLOYMENT: &str = "# The storefront.\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    team: storefront\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: web:1\n";

/// A repository with `k8s/web.yaml` on `main`; returns it and its first commit.
fn repo() -> (tempfile::TempDir, git2::Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    commit(&repo, dir.path(), &[("k8s/web.yaml", DEPLOYMENT)], "base");
    (dir, repo)
}

/// [`repo`] with `files` committed on top (message `msg`); returns it, the base commit and the new
/// one.
fn repo_changed(
    files: &[(&str, &str)],
    msg: &str,
) -> (tempfile::TempDir, git2::Repository, String, String) {
    let (dir, repo) = repo();
    let base = head_id(&repo);
    let head = commit(&repo, dir.path(), files, msg);
    (dir, repo, base, head)
}

/// Writes files and commits them on HEAD; returns the commit id.
fn commit(repo: &git2::Repository, dir: &Path, files: &[(&str, &str)], msg: &str) -> String {
    for (p, text) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Dev", "dev@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
        .unwrap()
        .to_string()
}

/// The id of the commit HEAD points at.
fn head_id(repo: &git2::Repository) -> String {
    repo.head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string()
}

/// The run's stdout, once it is checked that the run exited with `code`.
fn stdout_exiting(out: &Output, code: i32) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

fn run<S: AsRef<OsStr>>(cwd: &Path, args: &[S], env: &[(&str, String)]) -> Output {
    let mut c = common::bin();
    c.args(args)
        .current_dir(cwd)
        .env_remove("GITHUB_EVENT_PATH")
        .env_remove("GITHUB_REPOSITORY")
        .env_remove("GITHUB_API_URL")
        .env(TOKEN_ENV, TOKEN);
    for (k, v) in env {
        c.env(k, v);
    }
    common::run(&mut c)
}

struct Bot {
    server: GitHubServer,
    _bare: tempfile::TempDir,
    pr: u64,
}

fn bot() -> Bot {
    let bare = tempfile::tempdir().unwrap();
    git2::Repository::init_bare(bare.path()).unwrap();
    let server = GitHubServer::start("acme", "gitops", TOKEN, bare.path());
    let pr = server.seed_pull("Tune the storefront", "tune", "main");
    Bot {
        server,
        _bare: bare,
        pr,
    }
}

/// `pr-check` on the repository in `dir` with the default policies, for `bot`'s pull request.
fn check_args(dir: &Path, bot: &Bot) -> Vec<String> {
    let (repo, policies, url, pr) = (
        dir.display().to_string(),
        root().join("policies").display().to_string(),
        bot.server.url(),
        bot.pr.to_string(),
    );
    [
        "pr-check",
        "--repo",
        repo.as_str(),
        "--policies",
        policies.as_str(),
        "--github-repo",
        "acme/gitops",
        "--api-url",
        url.as_str(),
        "--token-env",
        TOKEN_ENV,
        "--pr",
        pr.as_str(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_change_opening_port_22_to_the_world_fails_the_check() {
    let (dir, _repo) = repo();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({
            "format_version": "1.2",
            "terraform_version": "1.9.8",
            "resource_changes": [{
                "address": "aws_security_group.bastion",
                "mode": "managed",
                "type": "aws_security_group",
                "name": "bastion",
                "change": {
                    "actions": ["update"],
                    "before": {"name": "bastion", "ingress": [
                        {"cidr_blocks": ["10.0.0.0/8"], "from_port": 22, "to_port": 22, "protocol": "tcp", "ipv6_cidr_blocks": [], "description": "vpn"}
                    ]},
                    "after": {"name": "bastion", "ingress": [
                        {"cidr_blocks": ["10.0.0.0/8"], "from_port": 22, "to_port": 22, "protocol": "tcp", "ipv6_cidr_blocks": [], "description": "vpn"},
                        {"cidr_blocks": ["0.0.0.0/0"], "from_port": 22, "to_port": 22, "protocol": "tcp", "ipv6_cidr_blocks": [], "description": "debug"}
                    ]}
                }
            }]
        })
        .to_string(),
    )
    .unwrap();
    let b = bot();
    let mut args = check_args(dir.path(), &b);
    args.extend(["--base", "HEAD", "--head", "HEAD", "--plan"].map(String::from));
    args.push(plan.display().to_string());
    let out = run(dir.path(), &args, &[]);
    let stdout = stdout_exiting(&out, 2);
    assert!(
        stdout.contains("[forbidden] aws_security_group.bastion: Modified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("security group ingress open to 0.0.0.0/0 on port 22/tcp"),
        "{stdout}"
    );

    let statuses = b.server.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, "failure");
    assert_eq!(statuses[0].context, "driftwarden/policy");
    let head = head_id(&git2::Repository::open(dir.path()).unwrap());
    assert_eq!(statuses[0].sha, head);
    let comments = b.server.comments_on(b.pr);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].starts_with(MARKER));
    assert!(
        comments[0].contains(
            "**driftwarden: 1 forbidden change** — this pull request fails the policy check."
        ),
        "{}",
        comments[0]
    );
}

#[test]
fn a_change_to_labels_only_passes_and_the_comment_stays_one() {
    let (dir, repo, base, _) = repo_changed(
        &[(
            "k8s/web.yaml",
            &DEPLOYMENT.replace("team: storefront", "team: sre"),
        )],
        "relabel",
    );
    let b = bot();
    let mut args = check_args(dir.path(), &b);
    args.extend(["--base", base.as_str(), "--head", "HEAD"].map(String::from));
    let out = run(dir.path(), &args, &[]);
    let stdout = stdout_exiting(&out, 0);
    assert!(
        stdout.contains("[safe] Deployment shop/web: Modified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-/metadata/labels/team: storefront\n  +/metadata/labels/team: sre"),
        "{stdout}"
    );
    assert_eq!(b.server.statuses()[0].state, "success");
    let comments = b.server.comments_on(b.pr);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].contains("**driftwarden: no forbidden change** — the policy check passes.")
    );

    // Run again: the sticky comment is neither duplicated nor rewritten.
    let mark = b.server.log().len();
    let out = run(dir.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(0));
    let writes = b.server.writes_since(mark);
    assert!(
        writes.iter().all(|w| w.path.contains("/statuses/")),
        "{writes:#?}"
    );
    assert_eq!(b.server.comments_on(b.pr).len(), 1);

    // A new push makes a container privileged: the same comment is updated, the check fails.
    commit(
        &repo,
        dir.path(),
        &[(
            "k8s/web.yaml",
            &DEPLOYMENT.replace("team: storefront", "team: sre").replace(
                "image: web:1\n",
                "image: web:1\n          securityContext:\n            privileged: true\n",
            ),
        )],
        "debug",
    );
    let mark = b.server.log().len();
    let out = run(dir.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("a container was made privileged"));
    let writes = b.server.writes_since(mark);
    assert!(
        writes
            .iter()
            .any(|w| w.method == "PATCH" && w.path.contains("/issues/comments/")),
        "{writes:#?}"
    );
    let comments = b.server.comments_on(b.pr);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].contains("fails the policy check"));
    assert_eq!(b.server.statuses().last().unwrap().state, "failure");
}

#[test]
fn in_a_workflow_the_pull_request_event_drives_it() {
    // A new object and a Secret whose value changes: the Secret stays masked everywhere.
    let (dir, _repo, base, head) = repo_changed(
        &[
            (
                "k8s/cache.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: cache\n  namespace: shop\nspec:\n  ports:\n    - port: 6379\n",
            ),
            (
                "k8s/secret.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: shop\nstringData:\n  KEY: CANARY-PRCHECK-4410\n",
            ),
        ],
        "cache",
    );
    let b = bot();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        serde_json::json!({
            "action": "synchronize",
            "number": b.pr,
            "pull_request": {
                "number": b.pr,
                "html_url": "https://github.com/acme/gitops/pull/1",
                "draft": false,
                "base": {"ref": "main", "sha": base, "repo": {"full_name": "acme/gitops"}},
                "head": {"ref": "tune", "sha": head, "repo": {"full_name": "acme/gitops"}}
            },
            "repository": {"full_name": "acme/gitops"}
        })
        .to_string(),
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "pr-check",
            "--policies",
            root().join("policies").to_str().unwrap(),
            "--token-env",
            TOKEN_ENV,
            "-o",
            "json",
        ],
        &[
            ("GITHUB_EVENT_PATH", event.display().to_string()),
            ("GITHUB_REPOSITORY", "acme/gitops".into()),
            ("GITHUB_API_URL", b.server.url()),
        ],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: driftwarden::model::Report = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.command, "pr-check");
    let shown: Vec<String> = report
        .drifts
        .iter()
        .map(|d| format!("{} {}", d.resource.display, d.kind))
        .collect();
    assert_eq!(
        shown,
        vec!["Secret shop/api Unmanaged", "Service shop/cache Unmanaged"]
    );
    assert!(
        stderr.contains("pr-check: posted the comment on acme/gitops#"),
        "{stderr}"
    );
    assert_eq!(b.server.statuses()[0].sha, head);
    for t in [
        stdout.clone(),
        stderr,
        b.server.comments_on(b.pr).join("\n"),
    ] {
        assert!(!t.contains("CANARY-PRCHECK-4410"), "secret leaked: {t}");
    }
    assert!(b.server.comments_on(b.pr)[0].contains("(masked)"));
}

#[test]
fn locally_it_prints_the_report_and_posts_nothing() {
    let (dir, _repo, base, _) = repo_changed(
        &[(
            "k8s/web.yaml",
            &DEPLOYMENT.replace(
                "    spec:\n      containers:",
                "    spec:\n      hostNetwork: true\n      containers:",
            ),
        )],
        "host network",
    );
    let out = run(
        dir.path(),
        &[
            "pr-check",
            "--base",
            &base,
            "--head",
            "HEAD",
            "--policies",
            root().join("policies").to_str().unwrap(),
            "-o",
            "markdown",
        ],
        &[],
    );
    let stdout = stdout_exiting(&out, 2);
    assert!(stdout.contains("hostNetwork was enabled"), "{stdout}");
    // A ref that is not there is bad input, with the reason.
    let out = run(
        dir.path(),
        &["pr-check", "--base", "nope", "--head", "HEAD"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[test]
fn adding_a_service_or_network_policy_that_opens_ssh_to_the_world_fails_the_check() {
    let (dir, repo) = repo();
    // Git already has a NetworkPolicy admitting SSH from the VPN only.
    let vpn = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: bastion\n  namespace: shop\nspec:\n  podSelector:\n    matchLabels: {app: bastion}\n  ingress:\n    - from:\n        - ipBlock: {cidr: 10.8.0.0/16}\n      ports:\n        - {protocol: TCP, port: 22}\n";
    let base = commit(&repo, dir.path(), &[("k8s/netpol.yaml", vpn)], "vpn ssh");
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: bastion\n  namespace: shop\nspec:\n  type: LoadBalancer\n  selector: {app: bastion}\n  ports:\n    - name: ssh\n      port: 2222\n      targetPort: 22\n";
    let world = vpn.replace(
        "        - ipBlock: {cidr: 10.8.0.0/16}\n",
        "        - ipBlock: {cidr: 10.8.0.0/16}\n        - ipBlock: {cidr: 0.0.0.0/0}\n",
    );
    commit(
        &repo,
        dir.path(),
        &[("k8s/bastion.yaml", service), ("k8s/netpol.yaml", &world)],
        "open the bastion",
    );
    let policies = root().join("policies");
    let check = |base: &str| {
        run(
            dir.path(),
            &[
                "pr-check",
                "--base",
                base,
                "--head",
                "HEAD",
                "--policies",
                policies.to_str().unwrap(),
                "-o",
                "json",
            ],
            &[],
        )
    };
    let out = check(&base);
    let stdout = stdout_exiting(&out, 2);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let verdicts: Vec<(String, String, String, Vec<String>)> = report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            };
            (
                format!(
                    "{} {}",
                    d["resource"]["display"].as_str().unwrap(),
                    d["kind"].as_str().unwrap()
                ),
                d["verdict"]["class"].as_str().unwrap().to_string(),
                strings(&d["verdict"]["reasons"]).join("; "),
                strings(&d["verdict"]["rules"]),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (
                "Service shop/bastion Unmanaged".to_string(),
                "forbidden".to_string(),
                "Service exposes port 22 to the internet (type LoadBalancer, no loadBalancerSourceRanges)"
                    .to_string(),
                vec!["kubernetes_security.public_service".to_string()],
            ),
            (
                "NetworkPolicy shop/bastion Modified".to_string(),
                "forbidden".to_string(),
                "NetworkPolicy admits port 22 from 0.0.0.0/0".to_string(),
                vec!["kubernetes_security.public_network_policy".to_string()],
            ),
        ],
        "{stdout}"
    );

    // Restricting the load balancer and dropping the world rule passes (risky at most).
    commit(
        &repo,
        dir.path(),
        &[
            (
                "k8s/bastion.yaml",
                &format!("{service}  loadBalancerSourceRanges: [203.0.113.0/24]\n"),
            ),
            ("k8s/netpol.yaml", vpn),
        ],
        "restrict the bastion",
    );
    let out = check(&base);
    let stdout = stdout_exiting(&out, 0);
    assert!(!stdout.contains("\"forbidden\""), "{stdout}");
}
