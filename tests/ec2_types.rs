//! The EC2 types tests/ec2_moto.rs leaves out, end to end against moto's EC2 server
//! (tests/support/moto.rs): a subnet, Elastic IPs, a network interface, a key pair, an internet
//! gateway, a NAT gateway and a route table, described by a state file written the way the
//! Terraform AWS provider (5.x) records them. `diff` finds no drift in them; then each drifts by a
//! direct API call and `diff` reports exactly that change, classified by the default policies.
//!
//! The test owns its moto region, so it never sees another test's resources.

#[path = "support/common.rs"]
mod common;
#[path = "support/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{DomainType, ResourceType, Tag, TagSpecification};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "ap-northeast-2";
const AZ: &str = "ap-northeast-2a";
/// A test key (its private half was thrown away).
const PUBLIC_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC3nn+wptZQN/RPSnIVlzoB3Phk6tyBNgFpxAsi6K5+w driftwarden-test";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn tagged(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

async fn tag(c: &Client, id: &str, key: &str, value: &str) {
    c.create_tags()
        .resources(id)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .unwrap();
}

/// `diff -o json` in `dir` against moto; asserts the exit code.
fn diff(dir: &Path, want_code: i32) -> Value {
    let mut cmd = common::bin();
    cmd.args(["diff", "-c", "driftwarden.yaml", "-o", "json"])
        .current_dir(dir)
        .env_remove("CI");
    for (k, v) in moto::env(dir) {
        cmd.env(k, v);
    }
    let out = common::run(&mut cmd);
    let (code, stdout, stderr) = (
        common::code(&out),
        common::stdout(&out),
        common::stderr(&out),
    );
    assert_eq!(code, want_code, "stdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"))
}

fn drift_by<'a>(report: &'a Value, display: &str) -> &'a Value {
    report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["display"] == display)
        .unwrap_or_else(|| panic!("no drift for {display} in {report:#}"))
}

/// (path, op, desired, live, class) of each change.
fn changes(d: &Value) -> Vec<(String, String, Value, Value, String)> {
    d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["op"].as_str().unwrap_or_default().to_string(),
                c["desired"].clone(),
                c["live"].clone(),
                c["class"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A managed resource with one instance, as Terraform writes it.
fn resource(rtype: &str, name: &str, schema_version: u64, attrs: Value) -> Value {
    json!({
        "mode": "managed", "type": rtype, "name": name,
        "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
        "instances": [{
            "schema_version": schema_version, "attributes": attrs, "sensitive_attributes": [],
            "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjAifQ=="
        }]
    })
}

fn arn(kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{id}")
}

fn name_tags(name: &str) -> Value {
    json!({"Name": name})
}

/// What the test creates.
struct Live {
    vpc: String,
    default_sg: String,
    main_rtb: String,
    subnet: String,
    eni: String,
    eni_ip: String,
    eip: aws_sdk_ec2::types::Address,
    nat_eip: aws_sdk_ec2::types::Address,
    key: aws_sdk_ec2::types::KeyPairInfo,
    igw: String,
    nat: aws_sdk_ec2::types::NatGateway,
    rtb: String,
    rtb_assoc: String,
}

async fn create(c: &Client) -> Live {
    let vpc = c
        .create_vpc()
        .cidr_block("10.30.0.0/16")
        .tag_specifications(tagged(ResourceType::Vpc, "main"))
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();
    let subnet = c
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.30.1.0/24")
        .availability_zone(AZ)
        .tag_specifications(tagged(ResourceType::Subnet, "app"))
        .send()
        .await
        .unwrap()
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_string();
    let eni_ip = "10.30.1.10".to_string();
    let eni = c
        .create_network_interface()
        .subnet_id(&subnet)
        .description("app")
        .private_ip_address(&eni_ip)
        .tag_specifications(tagged(ResourceType::NetworkInterface, "app"))
        .send()
        .await
        .unwrap()
        .network_interface()
        .and_then(|n| n.network_interface_id())
        .unwrap()
        .to_string();
    let alloc = |name: &'static str| async move {
        c.allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tagged(ResourceType::ElasticIp, name))
            .send()
            .await
            .unwrap()
            .allocation_id()
            .unwrap()
            .to_string()
    };
    let eip_id = alloc("app").await;
    c.associate_address()
        .allocation_id(&eip_id)
        .network_interface_id(&eni)
        .send()
        .await
        .unwrap();
    c.import_key_pair()
        .key_name("deploy")
        .public_key_material(Blob::new(PUBLIC_KEY))
        .tag_specifications(tagged(ResourceType::KeyPair, "deploy"))
        .send()
        .await
        .unwrap();
    let igw = c
        .create_internet_gateway()
        .tag_specifications(tagged(ResourceType::InternetGateway, "main"))
        .send()
        .await
        .unwrap()
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .unwrap()
        .to_string();
    c.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let nat_eip_id = alloc("nat").await;
    let nat_id = c
        .create_nat_gateway()
        .subnet_id(&subnet)
        .allocation_id(&nat_eip_id)
        .tag_specifications(tagged(ResourceType::Natgateway, "main"))
        .send()
        .await
        .unwrap()
        .nat_gateway()
        .and_then(|g| g.nat_gateway_id())
        .unwrap()
        .to_string();
    let rtb = c
        .create_route_table()
        .vpc_id(&vpc)
        .tag_specifications(tagged(ResourceType::RouteTable, "public"))
        .send()
        .await
        .unwrap()
        .route_table()
        .and_then(|t| t.route_table_id())
        .unwrap()
        .to_string();
    c.create_route()
        .route_table_id(&rtb)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    let rtb_assoc = c
        .associate_route_table()
        .route_table_id(&rtb)
        .subnet_id(&subnet)
        .send()
        .await
        .unwrap()
        .association_id()
        .unwrap()
        .to_string();

    // What the provider reads back after creating them.
    let default_sg = c
        .describe_security_groups()
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .find(|g| g.vpc_id() == Some(vpc.as_str()) && g.group_name() == Some("default"))
        .and_then(|g| g.group_id())
        .unwrap()
        .to_string();
    let main_rtb = c
        .describe_route_tables()
        .send()
        .await
        .unwrap()
        .route_tables()
        .iter()
        .find(|t| {
            t.vpc_id() == Some(vpc.as_str())
                && t.associations().iter().any(|a| a.main() == Some(true))
        })
        .and_then(|t| t.route_table_id())
        .unwrap()
        .to_string();
    let addresses = c.describe_addresses().send().await.unwrap();
    let address = |id: &str| {
        addresses
            .addresses()
            .iter()
            .find(|a| a.allocation_id() == Some(id))
            .unwrap()
            .clone()
    };
    let key = c
        .describe_key_pairs()
        .key_names("deploy")
        .send()
        .await
        .unwrap()
        .key_pairs()[0]
        .clone();
    let nat = c
        .describe_nat_gateways()
        .nat_gateway_ids(&nat_id)
        .send()
        .await
        .unwrap()
        .nat_gateways()[0]
        .clone();
    Live {
        eip: address(&eip_id),
        nat_eip: address(&nat_eip_id),
        vpc,
        default_sg,
        main_rtb,
        subnet,
        eni,
        eni_ip,
        key,
        igw,
        nat,
        rtb,
        rtb_assoc,
    }
}

/// An `aws_eip` in a VPC, associated with a network interface.
fn tf_eip(a: &aws_sdk_ec2::types::Address, name: &str) -> Value {
    let id = a.allocation_id().unwrap();
    let private_ip = a.private_ip_address().unwrap();
    let public_ip = a.public_ip().unwrap();
    json!({
        "address": null, "allocation_id": id, "arn": arn("elastic-ip", id),
        "associate_with_private_ip": null, "association_id": a.association_id(),
        "carrier_ip": "", "customer_owned_ip": "", "customer_owned_ipv4_pool": "",
        "domain": "vpc", "id": id, "instance": "", "ipam_pool_id": null,
        "network_border_group": REGION, "network_interface": a.network_interface_id(),
        "private_dns": format!("ip-{}.{REGION}.compute.internal", private_ip.replace('.', "-")),
        "private_ip": private_ip, "ptr_record": "",
        "public_dns": format!("ec2-{}.{REGION}.compute.amazonaws.com", public_ip.replace('.', "-")),
        "public_ip": public_ip, "public_ipv4_pool": "amazon",
        "tags": name_tags(name), "tags_all": name_tags(name), "timeouts": null, "vpc": true
    })
}

/// A route block of `aws_route_table`: every target attribute, unset ones as `""`.
fn tf_route(cidr: &str, targets: &[(&str, &str)]) -> Value {
    let mut r = json!({
        "carrier_gateway_id": "", "cidr_block": cidr, "core_network_arn": "",
        "destination_prefix_list_id": "", "egress_only_gateway_id": "", "gateway_id": "",
        "ipv6_cidr_block": "", "local_gateway_id": "", "nat_gateway_id": "",
        "network_interface_id": "", "transit_gateway_id": "", "vpc_endpoint_id": "",
        "vpc_peering_connection_id": ""
    });
    for (k, v) in targets {
        r[*k] = json!(v);
    }
    r
}

fn state(l: &Live) -> Value {
    let nat_address = &l.nat.nat_gateway_addresses()[0];
    let resources = vec![
        resource(
            "aws_vpc",
            "main",
            1,
            json!({
                "id": l.vpc, "arn": arn("vpc", &l.vpc),
                "assign_generated_ipv6_cidr_block": false, "cidr_block": "10.30.0.0/16",
                "default_network_acl_id": "", "default_route_table_id": l.main_rtb,
                "default_security_group_id": l.default_sg, "dhcp_options_id": "",
                "enable_dns_hostnames": false, "enable_dns_support": true,
                "enable_network_address_usage_metrics": false, "instance_tenancy": "default",
                "ipv4_ipam_pool_id": null, "ipv4_netmask_length": null, "ipv6_association_id": "",
                "ipv6_cidr_block": "", "ipv6_cidr_block_network_border_group": "",
                "ipv6_ipam_pool_id": "", "ipv6_netmask_length": 0,
                "main_route_table_id": l.main_rtb, "owner_id": ACCOUNT,
                "tags": name_tags("main"), "tags_all": name_tags("main")
            }),
        ),
        resource(
            "aws_subnet",
            "app",
            1,
            json!({
                "id": l.subnet, "arn": arn("subnet", &l.subnet),
                "assign_ipv6_address_on_creation": false, "availability_zone": AZ,
                "availability_zone_id": "apne2-az1", "cidr_block": "10.30.1.0/24",
                "customer_owned_ipv4_pool": "", "enable_dns64": false,
                "enable_lni_at_device_index": 0,
                "enable_resource_name_dns_a_record_on_launch": false,
                "enable_resource_name_dns_aaaa_record_on_launch": false,
                "ipv6_cidr_block": "", "ipv6_cidr_block_association_id": "", "ipv6_native": false,
                "map_customer_owned_ip_on_launch": false, "map_public_ip_on_launch": false,
                "outpost_arn": "", "owner_id": ACCOUNT,
                "private_dns_hostname_type_on_launch": "ip-name",
                "tags": name_tags("app"), "tags_all": name_tags("app"), "timeouts": null,
                "vpc_id": l.vpc
            }),
        ),
        resource(
            "aws_network_interface",
            "app",
            0,
            json!({
                "id": l.eni, "arn": arn("network-interface", &l.eni), "attachment": [],
                "description": "app", "interface_type": "", "ipv4_prefix_count": 0,
                "ipv4_prefixes": [], "ipv6_address_count": 0, "ipv6_address_list": [],
                "ipv6_address_list_enabled": false, "ipv6_addresses": [], "ipv6_prefix_count": 0,
                "ipv6_prefixes": [], "mac_address": "02:00:00:00:00:01", "outpost_arn": "",
                "owner_id": ACCOUNT, "private_dns_name": "", "private_ip": l.eni_ip,
                "private_ip_list": [l.eni_ip], "private_ip_list_enabled": false,
                "private_ips": [l.eni_ip], "private_ips_count": 0,
                "security_groups": [l.default_sg], "source_dest_check": true,
                "subnet_id": l.subnet, "tags": name_tags("app"), "tags_all": name_tags("app")
            }),
        ),
        resource("aws_eip", "app", 0, tf_eip(&l.eip, "app")),
        resource("aws_eip", "nat", 0, tf_eip(&l.nat_eip, "nat")),
        resource(
            "aws_key_pair",
            "deploy",
            1,
            json!({
                "id": "deploy", "arn": arn("key-pair", "deploy"),
                "fingerprint": l.key.key_fingerprint(), "key_name": "deploy",
                "key_name_prefix": "", "key_pair_id": l.key.key_pair_id(),
                "key_type": l.key.key_type().map(|t| t.as_str()), "public_key": PUBLIC_KEY,
                "tags": name_tags("deploy"), "tags_all": name_tags("deploy")
            }),
        ),
        resource(
            "aws_internet_gateway",
            "main",
            0,
            json!({
                "id": l.igw, "arn": arn("internet-gateway", &l.igw), "owner_id": ACCOUNT,
                "tags": name_tags("main"), "tags_all": name_tags("main"), "timeouts": null,
                "vpc_id": l.vpc
            }),
        ),
        // The provider keeps no arn for a NAT gateway: its region is the target's.
        resource(
            "aws_nat_gateway",
            "main",
            0,
            json!({
                "id": l.nat.nat_gateway_id(), "allocation_id": nat_address.allocation_id(),
                "association_id": nat_address.association_id(), "connectivity_type": "public",
                "network_interface_id": nat_address.network_interface_id(),
                "private_ip": nat_address.private_ip(), "public_ip": nat_address.public_ip(),
                "secondary_allocation_ids": [], "secondary_private_ip_address_count": 0,
                "secondary_private_ip_addresses": [], "subnet_id": l.subnet,
                "tags": name_tags("main"), "tags_all": name_tags("main"), "timeouts": null
            }),
        ),
        resource(
            "aws_route_table",
            "public",
            0,
            json!({
                "id": l.rtb, "arn": arn("route-table", &l.rtb), "owner_id": ACCOUNT,
                "propagating_vgws": [],
                "route": [tf_route("0.0.0.0/0", &[("gateway_id", &l.igw)])],
                "tags": name_tags("public"), "tags_all": name_tags("public"), "timeouts": null,
                "vpc_id": l.vpc
            }),
        ),
        // Not a type driftwarden compares: read, noted, never drift.
        resource(
            "aws_route_table_association",
            "public",
            0,
            json!({
                "id": l.rtb_assoc, "gateway_id": "", "route_table_id": l.rtb,
                "subnet_id": l.subnet, "timeouts": null
            }),
        ),
    ];
    json!({
        "version": 4, "terraform_version": "1.9.8", "serial": 7,
        "lineage": "6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b", "outputs": {},
        "resources": resources, "check_results": null
    })
}

fn write_config(dir: &Path, endpoint: &str) {
    let cfg = format!(
        r#"version: 1
policies:
  dirs: [{policies}]
state_dir: {state}
targets:
  - name: aws-types
    mode: observe
    desired:
      terraform:
        state: terraform.tfstate
        workspace: prod
    live:
      ec2:
        regions: [{REGION}]
        endpoint: {endpoint}
        max_attempts: 2
"#,
        policies = common::root().join("policies").display(),
        state = dir.join("state").display(),
    );
    common::write(dir, "driftwarden.yaml", &cfg);
}

/// Subnets, Elastic IPs, network interfaces, key pairs, internet and NAT gateways and route
/// tables described by a state as the provider writes it: no false drift. Then one drift each by
/// direct API calls, each reported with exactly its change and the default policies' class.
#[test]
fn other_types_in_sync_then_each_drift_classified() {
    let Some(ep) = moto::endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let c = moto::client(&ep, REGION);
    let l = rt.block_on(create(&c));
    common::write(
        dir.path(),
        "terraform.tfstate",
        &serde_json::to_string_pretty(&state(&l)).unwrap(),
    );
    write_config(dir.path(), &ep);

    // In sync: the provider's empty strings, unset route targets, grouped attributes and
    // computed values are no drift; what AWS made itself (the VPC's default security group and
    // main route table, the NAT gateway's interface) is not Unmanaged.
    let report = diff(dir.path(), 0);
    assert_eq!(report["summary"]["drifted"], 0, "{report:#}");
    // The VPC, the subnet, the interface, two addresses, the key pair, both gateways and the
    // route table; the association is not a compared type.
    assert_eq!(report["summary"]["resources_checked"], 9, "{report:#}");
    assert!(report.get("errors").is_none(), "{report:#}");

    // Drift by direct API calls, one per resource (the VPC and the NAT's address stay).
    let (stray_subnet, stray_eni) = rt.block_on(async {
        tag(&c, &l.subnet, "Name", "app-hotfix").await;
        c.delete_key_pair().key_name("deploy").send().await.unwrap();
        c.create_route()
            .route_table_id(&l.rtb)
            .destination_cidr_block("10.99.0.0/16")
            .nat_gateway_id(l.nat.nat_gateway_id().unwrap())
            .send()
            .await
            .unwrap();
        c.disassociate_address()
            .association_id(l.eip.association_id().unwrap())
            .send()
            .await
            .unwrap();
        c.modify_network_interface_attribute()
            .network_interface_id(&l.eni)
            .description(
                aws_sdk_ec2::types::AttributeValue::builder()
                    .value("app (debug)")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        tag(&c, &l.igw, "kubernetes.io/cluster/prod", "owned").await;
        tag(&c, l.nat.nat_gateway_id().unwrap(), "Team", "network").await;
        let stray_subnet = c
            .create_subnet()
            .vpc_id(&l.vpc)
            .cidr_block("10.30.2.0/24")
            .availability_zone(AZ)
            .tag_specifications(tagged(ResourceType::Subnet, "stray"))
            .send()
            .await
            .unwrap()
            .subnet()
            .and_then(|s| s.subnet_id())
            .unwrap()
            .to_string();
        let stray_eni = c
            .create_network_interface()
            .subnet_id(&stray_subnet)
            .tag_specifications(tagged(ResourceType::NetworkInterface, "stray"))
            .send()
            .await
            .unwrap()
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .unwrap()
            .to_string();
        (stray_subnet, stray_eni)
    });

    let report = diff(dir.path(), 2);
    assert!(report.get("errors").is_none(), "{report:#}");
    let mut kinds: BTreeMap<String, (String, String)> = BTreeMap::new();
    for d in report["drifts"].as_array().unwrap() {
        kinds.insert(
            d["resource"]["display"].as_str().unwrap().to_string(),
            (
                d["kind"].as_str().unwrap().to_string(),
                d["verdict"]["class"].as_str().unwrap().to_string(),
            ),
        );
    }
    let k = |kind: &str, class: &str| (kind.to_string(), class.to_string());
    let want: BTreeMap<String, (String, String)> = [
        ("aws_subnet.app".to_string(), k("Modified", "safe")),
        ("aws_key_pair.deploy".to_string(), k("Missing", "risky")),
        ("aws_route_table.public".to_string(), k("Modified", "risky")),
        ("aws_eip.app".to_string(), k("Modified", "risky")),
        (
            "aws_network_interface.app".to_string(),
            k("Modified", "risky"),
        ),
        (
            "aws_internet_gateway.main".to_string(),
            k("Modified", "risky"),
        ),
        ("aws_nat_gateway.main".to_string(), k("Modified", "safe")),
        (format!("subnet {stray_subnet}"), k("Unmanaged", "risky")),
        (
            format!("network-interface {stray_eni}"),
            k("Unmanaged", "risky"),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, want, "{report:#}");
    assert_eq!(report["summary"]["drifted"], 9, "{report:#}");
    assert_eq!(report["summary"]["resources_checked"], 11, "{report:#}");

    let one = |display: &str| {
        let d = drift_by(&report, display);
        let c = changes(d);
        assert_eq!(c.len(), 1, "{d:#}");
        c.into_iter().next().unwrap()
    };
    assert_eq!(
        one("aws_subnet.app"),
        (
            "/tags/Name".into(),
            "changed".into(),
            json!("app"),
            json!("app-hotfix"),
            "safe".into()
        )
    );
    assert_eq!(
        one("aws_nat_gateway.main"),
        (
            "/tags/Team".into(),
            "extra_live".into(),
            Value::Null,
            json!("network"),
            "safe".into()
        )
    );
    // A tag other systems act on: protected, its key escaped in the path.
    let (path, op, desired, live, class) = one("aws_internet_gateway.main");
    assert_eq!(
        (path.as_str(), op.as_str(), &desired, &live, class.as_str()),
        (
            "/tags/kubernetes.io~1cluster~1prod",
            "extra_live",
            &Value::Null,
            &json!("owned"),
            "risky"
        )
    );
    let igw = drift_by(&report, "aws_internet_gateway.main");
    assert!(
        igw["verdict"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().ends_with("protected_tag")),
        "{igw:#}"
    );
    // The route set: the route to the internet gateway, and now one to the NAT gateway too.
    let (path, op, desired, live, class) = one("aws_route_table.public");
    assert_eq!(
        (path.as_str(), op.as_str(), class.as_str()),
        ("/route", "changed", "risky")
    );
    assert_eq!(
        desired,
        json!([{"cidr_block": "0.0.0.0/0", "gateway_id": l.igw}])
    );
    let mut live_routes = live.as_array().unwrap().clone();
    live_routes.sort_by_key(|r| r["cidr_block"].to_string());
    assert_eq!(
        live_routes,
        [
            json!({"cidr_block": "0.0.0.0/0", "gateway_id": l.igw}),
            json!({"cidr_block": "10.99.0.0/16", "nat_gateway_id": l.nat.nat_gateway_id()}),
        ]
    );
    // No interface live any more: AWS leaves the field out, moto sends `""` (the same nothing).
    let (path, _, desired, live, class) = one("aws_eip.app");
    assert_eq!(
        (path.as_str(), &desired, class.as_str()),
        ("/network_interface", &json!(l.eni), "risky")
    );
    assert!(live.is_null() || live == "", "{live}");
    assert_eq!(
        one("aws_network_interface.app"),
        (
            "/description".into(),
            "changed".into(),
            json!("app"),
            json!("app (debug)"),
            "risky".into()
        )
    );
    let key = drift_by(&report, "aws_key_pair.deploy");
    assert!(changes(key).is_empty(), "{key:#}");
    assert_eq!(key["provenance"]["file"], "terraform.tfstate", "{key:#}");
    for stray in [
        format!("subnet {stray_subnet}"),
        format!("network-interface {stray_eni}"),
    ] {
        let d = drift_by(&report, &stray);
        assert_eq!(d["resource"]["region"], REGION, "{d:#}");
        assert_eq!(d["resource"]["account"], ACCOUNT, "{d:#}");
    }
}
