//! Terraform state vs live EC2, end to end against moto's EC2 server (tests/support/moto.rs):
//! real AWS SDK calls, the real binary, the real policies.
//!
//! Each test owns one moto region, so tests running in parallel never see each other's
//! resources. Under CI a missing moto fails these tests; elsewhere they start moto themselves.

#[path = "support/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, Tag, TagSpecification};
use driftwarden::live::ec2::{self, ReadRequest, RequestCounter, ResourceKind};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ACCOUNT: &str = "123456789012";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn driftwarden(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    cmd.args(args).current_dir(dir).env_remove("CI");
    for (k, v) in moto::env(dir) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (code, stdout, stderr)
}

fn json_report(dir: &Path, args: &[&str], want_code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (code, out, err) = driftwarden(dir, &all);
    assert_eq!(
        code,
        want_code,
        "driftwarden {all:?} in {}\nstdout:\n{out}\nstderr:\n{err}",
        dir.display()
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"))
}

/// `json_report` with `--metrics-file DIR/METRICS` after `args`; the report and the EC2 request
/// samples of that metrics file.
fn json_report_with_metrics(
    dir: &Path,
    args: &[&str],
    metrics: &str,
    want_code: i32,
) -> (Value, BTreeMap<(String, String), u64>) {
    let metrics = dir.join(metrics);
    let mut all = args.to_vec();
    all.extend(["--metrics-file", metrics.to_str().unwrap()]);
    let report = json_report(dir, &all, want_code);
    (report, ec2_requests(&metrics))
}

/// A `policies` directory in `dir` whose one policy calls every Terraform change safe.
fn all_safe_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("all_safe.rego"),
        "package driftwarden.all_safe\n\n# Test only: every Terraform change is safe.\nclassify contains {\"class\": \"safe\", \"reason\": \"test policy\", \"rule\": \"all_safe\"} if input.provider == \"terraform\"\n",
    )
    .unwrap();
    policies
}

/// The config of `write_config` with the real policies, against an endpoint that refuses, each
/// call tried once.
fn write_refusing_config(dir: &Path, region: &str) {
    // A loopback port just released: nothing listens there, so every connection is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    write_config(
        dir,
        &format!("http://127.0.0.1:{port}"),
        region,
        &PathBuf::from(ROOT).join("policies"),
        "",
    );
    let cfg = std::fs::read_to_string(dir.join("driftwarden.yaml"))
        .unwrap()
        .replace("max_attempts: 2", "max_attempts: 1");
    std::fs::write(dir.join("driftwarden.yaml"), cfg).unwrap();
}

/// A security group `name`, described `<name> tier`, in `vpc`; its id.
async fn create_sg(c: &Client, name: &str, vpc: &str) -> String {
    c.create_security_group()
        .group_name(name)
        .description(format!("{name} tier"))
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string()
}

/// Tags `resource` with `key` = `value`.
async fn tag(c: &Client, resource: &str, key: &str, value: &str) {
    c.create_tags()
        .resources(resource)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .unwrap();
}

/// Adds the ingress rules `rules` to the security group `sg`.
async fn authorize(c: &Client, sg: &str, rules: &[IpPermission]) {
    c.authorize_security_group_ingress()
        .group_id(sg)
        .set_ip_permissions(Some(rules.to_vec()))
        .send()
        .await
        .unwrap();
}

fn tags(pairs: &[(&str, &str)]) -> TagSpecification {
    tag_spec(ResourceType::Instance, pairs)
}

/// The tags `pairs` for a new resource of type `rtype`.
fn tag_spec(rtype: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rtype);
    for (k, v) in pairs {
        b = b.tags(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn default_subnet(c: &Client, az: &str) -> (String, String) {
    let vpcs = c.describe_vpcs().send().await.unwrap();
    let vpc = vpcs
        .vpcs()
        .iter()
        .find(|v| v.is_default() == Some(true))
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();
    let subnets = c.describe_subnets().send().await.unwrap();
    let subnet = subnets
        .subnets()
        .iter()
        .find(|s| s.vpc_id() == Some(vpc.as_str()) && s.availability_zone() == Some(az))
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_string();
    (vpc, subnet)
}

fn tcp(port: i32, cidr: &str, description: Option<&str>) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(
            IpRange::builder()
                .cidr_ip(cidr)
                .set_description(description.map(str::to_string))
                .build(),
        )
        .build()
}

async fn launch(c: &Client, subnet: &str, sgs: &[&str], tag_pairs: &[(&str, &str)]) -> String {
    let out = c
        .run_instances()
        .image_id("ami-12345678")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .set_security_group_ids(Some(sgs.iter().map(|s| s.to_string()).collect()))
        .tag_specifications(tags(tag_pairs))
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

/// An `aws_instance` state instance the way Terraform writes it, from the live instance.
async fn tf_instance(c: &Client, region: &str, id: &str, extra: Value) -> Value {
    let out = c
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    let i = &out.reservations()[0].instances()[0];
    let root_id = i.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.volume_id())
        .unwrap()
        .to_string();
    let vol = c
        .describe_volumes()
        .volume_ids(&root_id)
        .send()
        .await
        .unwrap();
    let v = &vol.volumes()[0];
    let tags = tag_map(i.tags());
    let mut attrs = json!({
        "id": id,
        "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:instance/{id}"),
        "ami": i.image_id(),
        "instance_type": i.instance_type().unwrap().as_str(),
        "availability_zone": i.placement().and_then(|p| p.availability_zone()),
        "tenancy": "default",
        "subnet_id": i.subnet_id(),
        "vpc_security_group_ids": i.security_groups().iter().filter_map(|g| g.group_id()).collect::<Vec<_>>(),
        "security_groups": [],
        "key_name": "",
        "iam_instance_profile": "",
        "source_dest_check": true,
        "monitoring": false,
        "ebs_optimized": false,
        "private_ip": i.private_ip_address(),
        "associate_public_ip_address": true,
        "user_data": null,
        "disable_api_termination": false,
        "root_block_device": [{
            "delete_on_termination": true, "device_name": i.root_device_name(), "encrypted": false,
            "iops": 100, "kms_key_id": "", "tags": {}, "throughput": 0,
            "volume_id": root_id, "volume_size": v.size(), "volume_type": v.volume_type().unwrap().as_str()
        }],
        "ebs_block_device": [],
        "tags": tags,
        "tags_all": tags,
        "timeouts": null
    });
    merge(&mut attrs, extra);
    attrs
}

fn merge(a: &mut Value, b: Value) {
    if let (Some(am), Value::Object(bm)) = (a.as_object_mut(), b) {
        for (k, v) in bm {
            am.insert(k, v);
        }
    }
}

fn sg_rule(port: i64, cidrs: &[&str], description: &str) -> Value {
    json!({
        "cidr_blocks": cidrs, "description": description, "from_port": port, "ipv6_cidr_blocks": [],
        "prefix_list_ids": [], "protocol": "tcp", "security_groups": [], "self": false, "to_port": port
    })
}

fn all_egress() -> Value {
    json!({
        "cidr_blocks": ["0.0.0.0/0"], "description": "", "from_port": 0, "ipv6_cidr_blocks": [],
        "prefix_list_ids": [], "protocol": "-1", "security_groups": [], "self": false, "to_port": 0
    })
}

fn tf_sg(region: &str, id: &str, name: &str, vpc: &str, ingress: Vec<Value>, tags: Value) -> Value {
    json!({
        "id": id,
        "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:security-group/{id}"),
        "name": name, "name_prefix": "", "description": format!("{name} tier"), "vpc_id": vpc,
        "owner_id": ACCOUNT, "revoke_rules_on_delete": false,
        "ingress": ingress, "egress": [all_egress()],
        "tags": tags, "tags_all": tags, "timeouts": null
    })
}

fn resource(
    module: Option<&str>,
    rtype: &str,
    name: &str,
    each: Option<&str>,
    instances: Vec<Value>,
) -> Value {
    let mut r = json!({
        "mode": "managed", "type": rtype, "name": name,
        "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
        "instances": instances
    });
    if let Some(m) = module {
        r["module"] = json!(m);
    }
    if let Some(e) = each {
        r["each"] = json!(e);
    }
    r
}

fn instance(schema_version: u64, index: Option<Value>, attrs: Value) -> Value {
    let mut i = json!({"schema_version": schema_version, "attributes": attrs, "sensitive_attributes": [], "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjEifQ=="});
    if let Some(k) = index {
        i["index_key"] = k;
    }
    i
}

fn write_state(dir: &Path, resources: Vec<Value>) {
    let doc = json!({
        "version": 4, "terraform_version": "1.9.8", "serial": 12,
        "lineage": "0b6b3f2c-0d1e-4c55-9a0b-6f8e1d2c3b4a", "outputs": {},
        "resources": resources, "check_results": null
    });
    std::fs::write(
        dir.join("terraform.tfstate"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
}

fn write_config(dir: &Path, endpoint: &str, region: &str, policies: &Path, extra_ec2: &str) {
    let cfg = format!(
        r#"version: 1
policies:
  dirs: [{policies}]
state_dir: {state}
targets:
  - name: aws-{region}
    mode: autocorrect
    desired:
      terraform:
        state: terraform.tfstate
        workspace: prod
    live:
      ec2:
        regions: [{region}]
        endpoint: {endpoint}
        max_attempts: 2{extra_ec2}
    guardrails:
      max_correction_percent: 100
"#,
        policies = policies.display(),
        state = dir.join("state").display(),
    );
    std::fs::write(dir.join("driftwarden.yaml"), cfg).unwrap();
}

fn drift_by<'a>(report: &'a Value, display: &str) -> &'a Value {
    report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["display"] == display)
        .unwrap_or_else(|| panic!("no drift for {display} in {report:#}"))
}

fn paths(d: &Value) -> Vec<String> {
    d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect()
}

/// The issue's scenario: instances, a security group and a volume described by a state file;
/// a tag changed, an ingress rule from 0.0.0.0/0 added, an instance deleted and an unmanaged one
/// launched by direct API calls. `diff` classifies each with the real policies, `reconcile` in
/// autocorrect fixes the safe one, and the next run is clean for it.
#[test]
fn drift_classified_and_safe_drift_corrected() {
    let Some(ep) = moto::endpoint() else { return };
    let region = "eu-west-1";
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let c = moto::client(&ep, region);
    let (sg, web, gone, vol, vpc) = rt.block_on(async {
        let (vpc, subnet) = default_subnet(&c, "eu-west-1a").await;
        let sg = create_sg(&c, "web", &vpc).await;
        authorize(
            &c,
            &sg,
            &[
                tcp(443, "10.0.0.0/8", None),
                tcp(443, "192.168.0.0/16", None),
            ],
        )
        .await;
        tag(&c, &sg, "Name", "web").await;
        let web = launch(&c, &subnet, &[&sg], &[("Name", "web"), ("Env", "prod")]).await;
        let gone = launch(&c, &subnet, &[&sg], &[("Name", "batch")]).await;
        let vol = c
            .create_volume()
            .availability_zone("eu-west-1a")
            .size(10)
            .volume_type(aws_sdk_ec2::types::VolumeType::Gp2)
            .tag_specifications(tag_spec(ResourceType::Volume, &[("Name", "data")]))
            .send()
            .await
            .unwrap()
            .volume_id()
            .unwrap()
            .to_string();
        (sg, web, gone, vol, vpc)
    });
    let (web_attrs, gone_attrs) = rt.block_on(async {
        (
            tf_instance(&c, region, &web, json!({})).await,
            tf_instance(&c, region, &gone, json!({})).await,
        )
    });
    write_state(
        dir.path(),
        vec![
            resource(
                None,
                "aws_security_group",
                "web",
                None,
                vec![instance(
                    1,
                    None,
                    tf_sg(
                        region,
                        &sg,
                        "web",
                        &vpc,
                        // Terraform groups CIDRs of one port into one block; live has two ranges.
                        vec![sg_rule(443, &["10.0.0.0/8", "192.168.0.0/16"], "")],
                        json!({"Name": "web"}),
                    ),
                )],
            ),
            resource(
                None,
                "aws_instance",
                "app",
                Some("map"),
                vec![
                    instance(1, Some(json!("web")), web_attrs),
                    instance(1, Some(json!("batch")), gone_attrs),
                ],
            ),
            resource(
                Some("module.storage"),
                "aws_ebs_volume",
                "data",
                Some("list"),
                vec![instance(
                    0,
                    Some(json!(0)),
                    json!({
                        "id": vol, "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:volume/{vol}"),
                        "availability_zone": "eu-west-1a", "encrypted": false, "final_snapshot": false,
                        "iops": 100, "kms_key_id": "", "multi_attach_enabled": false, "outpost_arn": "",
                        "size": 10, "snapshot_id": "", "tags": {"Name": "data"}, "tags_all": {"Name": "data"},
                        "throughput": 0, "type": "gp2", "timeouts": null
                    }),
                )],
            ),
        ],
    );
    write_config(
        dir.path(),
        &ep,
        region,
        &PathBuf::from(ROOT).join("policies"),
        "",
    );

    // In sync first: no false drift from defaults (default VPC, subnets, security group, route
    // table), root volumes, primary network interfaces, grouped rules or computed attributes.
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 0);
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
    assert_eq!(report["summary"]["resources_checked"], 4, "{report:#}");

    // Drift by direct API calls.
    let stray = rt.block_on(async {
        tag(&c, &web, "Name", "web-hotfix").await;
        authorize(&c, &sg, &[tcp(22, "0.0.0.0/0", Some("debug"))]).await;
        c.terminate_instances()
            .instance_ids(&gone)
            .send()
            .await
            .unwrap();
        let (_, subnet) = default_subnet(&c, "eu-west-1a").await;
        launch(&c, &subnet, &[], &[("Name", "stray")]).await
    });

    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["drifted"], 4, "{report:#}");
    assert!(report.get("errors").is_none(), "{report:#}");

    let tag = drift_by(&report, "aws_instance.app[\"web\"]");
    assert_eq!(tag["kind"], "Modified");
    assert_eq!(paths(tag), ["/tags/Name"]);
    assert_eq!(tag["changes"][0]["desired"], "web");
    assert_eq!(tag["changes"][0]["live"], "web-hotfix");
    assert_eq!(tag["verdict"]["class"], "safe", "{tag:#}");
    assert_eq!(tag["provenance"]["file"], "terraform.tfstate");

    let rule = drift_by(&report, "aws_security_group.web");
    assert_eq!(paths(rule), ["/ingress"]);
    assert_eq!(rule["verdict"]["class"], "forbidden", "{rule:#}");
    assert!(
        rule["verdict"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().ends_with("public_ingress")),
        "{rule:#}"
    );

    let missing = drift_by(&report, "aws_instance.app[\"batch\"]");
    assert_eq!(missing["kind"], "Missing");
    assert_eq!(missing["verdict"]["class"], "risky");

    let unmanaged = drift_by(&report, &format!("instance {stray}"));
    assert_eq!(unmanaged["kind"], "Unmanaged");
    assert_eq!(unmanaged["verdict"]["class"], "risky");
    assert_eq!(unmanaged["resource"]["region"], region);
    assert_eq!(unmanaged["resource"]["account"], ACCOUNT);

    // The table names the drift too.
    let (code, table, _) = driftwarden(
        dir.path(),
        &["diff", "-c", "driftwarden.yaml", "--color", "never"],
    );
    assert_eq!(code, 2);
    assert!(table.contains("aws_security_group.web"), "{table}");

    // Autocorrect: the safe tag drift is corrected through the API and confirmed by a re-read;
    // the rest is left for pull requests and issues.
    let report = json_report(dir.path(), &["reconcile", "-c", "driftwarden.yaml"], 2);
    let tag = drift_by(&report, "aws_instance.app[\"web\"]");
    assert_eq!(tag["action"]["action"]["type"], "correct", "{tag:#}");
    assert_eq!(tag["action"]["result"], "done", "{tag:#}");
    assert!(
        tag["action"]["detail"]
            .as_str()
            .unwrap()
            .contains("CreateTags"),
        "{tag:#}"
    );
    let rule = drift_by(&report, "aws_security_group.web");
    assert_ne!(rule["action"]["result"], "done", "{rule:#}");
    // The audit log holds the correction's intent (the EC2 calls, the tag's value before) and
    // its confirmed result.
    let records = driftwarden::audit::read_dir(&dir.path().join("state/audit"), 0).unwrap();
    let (id, fields) = records
        .iter()
        .find_map(|r| match &r.event {
            driftwarden::audit::Event::Intent {
                id,
                operation,
                fields,
                fingerprint,
                ..
            } if operation.contains("CreateTags") && tag["fingerprint"] == fingerprint.as_str() => {
                Some((id.clone(), fields.clone()))
            }
            _ => None,
        })
        .expect("the EC2 correction's intent");
    assert!(
        !fields.is_empty() && fields.iter().all(|f| f.path.starts_with("/tags")),
        "{fields:?}"
    );
    assert!(records.iter().any(|r| matches!(&r.event,
        driftwarden::audit::Event::Result { id: rid, outcome: driftwarden::model::ActionResult::Done, confirmed: Some(true), .. } if *rid == id)));
    let live_tags = rt.block_on(async {
        let out = c
            .describe_instances()
            .instance_ids(&web)
            .send()
            .await
            .unwrap();
        tag_map(out.reservations()[0].instances()[0].tags())
    });
    assert_eq!(live_tags["Name"], "web");
    assert_eq!(live_tags["Env"], "prod");
    // The forbidden rule is still there: nothing but the safe drift was touched.
    let rules = rt.block_on(async {
        let out = c
            .describe_security_groups()
            .group_ids(&sg)
            .send()
            .await
            .unwrap();
        out.security_groups()[0].ip_permissions().len()
    });
    assert_eq!(rules, 2);

    // A second run is clean for the corrected drift and corrects nothing again.
    let report = json_report(dir.path(), &["reconcile", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["drifted"], 3, "{report:#}");
    let displays: Vec<&str> = report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resource"]["display"].as_str().unwrap())
        .collect();
    assert!(
        !displays.contains(&"aws_instance.app[\"web\"]"),
        "{displays:?}"
    );
    assert!(
        report["drifts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["action"]["result"] != "done"),
        "{report:#}"
    );
}

/// Security group rules (revoke the extra, authorize the missing), tags (create and delete),
/// source/dest check and termination protection, corrected when policy calls them safe;
/// `--dry-run` changes nothing first.
#[test]
fn rules_tags_and_attributes_corrected() {
    let Some(ep) = moto::endpoint() else { return };
    let region = "us-west-2";
    let dir = tempfile::tempdir().unwrap();
    let policies = all_safe_policies(dir.path());
    let rt = rt();
    let c = moto::client(&ep, region);
    let (sg, worker, vpc) = rt.block_on(async {
        let (vpc, subnet) = default_subnet(&c, "us-west-2a").await;
        let sg = create_sg(&c, "app", &vpc).await;
        authorize(
            &c,
            &sg,
            &[tcp(443, "10.0.0.0/8", None), tcp(80, "10.0.0.0/8", None)],
        )
        .await;
        let worker = launch(&c, &subnet, &[&sg], &[("Name", "worker"), ("Team", "core")]).await;
        (sg, worker, vpc)
    });
    let worker_attrs = rt.block_on(tf_instance(
        &c,
        region,
        &worker,
        json!({"disable_api_termination": true}),
    ));
    write_state(
        dir.path(),
        vec![
            resource(
                None,
                "aws_security_group",
                "app",
                None,
                vec![instance(
                    1,
                    None,
                    tf_sg(
                        region,
                        &sg,
                        "app",
                        &vpc,
                        vec![
                            sg_rule(443, &["10.0.0.0/8"], ""),
                            sg_rule(80, &["10.0.0.0/8"], ""),
                        ],
                        json!({}),
                    ),
                )],
            ),
            resource(
                None,
                "aws_instance",
                "worker",
                None,
                vec![instance(1, None, worker_attrs)],
            ),
        ],
    );
    write_config(
        dir.path(),
        &ep,
        region,
        &policies,
        "\n        unmanaged: false",
    );
    rt.block_on(async {
        c.revoke_security_group_ingress()
            .group_id(&sg)
            .ip_permissions(tcp(80, "10.0.0.0/8", None))
            .send()
            .await
            .unwrap();
        authorize(&c, &sg, &[tcp(8080, "192.168.0.0/16", Some("temporary"))]).await;
        c.modify_instance_attribute()
            .instance_id(&worker)
            .source_dest_check(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(false)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        c.delete_tags()
            .resources(&worker)
            .tags(Tag::builder().key("Team").build())
            .send()
            .await
            .unwrap();
        tag(&c, &worker, "Temp", "1").await;
    });

    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    let w = drift_by(&report, "aws_instance.worker");
    assert_eq!(
        paths(w),
        [
            "/disable_api_termination",
            "/source_dest_check",
            "/tags/Team",
            "/tags/Temp"
        ],
        "{w:#}"
    );
    let s = drift_by(&report, "aws_security_group.app");
    assert_eq!(paths(s), ["/ingress"]);

    // Dry run: the API accepts every call, nothing changes, nothing is recorded.
    let report = json_report(
        dir.path(),
        &["reconcile", "-c", "driftwarden.yaml", "--dry-run"],
        2,
    );
    for d in report["drifts"].as_array().unwrap() {
        assert_eq!(d["action"]["result"], "planned", "{d:#}");
        assert!(
            d["action"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("dry run"),
            "{d:#}"
        );
    }
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["drifted"], 2);

    let report = json_report(dir.path(), &["reconcile", "-c", "driftwarden.yaml"], 2);
    for d in report["drifts"].as_array().unwrap() {
        assert_eq!(d["action"]["result"], "done", "{d:#}");
    }
    let s = drift_by(&report, "aws_security_group.app");
    let detail = s["action"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("RevokeSecurityGroupIngress")
            && detail.contains("AuthorizeSecurityGroupIngress"),
        "{detail}"
    );

    // Live matches the state again.
    rt.block_on(async {
        let out = c
            .describe_security_groups()
            .group_ids(&sg)
            .send()
            .await
            .unwrap();
        let mut ports: Vec<i32> = out.security_groups()[0]
            .ip_permissions()
            .iter()
            .filter_map(|p| p.from_port())
            .collect();
        ports.sort();
        assert_eq!(ports, [80, 443]);
        let out = c
            .describe_instances()
            .instance_ids(&worker)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        assert_eq!(i.source_dest_check(), Some(true));
        let t = tag_map(i.tags());
        assert_eq!(t.get("Team").map(String::as_str), Some("core"));
        assert!(!t.contains_key("Temp"));
        let attr = c
            .describe_instance_attribute()
            .instance_id(&worker)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .unwrap();
        assert_eq!(
            attr.disable_api_termination().and_then(|b| b.value()),
            Some(true)
        );
    });
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 0);
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
}

/// Reading pages by the largest page size each Describe call allows. moto ignores MaxResults
/// and never returns a NextToken, so against moto every call is exactly one page: one request
/// per resource type and region, whatever the count (2,000 of each: `cargo bench --bench
/// ec2_read`, docs/performance.md).
#[test]
fn describe_calls_page_by_the_largest_size() {
    let Some(ep) = moto::endpoint() else { return };
    let region = "ap-northeast-1";
    let rt = rt();
    let c = moto::client(&ep, region);
    rt.block_on(async {
        let (vpc, subnet) = default_subnet(&c, "ap-northeast-1a").await;
        c.run_instances()
            .image_id("ami-12345678")
            .min_count(40)
            .max_count(40)
            .subnet_id(&subnet)
            .send()
            .await
            .unwrap();
        for i in 0..25 {
            c.create_security_group()
                .group_name(format!("g{i}"))
                .description("d")
                .vpc_id(&vpc)
                .send()
                .await
                .unwrap();
        }
        let counter = RequestCounter::default();
        let conf = c.config().to_builder().interceptor(counter.clone()).build();
        let counted = Client::from_conf(conf);
        let read = ec2::read_region(&counted, region, &ReadRequest::default()).await;
        assert!(read.failures.is_empty(), "{:?}", read.failures);
        let count = |k: ResourceKind| read.resources.iter().filter(|r| r.kind == k).count();
        assert_eq!(count(ResourceKind::Instance), 40);
        assert_eq!(count(ResourceKind::SecurityGroup), 26); // and the default group
        let requests = counter.snapshot();
        assert_eq!(requests.len(), ResourceKind::ALL.len(), "{requests:?}");
        for k in ResourceKind::ALL {
            assert_eq!(requests.get(k.describe_call()), Some(&1), "{requests:?}");
        }
        let sizes = counter.page_sizes();
        assert_eq!(sizes["DescribeInstances"], "1000");
        assert_eq!(sizes["DescribeSecurityGroups"], "1000");
        assert_eq!(sizes["DescribeRouteTables"], "100");
        assert_eq!(sizes["DescribeLaunchTemplates"], "200");
        assert!(!sizes.contains_key("DescribeAddresses"), "does not page");
    });
}

/// A failed Describe call makes the read partial: the report names the call, exits 1, and
/// reports nothing Missing for what it could not read. Needs no moto: the endpoint refuses.
#[test]
fn failed_calls_make_a_partial_read() {
    let dir = tempfile::tempdir().unwrap();
    write_state(
        dir.path(),
        vec![resource(
            None,
            "aws_instance",
            "web",
            None,
            vec![instance(
                1,
                None,
                json!({"id": "i-0123456789abcdef0", "availability_zone": "eu-central-1a", "tags": {}}),
            )],
        )],
    );
    write_refusing_config(dir.path(), "eu-central-1");
    let report = json_report(dir.path(), &["reconcile", "-c", "driftwarden.yaml"], 1);
    assert_eq!(report["summary"]["partial"], true);
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
    let messages: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("DescribeInstances") && m.contains("eu-central-1")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("DescribeSecurityGroups"))
    );
}

/// The `driftwarden_api_requests_total` samples of the EC2 provider in a metrics file, by
/// `(endpoint, result)`.
fn ec2_requests(metrics: &Path) -> BTreeMap<(String, String), u64> {
    let text = std::fs::read_to_string(metrics).unwrap();
    assert!(
        text.contains("# TYPE driftwarden_api_requests_total counter\n"),
        "{text}"
    );
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("driftwarden_api_requests_total{provider=\"ec2\",")
        else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_else(|| panic!("no {name} label: {line}"))
        };
        out.insert((label("endpoint"), label("result")), value.parse().unwrap());
    }
    out
}

fn count(requests: &BTreeMap<(String, String), u64>, endpoint: &str, result: &str) -> u64 {
    requests
        .get(&(endpoint.to_string(), result.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Each resource kind's Describe call counted exactly once, with `result`.
fn assert_each_describe_call_once(requests: &BTreeMap<(String, String), u64>, result: &str) {
    for k in ResourceKind::ALL {
        assert_eq!(
            count(requests, k.describe_call(), result),
            1,
            "{}: {requests:?}",
            k.describe_call()
        );
    }
}

/// Every EC2 call is counted in the Prometheus metrics with its result, like the Kubernetes
/// reader's requests: each Describe call of the read, the correction (`CreateTags`), the re-read
/// that confirms it, and a dry run's calls as the `DryRunOperation` answer they get.
#[test]
fn ec2_calls_are_counted_in_the_metrics() {
    let Some(ep) = moto::endpoint() else { return };
    let region = "ca-central-1";
    let dir = tempfile::tempdir().unwrap();
    let policies = all_safe_policies(dir.path());
    let rt = rt();
    let c = moto::client(&ep, region);
    let (sg, vpc) = rt.block_on(async {
        let (vpc, _) = default_subnet(&c, "ca-central-1a").await;
        let sg = create_sg(&c, "api", &vpc).await;
        // Hand-edited: Git says Team=core.
        tag(&c, &sg, "Team", "ops").await;
        (sg, vpc)
    });
    write_state(
        dir.path(),
        vec![resource(
            None,
            "aws_security_group",
            "api",
            None,
            vec![instance(
                1,
                None,
                tf_sg(region, &sg, "api", &vpc, vec![], json!({"Team": "core"})),
            )],
        )],
    );
    write_config(
        dir.path(),
        &ep,
        region,
        &policies,
        "\n        unmanaged: false",
    );

    // A dry run: the read, and the correction the API accepts without making it.
    let (report, requests) = json_report_with_metrics(
        dir.path(),
        &["reconcile", "-c", "driftwarden.yaml", "--dry-run"],
        "dry-run.prom",
        2,
    );
    let d = drift_by(&report, "aws_security_group.api");
    assert_eq!(d["action"]["result"], "planned", "{d:#}");
    assert_each_describe_call_once(&requests, "ok");
    assert_eq!(
        count(&requests, "CreateTags", "DryRunOperation"),
        1,
        "{requests:?}"
    );
    assert_eq!(count(&requests, "CreateTags", "ok"), 0, "{requests:?}");

    // The correction: the read, CreateTags, and the re-read of the security group.
    let (report, requests) = json_report_with_metrics(
        dir.path(),
        &["reconcile", "-c", "driftwarden.yaml"],
        "reconcile.prom",
        2,
    );
    let d = drift_by(&report, "aws_security_group.api");
    assert_eq!(d["action"]["result"], "done", "{d:#}");
    assert_eq!(count(&requests, "CreateTags", "ok"), 1, "{requests:?}");
    assert_eq!(
        count(&requests, "DescribeSecurityGroups", "ok"),
        2,
        "{requests:?}"
    );
    assert_eq!(
        count(&requests, "DescribeInstances", "ok"),
        1,
        "{requests:?}"
    );
    assert!(
        requests.keys().all(|(_, result)| result == "ok"),
        "{requests:?}"
    );
}

/// A call that gets no answer is counted with the kind of failure. Needs no moto: the endpoint
/// refuses.
#[test]
fn failed_ec2_calls_are_counted_with_their_result() {
    let dir = tempfile::tempdir().unwrap();
    write_state(dir.path(), vec![]);
    write_refusing_config(dir.path(), "eu-north-1");
    let (_, requests) = json_report_with_metrics(
        dir.path(),
        &["diff", "-c", "driftwarden.yaml"],
        "metrics.prom",
        1,
    );
    assert_each_describe_call_once(&requests, "dispatch_failure");
    assert!(
        !requests.keys().any(|(_, result)| result == "ok"),
        "{requests:?}"
    );
}

/// A VPC's DNS attributes (`DescribeVpcAttribute`) and a launch template's contents (its latest
/// version's, `DescribeLaunchTemplateVersions`) are compared: a state written the way the
/// provider writes them (unset values as `""`/`0`, `ebs` booleans as strings, `user_data` in
/// base64) is in sync; then DNS hostnames turned on and a new default version with another
/// instance type are reported as exactly those changes (the template's version numbers moved
/// with the new version). The per-VPC calls and the one contents call are counted in the
/// metrics.
#[test]
fn vpc_dns_attributes_and_launch_template_contents_drift() {
    /// The launch template data the drift test creates, with `instance_type` as given.
    fn lt_data(
        instance_type: aws_sdk_ec2::types::InstanceType,
        sg: &str,
        user_data: &str,
    ) -> aws_sdk_ec2::types::RequestLaunchTemplateData {
        use aws_sdk_ec2::types::{
            LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
            LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, VolumeType,
        };
        RequestLaunchTemplateData::builder()
            .image_id("ami-12345678")
            .instance_type(instance_type)
            .key_name("deploy")
            .security_group_ids(sg)
            .user_data(user_data)
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key("Name").value("web").build())
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(20)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    let Some(ep) = moto::endpoint() else { return };
    let region = "sa-east-1";
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let c = moto::client(&ep, region);
    // `#!/bin/sh\necho hi\n`, base64: the state keeps user_data as given.
    let user_data = "IyEvYmluL3NoCmVjaG8gaGkK";
    let (vpc, sg, lt) = rt.block_on(async {
        let vpc = c
            .create_vpc()
            .cidr_block("10.20.0.0/16")
            .tag_specifications(tag_spec(ResourceType::Vpc, &[("Name", "main")]))
            .send()
            .await
            .unwrap()
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap()
            .to_string();
        let sg = create_sg(&c, "lt-web", &vpc).await;
        c.create_key_pair().key_name("deploy").send().await.unwrap();
        let lt = c
            .create_launch_template()
            .launch_template_name("web")
            .launch_template_data(lt_data(
                aws_sdk_ec2::types::InstanceType::T3Micro,
                &sg,
                user_data,
            ))
            .send()
            .await
            .unwrap()
            .launch_template()
            .and_then(|t| t.launch_template_id())
            .unwrap()
            .to_string();
        (vpc, sg, lt)
    });
    let vpc_attrs = json!({
        "id": vpc, "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:vpc/{vpc}"),
        "assign_generated_ipv6_cidr_block": false, "cidr_block": "10.20.0.0/16",
        "default_network_acl_id": "", "default_route_table_id": "", "default_security_group_id": "",
        "dhcp_options_id": "", "enable_dns_hostnames": false, "enable_dns_support": true,
        "enable_network_address_usage_metrics": false, "instance_tenancy": "default",
        "ipv4_ipam_pool_id": null, "ipv4_netmask_length": null, "ipv6_association_id": "",
        "ipv6_cidr_block": "", "ipv6_cidr_block_network_border_group": "",
        "ipv6_ipam_pool_id": "", "ipv6_netmask_length": 0, "main_route_table_id": "",
        "owner_id": ACCOUNT, "tags": {"Name": "main"}, "tags_all": {"Name": "main"}
    });
    let mut lt_attrs = json!({
        "id": lt, "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:launch-template/{lt}"),
        "name": "web", "name_prefix": "", "description": "",
        "default_version": 1, "latest_version": 1, "update_default_version": null,
        "image_id": "ami-12345678", "instance_type": "t3.micro", "key_name": "deploy",
        "vpc_security_group_ids": [sg], "security_group_names": [], "user_data": user_data,
        "block_device_mappings": [{
            "device_name": "/dev/xvda", "no_device": "", "virtual_name": "",
            "ebs": [{
                "delete_on_termination": "true", "encrypted": "", "iops": 0, "kms_key_id": "",
                "snapshot_id": "", "throughput": 0, "volume_initialization_rate": 0,
                "volume_size": 20, "volume_type": "gp3"
            }]
        }],
        "tag_specifications": [{"resource_type": "instance", "tags": {"Name": "web"}}],
        "tags": {}, "tags_all": {}
    });
    // What the configuration leaves unset, as the provider stores it.
    merge(
        &mut lt_attrs,
        json!({
        "capacity_reservation_specification": [], "cpu_options": [], "credit_specification": [],
        "disable_api_stop": false, "disable_api_termination": false, "ebs_optimized": "",
        "elastic_gpu_specifications": [], "elastic_inference_accelerator": [],
        "enclave_options": [], "hibernation_options": [], "iam_instance_profile": [],
        "instance_initiated_shutdown_behavior": "", "instance_market_options": [],
        "instance_requirements": [], "kernel_id": "", "license_specification": [],
        "maintenance_options": [], "metadata_options": [], "monitoring": [],
        "network_interfaces": [], "placement": [], "private_dns_name_options": [],
        "ram_disk_id": ""
        }),
    );
    write_state(
        dir.path(),
        vec![
            resource(
                None,
                "aws_vpc",
                "main",
                None,
                vec![instance(1, None, vpc_attrs)],
            ),
            resource(
                None,
                "aws_launch_template",
                "web",
                None,
                vec![instance(0, None, lt_attrs)],
            ),
        ],
    );
    write_config(
        dir.path(),
        &ep,
        region,
        &PathBuf::from(ROOT).join("policies"),
        "\n        unmanaged: false",
    );

    // In sync: no false drift from the provider's unset values or shapes.
    let (report, requests) = json_report_with_metrics(
        dir.path(),
        &["diff", "-c", "driftwarden.yaml"],
        "in-sync.prom",
        0,
    );
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
    assert_eq!(report["summary"]["resources_checked"], 2, "{report:#}");
    // Two attributes of the one tracked VPC; one contents call for the region.
    assert_eq!(
        count(&requests, "DescribeVpcAttribute", "ok"),
        2,
        "{requests:?}"
    );
    assert_eq!(
        count(&requests, "DescribeLaunchTemplateVersions", "ok"),
        1,
        "{requests:?}"
    );

    // The reader's side of it: the attributes under the provider's names, for what is asked.
    let read = rt.block_on(ec2::read_region(
        &c,
        region,
        &ReadRequest {
            vpc_attributes_for: [vpc.clone()].into(),
            launch_template_data_for: [lt.clone()].into(),
            ..ReadRequest::default()
        },
    ));
    assert!(read.failures.is_empty(), "{:?}", read.failures);
    let live = |kind: ResourceKind, id: &str| {
        read.resources
            .iter()
            .find(|r| r.kind == kind && r.id == id)
            .map(|r| r.attributes.clone())
            .unwrap()
    };
    let v = live(ResourceKind::Vpc, &vpc);
    assert_eq!(
        (&v["enable_dns_support"], &v["enable_dns_hostnames"]),
        (&json!(true), &json!(false)),
        "{v:#}"
    );
    let t = live(ResourceKind::LaunchTemplate, &lt);
    for (k, want) in [
        ("image_id", json!("ami-12345678")),
        ("instance_type", json!("t3.micro")),
        ("key_name", json!("deploy")),
        ("vpc_security_group_ids", json!([sg])),
        ("user_data", json!(user_data)),
        (
            "tag_specifications",
            json!([{"resource_type": "instance", "tags": {"Name": "web"}}]),
        ),
        (
            "block_device_mappings",
            json!([{"device_name": "/dev/xvda", "ebs": [{
                "delete_on_termination": "true", "volume_size": 20, "volume_type": "gp3"
            }]}]),
        ),
    ] {
        assert_eq!(t[k], want, "{k}: {t:#}");
    }
    // Nothing asked, nothing extra read.
    let read = rt.block_on(ec2::read_region(&c, region, &ReadRequest::default()));
    let v = read
        .resources
        .iter()
        .find(|r| r.id == vpc)
        .map(|r| &r.attributes)
        .unwrap();
    assert!(v.get("enable_dns_support").is_none(), "{v:#}");

    // Drift by direct API calls: DNS hostnames on; a new default version, another type.
    rt.block_on(async {
        c.modify_vpc_attribute()
            .vpc_id(&vpc)
            .enable_dns_hostnames(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(true)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let v = c
            .create_launch_template_version()
            .launch_template_id(&lt)
            .launch_template_data(lt_data(
                aws_sdk_ec2::types::InstanceType::T3Large,
                &sg,
                user_data,
            ))
            .send()
            .await
            .unwrap()
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap();
        c.modify_launch_template()
            .launch_template_id(&lt)
            .default_version(v.to_string())
            .send()
            .await
            .unwrap();
    });

    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["drifted"], 2, "{report:#}");
    let v = drift_by(&report, "aws_vpc.main");
    assert_eq!(v["kind"], "Modified", "{v:#}");
    assert_eq!(paths(v), ["/enable_dns_hostnames"], "{v:#}");
    assert_eq!(v["changes"][0]["desired"], false, "{v:#}");
    assert_eq!(v["changes"][0]["live"], true, "{v:#}");
    let t = drift_by(&report, "aws_launch_template.web");
    assert_eq!(t["kind"], "Modified", "{t:#}");
    assert_eq!(
        paths(t),
        ["/default_version", "/instance_type", "/latest_version"],
        "{t:#}"
    );
    let change = |p: &str| {
        t["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p)
            .map(|c| (c["desired"].clone(), c["live"].clone()))
            .unwrap()
    };
    assert_eq!(
        change("/instance_type"),
        (json!("t3.micro"), json!("t3.large"))
    );
    assert_eq!(change("/default_version"), (json!(1), json!(2)));
    assert_eq!(change("/latest_version"), (json!(1), json!(2)));

    // A sensitive user_data (the state marks it, as Terraform does for a sensitive variable):
    // Git's and live's values differ, and neither appears in any report format or in the trace
    // logs, where the AWS SDK's own logging of the DescribeLaunchTemplateVersions exchange goes.
    // Git's: `#!/bin/sh\nexport TOKEN=DESIRED-CANARY-2b7e\n`; live's: `...LIVE-CANARY-9d41...`.
    let desired_ud = "IyEvYmluL3NoCmV4cG9ydCBUT0tFTj1ERVNJUkVELUNBTkFSWS0yYjdlCg==";
    let live_ud = "IyEvYmluL3NoCmV4cG9ydCBUT0tFTj1MSVZFLUNBTkFSWS05ZDQxCg==";
    rt.block_on(async {
        let v = c
            .create_launch_template_version()
            .launch_template_id(&lt)
            .launch_template_data(lt_data(
                aws_sdk_ec2::types::InstanceType::T3Large,
                &sg,
                live_ud,
            ))
            .send()
            .await
            .unwrap()
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap();
        c.modify_launch_template()
            .launch_template_id(&lt)
            .default_version(v.to_string())
            .send()
            .await
            .unwrap();
    });
    let mut state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("terraform.tfstate")).unwrap(),
    )
    .unwrap();
    for r in state["resources"].as_array_mut().unwrap() {
        if r["type"] == "aws_launch_template" {
            let i = &mut r["instances"][0];
            i["attributes"]["user_data"] = json!(desired_ud);
            i["attributes"]["instance_type"] = json!("t3.large");
            i["attributes"]["default_version"] = json!(3);
            i["attributes"]["latest_version"] = json!(3);
            i["sensitive_attributes"] = json!([[{"type": "get_attr", "value": "user_data"}]]);
        }
    }
    std::fs::write(
        dir.path().join("terraform.tfstate"),
        serde_json::to_string_pretty(&state).unwrap(),
    )
    .unwrap();
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    let t = drift_by(&report, "aws_launch_template.web");
    assert_eq!(paths(t), ["/user_data"], "{t:#}");
    assert_eq!(t["changes"][0]["masked"], true, "{t:#}");
    let canaries = [
        desired_ud,
        live_ud,
        "DESIRED-CANARY-2b7e",
        "LIVE-CANARY-9d41",
        // The base64 of `CANARY-` at the offsets the two values carry it.
        "UkVELUNBTkFSWS0yYjdl",
        "NBTkFSWS05ZDQx",
    ];
    for format in ["table", "json", "markdown", "sarif", "junit"] {
        let (code, out, err) = driftwarden(
            dir.path(),
            &[
                "--log-level",
                "trace",
                "--log-format",
                "json",
                "diff",
                "-c",
                "driftwarden.yaml",
                "-o",
                format,
            ],
        );
        assert_eq!(code, 2, "{format}: {err}");
        assert!(
            err.contains("DescribeLaunchTemplateVersions"),
            "the trace log covers the exchange"
        );
        for canary in canaries {
            assert!(!out.contains(canary), "the {format} report leaks {canary}");
            assert!(!err.contains(canary), "the trace log leaks {canary}");
        }
    }
}

/// Security group rules whose group no state holds (another stack's group): each standalone
/// rule is compared with the live rules of its group and counted as checked. In place → in
/// sync; a rule revoked by hand → Missing; a description changed → Modified; a group that does
/// not exist → Missing.
#[test]
fn standalone_rules_on_a_group_no_state_holds_are_compared() {
    let Some(ep) = moto::endpoint() else { return };
    let region = "ap-southeast-2";
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let c = moto::client(&ep, region);
    let sg = rt.block_on(async {
        let (vpc, _) = default_subnet(&c, "ap-southeast-2a").await;
        // The group belongs to another stack: this state holds only rules on it.
        let sg = create_sg(&c, "shared", &vpc).await;
        authorize(
            &c,
            &sg,
            &[
                tcp(443, "10.0.0.0/8", Some("https from the vpc")),
                tcp(22, "10.1.0.0/16", Some("ssh from the bastion")),
            ],
        )
        .await;
        sg
    });
    let rule_https = json!({
        "id": format!("sgrule-1111111111"), "type": "ingress", "security_group_id": sg,
        "protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["10.0.0.0/8"],
        "ipv6_cidr_blocks": [], "prefix_list_ids": [], "self": false,
        "source_security_group_id": null, "description": "https from the vpc",
        "security_group_rule_id": "sgr-0a1b2c3d4e5f60001", "timeouts": null
    });
    let rule_ssh = json!({
        "id": "sgr-0a1b2c3d4e5f60002",
        "arn": format!("arn:aws:ec2:{region}:{ACCOUNT}:security-group-rule/sgr-0a1b2c3d4e5f60002"),
        "security_group_id": sg, "security_group_rule_id": "sgr-0a1b2c3d4e5f60002",
        "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "10.1.0.0/16",
        "cidr_ipv6": null, "prefix_list_id": null, "referenced_security_group_id": null,
        "description": "ssh from the bastion", "tags": null, "tags_all": {}
    });
    let state = |https: Value, extra: Vec<Value>| {
        let mut r = vec![
            resource(
                None,
                "aws_security_group_rule",
                "https",
                None,
                vec![instance(2, None, https)],
            ),
            resource(
                None,
                "aws_vpc_security_group_ingress_rule",
                "ssh",
                None,
                vec![instance(0, None, rule_ssh.clone())],
            ),
        ];
        r.extend(extra);
        write_state(dir.path(), r);
    };
    write_config(
        dir.path(),
        &ep,
        region,
        &PathBuf::from(ROOT).join("policies"),
        "\n        unmanaged: false",
    );

    // Both rules in place: in sync, and both counted as checked.
    state(rule_https.clone(), vec![]);
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 0);
    assert_eq!(report["summary"]["resources_checked"], 2, "{report:#}");
    assert_eq!(report["summary"]["in_sync"], 2, "{report:#}");

    // The state's description differs from live's: Modified, at the rule's description.
    let mut renamed = rule_https.clone();
    renamed["description"] = json!("https from the office");
    state(renamed, vec![]);
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    let d = drift_by(&report, "aws_security_group_rule.https");
    assert_eq!(d["kind"], "Modified", "{d:#}");
    assert_eq!(paths(d), ["/ingress/0/description"]);
    assert_eq!(d["changes"][0]["desired"], "https from the office");
    assert_eq!(d["changes"][0]["live"], "https from the vpc");

    // The ssh rule revoked by hand from the live group: Missing; the https rule still in sync.
    rt.block_on(async {
        c.revoke_security_group_ingress()
            .group_id(&sg)
            .set_ip_permissions(Some(vec![tcp(22, "10.1.0.0/16", None)]))
            .send()
            .await
            .unwrap();
    });
    state(rule_https.clone(), vec![]);
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["resources_checked"], 2, "{report:#}");
    assert_eq!(report["summary"]["in_sync"], 1, "{report:#}");
    let d = drift_by(&report, "aws_vpc_security_group_ingress_rule.ssh");
    assert_eq!(d["kind"], "Missing", "{d:#}");

    // A rule on a group that does not exist live: Missing, counted as checked.
    let mut orphan = rule_https.clone();
    orphan["security_group_id"] = json!("sg-0123456789abcdef0");
    state(
        rule_https.clone(),
        vec![resource(
            None,
            "aws_security_group_rule",
            "orphan",
            None,
            vec![instance(2, None, orphan)],
        )],
    );
    let report = json_report(dir.path(), &["diff", "-c", "driftwarden.yaml"], 2);
    assert_eq!(report["summary"]["resources_checked"], 3, "{report:#}");
    assert_eq!(
        drift_by(&report, "aws_security_group_rule.orphan")["kind"],
        "Missing"
    );
}
