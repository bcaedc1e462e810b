//! The live EC2 reader against a server that pages and throttles as EC2 does
//! (tests/support/ec2_query.rs): continuation tokens followed to the end with the reader's real
//! page size, `RequestLimitExceeded` retried by the reader's adaptive retry, and throttling that
//! never ends turned into a partial read naming the call, within the retry configuration's bound.
//! moto (tests/ec2_moto.rs) cannot show these: it never returns a `NextToken` for most calls and
//! never throttles.
//!
//! The clients are built by the reader's own [`ec2::connect`] (adaptive retry, `max_attempts`,
//! timeouts, endpoint override, request counter) with static test credentials. The SDK keeps its
//! adaptive rate limiter per retry partition (`ec2-{region}`) for the whole process, so each test
//! uses its own region and one test's throttling never slows another.

#[path = "support/common.rs"]
mod common;
#[path = "support/ec2_query.rs"]
mod ec2_query;
#[path = "support/moto.rs"]
mod moto;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_config::retry::{RetryConfig, RetryMode};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use driftwarden::config::Ec2Source;
use driftwarden::live::ec2::{self, ReadRequest, RegionRead, RequestCounter, ResourceKind};
use ec2_query::{Ec2QueryServer, Fleet, Logged};
use serde_json::{Value, json};

const DESCRIBE_INSTANCES: &str = "DescribeInstances";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server for `region` holding `running` running and `terminated` terminated instances.
fn fleet(region: &str, running: usize, terminated: usize) -> Ec2QueryServer {
    Ec2QueryServer::start(Fleet {
        region: region.into(),
        running,
        terminated,
    })
}

fn source(server: &Ec2QueryServer, region: &str, max_attempts: u32) -> Ec2Source {
    Ec2Source {
        regions: vec![region.to_string()],
        endpoint: Some(server.url()),
        max_attempts,
        ..Ec2Source::default()
    }
}

/// The reader's client for `region` of `server` ([`ec2::connect`]), with static test
/// credentials instead of the standard chain's.
async fn client(src: &Ec2Source, region: &str) -> (Client, RequestCounter) {
    let counter = RequestCounter::default();
    let (c, r) = ec2::connect(src, Some(region), &counter).await.unwrap();
    assert_eq!(r, region);
    let conf = c
        .config()
        .to_builder()
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    (Client::from_conf(conf), counter)
}

/// One read of every kind of a region.
struct Read {
    read: RegionRead,
    counter: RequestCounter,
    took: Duration,
    /// The retry configuration of the reader's client.
    retry: RetryConfig,
}

/// Reads every kind of `region` of `server` with the reader's client, `max_attempts` per call.
fn read(server: &Ec2QueryServer, region: &str, max_attempts: u32) -> Read {
    let src = source(server, region, max_attempts);
    rt().block_on(async {
        let (c, counter) = client(&src, region).await;
        let retry = c.config().retry_config().cloned().unwrap();
        assert_eq!(retry.mode(), RetryMode::Adaptive);
        assert_eq!(retry.max_attempts(), src.max_attempts);
        let t = Instant::now();
        let read = ec2::read_region(&c, region, &ReadRequest::default()).await;
        Read {
            read,
            counter,
            took: t.elapsed(),
            retry,
        }
    })
}

/// The longest `retries` retries of one call may take under `retry`: each waits at most
/// `max_backoff` (under adaptive retry a throttled retry waits for the client rate limiter,
/// which at its floor rate would ask for longer; the SDK caps that wait at `max_backoff`), plus
/// slack for the requests themselves, the pages after them and a loaded machine.
fn retry_bound(retry: &RetryConfig, retries: u32) -> Duration {
    retry.max_backoff() * retries + Duration::from_secs(20)
}

fn instance_ids(read: &RegionRead) -> BTreeSet<String> {
    read.resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Instance)
        .map(|r| r.id.clone())
        .collect()
}

/// The successful `DescribeInstances` requests form one token chain: the first without a token,
/// each next one with the token the previous answer returned, the last answered without one.
/// Every request asks for the reader's page size.
fn assert_chain(log: &[Logged], pages: usize) {
    let ok: Vec<&Logged> = log.iter().filter(|l| l.status == 200).collect();
    assert_eq!(ok.len(), pages, "{log:#?}");
    assert_eq!(ok[0].next_token, None, "{log:#?}");
    for w in ok.windows(2) {
        assert!(w[0].returned_token.is_some(), "{log:#?}");
        assert_eq!(w[1].next_token, w[0].returned_token, "{log:#?}");
    }
    assert_eq!(ok[pages - 1].returned_token, None, "{log:#?}");
    let page = ec2::MAX_PAGE.to_string();
    for l in log {
        assert_eq!(l.max_results.as_deref(), Some(page.as_str()), "{l:#?}");
    }
}

/// Every Describe call but `DescribeInstances` was requested once and answered 200.
fn assert_other_kinds_read_once(server: &Ec2QueryServer) {
    for k in ResourceKind::ALL
        .into_iter()
        .filter(|k| *k != ResourceKind::Instance)
    {
        let calls = server.log_of(k.describe_call());
        assert_eq!(calls.len(), 1, "{}: {calls:#?}", k.describe_call());
        assert_eq!(calls[0].status, 200, "{calls:#?}");
    }
}

/// (a) 2,500 running instances (and 40 terminated ones the reader's state filter drops), paged by
/// the reader's page size: `DescribeInstances` is requested exactly `ceil(2500 / 1000)` = 3 times,
/// following the token chain to its end, and every instance comes back once, parsed.
#[test]
fn follows_next_tokens_to_the_last_page() {
    let region = "eu-west-3";
    let server = fleet(region, 2500, 40);
    let Read { read, counter, .. } = read(&server, region, 5);
    assert!(read.failures.is_empty(), "{:?}", read.failures);

    let want: BTreeSet<String> = server.running_ids().into_iter().collect();
    assert_eq!(want.len(), 2500);
    let got = instance_ids(&read);
    assert_eq!(
        read.resources
            .iter()
            .filter(|r| r.kind == ResourceKind::Instance)
            .count(),
        2500,
        "no instance twice"
    );
    assert_eq!(got, want);

    let log = server.log_of(DESCRIBE_INSTANCES);
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_chain(&log, 3);
    // The filter went with every page; the terminated instances never came back.
    for l in &log {
        assert_eq!(l.params["Filter.1.Name"], "instance-state-name", "{l:#?}");
    }
    assert!(!got.contains(&server.instance_id(2500)));
    // The reader's own count agrees with the server's log.
    assert_eq!(counter.snapshot().get(DESCRIBE_INSTANCES), Some(&3));

    // The XML was read under the provider's names, the last page's instances included.
    let last = server.instance_id(2499);
    let attrs = &read
        .resources
        .iter()
        .find(|r| r.id == last)
        .unwrap()
        .attributes;
    for (k, want) in [
        ("instance_type", json!("t3.micro")),
        ("ami", json!("ami-0abcdef1234567890")),
        ("availability_zone", json!("eu-west-3a")),
        ("subnet_id", json!("subnet-0123456789abcdef0")),
        ("vpc_security_group_ids", json!(["sg-0123456789abcdef0"])),
        ("key_name", json!("deploy")),
        ("private_ip", json!("10.0.9.253")),
        ("source_dest_check", json!(true)),
        ("monitoring", json!(false)),
        ("instance_state", json!("running")),
        ("tags", json!({"Name": "node-2499"})),
    ] {
        assert_eq!(attrs[k], want, "{k}: {attrs:#}");
    }
    let owner = read.resources.iter().find(|r| r.id == last).unwrap();
    assert_eq!(owner.account, ec2_query::ACCOUNT);

    // Every other Describe call: one request, within its documented page-size range (the server
    // rejects any other size), answered empty.
    assert_other_kinds_read_once(&server);
    let all = server.log();
    assert_eq!(all.len(), 3 + ResourceKind::ALL.len() - 1, "{all:#?}");
}

/// (b) Two `RequestLimitExceeded` answers (HTTP 503), in the middle of the token chain: the
/// reader's adaptive retry sends the same page again, with the same token, and the read
/// completes with every instance.
#[test]
fn retries_throttled_pages_with_the_same_token() {
    let region = "ap-northeast-3";
    let server = fleet(region, 2500, 0);
    // The first page goes through; the next two DescribeInstances requests are throttled.
    server.throttle(DESCRIBE_INSTANCES, 1, 2);
    let Read {
        read,
        counter,
        took,
        retry,
    } = read(&server, region, 5);
    assert!(took < retry_bound(&retry, 2), "{took:?} for two retries");
    assert!(read.failures.is_empty(), "{:?}", read.failures);
    assert_eq!(instance_ids(&read).len(), 2500);

    let log = server.log_of(DESCRIBE_INSTANCES);
    let summary: Vec<(u16, Option<&str>, bool)> = log
        .iter()
        .map(|l| (l.status, l.error.as_deref(), l.next_token.is_some()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (200, None, false),
            (503, Some("RequestLimitExceeded"), true),
            (503, Some("RequestLimitExceeded"), true),
            (200, None, true),
            (200, None, true),
        ],
        "{log:#?}"
    );
    // The retries carried the token of the page they retried.
    let first_token = log[0].returned_token.clone();
    assert!(first_token.is_some());
    for l in &log[1..4] {
        assert_eq!(l.next_token, first_token, "{l:#?}");
    }
    assert_chain(&log, 3);
    // Retries are requests: the reader's own count includes them.
    assert_eq!(counter.snapshot().get(DESCRIBE_INSTANCES), Some(&5));
}

/// (c) Throttling that never ends: after `max_attempts` attempts the reader gives up on
/// `DescribeInstances`, records a failure naming it, reads every other kind, and returns within
/// the bound the retry configuration sets instead of hanging.
#[test]
fn endless_throttling_makes_a_partial_read() {
    let region = "sa-east-1";
    let server = fleet(region, 30, 0);
    server.throttle(DESCRIBE_INSTANCES, 0, usize::MAX);
    let max_attempts = 3;
    let Read {
        read,
        counter,
        took,
        retry,
    } = read(&server, region, max_attempts);
    assert!(
        took < retry_bound(&retry, max_attempts - 1),
        "{took:?} for {max_attempts} attempts"
    );
    assert_eq!(read.failures.len(), 1, "{:?}", read.failures);
    let f = &read.failures[0];
    assert_eq!(
        (f.call.as_str(), f.kind, f.region.as_str()),
        (DESCRIBE_INSTANCES, Some(ResourceKind::Instance), region)
    );
    assert!(f.message.contains("RequestLimitExceeded"), "{}", f.message);
    assert!(
        f.to_string()
            .starts_with("EC2 DescribeInstances in sa-east-1 failed"),
        "{f}"
    );
    assert!(instance_ids(&read).is_empty());

    let log = server.log_of(DESCRIBE_INSTANCES);
    assert_eq!(log.len(), max_attempts as usize, "{log:#?}");
    assert!(log.iter().all(Logged::throttled), "{log:#?}");
    assert!(log.iter().all(|l| l.status == 503), "{log:#?}");
    assert_eq!(
        counter.snapshot().get(DESCRIBE_INSTANCES),
        Some(&(max_attempts as usize))
    );
    // Every other kind was read, once.
    assert_other_kinds_read_once(&server);
}

/// (c) end to end: `driftwarden diff` with `max_attempts: 2` against endless throttling reports
/// the target partial (exit 1) with an error naming `DescribeInstances` and the region, reports
/// nothing Missing for the instance it could not read, and finishes within the retry bound.
#[test]
fn endless_throttling_marks_the_report_partial() {
    let region = "ca-central-1";
    let server = fleet(region, 5, 0);
    server.throttle(DESCRIBE_INSTANCES, 0, usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    let state = json!({
        "version": 4, "terraform_version": "1.9.8", "serial": 3,
        "lineage": "6c1a8f0e-3d2b-4f6a-9e7c-2b5d8a1f0c3e", "outputs": {},
        "resources": [{
            "mode": "managed", "type": "aws_instance", "name": "node",
            "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
            "instances": [{
                "schema_version": 1, "sensitive_attributes": [],
                "attributes": {
                    "id": server.instance_id(0),
                    "availability_zone": format!("{region}a"),
                    "instance_type": "t3.micro",
                    "tags": {"Name": "node-0"}
                }
            }]
        }],
        "check_results": null
    });
    common::write(
        dir.path(),
        "terraform.tfstate",
        &serde_json::to_string_pretty(&state).unwrap(),
    );
    let config = format!(
        r#"version: 1
policies:
  dirs: [{policies}]
state_dir: {state_dir}
targets:
  - name: aws-{region}
    mode: observe
    desired:
      terraform:
        state: terraform.tfstate
    live:
      ec2:
        regions: [{region}]
        endpoint: {endpoint}
        max_attempts: 2
"#,
        policies = common::root().join("policies").display(),
        state_dir = dir.path().join("state").display(),
        endpoint = server.url(),
    );
    common::write(dir.path(), "driftwarden.yaml", &config);

    let mut cmd = common::bin();
    cmd.args(["diff", "-c", "driftwarden.yaml", "-o", "json"])
        .current_dir(dir.path())
        .env_remove("CI")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EC2");
    for (k, v) in moto::env(dir.path()) {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let (code, out, err) = common::outcome(&mut cmd);
    let took = t.elapsed();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    // The binary's client keeps the SDK's default backoff, as the reader's does.
    let retry = RetryConfig::adaptive().with_max_attempts(2);
    assert!(took < retry_bound(&retry, 1), "{took:?} for 2 attempts");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["summary"]["partial"], true, "{report:#}");
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
    let messages: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("DescribeInstances")
            && m.contains(region)
            && m.contains("RequestLimitExceeded")),
        "{messages:?}"
    );
    let log = server.log_of(DESCRIBE_INSTANCES);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log.iter().all(Logged::throttled), "{log:#?}");
}

/// The server holds the reader to EC2's rules: page sizes outside DescribeInstances' range and
/// `MaxResults` with instance ids are rejected as EC2 rejects them, an unknown token too; the
/// reader's per-resource read (ids, no page size) and its attribute call are answered.
#[test]
fn server_rejects_what_ec2_rejects() {
    let region = "us-west-1";
    let server = fleet(region, 12, 0);
    rt().block_on(async {
        let (c, _) = client(&source(&server, region, 1), region).await;
        let code = |e: &SdkError<DescribeInstancesError, _>| {
            e.as_service_error()
                .and_then(|e| e.code())
                .map(str::to_string)
        };
        for size in [4, 1001] {
            let e = c
                .describe_instances()
                .max_results(size)
                .send()
                .await
                .unwrap_err();
            assert_eq!(
                code(&e).as_deref(),
                Some("InvalidParameterValue"),
                "MaxResults={size}"
            );
        }
        let e = c
            .describe_instances()
            .max_results(5)
            .instance_ids(server.instance_id(0))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("InvalidParameterCombination"));
        let e = c
            .describe_instances()
            .next_token("not-a-token")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("InvalidParameterValue"));
        // The smallest page EC2 allows pages too: 12 instances in 5 + 5 + 2.
        let pages: Vec<usize> = c
            .describe_instances()
            .max_results(5)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap()
            .iter()
            .map(|p| p.reservations().iter().map(|r| r.instances().len()).sum())
            .collect();
        assert_eq!(pages, vec![5, 5, 2]);

        let id = server.instance_id(7);
        let one = ec2::read_one(&c, ResourceKind::Instance, &id, true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one["id"], json!(id));
        assert_eq!(one["disable_api_termination"], json!(false));
        assert_eq!(one["tags"], json!({"Name": "node-7"}));
    });
}
