//! Benchmark of classification: 100,000 drifts through the default policy library.
//!
//! `cargo bench --bench policy` classifies a generated set of drifts (distinct resources, five
//! realistic shapes: a Deployment drifted by scale, image and label with its whole desired and
//! live objects; an Ingress label; a ConfigMap value; a privileged container; a Terraform
//! security group opened to the world) on one thread, then on every core, and reports drifts per
//! second, cost per drift and the cost of each shape. It checks every verdict against the
//! interpreter on a sample, so a fast wrong answer cannot pass for a result.
//!
//! `DRIFTWARDEN_BENCH_DRIFTS` (default 100000) and `DRIFTWARDEN_BENCH_RUNS` (default 3) change the
//! size and the number of runs; `DRIFTWARDEN_BENCH_POLICIES` measures another policy directory;
//! `DRIFTWARDEN_BENCH_ONE_THREAD_ONLY=1` stops after the one-thread runs (for a profiler).

use std::path::PathBuf;

/// The binary's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use driftwarden::model::{
    Attribution, ChangeOp, Class, Drift, DriftKind, FieldChange, Mode, ResourceId, fingerprint,
};
use driftwarden::policy::{PolicyConfig, PolicyDir, PolicyEngine, Related, RunContext};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).expect(rel);
    serde_json::from_str(&text).expect(rel)
}

fn change(path: &str, desired: Value, live: Value) -> FieldChange {
    FieldChange {
        path: path.into(),
        op: if desired.is_null() {
            ChangeOp::ExtraLive
        } else if live.is_null() {
            ChangeOp::MissingLive
        } else {
            ChangeOp::Changed
        },
        desired,
        live,
        masked: false,
        attribution: None,
        class: None,
    }
}

fn attributed(mut c: FieldChange, manager: &str) -> FieldChange {
    c.attribution = Some(Attribution {
        manager: manager.into(),
        operation: "Update".into(),
        time: Some("2026-11-22T02:59:01Z".into()),
        subresource: None,
    });
    c
}

fn k8s(group: &str, kind: &str, ns: &str, name: String) -> ResourceId {
    ResourceId::Kubernetes {
        cluster: "bench".into(),
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        namespace: Some(ns.into()),
        name,
    }
}

fn drift(id: ResourceId, changes: Vec<FieldChange>, objects: Option<(Value, Value)>) -> Drift {
    let (desired_object, live_object) = match objects {
        Some((d, l)) => (Some(d), Some(l)),
        None => (None, None),
    };
    Drift {
        fingerprint: fingerprint("bench", &id),
        target: "bench".into(),
        resource: id.into(),
        kind: DriftKind::Modified,
        changes,
        provenance: None,
        verdict: None,
        action: None,
        desired_object,
        live_object,
    }
}

/// The five shapes, for resource number `i`.
fn shape(i: usize, objects: &(Value, Value)) -> (&'static str, Drift) {
    let ns = format!("ns-{}", i % 50);
    match i % 5 {
        0 => (
            "Deployment: scale, image, label, whole objects",
            drift(
                k8s("apps", "Deployment", &ns, format!("web-{i}")),
                vec![
                    change("/spec/replicas", json!(2), json!(3)),
                    attributed(
                        change(
                            "/spec/template/spec/containers/0/image",
                            json!("nginx:1.27.3"),
                            json!("nginx:1.27.4"),
                        ),
                        "kubectl-set",
                    ),
                    change("/metadata/labels/tier", json!("frontend"), json!("web")),
                ],
                Some(objects.clone()),
            ),
        ),
        1 => (
            "Ingress: one label",
            drift(
                k8s("networking.k8s.io", "Ingress", &ns, format!("site-{i}")),
                vec![attributed(
                    change("/metadata/labels/team", json!("storefront"), json!("sre")),
                    "kubectl-label",
                )],
                None,
            ),
        ),
        2 => (
            "ConfigMap: one value",
            drift(
                k8s("", "ConfigMap", &ns, format!("config-{i}")),
                vec![change("/data/TIMEOUT_MS", json!("800"), json!("2500"))],
                None,
            ),
        ),
        3 => (
            "Deployment: privileged container",
            drift(
                k8s("apps", "Deployment", &ns, format!("worker-{i}")),
                vec![change(
                    "/spec/template/spec/containers/1/securityContext",
                    json!({"allowPrivilegeEscalation": false}),
                    json!({"allowPrivilegeEscalation": true, "privileged": true}),
                )],
                None,
            ),
        ),
        _ => {
            let ssh = json!({"cidr_blocks": ["0.0.0.0/0"], "ipv6_cidr_blocks": [],
                             "from_port": 22, "to_port": 22, "protocol": "tcp"});
            (
                "Terraform security group: SSH from anywhere",
                drift(
                    ResourceId::Terraform {
                        workspace: "prod".into(),
                        address: format!("aws_security_group.sg_{i}"),
                    },
                    vec![change("/ingress/0", Value::Null, ssh.clone())],
                    Some((
                        json!({"name": format!("sg-{i}"), "ingress": []}),
                        json!({"name": format!("sg-{i}"), "ingress": [ssh]}),
                    )),
                ),
            )
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("DRIFTWARDEN_BENCH_DRIFTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("DRIFTWARDEN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);

    let t = Instant::now();
    let engine = PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new(
            std::env::var_os("DRIFTWARDEN_BENCH_POLICIES")
                .map_or_else(|| root().join("policies"), PathBuf::from),
        )],
        data_files: vec![],
        strict_builtins: false,
    })
    .expect("the default library loads");
    let load = t.elapsed();
    let path = if engine.is_compiled() {
        "compiled (RVM)"
    } else {
        "interpreter"
    };

    let objects = (
        read_json("fixtures/policy/objects/deployment-storefront.desired.json"),
        read_json("fixtures/policy/objects/deployment-storefront.live.json"),
    );
    let ctx = RunContext {
        mode: Mode::Recommend,
        time: "2026-11-22T03:15:00Z".into(),
        command: "reconcile".into(),
        related: [("bench".to_string(), Related::default())].into(),
    };
    let set: Vec<Drift> = (0..n).map(|i| shape(i, &objects).1).collect();

    // Correctness first: a sample classified both ways must agree, and every shape gets the
    // class the default library gives it.
    let mut sample: Vec<Drift> = set.iter().take(500).cloned().collect();
    let mut reference = sample.clone();
    engine.classify(&mut sample, &ctx).expect("classify");
    engine
        .classify_interpreted(&mut reference, &ctx)
        .expect("classify with the interpreter");
    assert_eq!(
        sample, reference,
        "compiled and interpreted verdicts differ"
    );
    let expected = [
        Class::Risky,
        Class::Safe,
        Class::Risky,
        Class::Forbidden,
        Class::Forbidden,
    ];
    let default_library = std::env::var_os("DRIFTWARDEN_BENCH_POLICIES").is_none();
    for (i, d) in sample
        .iter()
        .take(5)
        .enumerate()
        .filter(|_| default_library)
    {
        let class = d.verdict.as_ref().map(|v| v.class);
        assert_eq!(class, Some(expected[i]), "{}", d.resource.display);
    }

    let mut one = Vec::new();
    for _ in 0..runs {
        let mut drifts = set.clone();
        let t = Instant::now();
        engine.classify(&mut drifts, &ctx).expect("classify");
        one.push(t.elapsed());
        assert!(drifts.iter().all(|d| d.verdict.is_some()));
    }
    if std::env::var_os("DRIFTWARDEN_BENCH_ONE_THREAD_ONLY").is_some() {
        // For profilers: the one-thread runs alone.
        let one_m = median(one);
        println!(
            "one thread: median {one_m:.2?} = {:.1} µs per drift",
            one_m.as_secs_f64() * 1e6 / n as f64
        );
        per_shape(&engine, &objects, &ctx);
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut par = Vec::new();
    for _ in 0..runs {
        let mut drifts = set.clone();
        let t = Instant::now();
        engine
            .classify_parallel(&mut drifts, &ctx, threads)
            .expect("classify");
        par.push(t.elapsed());
    }
    let mut interp = set.iter().take(n.min(10_000)).cloned().collect::<Vec<_>>();
    let t = Instant::now();
    engine
        .classify_interpreted(&mut interp, &ctx)
        .expect("classify with the interpreter");
    let interp_per = t.elapsed().as_secs_f64() / interp.len() as f64;

    let one_m = median(one);
    let per = one_m.as_secs_f64() / n as f64;
    println!("policy benchmark: {n} drifts, default library, {path}, load {load:.1?}");
    println!(
        "  one thread:   median {one_m:.2?} over {runs} runs = {:.0} drifts/s, {:.1} µs per drift",
        1.0 / per,
        per * 1e6
    );
    let par_m = median(par);
    println!(
        "  {threads} threads:    median {par_m:.2?} = {:.0} drifts/s",
        n as f64 / par_m.as_secs_f64()
    );
    println!(
        "  interpreter:  {:.0} drifts/s, {:.1} µs per drift (one thread, {} drifts, for comparison)",
        1.0 / interp_per,
        interp_per * 1e6,
        interp.len()
    );
    per_shape(&engine, &objects, &ctx);
}

/// The cost of each shape on its own: 5,000 drifts of one shape, one thread.
fn per_shape(engine: &PolicyEngine, objects: &(Value, Value), ctx: &RunContext) {
    for k in 0..5 {
        let (name, _) = shape(k, objects);
        let mut drifts: Vec<Drift> = (0..5_000).map(|j| shape(k + 5 * j, objects).1).collect();
        let t = Instant::now();
        engine.classify(&mut drifts, ctx).expect("classify");
        println!(
            "  {name}: {:.1} µs per drift",
            t.elapsed().as_secs_f64() * 1e6 / drifts.len() as f64
        );
    }
}
