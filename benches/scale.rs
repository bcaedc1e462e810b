//! Scale benchmark: the `driftwarden` binary over generated clusters of 1,000 and 10,000
//! objects (100,000 on request), shaped as a real API server stores them
//! (tests/support/scale.rs: Deployments, Services, ConfigMaps, Secrets and ServiceAccounts from
//! `fixtures/golden/`, 1% drifted).
//!
//! For each size, each measured as a child process (wall time, and peak resident memory from
//! `wait4`'s `ru_maxrss`):
//! - **bare parse**: this benchmark's own executable, re-run to parse the same files and keep
//!   every document in memory (driftwarden's YAML node tree for the desired files,
//!   `serde_json::Value` for the live files), with the binary's allocator: the denominator of
//!   the ratios;
//! - **offline**: `driftwarden diff --desired DIR --live DIR -o json` (YAML manifests, `kubectl
//!   get -o json` Lists); the report is checked: every planted drift found with its paths and
//!   class, nothing else;
//! - **desired only** (`--live` an empty directory: every object Missing, and classified) and
//!   **live only** (`--desired` one ConfigMap of a namespace live does not hold: every live
//!   object read, none compared);
//! - **live path**: `driftwarden diff --config` with a Kubernetes target against the test API
//!   server (tests/support/kube_server.rs) on loopback holding the same live objects, LISTed in
//!   pages (`page_size` half a kind's objects per namespace, at most 500: every kind and
//!   namespace takes two pages or more); the report is checked the same way.
//!
//! `cargo bench --bench scale` prints a Markdown table for docs/performance.md.
//! `DRIFTWARDEN_BENCH_SCALE=1000,10000,100000` adds the 100,000 size (about 0.7 GB of files
//! and several minutes); `DRIFTWARDEN_BENCH_RUNS` (default 3 up to 10,000 objects, 1 above)
//! sets the runs per measure (the median time and the largest peak are reported);
//! `DRIFTWARDEN_BENCH_SKIP` (comma-separated: `bare,offline,desired,live-only,kube`) leaves
//! measures out; `DRIFTWARDEN_BIN` measures another build of the binary instead of cargo's.

#[path = "../tests/support/kube_server.rs"]
mod kube_server;
#[path = "../tests/support/scale.rs"]
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use scale::{Cluster, Measured};
use serde_json::Value;

// The binary's allocator, so the bare parse is measured as the binary would allocate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BARE_DESIRED: &str = "DRIFTWARDEN_SCALE_BARE_DESIRED";
const BARE_LIVE: &str = "DRIFTWARDEN_SCALE_BARE_LIVE";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The bare parse, in a child: every document kept until the end.
fn bare_parse(desired: &Path, live: &Path) {
    let mut desired_files = Vec::new();
    files(desired, &mut desired_files);
    let mut docs = Vec::new();
    for f in &desired_files {
        let text = std::fs::read_to_string(f).expect("read desired file");
        docs.extend(driftwarden::yaml::parse_documents(&text).expect("desired YAML"));
    }
    let mut live_files = Vec::new();
    files(live, &mut live_files);
    let mut lists = Vec::new();
    let mut items = 0;
    for f in &live_files {
        let bytes = std::fs::read(f).expect("read live file");
        let v: Value = serde_json::from_slice(&bytes).expect("live JSON");
        items += v["items"].as_array().map_or(0, Vec::len);
        lists.push(v);
    }
    println!("{} desired documents, {items} live items", docs.len());
    std::hint::black_box((docs, lists));
}

struct Row {
    objects: usize,
    what: &'static str,
    wall: Duration,
    rss_kib: u64,
}

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// `driftwarden diff -o json` with the default policy library.
fn diff() -> Command {
    let mut cmd = Command::new(scale::binary());
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    cmd.args(["diff", "-o", "json"]);
    cmd
}

/// Runs `make()` `runs` times; the median time and the largest peak. Each run's stdout goes to
/// `out`, and `check` sees the last one.
fn measure(
    runs: usize,
    out: &Path,
    mut make: impl FnMut() -> Command,
    accept: &[i32],
) -> (Duration, u64) {
    let mut walls = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(std::fs::File::create(out).expect("stdout file"));
        let Measured {
            status,
            wall,
            max_rss_kib,
        } = scale::run_measured(&mut cmd).expect("run the child");
        assert!(
            status.code().is_some_and(|c| accept.contains(&c)),
            "{cmd:?} ended with {status}, expected one of {accept:?}"
        );
        walls.push(wall);
        rss = rss.max(max_rss_kib);
    }
    walls.sort();
    (walls[walls.len() / 2], rss)
}

fn check(cluster: &Cluster, report: &Path) {
    let text = std::fs::read_to_string(report).expect("report");
    let v: Value = serde_json::from_str(&text).expect("JSON report");
    if let Err(e) = cluster.check_report(&v) {
        panic!("{e}");
    }
}

fn kube_config(dir: &Path, desired: &Path, kubeconfig: &Path, page_size: usize) -> PathBuf {
    let path = dir.join("driftwarden.yaml");
    let text = format!(
        "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\ntargets:\n  - name: scale\n    cluster: scale\n    desired: {{dir: {desired}}}\n    live:\n      kubernetes: {{kubeconfig: {kc}, page_size: {page_size}}}\n",
        policies = policies().display(),
        state = dir.join("state").display(),
        desired = desired.display(),
        kc = kubeconfig.display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn size(n: usize, skip: &[String], rows: &mut Vec<Row>) {
    let runs = std::env::var("DRIFTWARDEN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if n <= 10_000 { 3 } else { 1 });
    let on = |what: &str| !skip.iter().any(|s| s == what);
    let dir = tempfile::tempdir().expect("tempdir");
    let desired = dir.path().join("desired");
    let live = dir.path().join("live");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    // Desired for "live files only": one ConfigMap in a namespace live does not have, so every
    // live object is read and none compared.
    let unrelated = dir.path().join("unrelated");
    std::fs::create_dir_all(&unrelated).expect("unrelated dir");
    std::fs::write(
        unrelated.join("configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\n  namespace: elsewhere\ndata:\n  k: v\n",
    )
    .expect("write unrelated manifest");
    let cluster = Cluster::new(n);
    let db = cluster.write_desired(&desired).expect("write desired");
    let lb = cluster.write_live(&live).expect("write live");
    eprintln!(
        "{n} objects in {} namespaces: desired {:.1} MB, live {:.1} MB, {} planted drifts",
        cluster.namespaces,
        db as f64 / 1e6,
        lb as f64 / 1e6,
        cluster.planted().len()
    );
    let report = dir.path().join("report.json");
    let mut row = |what, (wall, rss_kib)| {
        eprintln!(
            "  {what}: {:.2} s, {:.0} MiB",
            Duration::as_secs_f64(&wall),
            rss_kib as f64 / 1024.0
        );
        rows.push(Row {
            objects: n,
            what,
            wall,
            rss_kib,
        });
    };
    if on("bare") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = Command::new(std::env::current_exe().expect("own path"));
                cmd.env(BARE_DESIRED, &desired)
                    .env(BARE_LIVE, &live)
                    .stdin(Stdio::null());
                cmd
            },
            &[0],
        );
        row(
            "bare parse (YAML node trees + `serde_json::Value`s, all kept)",
            m,
        );
    }
    if on("offline") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(policies())
                    .arg("--desired")
                    .arg(&desired)
                    .arg("--live")
                    .arg(&live);
                cmd
            },
            &[2],
        );
        check(&cluster, &report);
        row("`diff --desired DIR --live DIR`", m);
    }
    if on("live-only") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(policies())
                    .arg("--desired")
                    .arg(&unrelated)
                    .arg("--live")
                    .arg(&live);
                cmd
            },
            &[2],
        );
        row("the same, live files only (nothing to compare)", m);
    }
    if on("desired") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(policies())
                    .arg("--desired")
                    .arg(&desired)
                    .arg("--live")
                    .arg(&empty);
                cmd
            },
            &[2],
        );
        row("the same, desired files only (every object Missing)", m);
    }
    if on("kube") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(kube_server::KubeServer::start());
        cluster.for_each_live(|obj| server.seed(obj));
        let kubeconfig = server.write_kubeconfig(dir.path());
        // Every kind and namespace holds about n / (5 × namespaces) objects: LISTed in two
        // pages or more, at most 500 to a page (the default).
        let page_size = (n / (5 * cluster.namespaces) / 2).clamp(1, 500);
        let config = kube_config(dir.path(), &desired, &kubeconfig, page_size);
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--config").arg(&config);
                cmd
            },
            &[2],
        );
        check(&cluster, &report);
        let lists = server.requests().iter().filter(|r| r.is_list()).count();
        let continued = server
            .requests()
            .iter()
            .filter(|r| r.is_list() && r.param("continue").is_some())
            .count();
        assert!(continued > 0, "the LISTs were paged");
        eprintln!(
            "  kube: {lists} LIST requests over {runs} run(s), {continued} with a continue token, page size {page_size}"
        );
        row(
            "`diff --config`, Kubernetes target, test API server (paged LISTs)",
            m,
        );
        drop(server);
        rt.shutdown_background();
    }
}

fn main() {
    if let (Ok(d), Ok(l)) = (std::env::var(BARE_DESIRED), std::env::var(BARE_LIVE)) {
        bare_parse(Path::new(&d), Path::new(&l));
        return;
    }
    let sizes: Vec<usize> = std::env::var("DRIFTWARDEN_BENCH_SCALE")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let skip: Vec<String> = std::env::var("DRIFTWARDEN_BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rows = Vec::new();
    for &n in &sizes {
        size(n, &skip, &mut rows);
    }
    println!(
        "| objects | what | time | objects/s | µs per object | × bare parse (time) | peak RSS | × bare parse (RSS) | RSS per object |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let bare = rows
            .iter()
            .find(|b| b.objects == r.objects && b.what.starts_with("bare parse"));
        let secs = r.wall.as_secs_f64();
        let ratio = |a: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.1} | {} | {:.0} MiB | {} | {:.1} KiB |",
            r.objects,
            r.what,
            secs,
            r.objects as f64 / secs,
            secs * 1e6 / r.objects as f64,
            ratio(secs, bare.map(|b| b.wall.as_secs_f64())),
            r.rss_kib as f64 / 1024.0,
            ratio(r.rss_kib as f64, bare.map(|b| b.rss_kib as f64)),
            r.rss_kib as f64 / r.objects as f64,
        );
    }
}
