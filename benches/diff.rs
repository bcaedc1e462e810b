//! Benchmark of the diff over a generated set of objects (default 10,000: Deployments,
//! Services, ConfigMaps and Secrets shaped like the API server returns them, one in ten drifted).
//!
//! `cargo bench --bench diff` prints the median and spread of several runs, objects per second,
//! and the peak resident memory of the process. `DRIFTWARDEN_BENCH_OBJECTS` and
//! `DRIFTWARDEN_BENCH_RUNS` change the size and the number of runs.

use std::time::{Duration, Instant};

use driftwarden::diff::{DesiredObject, DiffOptions, LiveObject, diff_target};
use driftwarden::model::ResourceId;
use serde_json::{Value, json};

fn id(obj: &Value) -> ResourceId {
    let api = obj["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api.to_string()),
    };
    ResourceId::Kubernetes {
        cluster: "bench".into(),
        group,
        version,
        kind: obj["kind"].as_str().unwrap_or("").into(),
        namespace: obj["metadata"]["namespace"].as_str().map(String::from),
        name: obj["metadata"]["name"].as_str().unwrap_or("").into(),
    }
}

fn managed(fields: Value) -> Value {
    json!([{"manager": "driftwarden", "operation": "Apply", "apiVersion": "v1",
            "time": "2026-11-22T02:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}])
}

/// One desired/live pair; `drift` edits live the way a hand edit would.
fn pair(i: usize, drift: bool) -> (Value, Value) {
    let ns = format!("ns-{}", i % 20);
    match i % 4 {
        0 => {
            let name = format!("web-{i}");
            let desired = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "tier": "web"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                        {"name": "app", "image": "registry.example/app:1.2.3",
                         "ports": [{"containerPort": 8080}],
                         "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                         "resources": {"requests": {"cpu": 0.5, "memory": "256Mi"}, "limits": {"memory": "1Gi"}}}]}}}
            });
            let mut live = desired.clone();
            live["metadata"]["uid"] = json!(format!("uid-{i}"));
            live["metadata"]["resourceVersion"] = json!("12345");
            live["metadata"]["generation"] = json!(1);
            live["metadata"]["creationTimestamp"] = json!("2026-11-22T02:00:00Z");
            live["metadata"]["managedFields"] = managed(json!({"f:spec": {"f:replicas": {}}}));
            live["spec"]["progressDeadlineSeconds"] = json!(600);
            live["spec"]["revisionHistoryLimit"] = json!(10);
            live["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
            let c = &mut live["spec"]["template"]["spec"]["containers"][0];
            c["imagePullPolicy"] = json!("IfNotPresent");
            c["terminationMessagePath"] = json!("/dev/termination-log");
            c["terminationMessagePolicy"] = json!("File");
            c["ports"][0]["protocol"] = json!("TCP");
            c["resources"]["requests"]["cpu"] = json!("500m");
            c["env"] =
                json!([{"name": "LEVEL", "value": "info"}, {"name": "MODE", "value": "prod"}]);
            if let Some(a) = live["spec"]["template"]["spec"]["containers"].as_array_mut() {
                a.push(json!({"name": "sidecar", "image": "proxy:1"}));
            }
            live["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
            live["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
            live["status"] = json!({"replicas": 2, "readyReplicas": 2});
            if drift {
                live["spec"]["replicas"] = json!(5);
                live["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("registry.example/app:1.2.4");
            }
            (desired, live)
        }
        1 => {
            let name = format!("svc-{i}");
            let desired = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
            });
            let mut live = desired.clone();
            live["metadata"]["uid"] = json!(format!("uid-{i}"));
            live["spec"]["clusterIP"] = json!("10.0.0.1");
            live["spec"]["clusterIPs"] = json!(["10.0.0.1"]);
            live["spec"]["ports"][0]["protocol"] = json!("TCP");
            live["spec"]["sessionAffinity"] = json!("None");
            live["spec"]["type"] = json!("ClusterIP");
            if drift {
                live["spec"]["ports"][0]["targetPort"] = json!(9090);
            }
            (desired, live)
        }
        2 => {
            let name = format!("cfg-{i}");
            let data: serde_json::Map<String, Value> = (0..10)
                .map(|k| (format!("KEY_{k}"), json!(format!("value-{k}"))))
                .collect();
            let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns}, "data": data});
            let mut live = desired.clone();
            live["metadata"]["uid"] = json!(format!("uid-{i}"));
            live["metadata"]["resourceVersion"] = json!("1");
            if drift {
                live["data"]["KEY_3"] = json!("edited");
            }
            (desired, live)
        }
        _ => {
            let name = format!("sec-{i}");
            let desired = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns}, "type": "Opaque",
                "data": {"password": "c2VjcmV0"}});
            let mut live = desired.clone();
            live["metadata"]["uid"] = json!(format!("uid-{i}"));
            if drift {
                live["data"]["password"] = json!("b3RoZXI=");
            }
            (desired, live)
        }
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let n: usize = std::env::var("DRIFTWARDEN_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("DRIFTWARDEN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut desired = Vec::with_capacity(n);
    let mut live = Vec::with_capacity(n);
    for i in 0..n {
        let (d, l) = pair(i, i % 10 == 0);
        desired.push(DesiredObject {
            id: id(&d),
            object: d,
            provenance: None,
        });
        live.push(LiveObject {
            id: id(&l),
            object: l,
        });
    }
    let rss_before = peak_rss_kib();
    let opts = DiffOptions::new("bench");
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut drifted = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = diff_target(&desired, &live, &opts);
        times.push(start.elapsed());
        drifted = out.drifts.len();
        std::hint::black_box(out);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("diff benchmark: {n} objects, {runs} runs, {drifted} drifted per run");
    println!(
        "  median {:.1} ms  (min {:.1} ms, max {:.1} ms)  {:.0} objects/s",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        n as f64 / median.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (rss_before, peak_rss_kib()) {
        println!(
            "  peak RSS {:.1} MiB (inputs loaded: {:.1} MiB)",
            after as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }
    assert_eq!(drifted, n.div_ceil(10), "every planted drift is found");
}
