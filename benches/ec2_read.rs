//! Benchmark of the live EC2 reader and the state-vs-live compare against moto's EC2 server:
//! 2,000 instances and 2,000 security groups (`DRIFTWARDEN_BENCH_EC2` changes the count).
//!
//! `cargo bench --bench ec2_read` (moto from `DRIFTWARDEN_MOTO_ENDPOINT`, else started with
//! scripts/moto) creates the resources in one region, then measures:
//! - the in-process read of every kind ([`ec2::read_region`]): wall time, HTTP requests per
//!   Describe call (asserted: moto ignores `MaxResults` and never returns a `NextToken`, so each
//!   call is exactly one page, sent with the API's largest page size), and the rise of peak RSS;
//! - the compare of a matching state (every instance and group in it) with that read;
//! - the whole CLI (`driftwarden diff` with that state): wall time and its peak RSS.
//!
//! Results go to stdout as Markdown rows for docs/performance.md.

#[path = "../tests/support/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use driftwarden::live::ec2::{self, Ec2Inventory, ReadRequest, RequestCounter, ResourceKind};
use driftwarden::terraform::compare::{self, CompareOptions, StateSource};
use driftwarden::terraform::state;
use serde_json::{Value, json};

const REGION: &str = "ap-southeast-2";

fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resets the peak RSS of this process (Linux: `5` to /proc/self/clear_refs).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

async fn create(c: &Client, n: usize) -> Duration {
    let t = Instant::now();
    let vpc = c
        .describe_vpcs()
        .send()
        .await
        .unwrap()
        .vpcs()
        .iter()
        .find(|v| v.is_default() == Some(true))
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();
    let mut left = n;
    while left > 0 {
        let batch = left.min(500) as i32;
        c.run_instances()
            .image_id("ami-12345678")
            .min_count(batch)
            .max_count(batch)
            .send()
            .await
            .unwrap();
        left -= batch as usize;
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = c.clone();
        let vpc = vpc.clone();
        let sem = Arc::clone(&sem);
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            c.create_security_group()
                .group_name(format!("bench-{i}"))
                .description("bench")
                .vpc_id(vpc)
                .send()
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    t.elapsed()
}

/// A state holding every instance and security group of the read, as Terraform would.
fn state_of(inv: &Ec2Inventory) -> Value {
    let mut resources = Vec::new();
    for (kind, name) in [
        (ResourceKind::Instance, "node"),
        (ResourceKind::SecurityGroup, "group"),
    ] {
        let instances: Vec<Value> = inv
            .resources
            .iter()
            .filter(|r| r.kind == kind && !r.aws_managed)
            .enumerate()
            .map(|(i, r)| {
                let mut a = r.attributes.clone();
                a["arn"] = json!(format!(
                    "arn:aws:ec2:{REGION}:123456789012:{}/{}",
                    kind.ec2_type(),
                    r.id
                ));
                a["tags_all"] = a["tags"].clone();
                json!({"index_key": i, "schema_version": 1, "attributes": a, "sensitive_attributes": []})
            })
            .collect();
        resources.push(json!({
            "mode": "managed", "type": kind.terraform_type(), "name": name, "each": "list",
            "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]", "instances": instances
        }));
    }
    json!({"version": 4, "terraform_version": "1.9.8", "serial": 1, "lineage": "bench", "resources": resources})
}

fn main() {
    let Some(ep) = moto::endpoint() else {
        eprintln!("moto is not available; nothing to measure");
        return;
    };
    let n: usize = std::env::var("DRIFTWARDEN_BENCH_EC2")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = moto::client(&ep, REGION);
    let setup = rt.block_on(create(&c, n));
    eprintln!("created {n} instances and {n} security groups in {setup:.1?}");

    // 1. The reader, in process.
    let counter = RequestCounter::default();
    let counted = Client::from_conf(c.config().to_builder().interceptor(counter.clone()).build());
    let peak_reset = reset_peak();
    let rss_before = status_kb("self", "VmRSS:").unwrap_or(0);
    let t = Instant::now();
    let read = rt.block_on(ec2::read_region(&counted, REGION, &ReadRequest::default()));
    let read_time = t.elapsed();
    let peak_read = status_kb("self", "VmHWM:").unwrap_or(0);
    assert!(read.failures.is_empty(), "{:?}", read.failures);
    let count = |k: ResourceKind| read.resources.iter().filter(|r| r.kind == k).count();
    assert_eq!(count(ResourceKind::Instance), n);
    assert_eq!(
        count(ResourceKind::SecurityGroup),
        n + 1,
        "and the default group"
    );
    let requests: BTreeMap<String, usize> = counter.snapshot();
    for k in ResourceKind::ALL {
        assert_eq!(
            requests.get(k.describe_call()),
            Some(&1),
            "one page per call: {requests:?}"
        );
    }
    let sizes = counter.page_sizes();
    assert_eq!(sizes["DescribeInstances"], "1000");
    assert_eq!(sizes["DescribeSecurityGroups"], "1000");

    // 2. The compare with a matching state.
    let inv = Ec2Inventory {
        regions: vec![REGION.to_string()],
        resources: read.resources,
        ..Ec2Inventory::default()
    };
    let state_doc = state_of(&inv);
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("terraform.tfstate");
    std::fs::write(&state_path, serde_json::to_vec(&state_doc).unwrap()).unwrap();
    let t = Instant::now();
    let st = state::load(&state_path).unwrap();
    let src = StateSource {
        state: st,
        source: "bench".into(),
        file: "terraform.tfstate".into(),
        commit: None,
    };
    let outcome = compare::compare(
        &[src],
        &inv,
        &CompareOptions {
            target: "bench".into(),
            workspace: "default".into(),
            unmanaged: true,
            ..CompareOptions::default()
        },
    );
    let compare_time = t.elapsed();
    assert!(outcome.drifts.is_empty(), "{:#?}", outcome.drifts.first());
    assert_eq!(outcome.checked, 2 * n);

    // 3. The whole CLI.
    std::fs::write(
        dir.path().join("driftwarden.yaml"),
        format!(
            "policies: {{dirs: [{root}/policies]}}\ntargets:\n  - name: bench\n    desired:\n      terraform: {{state: terraform.tfstate}}\n    live:\n      ec2: {{regions: [{REGION}], endpoint: '{ep}'}}\n",
            root = env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    cmd.args(["diff", "-c", "driftwarden.yaml", "-o", "json"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null());
    for (k, v) in moto::env(dir.path()) {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let mut cli_peak = 0;
    let status = loop {
        if let Some(kb) = status_kb(&pid, "VmHWM:") {
            cli_peak = cli_peak.max(kb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let cli_time = t.elapsed();
    assert_eq!(status.code(), Some(0), "the state matches live: no drift");

    let total: usize = requests.values().sum();
    println!("| what | {n} instances + {n} security groups |");
    println!("|---|---|");
    println!("| setup in moto (not driftwarden) | {setup:.1?} |");
    println!(
        "| read, every kind (in process) | {read_time:.2?}, {total} requests (1 per Describe call) |"
    );
    if peak_reset {
        println!(
            "| read, peak RSS rise | {} (from {} to {}) |",
            mib(peak_read.saturating_sub(rss_before)),
            mib(rss_before),
            mib(peak_read)
        );
    }
    println!(
        "| state parse + compare ({} resources) | {compare_time:.2?} |",
        2 * n
    );
    println!(
        "| `driftwarden diff` end to end | {cli_time:.2?}, peak RSS {} |",
        mib(cli_peak)
    );
}
