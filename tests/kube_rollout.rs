//! The simulated workload controllers of the Kubernetes test API server
//! (tests/support/kube_rollout.rs) against kube-controller-manager 1.32's captured status
//! (fixtures/golden/rollout): the applies replayed as captured, the status followed on a watch
//! until the simulated controller wrote it, then compared with the real one.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::time::Duration;

use golden::{RawStream, exchange_in, normalize, raw_exchange, request_body_in};
use kube_server::{KubeServer, Rollout, TOKEN};
use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";

/// How long a test waits for a status that must come; never reached when the server works.
const PATIENCE: Duration = Duration::from_secs(20);

fn addr(server: &KubeServer) -> String {
    server.url().trim_start_matches("http://").to_string()
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

/// What differs between two servers or two runs: uids, timestamps (condition times too),
/// resourceVersions, the
/// pod-template hash in ReplicaSet and revision names, and the order of conditions (not stable
/// on the real server either).
fn comparable(mut v: Value) -> Value {
    normalize(&mut v);
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    match (k.as_str(), child.as_str()) {
                        // The simulated controllers write less often than the real ones.
                        ("lastUpdateTime" | "lastTransitionTime" | "resourceVersion", Some(_)) => {
                            *child = json!("X")
                        }
                        ("message" | "currentRevision" | "updateRevision", Some(text)) => {
                            *child = json!(unhash(text))
                        }
                        _ => walk(child),
                    }
                }
                if let Some(Value::Array(cs)) = m.get_mut("conditions") {
                    cs.sort_by(|a, b| a["type"].as_str().cmp(&b["type"].as_str()));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The first path where two values differ, with both sides there.
fn first_difference(got: &Value, want: &Value, path: &str) -> Option<String> {
    match (got, want) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().chain(b.keys()) {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_difference(x, y, &format!("{path}/{k}")) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}/{i}"))),
        _ if got == want => None,
        _ => Some(format!("{path}: ours {got}, the real one {want}")),
    }
}

fn assert_same(got: Value, want: Value, name: &str) {
    let (got, want) = (comparable(got), comparable(want));
    if let Some(d) = first_difference(&got, &want, "") {
        panic!("{name}: {d}");
    }
}

/// `web-6f49754d6` → `web-HASH`.
fn unhash(text: &str) -> String {
    text.split('"')
        .map(|part| match part.rsplit_once('-') {
            Some((base, hash))
                if hash.len() >= 6 && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                format!("{base}-HASH")
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\"")
}

/// Replays a captured apply (or GET): same status, same body once compared.
async fn replay(server: &KubeServer, name: &str) -> Value {
    let want = exchange_in("rollout", name);
    let body = request_body_in("rollout", name);
    let content_type = (want.method == "PATCH").then_some(APPLY);
    let answer = raw_exchange(
        &addr(server),
        Some(TOKEN),
        &want.method,
        &want.target,
        content_type,
        &body,
    )
    .await;
    assert_eq!(answer.status, want.status, "{name}: {}", answer.body);
    let got = answer.json();
    assert_same(got.clone(), want.body, name);
    got
}

/// GETs the object a capture names and compares it with the capture.
async fn get_like(server: &KubeServer, name: &str) {
    let want = exchange_in("rollout", name);
    let answer = raw_exchange(&addr(server), Some(TOKEN), "GET", &want.target, None, "").await;
    assert_eq!(answer.status, 200);
    assert_same(answer.json(), want.body, name);
}

/// Reads a watch until an event's object satisfies `done`.
async fn until(stream: &mut RawStream, done: impl Fn(&Value) -> bool) {
    let wait = async {
        loop {
            let event = stream.event().await;
            if done(&event["object"]) {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the simulated controller writes the status");
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn reason(obj: &Value, kind: &str) -> String {
    condition(obj, kind)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn watch(server: &KubeServer, collection: &str) -> RawStream {
    RawStream::open(
        &addr(server),
        Some(TOKEN),
        &format!("{collection}?watch=1&timeoutSeconds=60"),
    )
    .await
}

/// a and b: Deployment `web` whose Pods never run. Created: the apply answers with an empty
/// status, the controller then observes it (a3), the deadline passes (a6). The image changes:
/// the apply's answer still shows the old failure with `observedGeneration` behind (b1), then
/// the new ReplicaSet times out too (b4: revision 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_failing_deployment_rollout_matches_the_controller() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-rollout-123446"));
    server.simulate_rollout("Deployment", None, None, Rollout::failing());
    let mut stream = watch(
        &server,
        "/apis/apps/v1/namespaces/golden-rollout-123446/deployments",
    )
    .await;
    replay(&server, "a2-apply-create-201").await;
    until(&mut stream, |o| {
        reason(o, "Progressing") == "ReplicaSetUpdated"
    })
    .await;
    get_like(&server, "a3-get-progressing-200").await;
    until(&mut stream, |o| {
        reason(o, "Progressing") == "ProgressDeadlineExceeded"
    })
    .await;
    get_like(&server, "a6-get-deadline-exceeded-200").await;

    let applied = replay(&server, "b1-apply-image-200").await;
    assert_eq!(
        (
            &applied["metadata"]["generation"],
            &applied["status"]["observedGeneration"]
        ),
        (&json!(2), &json!(1)),
        "the stale failure survives the apply"
    );
    until(&mut stream, |o| {
        o["status"]["observedGeneration"] == 2
            && reason(o, "Progressing") == "ProgressDeadlineExceeded"
    })
    .await;
    let got = server
        .object(
            "apps/v1",
            "Deployment",
            Some("golden-rollout-123446"),
            "web",
        )
        .unwrap();
    let want = exchange_in("rollout", "b4-get-deadline-exceeded-200").body;
    assert_eq!(
        got["metadata"]["annotations"],
        want["metadata"]["annotations"]
    );
    let conditions = |v: &Value| comparable(v.clone())["status"]["conditions"].clone();
    assert_eq!(conditions(&got), conditions(&want));
    // The new ReplicaSet's name is in the message, not the old one's.
    assert_ne!(
        condition(&got, "Progressing").unwrap()["message"],
        condition(&applied, "Progressing").unwrap()["message"]
    );
}

/// c: Deployment `idle` with no replicas completes at once (c2); scaled to 2 with Pods that
/// never run, it is `Available=False` with unavailable replicas while `Progressing` keeps
/// `NewReplicaSetAvailable` (c5: the deadline never fires after a scale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_scaled_deployment_keeps_progressing_but_is_unavailable() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-scale-123601"));
    server.simulate_rollout(
        "Deployment",
        Some("golden-scale-123601"),
        None,
        Rollout::failing(),
    );
    let mut stream = watch(
        &server,
        "/apis/apps/v1/namespaces/golden-scale-123601/deployments",
    )
    .await;
    replay(&server, "c1-apply-create-replicas0-201").await;
    until(&mut stream, |o| {
        reason(o, "Progressing") == "NewReplicaSetAvailable" && condition(o, "Available").is_some()
    })
    .await;
    get_like(&server, "c2-get-replicas0-complete-200").await;
    let applied = replay(&server, "c4-apply-scale-to-2-200").await;
    assert_eq!(applied["status"]["observedGeneration"], 1);
    until(&mut stream, |o| {
        o["status"]["observedGeneration"] == 2
            && reason(o, "Available") == "MinimumReplicasUnavailable"
    })
    .await;
    get_like(&server, "c5-get-scaled-200").await;
}

/// d: StatefulSet `db` whose Pods never become ready: one Pod created, none available, no
/// conditions (d2); the create's answer already has the two non-omitempty counters (d1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_failing_statefulset_matches_the_controller() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-sts-ds-123641"));
    server.simulate_rollouts(Rollout::failing());
    let mut stream = watch(
        &server,
        "/apis/apps/v1/namespaces/golden-sts-ds-123641/statefulsets",
    )
    .await;
    replay(&server, "d1-statefulset-apply-create-201").await;
    until(&mut stream, |o| o["status"]["observedGeneration"] == 1).await;
    get_like(&server, "d2-statefulset-get-200").await;

    // The DaemonSet's create answer (d6); its simulated node never runs the Pod.
    let mut stream = watch(
        &server,
        "/apis/apps/v1/namespaces/golden-sts-ds-123641/daemonsets",
    )
    .await;
    replay(&server, "d6-daemonset-apply-create-201").await;
    until(&mut stream, |o| o["status"]["observedGeneration"] == 1).await;
    let agent = server
        .object(
            "apps/v1",
            "DaemonSet",
            Some("golden-sts-ds-123641"),
            "agent",
        )
        .unwrap();
    assert_eq!(
        agent["status"],
        json!({"currentNumberScheduled": 1, "numberMisscheduled": 0, "desiredNumberScheduled": 1,
            "numberReady": 0, "observedGeneration": 1, "updatedNumberScheduled": 1,
            "numberUnavailable": 1})
    );
}

/// Healthy rollouts: every counter at `spec.replicas`, `Available=True`, `Progressing=True
/// NewReplicaSetAvailable`; the status written through the `status` subresource by
/// kube-controller-manager, the generation unchanged and the applier's fields untouched. A
/// workload with an `unobserved` rule never gets a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_and_unobserved_rollouts() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-rollout-123446"));
    server.simulate_rollouts(Rollout::healthy());
    server.simulate_rollout("Deployment", None, Some("frozen"), Rollout::unobserved());
    let mut stream = watch(
        &server,
        "/apis/apps/v1/namespaces/golden-rollout-123446/deployments",
    )
    .await;
    replay(&server, "a2-apply-create-201").await;
    until(&mut stream, |o| {
        reason(o, "Progressing") == "NewReplicaSetAvailable"
    })
    .await;
    let web = server
        .object(
            "apps/v1",
            "Deployment",
            Some("golden-rollout-123446"),
            "web",
        )
        .unwrap();
    let status = &web["status"];
    assert_eq!(
        (
            &status["observedGeneration"],
            &status["replicas"],
            &status["updatedReplicas"],
            &status["readyReplicas"],
            &status["availableReplicas"],
        ),
        (&json!(1), &json!(2), &json!(2), &json!(2), &json!(2))
    );
    assert!(status.get("unavailableReplicas").is_none());
    assert_eq!(condition(&web, "Available").unwrap()["status"], "True");
    assert_eq!(web["metadata"]["generation"], 1);
    let managers: Vec<(&str, Option<&str>)> = web["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["manager"].as_str().unwrap(), e["subresource"].as_str()))
        .collect();
    assert_eq!(
        managers,
        [
            ("driftwarden", None),
            ("kube-controller-manager", Some("status"))
        ]
    );

    let mut frozen = exchange_in("rollout", "a2-apply-create-201");
    frozen.target = frozen.target.replace("/web?", "/frozen?");
    let body = request_body_in("rollout", "a2-apply-create-201")
        .replace("name: web\n  namespace", "name: frozen\n  namespace");
    let answer = raw_exchange(
        &addr(&server),
        Some(TOKEN),
        "PATCH",
        &frozen.target,
        Some(APPLY),
        &body,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    // Something written after it: by then the simulated controller would have run.
    server.apply_as(
        "driftwarden",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "later", "namespace": "golden-rollout-123446"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "later"}},
            "template": {"metadata": {"labels": {"app": "later"}},
                "spec": {"containers": [{"name": "c", "image": "registry.example.test/c:1"}]}}}}),
    );
    until(&mut stream, |o| {
        o["metadata"]["name"] == "later" && reason(o, "Progressing") == "NewReplicaSetAvailable"
    })
    .await;
    let frozen = server
        .object(
            "apps/v1",
            "Deployment",
            Some("golden-rollout-123446"),
            "frozen",
        )
        .unwrap();
    assert_eq!(frozen["status"], json!({}));
}
