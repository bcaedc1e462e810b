//! The binary's peak resident memory stays under a ceiling at 20,000 objects, so a regression
//! of the streaming pipeline fails here rather than in a user's pod (the CronJob's memory limit
//! in deploy/ is sized from the same figures, docs/deploy.md).
//!
//! Each test generates a cluster of 20,000 server-shaped objects (tests/support/scale.rs: five
//! kinds from `fixtures/golden/`, 1% drifted), runs the `driftwarden` binary as a child
//! process, and takes its peak resident set size from the kernel (`wait4`'s `ru_maxrss`): the
//! run must succeed (exit 2, drift found), report exactly the planted drifts with their classes,
//! and stay under the ceiling.
//! - a live snapshot: `diff --desired DIR --live DIR`, live as `kubectl get -o json` Lists;
//! - a paged LIST: `diff --config` with a Kubernetes target against the test API server
//!   (tests/support/kube_server.rs) holding the same objects in two namespaces, so each kind's
//!   LIST of 2,000 objects per namespace takes four pages of 500 (`limit`/`continue`).
//!
//! The ceilings are for the debug build `cargo test` makes; how they were chosen is at their
//! definitions. `DRIFTWARDEN_BIN` runs another build of the binary instead of cargo's.
//!
//! The binary is measured through a small launcher (`scale::measured_command`): a child
//! spawned straight from this process would carry this process's own peak (the test API
//! server with its 20,000 objects) in its `ru_maxrss`. That is also why this test has its own
//! `main` (`harness = false` in Cargo.toml): the launcher is this executable, started afresh.
//! It takes libtest's usual arguments that matter here: name filters, `--exact`, `--list`,
//! and `--ignored` (nothing is ignored, so that runs nothing).

#[path = "support/kube_server.rs"]
mod kube_server;
#[path = "support/scale.rs"]
mod scale;

use std::path::Path;
use std::process::Stdio;

use scale::Cluster;
use serde_json::Value;

const OBJECTS: usize = 20_000;

/// Peak resident memory allowed for `diff --desired --live` over 20,000 objects, in MiB.
/// Measured on 2026-12-07 with the debug build, through the launcher (the program's own
/// memory): 116 MiB with desired objects compacted as each file is parsed (main c47059c and
/// after), 241 MiB when the whole desired set was parsed before it was compacted (c524900).
/// Keeping every object, as before live objects streamed through the compare (a3dc3e8), costs
/// what the bare parse of the same files does: about 900 MiB (docs/performance.md, 448 MiB per
/// 10,000 objects). The ceiling leaves about a third of headroom and fails both earlier states.
const SNAPSHOT_CEILING_MIB: u64 = 160;

/// Peak resident memory allowed for `diff --config` over 20,000 objects LISTed in pages of 500,
/// in MiB. Measured the same way: 210 MiB with two parsed pages at a time (f5964fd), 268 MiB
/// when every LIST in flight (8) held its parsed page (c524900), and far more when each LIST
/// was compared only once complete (1f4ffab: up to 8 LISTs of 2,000 objects as values). A fifth
/// of headroom; the earlier states fail.
const LIST_CEILING_MIB: u64 = 256;

/// Runs `driftwarden` with `args` (stdout to `report`), returns its peak RSS in MiB after
/// checking that it found the drift and that the report holds exactly the planted drifts.
fn run_checked(cluster: &Cluster, args: &[&std::ffi::OsStr], report: &Path) -> u64 {
    let mut cmd = scale::measured_command(scale::binary());
    cmd.args(["diff", "-o", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(report).expect("report file"))
        .stderr(std::fs::File::create(report.with_extension("stderr")).expect("stderr file"));
    let m = scale::run_measured(&mut cmd).expect("run driftwarden");
    assert_eq!(
        m.status.code(),
        Some(2),
        "{cmd:?} ended with {}, expected 2 (drift found); stderr:\n{}",
        m.status,
        std::fs::read_to_string(report.with_extension("stderr")).unwrap_or_default()
    );
    let text = std::fs::read_to_string(report).expect("read the report");
    let v: Value = serde_json::from_str(&text).expect("the report is JSON");
    if let Err(e) = cluster.check_report(&v) {
        panic!("{e}");
    }
    m.max_rss_kib / 1024
}

fn a_live_snapshot_of_20000_objects_is_diffed_under_the_memory_ceiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let desired = dir.path().join("desired");
    let live = dir.path().join("live");
    let cluster = Cluster::new(OBJECTS);
    cluster.write_desired(&desired).expect("write desired");
    cluster.write_live(&live).expect("write live");
    assert_eq!(cluster.planted().len(), OBJECTS / 100, "1% drifted");
    let rss = run_checked(
        &cluster,
        &[
            "--policies".as_ref(),
            scale::policies().as_os_str(),
            "--desired".as_ref(),
            desired.as_os_str(),
            "--live".as_ref(),
            live.as_os_str(),
        ],
        &dir.path().join("report.json"),
    );
    eprintln!("diff --desired --live, {OBJECTS} objects: peak RSS {rss} MiB");
    assert!(
        rss <= SNAPSHOT_CEILING_MIB,
        "diff --desired --live over {OBJECTS} objects peaked at {rss} MiB, above the ceiling of {SNAPSHOT_CEILING_MIB} MiB"
    );
}

fn a_paged_list_of_20000_objects_is_diffed_under_the_memory_ceiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let desired = dir.path().join("desired");
    let cluster = Cluster {
        objects: OBJECTS,
        namespaces: 2,
    };
    cluster.write_desired(&desired).expect("write desired");
    let scale::Served {
        runtime: rt,
        server,
        kubeconfig,
    } = cluster.serve(dir.path());
    let config = scale::write_kube_config(
        dir.path(),
        "driftwarden.yaml",
        &desired,
        &kubeconfig,
        500,
        None,
        "",
    );
    let rss = run_checked(
        &cluster,
        &["--config".as_ref(), config.as_os_str()],
        &dir.path().join("report.json"),
    );
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_list())
        .collect();
    let continued = lists
        .iter()
        .filter(|r| r.param("continue").is_some())
        .count();
    // 5 kinds × 2 namespaces, about 2,000 objects each: 4 pages of 500.
    assert!(
        continued >= 30,
        "the LISTs were paged: {} LIST requests, {continued} with a continue token",
        lists.len()
    );
    assert!(
        lists
            .iter()
            .all(|r| r.param("limit").as_deref() == Some("500")),
        "every LIST asked for pages of 500"
    );
    eprintln!(
        "diff --config, {OBJECTS} objects in {} LIST pages: peak RSS {rss} MiB",
        lists.len()
    );
    assert!(
        rss <= LIST_CEILING_MIB,
        "diff --config over {OBJECTS} objects LISTed in pages peaked at {rss} MiB, above the ceiling of {LIST_CEILING_MIB} MiB"
    );
    drop(server);
    rt.shutdown_background();
}

/// The checks, by name, as libtest would list them.
const CHECKS: [(&str, fn()); 2] = [
    (
        "a_live_snapshot_of_20000_objects_is_diffed_under_the_memory_ceiling",
        a_live_snapshot_of_20000_objects_is_diffed_under_the_memory_ceiling,
    ),
    (
        "a_paged_list_of_20000_objects_is_diffed_under_the_memory_ceiling",
        a_paged_list_of_20000_objects_is_diffed_under_the_memory_ceiling,
    ),
];

fn main() {
    scale::launch_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let exact = flag("--exact");
    let selected: Vec<&(&str, fn())> = CHECKS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .filter(|_| !flag("--ignored"))
        .collect();
    if flag("--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} tests", selected.len());
    for (name, check) in &selected {
        println!("test {name} ...");
        check();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len(),
        CHECKS.len() - selected.len()
    );
}
