//! Delivery: the binary under a simulated GitHub Actions runner, action.yml's inputs
//! and outputs, the deploy/ manifests as Kubernetes types and their RBAC against the verbs the
//! code sends, SARIF against the 2.1.0 schema, JUnit XML, sharding and `report merge`, and
//! Prometheus metrics (file and Pushgateway).

#[path = "support/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{Value, json};

use common::{code, read, root, run, stderr, stdout, write};
use driftwarden::live::kube_verbs::{
    KUBE_DISCOVERY_URLS, KUBE_LEASE_VERBS, KUBE_READ_VERBS, KUBE_RUN_VERBS, KUBE_VERBS,
    KUBE_WATCH_VERBS, KUBE_WRITE_VERBS,
};

/// The binary with a clean environment for what these tests control.
fn bin() -> Command {
    let mut c = common::bin();
    for v in [
        "DRIFTWARDEN_LOG",
        "GITHUB_ACTIONS",
        "GITHUB_OUTPUT",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_EVENT_PATH",
        "GITHUB_EVENT_NAME",
        "GITHUB_WORKSPACE",
        "GITHUB_TOKEN",
        "JOB_COMPLETION_INDEX",
        "JOB_COMPLETIONS",
    ] {
        c.env_remove(v);
    }
    c
}

fn yaml_docs(text: &str) -> Vec<Value> {
    driftwarden::yaml::parse_documents(text)
        .expect("valid YAML")
        .iter()
        .map(|d| d.root.to_json())
        .filter(|v| !v.is_null())
        .collect()
}

/// The demo's JSON report (`reconcile`, embedded config), for comparing other outputs with.
fn demo_report(command: &str) -> Value {
    let out = run(bin().args([command, "-o", "json"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Parses `$GITHUB_OUTPUT` as the runner does: `name=value`, or `name<<DELIM` ... `DELIM`.
fn parse_output_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                let l = lines.next().expect("heredoc closed");
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        } else {
            let (name, value) = line.split_once('=').expect("name=value");
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

/// Decodes a workflow command line: (command, properties, message).
fn parse_command(line: &str) -> Option<(String, BTreeMap<String, String>, String)> {
    let rest = line.strip_prefix("::")?;
    let (head, msg) = rest.split_once("::")?;
    let (name, props) = head.split_once(' ').unwrap_or((head, ""));
    let unescape = |s: &str| {
        s.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    };
    let props = props
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), unescape(v))
        })
        .collect();
    Some((name.to_string(), props, unescape(msg)))
}

struct ActionsFiles {
    dir: tempfile::TempDir,
    output: PathBuf,
    summary: PathBuf,
    event: PathBuf,
}

impl ActionsFiles {
    fn new(event: &Value) -> ActionsFiles {
        let dir = tempfile::tempdir().unwrap();
        let output = write(dir.path(), "runner/set_output", "");
        let summary = write(dir.path(), "runner/step_summary", "");
        let event = write(dir.path(), "runner/event.json", &event.to_string());
        ActionsFiles {
            dir,
            output,
            summary,
            event,
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn apply(&self, c: &mut Command, event_name: &str) {
        std::fs::create_dir_all(self.workspace()).unwrap();
        c.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &self.output)
            .env("GITHUB_STEP_SUMMARY", &self.summary)
            .env("GITHUB_EVENT_PATH", &self.event)
            .env("GITHUB_EVENT_NAME", event_name)
            .env("GITHUB_WORKSPACE", self.workspace());
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub Actions

#[test]
fn under_actions_the_run_writes_summary_outputs_and_annotations() {
    let files = ActionsFiles::new(&json!({"schedule": "*/30 * * * *"}));
    let report_file = files.workspace().join("reports/drift.json");
    std::fs::create_dir_all(report_file.parent().unwrap()).unwrap();
    let mut cmd = bin();
    files.apply(&mut cmd, "schedule");
    let out = run(cmd.args(["reconcile", "--json-report"]).arg(&report_file));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&read(&report_file)).unwrap();
    let summary = &report["summary"];

    // Outputs: every one set, the counts those of the report, the path relative to the workspace.
    let outputs = parse_output_file(&read(&files.output));
    for name in driftwarden::report::github_actions::OUTPUTS {
        assert!(
            outputs.contains_key(*name),
            "output {name} not set: {outputs:?}"
        );
    }
    assert_eq!(outputs["drifted"], summary["drifted"].to_string());
    for class in ["safe", "risky", "forbidden"] {
        let want = summary["by_class"]
            .get(class)
            .map_or(0, |v| v.as_u64().unwrap());
        assert_eq!(outputs[class], want.to_string(), "{class}");
    }
    assert_eq!(
        outputs["resources-checked"],
        summary["resources_checked"].to_string()
    );
    assert_eq!(outputs["in-sync"], summary["in_sync"].to_string());
    assert_eq!(
        outputs["compliance-score"],
        summary["compliance_score"].to_string()
    );
    assert_eq!(outputs["report-path"], "reports/drift.json");
    assert_eq!(
        outputs["pr-urls"], "",
        "recommend mode only plans pull requests"
    );

    // Step summary: the Markdown report.
    let md = read(&files.summary);
    assert!(md.starts_with("## driftwarden reconcile:"), "{md}");
    for d in report["drifts"].as_array().unwrap() {
        let display = d["resource"]["display"].as_str().unwrap();
        assert!(md.contains(display), "{display} missing from the summary");
    }

    // Annotations on stderr: one per drift, at its file and line, level from its class.
    let err = stderr(&out);
    let annotations: Vec<_> = err.lines().filter_map(parse_command).collect();
    let drifts = report["drifts"].as_array().unwrap();
    assert_eq!(annotations.len(), drifts.len(), "{err}");
    for (d, (level, props, msg)) in drifts.iter().zip(&annotations) {
        let want = match d["verdict"]["class"].as_str() {
            Some("forbidden") => "error",
            Some("safe") => "notice",
            _ => "warning",
        };
        assert_eq!(level, want, "{d}");
        match d.get("provenance") {
            Some(p) => {
                assert_eq!(props["file"], p["file"].as_str().unwrap());
                assert_eq!(props["line"], p["line"].to_string());
            }
            None => assert!(!props.contains_key("file")),
        }
        assert!(props["title"].contains(d["resource"]["display"].as_str().unwrap()));
        assert!(msg.contains("drifted from Git"), "{msg}");
    }
    // stdout still carries the report alone: no workflow command mixed into it.
    assert!(!stdout(&out).contains("::warning"));

    // Outside Actions the same run touches none of those files.
    let quiet = ActionsFiles::new(&json!({}));
    let out = run(bin()
        .env("GITHUB_OUTPUT", &quiet.output)
        .env("GITHUB_STEP_SUMMARY", &quiet.summary)
        .args(["diff"]));
    assert_eq!(code(&out), 2);
    assert_eq!(read(&quiet.output), "");
    assert_eq!(read(&quiet.summary), "");
    assert!(!stderr(&out).contains("::warning"));
}

#[test]
fn every_action_input_is_passed_on_and_every_output_is_set() {
    // The container variant; the default action.yml is checked by
    // `the_default_action_runs_the_installed_binary_with_every_input`.
    let action = yaml_docs(&read(&root().join("docker/action.yml"))).remove(0);
    assert_eq!(action["runs"]["using"], "docker");
    // The repository's Dockerfile, built with the repository root as its context.
    assert_eq!(action["runs"]["image"], "../Dockerfile");
    assert!(root().join("docker").join("../Dockerfile").is_file());
    let inputs = action["inputs"].as_object().unwrap();
    let outputs = action["outputs"].as_object().unwrap();
    let args: Vec<String> = action["runs"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let env: BTreeMap<String, String> = action["runs"]["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    for required in [
        "command",
        "config",
        "mode",
        "github-token",
        "working-directory",
        "args",
    ] {
        assert!(inputs.contains_key(required), "input {required} missing");
    }
    // Each input reaches the container exactly once, in args or env.
    for name in inputs.keys() {
        let expr = format!("${{{{ inputs.{name} }}}}");
        let uses = args.iter().filter(|a| a.contains(&expr)).count()
            + env.values().filter(|v| v.contains(&expr)).count();
        assert_eq!(uses, 1, "input {name} is passed on {uses} times");
    }
    assert_eq!(env["GITHUB_TOKEN"], "${{ inputs.github-token }}");
    // Each `--flag=` the action passes is a flag the entrypoint knows.
    assert_eq!(args[0], "github-action");
    let help = stdout(&run(bin().args(["github-action", "--help"])));
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "{flag} is not a github-action flag:\n{help}"
        );
    }
    // Outputs: the report's outputs plus exit-code, nothing else.
    let mut declared: Vec<&str> = outputs.keys().map(String::as_str).collect();
    declared.sort_unstable();
    let mut set: Vec<&str> = driftwarden::report::github_actions::OUTPUTS.to_vec();
    set.push("exit-code");
    set.sort_unstable();
    assert_eq!(declared, set);

    // Run the container's command line the way the runner builds it.
    let files = ActionsFiles::new(&json!({"schedule": "*/30 * * * *"}));
    let ws = files.workspace();
    std::fs::create_dir_all(ws.join("ops")).unwrap();
    let canary = "ghs_CANARYtoken0123456789";
    let values = action_input_values(canary);
    let substitute = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &values {
            s = s.replace(&format!("${{{{ inputs.{k} }}}}"), v);
        }
        assert!(!s.contains("${{"), "unsubstituted {s}");
        s
    };
    let mut cmd = bin();
    files.apply(&mut cmd, "schedule");
    for (k, v) in &env {
        cmd.env(k, substitute(v));
    }
    cmd.current_dir(&ws);
    let out = run(cmd.args(args.iter().map(|a| substitute(a))));
    // fail-on-drift: false → the step passes although drift was found.
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = parse_output_file(&read(&files.output));
    for name in outputs.keys() {
        assert!(got.contains_key(name), "output {name} not set: {got:?}");
    }
    assert_eq!(got["exit-code"], "2");
    // report-path points into the workspace, where later steps find it.
    let report: Value = serde_json::from_str(&read(&ws.join(&got["report-path"]))).unwrap();
    assert_eq!(report["command"], "reconcile");
    assert_eq!(got["drifted"], report["summary"]["drifted"].to_string());
    // mode: observe → every action is report-only.
    for d in report["drifts"].as_array().unwrap() {
        assert_eq!(d["action"]["action"]["type"], "report", "{d}");
    }
    // working-directory and args: the SARIF file landed in ops/, under the quoted name.
    let sarif: Value = serde_json::from_str(&read(&ws.join("ops/drift report.sarif"))).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    // The token is handed over, never shown.
    for text in [
        stdout(&out),
        stderr(&out),
        read(&files.output),
        read(&files.summary),
    ] {
        assert!(!text.contains(canary), "the token leaked");
    }

    // A bad input fails with exit 3 and still sets exit-code.
    let files = ActionsFiles::new(&json!({}));
    let mut cmd = bin();
    files.apply(&mut cmd, "schedule");
    let out = run(cmd.args(["github-action", "--command=apply"]));
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("input `command`"), "{}", stderr(&out));
    assert_eq!(parse_output_file(&read(&files.output))["exit-code"], "3");

    // diff through the action: the mode input does not apply and says so.
    let files = ActionsFiles::new(&json!({}));
    let mut cmd = bin();
    files.apply(&mut cmd, "schedule");
    let out = run(cmd.args([
        "github-action",
        "--command=diff",
        "--config=",
        "--mode=autocorrect",
        "--working-directory=",
        "--args=",
        "--fail-on-drift=true",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("::warning::input `mode` applies to `reconcile` only"));
    let got = parse_output_file(&read(&files.output));
    assert_eq!(got["report-path"], "driftwarden-report.json");
    let report: Value =
        serde_json::from_str(&read(&files.workspace().join("driftwarden-report.json"))).unwrap();
    assert_eq!(report["command"], "diff");
}

/// The inputs of the tests below, as a workflow would give them: a config, observe mode, a token
/// canary, a working directory, arguments with a quoted file name, fail-on-drift off.
fn action_input_values(canary: &str) -> BTreeMap<&'static str, String> {
    [
        ("command", "reconcile".to_string()),
        (
            "config",
            root()
                .join("fixtures/demo/driftwarden.yaml")
                .display()
                .to_string(),
        ),
        ("mode", "observe".to_string()),
        ("github-token", canary.to_string()),
        ("working-directory", "ops".to_string()),
        (
            "args",
            "--target demo -o sarif --output-file 'drift report.sarif'".to_string(),
        ),
        ("fail-on-drift", "false".to_string()),
    ]
    .into_iter()
    .collect()
}

#[test]
fn the_default_action_runs_the_installed_binary_with_every_input() {
    let action = yaml_docs(&read(&root().join("action.yml"))).remove(0);
    let docker = yaml_docs(&read(&root().join("docker/action.yml"))).remove(0);
    assert_eq!(action["runs"]["using"], "composite");
    // The same inputs as the container variant, and the same outputs, each the run step's.
    assert_eq!(action["inputs"], docker["inputs"]);
    let outputs = action["outputs"].as_object().unwrap();
    let docker_outputs = docker["outputs"].as_object().unwrap();
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        docker_outputs.keys().collect::<Vec<_>>()
    );
    for (name, o) in outputs {
        assert_eq!(o["description"], docker_outputs[name]["description"]);
        assert_eq!(o["value"], format!("${{{{ steps.run.outputs.{name} }}}}"));
    }
    let steps = action["runs"]["steps"].as_array().unwrap();
    let step = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    // The install steps call the installer shipped beside action.yml.
    for id in ["plan", "install"] {
        let script = step(id)["run"].as_str().unwrap();
        assert!(
            script.contains("\"$GITHUB_ACTION_PATH/scripts/action-install\""),
            "{script}"
        );
    }
    assert!(root().join("scripts/action-install").is_file());
    // Every `uses:` is pinned to a full commit.
    for s in steps {
        if let Some(uses) = s["uses"].as_str() {
            let sha = uses.rsplit_once('@').unwrap().1;
            assert!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{uses}"
            );
        }
    }

    // Each input reaches the run step exactly once, through its environment; no script text
    // contains an expression (a template injection would need one).
    let run_step = step("run");
    let env: BTreeMap<String, String> = run_step["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    for name in action["inputs"].as_object().unwrap().keys() {
        let expr = format!("${{{{ inputs.{name} }}}}");
        let uses = steps
            .iter()
            .map(|s| s.to_string().matches(&expr).count())
            .sum::<usize>();
        assert_eq!(uses, 1, "input {name} is passed on {uses} times");
        assert!(
            env.values().any(|v| v == &expr),
            "input {name} not in the run step's env"
        );
    }
    assert_eq!(env["GITHUB_TOKEN"], "${{ inputs.github-token }}");
    for s in steps {
        if let Some(script) = s["run"].as_str() {
            assert!(
                !script.contains("${{"),
                "an expression in a script: {script}"
            );
        }
    }

    // Run the step's script as the runner does (bash, the step's env, the workspace as the
    // working directory), with the binary the install step would have given.
    let files = ActionsFiles::new(&json!({"schedule": "*/30 * * * *"}));
    let ws = files.workspace();
    std::fs::create_dir_all(ws.join("ops")).unwrap();
    let canary = "ghs_CANARYtoken0123456789";
    let values = action_input_values(canary);
    let mut cmd = Command::new("bash");
    for v in [
        "DRIFTWARDEN_LOG",
        "GITHUB_TOKEN",
        "JOB_COMPLETION_INDEX",
        "JOB_COMPLETIONS",
    ] {
        cmd.env_remove(v);
    }
    files.apply(&mut cmd, "schedule");
    for (k, v) in &env {
        let value = if k == "DRIFTWARDEN_BIN" {
            assert_eq!(v, "${{ steps.install.outputs.bin }}");
            env!("CARGO_BIN_EXE_driftwarden").to_string()
        } else {
            let name = v
                .strip_prefix("${{ inputs.")
                .and_then(|r| r.strip_suffix(" }}"))
                .unwrap();
            values[name].clone()
        };
        cmd.env(k, value);
    }
    cmd.current_dir(&ws).args([
        "--noprofile",
        "--norc",
        "-eo",
        "pipefail",
        "-c",
        run_step["run"].as_str().unwrap(),
    ]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = parse_output_file(&read(&files.output));
    for name in outputs.keys() {
        assert!(got.contains_key(name), "output {name} not set: {got:?}");
    }
    assert_eq!(got["exit-code"], "2");
    let report: Value = serde_json::from_str(&read(&ws.join(&got["report-path"]))).unwrap();
    assert_eq!(got["drifted"], report["summary"]["drifted"].to_string());
    for d in report["drifts"].as_array().unwrap() {
        assert_eq!(d["action"]["action"]["type"], "report", "{d}");
    }
    let sarif: Value = serde_json::from_str(&read(&ws.join("ops/drift report.sarif"))).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(read(&files.summary).starts_with("## driftwarden reconcile:"));
    for text in [
        stdout(&out),
        stderr(&out),
        read(&files.output),
        read(&files.summary),
    ] {
        assert!(!text.contains(canary), "the token leaked");
    }
}

#[test]
fn pull_request_event_payload_is_read_from_github_event_path() {
    use driftwarden::report::github_actions::{ActionsEnv, PullRequestEvent};
    let payload = json!({
        "action": "opened",
        "number": 7,
        "pull_request": {
            "number": 7,
            "html_url": "https://github.com/acme/gitops/pull/7",
            "draft": false,
            "head": {"ref": "scale-web", "sha": "1111111111111111111111111111111111111111",
                     "repo": {"full_name": "acme/gitops"}},
            "base": {"ref": "main", "sha": "2222222222222222222222222222222222222222",
                     "repo": {"full_name": "acme/gitops"}}
        },
        "repository": {"full_name": "acme/gitops"}
    });
    let files = ActionsFiles::new(&payload);
    let vars: BTreeMap<&str, String> = [
        ("GITHUB_ACTIONS", "true".to_string()),
        ("GITHUB_EVENT_NAME", "pull_request".to_string()),
        ("GITHUB_EVENT_PATH", files.event.display().to_string()),
    ]
    .into_iter()
    .collect();
    let env = ActionsEnv::from_vars(|k| vars.get(k).cloned()).unwrap();
    assert_eq!(env.event_name.as_deref(), Some("pull_request"));
    let e = PullRequestEvent::from_file(env.event_path.as_deref().unwrap()).unwrap();
    assert_eq!(e.number, 7);
    assert_eq!(e.base_ref, "main");
    assert_eq!(e.head_ref, "scale-web");
    assert_eq!(e.repository, "acme/gitops");
    assert!(!e.is_fork());
}

#[test]
fn example_workflows_use_only_declared_inputs() {
    let action = yaml_docs(&read(&root().join("action.yml"))).remove(0);
    let inputs = action["inputs"].as_object().unwrap();
    let outputs = action["outputs"].as_object().unwrap();
    let dir = root().join("docs/workflows");
    let mut seen = 0;
    let mut events = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = read(&path);
        let wf = yaml_docs(&text).remove(0);
        for e in wf["on"].as_object().unwrap().keys() {
            events.insert(e.clone());
        }
        for job in wf["jobs"].as_object().unwrap().values() {
            for step in job["steps"].as_array().unwrap() {
                let Some(uses) = step["uses"].as_str() else {
                    continue;
                };
                if !uses.contains("driftwarden") {
                    continue;
                }
                seen += 1;
                for k in step["with"].as_object().unwrap().keys() {
                    assert!(
                        inputs.contains_key(k),
                        "{}: unknown input {k}",
                        path.display()
                    );
                }
            }
        }
        // Every `steps.<id>.outputs.<name>` a workflow reads is a declared output.
        for part in text.split("outputs.").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                outputs.contains_key(&name),
                "{}: unknown output {name}",
                path.display()
            );
        }
    }
    assert!(
        seen >= 2,
        "expected the scheduled reconcile and the pr-check examples"
    );
    assert!(
        events.contains("schedule") && events.contains("pull_request"),
        "{events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/

struct Manifests {
    docs: Vec<(String, Value)>,
}

impl Manifests {
    fn base() -> Manifests {
        let dir = root().join("deploy/base");
        let kustomization = yaml_docs(&read(&dir.join("kustomization.yaml"))).remove(0);
        let mut docs = Vec::new();
        for r in kustomization["resources"].as_array().unwrap() {
            let file = r.as_str().unwrap();
            for d in yaml_docs(&read(&dir.join(file))) {
                docs.push((file.to_string(), d));
            }
        }
        // Every manifest file is listed.
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f != "kustomization.yaml")
            .collect();
        files.sort();
        let mut listed: Vec<String> = kustomization["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "deploy/base files vs kustomization resources"
        );
        Manifests { docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d)
            .collect()
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.of_kind(kind)
            .into_iter()
            .map(|d| {
                serde_json::from_value(d.clone())
                    .unwrap_or_else(|e| panic!("{kind} {}: {e}", d["metadata"]["name"]))
            })
            .collect()
    }
}

/// Applies RFC 6902 operations (add, replace, remove), as kustomize's JSON6902 patches do.
fn json_patch(doc: &mut Value, ops: &Value) {
    for op in ops.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"));
        let last = last.replace("~1", "/").replace("~0", "~");
        match (op["op"].as_str().unwrap(), target) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last, op["value"].clone());
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).unwrap_or_else(|| panic!("no {path}"));
            }
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
            ("remove", Value::Array(a)) => {
                a.remove(last.parse().unwrap());
            }
            (o, _) => panic!("unsupported op {o} at {path}"),
        }
    }
}

/// The sharded overlay's objects: the base with the overlay's patches applied.
fn sharded() -> Vec<Value> {
    let overlay = yaml_docs(&read(
        &root().join("deploy/overlays/sharded/kustomization.yaml"),
    ))
    .remove(0);
    assert_eq!(overlay["resources"], json!(["../../base"]));
    let mut docs: Vec<Value> = Manifests::base().docs.into_iter().map(|(_, d)| d).collect();
    for p in overlay["patches"].as_array().unwrap() {
        let t = &p["target"];
        let ops = yaml_docs(p["patch"].as_str().unwrap()).remove(0);
        let mut hits = 0;
        for d in docs.iter_mut() {
            if d["kind"] == t["kind"] && d["metadata"]["name"] == t["name"] {
                json_patch(d, &ops);
                hits += 1;
            }
        }
        assert_eq!(hits, 1, "patch target {t}");
    }
    docs
}

#[test]
fn deploy_manifests_parse_into_kubernetes_types() {
    let m = Manifests::base();
    let namespaces: Vec<Namespace> = m.typed("Namespace");
    let sas: Vec<ServiceAccount> = m.typed("ServiceAccount");
    let _: Vec<ClusterRole> = m.typed("ClusterRole");
    let _: Vec<ClusterRoleBinding> = m.typed("ClusterRoleBinding");
    let roles: Vec<Role> = m.typed("Role");
    let bindings: Vec<RoleBinding> = m.typed("RoleBinding");
    let configmaps: Vec<ConfigMap> = m.typed("ConfigMap");
    let pvcs: Vec<PersistentVolumeClaim> = m.typed("PersistentVolumeClaim");
    let cronjobs: Vec<CronJob> = m.typed("CronJob");
    let known = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
    ];
    for (file, d) in &m.docs {
        assert!(
            known.contains(&d["kind"].as_str().unwrap()),
            "{file}: {}",
            d["kind"]
        );
    }
    assert_eq!(namespaces.len(), 1);
    assert!(!roles.is_empty() && !bindings.is_empty() && !pvcs.is_empty());
    assert_eq!(cronjobs.len(), 1);
    let ns = namespaces[0].metadata.name.clone().unwrap();
    let sa = &sas[0];
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));

    let cj = &cronjobs[0];
    let spec = cj.spec.as_ref().unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job = spec.job_template.spec.as_ref().unwrap();
    assert!(job.backoff_limit.is_some_and(|b| (0..=6).contains(&b)));
    assert!(job.active_deadline_seconds.is_some());
    let pod = job.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let res = c.resources.as_ref().unwrap();
    for key in ["cpu", "memory"] {
        assert!(
            res.requests.as_ref().unwrap().contains_key(key),
            "requests.{key}"
        );
        assert!(
            res.limits.as_ref().unwrap().contains_key(key),
            "limits.{key}"
        );
    }
    // The GitHub token comes from a Secret reference, never a literal.
    let token = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "GITHUB_TOKEN")
        .unwrap();
    assert!(token.value.is_none());
    let secret_ref = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(secret_ref.name, "driftwarden-github");
    // Volumes point at objects the base defines; /tmp is the only writable scratch.
    let cm_names: BTreeSet<String> = configmaps
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    for v in pod.volumes.as_ref().unwrap() {
        if let Some(cm) = &v.config_map {
            assert!(cm_names.contains(&cm.name), "ConfigMap {}", cm.name);
        }
        if let Some(p) = &v.persistent_volume_claim {
            assert!(
                pvcs.iter()
                    .any(|x| x.metadata.name.as_deref() == Some(&p.claim_name))
            );
        }
    }
    let mounts: Vec<&str> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/tmp"));
    // The args are a command line the binary accepts.
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "reconcile");
    let help = stdout(&run(bin().args(["reconcile", "--help"])));
    for a in &args[1..] {
        assert!(help.contains(a.split('=').next().unwrap()), "{a}");
    }
    // The image is the kustomization's.
    let k = yaml_docs(&read(&root().join("deploy/base/kustomization.yaml"))).remove(0);
    assert_eq!(
        Some(k["images"][0]["name"].as_str().unwrap()),
        c.image.as_deref()
    );
}

#[test]
fn sharded_overlay_runs_an_indexed_job_whose_shard_count_matches() {
    let docs = sharded();
    let cj_value = docs.iter().find(|d| d["kind"] == "CronJob").unwrap();
    let cj: CronJob = serde_json::from_value(cj_value.clone()).unwrap();
    let template = cj.spec.unwrap().job_template;
    // The Job each schedule creates, as the Job type.
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "driftwarden-28900000", "namespace": "driftwarden"},
        "spec": serde_json::to_value(template.spec.as_ref().unwrap()).unwrap(),
    }))
    .unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    let n = spec.completions.unwrap();
    assert!(n > 1);
    assert_eq!(spec.parallelism, Some(n));
    let c = &spec.template.spec.as_ref().unwrap().containers[0];
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    // JOB_COMPLETIONS (which Kubernetes does not set) matches completions.
    assert_eq!(
        env["JOB_COMPLETIONS"].value.as_deref(),
        Some(n.to_string().as_str())
    );
    // Each shard writes its own report: $(SHARD_INDEX) is defined from the completion index.
    let report_arg = c
        .args
        .as_ref()
        .unwrap()
        .iter()
        .find(|a| a.starts_with("--json-report="))
        .unwrap();
    assert!(report_arg.contains("$(SHARD_INDEX)"));
    let field = env["SHARD_INDEX"]
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        field.field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // Parallel pods share the state volume.
    let pvc: PersistentVolumeClaim = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "PersistentVolumeClaim")
            .unwrap()
            .clone(),
    )
    .unwrap();
    assert_eq!(
        pvc.spec.unwrap().access_modes,
        Some(vec!["ReadWriteMany".to_string()])
    );
    // Where kubectl is installed, its kustomize agrees with the simulation above (and must
    // build the overlay). CI machines have no kubectl: the simulation is the check there.
    match Command::new("kubectl")
        .args(["kustomize", "deploy/overlays/sharded"])
        .current_dir(root())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot run kubectl: {e}"),
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize deploy/overlays/sharded failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let built = yaml_docs(&String::from_utf8_lossy(&out.stdout));
            let built_cj = built.iter().find(|d| d["kind"] == "CronJob").unwrap();
            assert_eq!(built_cj["spec"]["jobTemplate"], {
                let mut t = cj_value["spec"]["jobTemplate"].clone();
                // kustomize's images transformer and labels apply on top.
                t["spec"]["template"]["spec"]["containers"][0]["image"] =
                    built_cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
                        ["image"]
                        .clone();
                t["spec"]["template"]["metadata"] =
                    built_cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].clone();
                t
            });
        }
    }
}

fn rules_of(d: &Value) -> Vec<PolicyRule> {
    match d["kind"].as_str().unwrap() {
        "ClusterRole" => serde_json::from_value::<ClusterRole>(d.clone())
            .unwrap()
            .rules
            .unwrap_or_default(),
        "Role" => serde_json::from_value::<Role>(d.clone())
            .unwrap()
            .rules
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// `Deployment` → `deployments`, `Ingress` → `ingresses`, `NetworkPolicy` → `networkpolicies`.
fn plural(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    if let Some(stem) = k.strip_suffix('y') {
        format!("{stem}ies")
    } else if k.ends_with('s') {
        format!("{k}es")
    } else {
        format!("{k}s")
    }
}

#[test]
fn rbac_grants_exactly_the_verbs_the_code_sends() {
    let m = Manifests::base();
    let roles: Vec<(&Value, Vec<PolicyRule>)> = m
        .docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|d| (d, rules_of(d)))
        .collect();
    let mut resource_verbs: Vec<String> = Vec::new();
    for (d, rules) in &roles {
        let name = d["metadata"]["name"].as_str().unwrap();
        for r in rules {
            for v in &r.verbs {
                assert!(
                    KUBE_RUN_VERBS.contains(&v.as_str()),
                    "{name}: verb {v} is never sent"
                );
            }
            let wild = |xs: &Option<Vec<String>>| {
                xs.as_ref()
                    .is_some_and(|x| x.iter().any(|s| s.contains('*')))
            };
            assert!(
                !wild(&r.api_groups) && !wild(&r.resources),
                "{name}: wildcard rule"
            );
            if let Some(urls) = &r.non_resource_urls {
                assert_eq!(
                    sorted(&r.verbs.iter().map(String::as_str).collect::<Vec<_>>()),
                    ["get"]
                );
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                assert_eq!(sorted(&urls), sorted(KUBE_DISCOVERY_URLS), "{name}");
            } else {
                resource_verbs.extend(r.verbs.iter().cloned());
            }
        }
    }
    // Together the roles grant every verb `reconcile` sends, and no other (the watch overlay
    // adds its own, checked by deploy_watch_overlay_*).
    resource_verbs.sort();
    resource_verbs.dedup();
    assert_eq!(resource_verbs, sorted(KUBE_RUN_VERBS));
    // Each role is for reading or for correcting, never both.
    for (d, rules) in &roles {
        let mut verbs: Vec<&str> = rules
            .iter()
            .filter(|r| r.non_resource_urls.is_none())
            .flat_map(|r| r.verbs.iter().map(String::as_str))
            .collect();
        verbs.sort_unstable();
        verbs.dedup();
        let name = d["metadata"]["name"].as_str().unwrap();
        assert!(
            sorted(&verbs) == sorted(KUBE_READ_VERBS) || sorted(&verbs) == sorted(KUBE_WRITE_VERBS),
            "{name}: {verbs:?}"
        );
    }

    // What the service account may do in the demo's namespace `shop`: the roles its bindings
    // grant there (ClusterRoleBindings everywhere, RoleBindings in shop).
    let sa = ("driftwarden", "driftwarden");
    let binds_sa =
        |subjects: &Value| {
            subjects.as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == sa.1 && s["namespace"] == sa.0
            })
        };
    let role = |kind: &str, name: &str, ns: Option<&str>| -> Vec<PolicyRule> {
        roles
            .iter()
            .find(|(d, _)| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && (kind == "ClusterRole" || d["metadata"]["namespace"].as_str() == ns)
            })
            .unwrap_or_else(|| panic!("{kind} {name} not defined"))
            .1
            .clone()
    };
    let mut granted: Vec<PolicyRule> = Vec::new();
    for d in m.of_kind("ClusterRoleBinding") {
        let b: ClusterRoleBinding = serde_json::from_value(d.clone()).unwrap();
        if binds_sa(&d["subjects"]) {
            granted.extend(role(&b.role_ref.kind, &b.role_ref.name, None));
        }
    }
    let mut shop_only: Vec<PolicyRule> = Vec::new();
    for d in m.of_kind("RoleBinding") {
        let b: RoleBinding = serde_json::from_value(d.clone()).unwrap();
        if binds_sa(&d["subjects"]) && b.metadata.namespace.as_deref() == Some("shop") {
            shop_only.extend(role(&b.role_ref.kind, &b.role_ref.name, Some("shop")));
        }
    }
    let allowed = |rules: &[PolicyRule], group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|x| x == group))
                && r.resources
                    .as_ref()
                    .is_some_and(|x| x.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    // Every kind the demo's Git tree declares can be read (get, list) and, when namespaced and
    // not RBAC, corrected (patch, create, delete) in shop.
    let mut desired = Vec::new();
    for entry in walk(&root().join("fixtures/demo/desired")) {
        desired.extend(yaml_docs(&read(&entry)));
    }
    let crd_plurals: BTreeMap<String, String> = desired
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| {
            (
                d["spec"]["names"]["kind"].as_str().unwrap().to_string(),
                d["spec"]["names"]["plural"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut all_shop = granted.clone();
    all_shop.extend(shop_only.iter().cloned());
    for d in &desired {
        let kind = d["kind"].as_str().unwrap();
        let api = d["apiVersion"].as_str().unwrap();
        let group = api.rsplit_once('/').map_or("", |(g, _)| g);
        let resource = crd_plurals
            .get(kind)
            .cloned()
            .unwrap_or_else(|| plural(kind));
        for verb in KUBE_READ_VERBS {
            assert!(
                allowed(&all_shop, group, &resource, verb),
                "{verb} {group}/{resource}"
            );
        }
        let namespaced = !["CustomResourceDefinition", "Namespace", "ClusterRole"].contains(&kind);
        if namespaced && group != "rbac.authorization.k8s.io" {
            for verb in KUBE_WRITE_VERBS {
                assert!(
                    allowed(&shop_only, group, &resource, verb),
                    "{verb} {group}/{resource}"
                );
            }
        }
    }
    // Secrets are readable in shop only, never cluster-wide.
    assert!(!allowed(&granted, "", "secrets", "list"));
    assert!(allowed(&shop_only, "", "secrets", "list"));
}

/// The watch overlay's objects: the base without its CronJob (the overlay's `$patch: delete`),
/// the overlay's own files, and its JSON patches applied.
fn watch_overlay() -> Vec<Value> {
    let dir = root().join("deploy/overlays/watch");
    let overlay = yaml_docs(&read(&dir.join("kustomization.yaml"))).remove(0);
    let resources: Vec<&str> = overlay["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources[0], "../../base");
    let mut docs: Vec<Value> = Manifests::base().docs.into_iter().map(|(_, d)| d).collect();
    // Every file of the overlay is listed.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(files, sorted(&resources[1..]));
    for file in &resources[1..] {
        docs.extend(yaml_docs(&read(&dir.join(file))));
    }
    for p in overlay["patches"].as_array().unwrap() {
        let ops = yaml_docs(p["patch"].as_str().unwrap()).remove(0);
        if ops.get("$patch").and_then(Value::as_str) == Some("delete") {
            let before = docs.len();
            docs.retain(|d| {
                !(d["kind"] == ops["kind"] && d["metadata"]["name"] == ops["metadata"]["name"])
            });
            assert_eq!(before - 1, docs.len(), "delete patch {ops}");
            continue;
        }
        let t = &p["target"];
        let mut hits = 0;
        for d in docs.iter_mut() {
            if d["kind"] == t["kind"] && d["metadata"]["name"] == t["name"] {
                json_patch(d, &ops);
                hits += 1;
            }
        }
        assert_eq!(hits, 1, "patch target {t}");
    }
    docs
}

fn typed_of<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

#[test]
fn watch_overlay_runs_two_replicas_with_leader_election_probes_and_a_budget() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let docs = watch_overlay();
    assert!(
        docs.iter().all(|d| d["kind"] != "CronJob"),
        "the CronJob is replaced"
    );
    let deployments: Vec<Deployment> = typed_of(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let spec = deployments[0].spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = spec.selector.match_labels.clone().unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("driftwarden"));
    // SIGTERM ends `watch` within 10 s: the grace period leaves room.
    assert!(pod.termination_grace_period_seconds.is_some_and(|s| s > 10));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    // Memory is requested and limited (sized in docs/deploy.md, "Memory"), the request within
    // the limit.
    let res = c.resources.as_ref().unwrap();
    let mib =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            let q = &m.as_ref().unwrap()["memory"].0;
            match (q.strip_suffix("Mi"), q.strip_suffix("Gi")) {
                (Some(n), _) => n.parse::<u64>().unwrap(),
                (_, Some(n)) => n.parse::<u64>().unwrap() * 1024,
                _ => panic!("memory {q} is not in Mi or Gi"),
            }
        };
    assert!(
        mib(&res.requests) <= mib(&res.limits),
        "{:?} above {:?}",
        res.requests,
        res.limits
    );
    // The args are a `watch` command line the binary accepts.
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "watch");
    let help = stdout(&run(bin().args(["watch", "--help"])));
    for a in &args[1..] {
        assert!(help.contains(a.split('=').next().unwrap()), "{a}");
    }
    // The config is valid, elects a leader, and listens where the probes look.
    let configmaps: Vec<ConfigMap> = typed_of(&docs, "ConfigMap");
    let cfg_text = configmaps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("driftwarden-config"))
        .unwrap()
        .data
        .as_ref()
        .unwrap()["driftwarden.yaml"]
        .clone();
    let cfg =
        driftwarden::config::parse(&cfg_text, "driftwarden.yaml", Path::new("/etc/driftwarden"))
            .unwrap();
    let le = cfg
        .watch
        .leader_election
        .clone()
        .expect("leader election configured");
    let port = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(port.container_port, i32::from(cfg.watch.listen.port()));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(g.port, IntOrString::String("http".into()));
        g.path.clone().unwrap()
    };
    assert_eq!(probe_path(&c.liveness_probe), "/healthz");
    assert_eq!(probe_path(&c.readiness_probe), "/readyz");
    // The holder identity comes from the pod name.
    let env = c.env.as_ref().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    assert!(
        env.iter()
            .find(|e| e.name == "GITHUB_TOKEN")
            .unwrap()
            .value
            .is_none()
    );
    // Both replicas mount the state volume.
    let pvcs: Vec<PersistentVolumeClaim> = typed_of(&docs, "PersistentVolumeClaim");
    assert_eq!(
        pvcs[0].spec.as_ref().unwrap().access_modes,
        Some(vec!["ReadWriteMany".to_string()])
    );
    for v in pod.volumes.as_ref().unwrap() {
        if let Some(p) = &v.persistent_volume_claim {
            assert_eq!(
                pvcs[0].metadata.name.as_deref(),
                Some(p.claim_name.as_str())
            );
        }
    }

    // The budget keeps one replica and selects the pods.
    let pdbs: Vec<PodDisruptionBudget> = typed_of(&docs, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    let pdb = pdbs[0].spec.as_ref().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    let pdb_sel = pdb.selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert!(pdb_sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    // The Service exposes the metrics port of those pods.
    let services: Vec<Service> = typed_of(&docs, "Service");
    assert_eq!(services.len(), 1);
    let svc = services[0].spec.as_ref().unwrap();
    assert!(
        svc.selector
            .as_ref()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    );
    assert_eq!(
        svc.ports.as_ref().unwrap()[0].target_port,
        Some(IntOrString::String("http".into()))
    );

    // RBAC: the overlay's roles grant `watch` on every kind the base lets it `list`, and the
    // Lease verbs on the configured Lease; with the base, every verb the code sends.
    let roles: Vec<(Value, Vec<PolicyRule>)> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|d| (d.clone(), rules_of(d)))
        .collect();
    let base_names: BTreeSet<String> = Manifests::base()
        .docs
        .iter()
        .map(|(_, d)| format!("{}/{}", d["kind"], d["metadata"]["name"]))
        .collect();
    let mut all_verbs = BTreeSet::new();
    let mut lease_rules = Vec::new();
    for (d, rules) in &roles {
        let name = d["metadata"]["name"].as_str().unwrap();
        for r in rules.iter().filter(|r| r.non_resource_urls.is_none()) {
            for v in &r.verbs {
                assert!(
                    KUBE_VERBS.contains(&v.as_str()),
                    "{name}: verb {v} is never sent"
                );
                all_verbs.insert(v.clone());
            }
        }
        if base_names.contains(&format!("{}/{}", d["kind"], d["metadata"]["name"])) {
            continue;
        }
        let verbs: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.verbs.iter().map(String::as_str))
            .collect();
        let verbs = sorted(&verbs);
        assert!(
            verbs == sorted(KUBE_WATCH_VERBS) || verbs == sorted(KUBE_LEASE_VERBS),
            "{name}: {verbs:?}"
        );
        if verbs == sorted(KUBE_LEASE_VERBS) {
            assert_eq!(d["kind"], "Role", "{name}: Lease access is namespaced");
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some(le.namespace.as_str())
            );
            lease_rules.extend(rules.iter().cloned());
        }
    }
    assert_eq!(
        all_verbs.into_iter().collect::<Vec<_>>(),
        sorted(KUBE_VERBS)
    );
    let grants =
        |rules: &[PolicyRule], group: &str, resource: &str, verb: &str, name: Option<&str>| {
            rules.iter().any(|r| {
                r.api_groups
                    .as_ref()
                    .is_some_and(|g| g.iter().any(|x| x == group))
                    && r.resources
                        .as_ref()
                        .is_some_and(|x| x.iter().any(|x| x == resource))
                    && r.verbs.iter().any(|v| v == verb)
                    && match (&r.resource_names, name) {
                        (None, _) => true,
                        (Some(n), Some(name)) => n.iter().any(|x| x == name),
                        (Some(_), None) => false,
                    }
            })
        };
    for verb in KUBE_LEASE_VERBS {
        let name = (*verb != "create").then_some(le.name.as_str());
        assert!(
            grants(&lease_rules, "coordination.k8s.io", "leases", verb, name),
            "{verb} on the Lease"
        );
    }
    // get and update are limited to the Lease's name.
    for r in &lease_rules {
        if r.verbs.iter().any(|v| v == "get" || v == "update") {
            assert_eq!(r.resource_names, Some(vec![le.name.clone()]));
        }
    }
    // Wherever something may be listed, the overlay lets it be watched (same namespace scope).
    for (d, rules) in &roles {
        for r in rules.iter().filter(|r| r.verbs.iter().any(|v| v == "list")) {
            for g in r.api_groups.as_ref().unwrap() {
                for res in r.resources.as_ref().unwrap() {
                    let watchers: Vec<PolicyRule> = roles
                        .iter()
                        .filter(|(w, _)| {
                            w["kind"] == "ClusterRole"
                                || w["metadata"]["namespace"] == d["metadata"]["namespace"]
                        })
                        .flat_map(|(_, rs)| rs.iter().cloned())
                        .collect();
                    assert!(
                        grants(&watchers, g, res, "watch", None),
                        "watch {g}/{res} ({})",
                        d["metadata"]["name"]
                    );
                }
            }
        }
    }
    // Where kubectl is installed, its kustomize builds the same set of objects.
    match Command::new("kubectl")
        .args(["kustomize", "deploy/overlays/watch"])
        .current_dir(root())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot run kubectl: {e}"),
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize deploy/overlays/watch failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let key = |d: &Value| {
                format!(
                    "{}/{}/{}",
                    d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]
                )
            };
            let built: BTreeSet<String> = yaml_docs(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .map(key)
                .collect();
            let simulated: BTreeSet<String> = docs.iter().map(key).collect();
            assert_eq!(built, simulated);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn deploy_config_is_valid_and_site_policies_compile_with_the_library() {
    let m = Manifests::base();
    let cms: Vec<ConfigMap> = m.typed("ConfigMap");
    let data = |name: &str| {
        cms.iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap()
            .data
            .clone()
            .unwrap()
    };
    let cfg_text = &data("driftwarden-config")["driftwarden.yaml"];
    let cfg =
        driftwarden::config::parse(cfg_text, "driftwarden.yaml", Path::new("/etc/driftwarden"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.targets.len(), 1);
    assert!(matches!(
        &cfg.targets[0].live,
        driftwarden::config::LiveSource::Kubernetes(k) if k.in_cluster
    ));
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/driftwarden"));
    // The policy dirs are the image's library and the mounted ConfigMap.
    let dirs: Vec<PathBuf> = cfg.policies.dirs.iter().map(|d| d.path.clone()).collect();
    assert_eq!(
        dirs,
        [
            PathBuf::from("/usr/share/driftwarden/policies"),
            PathBuf::from("/etc/driftwarden/policies")
        ]
    );
    let site = tempfile::tempdir().unwrap();
    for (name, text) in data("driftwarden-policies") {
        write(site.path(), &name, &text);
    }
    let engine = driftwarden::policy::PolicyEngine::load(&driftwarden::policy::PolicyConfig {
        dirs: vec![
            driftwarden::policy::PolicyDir::new(root().join("policies")),
            driftwarden::policy::PolicyDir::new(site.path()),
        ],
        data_files: Vec::new(),
        strict_builtins: false,
    });
    assert!(engine.is_ok(), "{:?}", engine.err());
    // The Dockerfile puts the library where the config expects it.
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(dockerfile.contains("COPY policies /usr/share/driftwarden/policies"));
}

// ---------------------------------------------------------------------------------------------
// SARIF and JUnit

fn sarif_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read(
        &root().join("fixtures/sarif/sarif-schema-2.1.0.json"),
    ))
    .unwrap();
    jsonschema::validator_for(&schema).expect("the SARIF schema compiles")
}

fn assert_valid_sarif(log: &Value) {
    let v = sarif_validator();
    let errors: Vec<String> = v
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "SARIF schema violations:\n{}",
        errors.join("\n")
    );
}

#[test]
fn sarif_is_valid_2_1_0_and_locates_every_drift_in_git() {
    // The validator rejects what it should: a result without a message.
    let bad = json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
        "results": [{"ruleId": "r"}]}]});
    assert!(!sarif_validator().is_valid(&bad));

    for command in ["diff", "reconcile"] {
        let report = demo_report(command);
        let out = run(bin().args([
            command,
            "-o",
            "sarif",
            "--config",
            "fixtures/demo/driftwarden.yaml",
        ]));
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let log: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_valid_sarif(&log);
        let run0 = &log["runs"][0];
        assert_eq!(run0["tool"]["driver"]["name"], "driftwarden");
        let rules = run0["tool"]["driver"]["rules"].as_array().unwrap();
        let results = run0["results"].as_array().unwrap();
        let drifts = report["drifts"].as_array().unwrap();
        assert_eq!(results.len(), drifts.len(), "one result per drift");
        for (r, d) in results.iter().zip(drifts) {
            // GitHub code scanning needs a physical location on every result.
            let loc = &r["locations"][0]["physicalLocation"];
            match d.get("provenance") {
                Some(p) => {
                    // A directory source's manifests are located from the repository root.
                    let in_repo = format!(
                        "{}/{}",
                        p["source"].as_str().unwrap(),
                        p["file"].as_str().unwrap()
                    );
                    assert!(root().join(&in_repo).is_file(), "{in_repo}");
                    assert_eq!(loc["artifactLocation"]["uri"], in_repo.as_str());
                    assert_eq!(loc["region"]["startLine"], p["line"]);
                }
                None => {
                    assert_eq!(d["kind"], "Unmanaged");
                    assert_eq!(
                        loc["artifactLocation"]["uri"],
                        "fixtures/demo/driftwarden.yaml"
                    );
                    assert_eq!(loc["region"]["startLine"], 1);
                }
            }
            let level = match d["verdict"]["class"].as_str() {
                Some("forbidden") => "error",
                Some("safe") => "note",
                _ => "warning",
            };
            assert_eq!(r["level"], level);
            assert_eq!(
                r["partialFingerprints"][driftwarden::report::sarif::FINGERPRINT_KEY],
                d["fingerprint"]
            );
            // ruleId names a rule of the run; policy rules are the run's rules.
            let idx = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[idx]["id"], r["ruleId"]);
            if let Some(first) = d["verdict"]["rules"].get(0) {
                assert_eq!(&r["ruleId"], first);
            }
            assert!(
                r["message"]["text"]
                    .as_str()
                    .unwrap()
                    .contains(d["resource"]["display"].as_str().unwrap())
            );
        }
        // Rule ids are unique.
        let ids: BTreeSet<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), rules.len());
    }
}

#[test]
fn sarif_of_a_partial_report_with_masked_values_is_valid() {
    use driftwarden::model::*;
    let id = ResourceId::Kubernetes {
        cluster: "prod".into(),
        group: String::new(),
        version: "v1".into(),
        kind: "Secret".into(),
        namespace: Some("shop".into()),
        name: "db".into(),
    };
    let drift = Drift {
        fingerprint: fingerprint("prod", &id),
        target: "prod".into(),
        resource: id.into(),
        kind: DriftKind::Modified,
        changes: vec![FieldChange {
            path: "/data/PASSWORD".into(),
            op: ChangeOp::Changed,
            desired: json!(MASK),
            live: json!(MASK),
            masked: true,
            attribution: None,
            class: None,
        }],
        provenance: Some(Provenance {
            source: "https://github.com/acme/gitops".into(),
            file: "apps/shop/db secret.yaml".into(),
            line: 12,
            commit: Some("3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a".into()),
        }),
        verdict: Some(Verdict {
            class: Class::Forbidden,
            reasons: vec!["secret values are never adopted into Git".into()],
            rules: vec!["kubernetes.secret_changed".into()],
            remedies: Default::default(),
        }),
        action: Some(ActionRecord {
            action: Action::Issue,
            result: ActionResult::Done,
            detail: Some("https://github.com/acme/gitops/issues/9".into()),
        }),
        desired_object: None,
        live_object: None,
    };
    let report = Report::new(
        "reconcile",
        2,
        5,
        Default::default(),
        vec![drift],
        vec![SourceError {
            target: "prod".into(),
            side: "live".into(),
            message: "list apps/v1 deployments: 403 Forbidden".into(),
        }],
    );
    let log = driftwarden::report::sarif::to_value(
        &report,
        &driftwarden::report::sarif::SarifOptions::default(),
    );
    assert_valid_sarif(&log);
    let run0 = &log["runs"][0];
    assert_eq!(run0["results"][0]["level"], "error");
    assert_eq!(
        run0["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "apps/shop/db%20secret.yaml"
    );
    assert_eq!(run0["invocations"][0]["executionSuccessful"], false);
    assert_eq!(
        run0["versionControlProvenance"][0]["revisionId"],
        "3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"
    );
    let text = log.to_string();
    assert!(text.contains("(masked)"));
    // The issue URL reaches the Actions output.
    let outputs = driftwarden::report::github_actions::outputs(&report, None);
    let issues = outputs.iter().find(|(k, _)| k == "issue-urls").unwrap();
    assert_eq!(issues.1, "https://github.com/acme/gitops/issues/9");
}

#[test]
fn junit_is_well_formed_with_one_failing_case_per_drift() {
    let report = demo_report("reconcile");
    let out = run(bin().args(["reconcile", "-o", "junit"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let xml = stdout(&out);
    let mut stack: Vec<String> = Vec::new();
    let mut testcases = 0;
    let mut failures = 0;
    let mut root_attrs = BTreeMap::new();
    let mut current: Option<String> = None;
    for token in xmlparser::Tokenizer::from(xml.as_str()) {
        match token.unwrap_or_else(|e| panic!("malformed XML: {e}\n{xml}")) {
            xmlparser::Token::ElementStart { local, .. } => {
                current = Some(local.as_str().to_string());
                stack.push(local.as_str().to_string());
                match local.as_str() {
                    "testcase" => testcases += 1,
                    "failure" => failures += 1,
                    _ => {}
                }
            }
            xmlparser::Token::Attribute { local, value, .. }
                if current.as_deref() == Some("testsuites") && stack.len() == 1 =>
            {
                root_attrs.insert(local.as_str().to_string(), value.as_str().to_string());
            }
            xmlparser::Token::ElementEnd { end, .. } => match end {
                xmlparser::ElementEnd::Open => {}
                xmlparser::ElementEnd::Empty => {
                    stack.pop();
                }
                xmlparser::ElementEnd::Close(_, name) => {
                    assert_eq!(
                        stack.pop().as_deref(),
                        Some(name.as_str()),
                        "unbalanced XML"
                    );
                }
            },
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    let drifted = report["summary"]["drifted"].as_u64().unwrap() as usize;
    assert_eq!(failures, drifted);
    assert_eq!(testcases, drifted + 1);
    assert_eq!(root_attrs["tests"], (drifted + 1).to_string());
    assert_eq!(root_attrs["failures"], drifted.to_string());
}

// ---------------------------------------------------------------------------------------------
// Sharding and report merge

/// A config with `n` targets, each a ConfigMap that drifted, sharing one desired and live dir.
fn fleet(dir: &Path, n: usize) -> PathBuf {
    write(
        dir,
        "desired/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\ndata:\n  LEVEL: info\n",
    );
    write(
        dir,
        "live/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\n  uid: 1b4c\n  resourceVersion: \"42\"\ndata:\n  LEVEL: debug\n",
    );
    let mut cfg = String::from("version: 1\npolicies:\n  dirs: [policies-absent]\ntargets:\n");
    for i in 0..n {
        cfg.push_str(&format!(
            "  - name: cluster-{i:03}\n    desired:\n      dir: desired\n    live:\n      snapshot: live\n"
        ));
    }
    write(dir, "driftwarden.yaml", &cfg)
}

fn targets_of(report: &Value) -> Vec<String> {
    report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hundred_targets_over_seven_shards_each_exactly_once_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fleet(dir.path(), 100);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = Vec::new();
    for i in 0..7 {
        let file = dir.path().join(format!("shard-{i}.json"));
        let out = run(bin()
            .args(["diff", "-o", "table", "--no-diff", "--config"])
            .arg(&cfg)
            .arg("--shard")
            .arg(format!("{i}/7"))
            .arg("--json-report")
            .arg(&file));
        assert!([0, 2].contains(&code(&out)), "{}", stderr(&out));
        let report: Value = serde_json::from_str(&read(&file)).unwrap();
        let targets = targets_of(&report);
        assert_eq!(
            report["summary"]["targets"].as_u64().unwrap() as usize,
            targets.len()
        );
        for t in targets {
            *seen.entry(t).or_default() += 1;
        }
        files.push(file);
    }
    assert_eq!(seen.len(), 100, "every target ran");
    assert!(
        seen.values().all(|&c| c == 1),
        "a target ran twice: {seen:?}"
    );

    // Stable across runs, and the Indexed Job variables pick the same shard as --shard.
    let again = run(bin()
        .args(["diff", "-o", "json", "--config"])
        .arg(&cfg)
        .env("JOB_COMPLETION_INDEX", "3")
        .env("JOB_COMPLETIONS", "7"));
    let again: Value = serde_json::from_str(&stdout(&again)).unwrap();
    let first: Value = serde_json::from_str(&read(&files[3])).unwrap();
    assert_eq!(targets_of(&again), targets_of(&first));
    // Pinned: the assignment never changes between releases (branch names and history depend
    // on which shard handles a target).
    let pinned: Vec<u32> = [
        "cluster-000",
        "cluster-001",
        "cluster-042",
        "prod-eu-1",
        "staging",
    ]
    .iter()
    .map(|t| driftwarden::shard::shard_of(t, 7))
    .collect();
    assert_eq!(pinned, PINNED_SHARDS);

    // An index without a count would run everything in every pod: refused.
    let out = run(bin()
        .args(["diff", "--config"])
        .arg(&cfg)
        .env("JOB_COMPLETION_INDEX", "3"));
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("JOB_COMPLETIONS"), "{}", stderr(&out));
    let out = run(bin()
        .args(["diff", "--config"])
        .arg(&cfg)
        .args(["--shard", "7/7"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("index must be below the count"),
        "{}",
        stderr(&out)
    );

    // report merge: one report as if one run had covered all 100 targets.
    let out = run(bin().args(["report", "merge", "-o", "json"]).args(&files));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let merged: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(merged["summary"]["targets"], 100);
    assert_eq!(merged["summary"]["drifted"], 100);
    assert_eq!(merged["summary"]["resources_checked"], 100);
    assert_eq!(merged["summary"]["compliance_score"], 0.0);
    assert_eq!(merged["summary"]["by_kind"]["Modified"], 100);
    let mut names = targets_of(&merged);
    let sorted_names = {
        let mut s = names.clone();
        s.sort();
        s
    };
    assert_eq!(names, sorted_names, "merged drifts are ordered by target");
    names.dedup();
    assert_eq!(names.len(), 100);
    // The same reports in another order merge to the same document.
    let mut reversed = files.clone();
    reversed.reverse();
    let out2 = run(bin()
        .args(["report", "merge", "-o", "json"])
        .args(&reversed));
    assert_eq!(stdout(&out), stdout(&out2));
    // A target in two reports is an error, not a double count.
    let busy = files
        .iter()
        .find(|f| !targets_of(&serde_json::from_str(&read(f)).unwrap()).is_empty())
        .unwrap();
    let out = run(bin().args(["report", "merge"]).arg(busy).arg(busy));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ran in two shards"),
        "{}",
        stderr(&out)
    );
    // Not a report: exit 3 with the file and line.
    let junk = write(
        dir.path(),
        "junk.json",
        "{\"schema_version\": \"1\",\n  \"oops\": ",
    );
    let out = run(bin().args(["report", "merge"]).arg(&junk));
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("junk.json:2:"), "{}", stderr(&out));
}

/// `shard_of` for cluster-000, cluster-001, cluster-042, prod-eu-1, staging over 7 shards.
const PINNED_SHARDS: [u32; 5] = [3, 2, 1, 4, 6];

// ---------------------------------------------------------------------------------------------
// Metrics

/// Checks the Prometheus text format line by line and returns the samples:
/// `name{labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        let mut cs = n.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(helps.insert(name.to_string()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind));
            assert!(
                !samples
                    .keys()
                    .any(|k: &String| k.split('{').next() == Some(name)),
                "TYPE after samples: {line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        // name, optional {labels}, value.
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        assert!(types.contains_key(name), "sample before TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap();
                // label="value" pairs with \\, \" and \n escapes only.
                let mut chars = inner.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(name_ok(&key) && !key.contains(':'), "label {key} in {line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    loop {
                        match chars.next().expect("closing quote") {
                            '\\' => {
                                assert!(matches!(chars.next(), Some('\\' | '"' | 'n')), "{line}")
                            }
                            '"' => break,
                            '\n' => panic!("raw newline"),
                            _ => {}
                        }
                    }
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("{other:?} in {line}"),
                    }
                }
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

#[test]
fn metrics_file_is_valid_prometheus_text_with_the_run_figures() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftwarden.prom");
    let json_file = dir.path().join("r.json");
    let out = run(bin()
        .args(["reconcile", "-o", "table", "--metrics-file"])
        .arg(&file)
        .arg("--json-report")
        .arg(&json_file));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&read(&json_file)).unwrap();
    let s = &report["summary"];
    let m = parse_prometheus(&read(&file));
    assert_eq!(
        m["driftwarden_resources_checked"],
        s["resources_checked"].as_f64().unwrap()
    );
    assert_eq!(
        m["driftwarden_resources_in_sync"],
        s["in_sync"].as_f64().unwrap()
    );
    assert_eq!(
        m["driftwarden_resources_drifted"],
        s["drifted"].as_f64().unwrap()
    );
    for class in ["safe", "risky", "forbidden", "unclassified"] {
        let want = s["by_class"]
            .get(class)
            .map_or(0.0, |v| v.as_f64().unwrap());
        assert_eq!(
            m[&format!("driftwarden_drifts{{class=\"{class}\"}}")],
            want,
            "{class}"
        );
    }
    for (k, v) in s["actions"].as_object().unwrap() {
        let (a, r) = k.split_once(':').unwrap();
        assert_eq!(
            m[&format!("driftwarden_actions{{action=\"{a}\",result=\"{r}\"}}")],
            v.as_f64().unwrap()
        );
    }
    let ratio = m["driftwarden_compliance_ratio"];
    assert!((ratio * 100.0 - s["compliance_score"].as_f64().unwrap()).abs() < 1e-9);
    assert!(m["driftwarden_run_duration_seconds"] > 0.0);
    assert!(m["driftwarden_last_run_timestamp_seconds"] > 1.7e9);
    let info = format!(
        "driftwarden_info{{version=\"{}\",command=\"reconcile\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m[&info], 1.0);
}

/// One HTTP request read off a loopback socket: request line, headers, body.
fn serve_once(
    listener: std::net::TcpListener,
    status: &'static str,
) -> std::thread::JoinHandle<(String, BTreeMap<String, String>, String)> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = BTreeMap::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        (
            request_line.trim_end().to_string(),
            headers,
            String::from_utf8(body).unwrap(),
        )
    })
}

#[test]
fn metrics_are_pushed_to_a_pushgateway_and_a_failed_push_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.prom");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, "200 OK");
    let out = run(bin()
        .args([
            "diff",
            "--config",
            "fixtures/demo/driftwarden.yaml",
            "--shard",
            "0/1",
            "--metrics-file",
        ])
        .arg(&file)
        .arg("--pushgateway")
        .arg(format!("http://127.0.0.1:{port}")));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (line, headers, body) = server.join().unwrap();
    assert_eq!(
        line,
        "PUT /metrics/job/driftwarden/command/diff/shard/0 HTTP/1.1"
    );
    assert_eq!(headers["content-type"], driftwarden::metrics::CONTENT_TYPE);
    assert_eq!(headers["host"], format!("127.0.0.1:{port}"));
    // The pushed text is the metrics file's, and valid.
    let file_text = read(&file);
    let strip = |t: &str| {
        t.lines()
            .filter(|l| {
                !l.starts_with("driftwarden_run_duration_seconds")
                    && !l.starts_with("driftwarden_last_run_timestamp_seconds")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&body), strip(&file_text));
    parse_prometheus(&body);

    // A Pushgateway that refuses: logged, the exit code still says "drift found".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, "400 Bad Request");
    let out = run(bin()
        .args(["diff", "--pushgateway"])
        .arg(format!("http://127.0.0.1:{port}/")));
    server.join().unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("metrics were not pushed"),
        "{}",
        stderr(&out)
    );
    // Nothing listening at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(bin()
        .args(["diff", "--pushgateway"])
        .arg(format!("http://127.0.0.1:{closed}")));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot reach the Pushgateway"),
        "{}",
        stderr(&out)
    );
}
