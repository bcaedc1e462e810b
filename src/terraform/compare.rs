//! State vs live EC2: the drift Terraform would find on refresh, without a Terraform binary.
//!
//! Each managed instance of a supported type in the state files is matched to the live
//! resource with the same id (in its region, read from the `arn` or the availability zone when
//! the state has one). Both sides are projected onto the same Terraform attribute names (the
//! live side is already named that way by [`crate::live::ec2`]) and compared with the
//! no-false-drift rules:
//!
//! - only attributes both sides carry are compared (an attribute the live read does not fetch,
//!   or an older provider did not store, is never drift);
//! - null, `""`, `[]` and `{}` are the same "nothing";
//! - set-valued attributes (security group rules, security group ids, routes, private IPs)
//!   compare as sets; security group rules are exploded to one source per rule first, so the
//!   provider's grouping of CIDRs into one block never matters, and standalone
//!   `aws_security_group_rule` / `aws_vpc_security_group_{ingress,egress}_rule` resources add
//!   their rules to their group's desired set when a state holds the group; a rule whose group
//!   no state holds (another stack's group, a default group) is compared on its own against the
//!   live rules of its group ([`foreign_group_rule`]): Missing when the group or the rule is gone
//!   live, Modified when a rule with the same protocol, ports and source differs (its
//!   description), and counted as checked either way;
//! - desired tags are the provider's `default_tags` (from the config) under the state's
//!   `tags_all` under its `tags`; live `aws:` tags are AWS's and never compared;
//! - a VPC's `enable_dns_support` / `enable_dns_hostnames` that the state holds as null (an old
//!   provider) is not compared;
//! - a launch template's contents (its latest version's, as the provider reads them) compare in
//!   one shape on both sides: `block_device_mappings` sorted by device, with the provider's
//!   unset values (`""`, `0`) dropped and booleans as the provider's strings; `tag_specifications`
//!   sorted by resource type; `user_data` as the state keeps it (base64).
//!
//! Results: `Modified` (one change per attribute; tag keys are their own changes), `Missing` (in
//! a state, gone live; only when that type was read completely in that region) and `Unmanaged`
//! (live, in no state, not created by AWS itself, not matched by an ignore pattern). Sensitive
//! attributes are masked on both sides. Nothing here does IO.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use globset::{Glob, GlobMatcher};
use serde_json::{Map, Value};
use tracing::warn;

use super::SET_ATTRIBUTES;
use super::state::{State, StateInstance};
use super::values::{self, attribute_changes, canonical_set, mask_leaf};
use crate::live::ec2::{
    Ec2Inventory, Ec2Resource, ROUTE_FIELDS, ResourceKind, normalize_protocol, rule,
};
use crate::model::{
    ChangeOp, Drift, DriftKind, FieldChange, MASK, Provenance, ResourceId, ResourceRef, fingerprint,
};

/// Attributes compared per kind (besides `tags`, always compared).
fn compared(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::Instance => &[
            "ami",
            "instance_type",
            "availability_zone",
            "tenancy",
            "subnet_id",
            "vpc_security_group_ids",
            "key_name",
            "iam_instance_profile",
            "source_dest_check",
            "monitoring",
            "ebs_optimized",
            "private_ip",
            "disable_api_termination",
            "root_block_device",
        ],
        ResourceKind::SecurityGroup => &["name", "description", "vpc_id", "ingress", "egress"],
        ResourceKind::Vpc => &[
            "cidr_block",
            "instance_tenancy",
            "enable_dns_support",
            "enable_dns_hostnames",
        ],
        ResourceKind::Subnet => &[
            "vpc_id",
            "cidr_block",
            "ipv6_cidr_block",
            "availability_zone",
            "map_public_ip_on_launch",
        ],
        ResourceKind::Volume => &[
            "availability_zone",
            "size",
            "type",
            "iops",
            "throughput",
            "encrypted",
            "kms_key_id",
            "snapshot_id",
            "multi_attach_enabled",
        ],
        ResourceKind::Eip => &["public_ip", "instance", "network_interface"],
        ResourceKind::NetworkInterface => &[
            "subnet_id",
            "description",
            "private_ips",
            "security_groups",
            "source_dest_check",
        ],
        ResourceKind::KeyPair => &["key_name", "key_pair_id", "fingerprint", "key_type"],
        ResourceKind::LaunchTemplate => &[
            "name",
            "default_version",
            "latest_version",
            "image_id",
            "instance_type",
            "key_name",
            "vpc_security_group_ids",
            "user_data",
            "tag_specifications",
            "block_device_mappings",
        ],
        ResourceKind::InternetGateway => &["vpc_id"],
        ResourceKind::NatGateway => &[
            "subnet_id",
            "connectivity_type",
            "allocation_id",
            "private_ip",
        ],
        ResourceKind::RouteTable => &["vpc_id", "route", "propagating_vgws"],
    }
}

/// The newest schema version of each Terraform type whose attribute layout driftwarden knows.
/// A state written with a newer one is still compared (the compared attributes are stable), and
/// the run logs a warning naming it.
pub fn known_schema_version(tf_type: &str) -> u64 {
    match tf_type {
        "aws_instance"
        | "aws_security_group"
        | "aws_default_security_group"
        | "aws_vpc"
        | "aws_default_vpc"
        | "aws_subnet"
        | "aws_default_subnet"
        | "aws_key_pair" => 1,
        _ => 0,
    }
}

/// Types whose instances add rules to a security group instead of being compared themselves.
const RULE_TYPES: [&str; 3] = [
    "aws_security_group_rule",
    "aws_vpc_security_group_ingress_rule",
    "aws_vpc_security_group_egress_rule",
];

/// Patterns in the spirit of `.driftignore`: one per line, `TYPE.ID` or a state address, `*`
/// and `?` globs, `#` comments, `!` to re-include; the last matching line wins.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    patterns: Vec<(bool, String, GlobMatcher)>,
}

impl IgnoreList {
    /// Parses patterns (one per entry or line). Errors name the 1-based entry and the problem.
    pub fn parse<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<IgnoreList, (usize, String)> {
        let mut patterns = Vec::new();
        for (i, raw) in lines.into_iter().enumerate() {
            let line = raw.split(" #").next().unwrap_or(raw).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let glob = Glob::new(pat)
                .map_err(|e| (i + 1, format!("invalid pattern `{pat}`: {}", e.kind())))?;
            patterns.push((negated, pat.to_string(), glob.compile_matcher()));
        }
        Ok(IgnoreList { patterns })
    }

    /// Adds the patterns of another list after this one's.
    pub fn extend(&mut self, other: IgnoreList) {
        self.patterns.extend(other.patterns);
    }

    /// Whether any of the names (`TYPE.ID`, an address) is ignored.
    pub fn ignores(&self, names: &[&str]) -> bool {
        let mut out = false;
        for (negated, _, m) in &self.patterns {
            if names.iter().any(|n| m.is_match(n)) {
                out = !negated;
            }
        }
        out
    }

    /// Whether the list has no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// A state file with where it came from.
#[derive(Debug, Clone)]
pub struct StateSource {
    pub state: State,
    /// Repository URL or local directory, for provenance.
    pub source: String,
    /// The file as provenance names it (repository-relative for Git sources).
    pub file: String,
    pub commit: Option<String>,
}

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    pub target: String,
    pub workspace: String,
    /// The provider's `default_tags`, which live resources carry and `tags` do not show.
    pub default_tags: BTreeMap<String, String>,
    /// Report live resources that are in no state.
    pub unmanaged: bool,
    pub ignore: IgnoreList,
}

/// What a compare found.
#[derive(Debug, Default)]
pub struct CompareOutcome {
    /// Sorted by resource key.
    pub drifts: Vec<Drift>,
    /// State instances compared plus Unmanaged resources found.
    pub checked: usize,
    /// Resources dropped by the ignore patterns.
    pub ignored: usize,
    /// What could not be checked and why (unsupported types, reads that failed).
    pub notes: Vec<String>,
}

/// Compares the states with the live inventory.
pub fn compare(
    states: &[StateSource],
    live: &Ec2Inventory,
    opts: &CompareOptions,
) -> CompareOutcome {
    let mut out = CompareOutcome::default();
    let mut index: HashMap<(ResourceKind, &str), Vec<&Ec2Resource>> = HashMap::new();
    for r in &live.resources {
        index.entry((r.kind, r.id.as_str())).or_default().push(r);
    }
    let extra_rules = standalone_rules(states);
    let mut managed: BTreeSet<(ResourceKind, String)> = BTreeSet::new();
    let mut unsupported: BTreeMap<String, usize> = BTreeMap::new();

    for src in states {
        for inst in &src.state.instances {
            if RULE_TYPES.contains(&inst.resource_type.as_str()) {
                continue;
            }
            let Some(kind) = ResourceKind::from_terraform_type(&inst.resource_type) else {
                *unsupported.entry(inst.resource_type.clone()).or_default() += 1;
                continue;
            };
            let Some(id) = inst.id() else { continue };
            managed.insert((kind, id.to_string()));
            owned_children(inst, &mut managed);
            let type_id = format!("{}.{id}", inst.resource_type);
            if opts.ignore.ignores(&[&type_id, &inst.address]) {
                out.ignored += 1;
                continue;
            }
            let region = region_of(inst);
            if let Some(r) = &region {
                if !live.regions.iter().any(|x| x == r) {
                    out.notes.push(format!(
                        "{}: in region {r}, which this target does not read",
                        inst.address
                    ));
                    continue;
                }
            }
            out.checked += 1;
            let found = index.get(&(kind, id)).and_then(|v| {
                v.iter()
                    .find(|x| region.as_ref().is_none_or(|r| &x.region == r))
            });
            let Some(l) = found else {
                let complete = match &region {
                    Some(r) => live.complete(r, kind),
                    None => live.regions.iter().all(|r| live.complete(r, kind)),
                };
                if complete {
                    out.drifts.push(missing(src, inst, kind, opts));
                } else {
                    out.notes.push(format!(
                        "{}: not checked, the {} read failed",
                        inst.address,
                        kind.describe_call()
                    ));
                    out.checked -= 1;
                }
                continue;
            };
            if inst.schema_version > known_schema_version(&inst.resource_type) {
                warn!(
                    address = %inst.address,
                    schema_version = inst.schema_version,
                    known = known_schema_version(&inst.resource_type),
                    "state schema version is newer than driftwarden knows; comparing the stable attributes"
                );
            }
            if let Some(d) = modified(src, inst, kind, l, &extra_rules, opts) {
                out.drifts.push(d);
            }
        }
    }
    for (t, n) in unsupported {
        out.notes.push(format!(
            "{n} {t} instance(s) not compared: type not supported"
        ));
    }

    // Standalone rules whose group no state holds: each against the live rules of its group.
    for src in states {
        for inst in &src.state.instances {
            let Some((group, ingress, rules)) = rule_of(inst) else {
                continue;
            };
            if managed.contains(&(ResourceKind::SecurityGroup, group.to_string())) {
                continue;
            }
            let type_id = format!("{}.{}", inst.resource_type, inst.id().unwrap_or_default());
            if opts.ignore.ignores(&[&type_id, &inst.address]) {
                out.ignored += 1;
                continue;
            }
            let region = region_of(inst);
            if let Some(r) = &region {
                if !live.regions.iter().any(|x| x == r) {
                    out.notes.push(format!(
                        "{}: in region {r}, which this target does not read",
                        inst.address
                    ));
                    continue;
                }
            }
            let kind = ResourceKind::SecurityGroup;
            let found = index.get(&(kind, group)).and_then(|v| {
                v.iter()
                    .find(|x| region.as_ref().is_none_or(|r| &x.region == r))
            });
            let complete = match (&found, &region) {
                (Some(l), _) => live.complete(&l.region, kind),
                (None, Some(r)) => live.complete(r, kind),
                (None, None) => live.regions.iter().all(|r| live.complete(r, kind)),
            };
            if found.is_none() && !complete {
                out.notes.push(format!(
                    "{}: not checked, the {} read failed",
                    inst.address,
                    kind.describe_call()
                ));
                continue;
            }
            out.checked += 1;
            let rule = StandaloneRule {
                inst,
                group,
                ingress,
                rules: &rules,
            };
            if let Some(d) = foreign_group_rule(src, &rule, found.copied(), opts) {
                out.drifts.push(d);
            }
        }
    }

    if opts.unmanaged {
        for r in &live.resources {
            if r.aws_managed || managed.contains(&(r.kind, r.id.clone())) {
                continue;
            }
            let type_id = format!("{}.{}", r.kind.terraform_type(), r.id);
            if opts.ignore.ignores(&[&type_id]) {
                out.ignored += 1;
                continue;
            }
            out.checked += 1;
            out.drifts.push(unmanaged(r, opts));
        }
    }
    out.drifts
        .sort_by_cached_key(|d| (d.resource.id.key(), d.kind));
    out
}

/// Resources an instance owns in the provider's model: its root and EBS block devices and its
/// primary network interface.
fn owned_children(inst: &StateInstance, managed: &mut BTreeSet<(ResourceKind, String)>) {
    if inst.resource_type != "aws_instance" {
        return;
    }
    let a = inst.raw_attributes();
    for list in ["root_block_device", "ebs_block_device"] {
        if let Some(Value::Array(items)) = a.get(list) {
            for b in items {
                if let Some(v) = b.get("volume_id").and_then(Value::as_str) {
                    managed.insert((ResourceKind::Volume, v.to_string()));
                }
            }
        }
    }
    if let Some(eni) = a
        .get("primary_network_interface_id")
        .and_then(Value::as_str)
    {
        managed.insert((ResourceKind::NetworkInterface, eni.to_string()));
    }
}

/// The region of a state instance: from its `arn`, else its availability zone.
pub fn region_of(inst: &StateInstance) -> Option<String> {
    let a = inst.raw_attributes();
    if let Some(r) = a
        .get("region")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        return Some(r.to_string());
    }
    if let Some(arn) = a.get("arn").and_then(Value::as_str) {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() > 3 && parts[0] == "arn" && !parts[3].is_empty() {
            return Some(parts[3].to_string());
        }
    }
    a.get("availability_zone")
        .and_then(Value::as_str)
        .filter(|z| z.len() > 1 && z.ends_with(|c: char| c.is_ascii_lowercase()))
        .map(|z| z[..z.len() - 1].to_string())
}

/// A standalone rule resource: its group id, whether it is an ingress rule, and its rules
/// exploded to one source each (the live reader's shape). `None` for other types.
fn rule_of(inst: &StateInstance) -> Option<(&str, bool, Vec<Value>)> {
    let a = inst.raw_attributes();
    let group = a.get("security_group_id").and_then(Value::as_str)?;
    match inst.resource_type.as_str() {
        "aws_security_group_rule" => {
            let ingress = a.get("type").and_then(Value::as_str) == Some("ingress");
            let mut block = a.clone();
            if let Some(m) = block.as_object_mut() {
                if let Some(src_sg) = a.get("source_security_group_id").and_then(Value::as_str) {
                    if !src_sg.is_empty() {
                        m.insert(
                            "security_groups".into(),
                            Value::Array(vec![Value::String(src_sg.into())]),
                        );
                    }
                }
            }
            Some((group, ingress, explode_block(&block, group)))
        }
        "aws_vpc_security_group_ingress_rule" | "aws_vpc_security_group_egress_rule" => {
            let ingress = inst.resource_type.ends_with("ingress_rule");
            Some((group, ingress, explode_vpc_rule(a, group)))
        }
        _ => None,
    }
}

/// Rules of standalone rule resources, per group id: (ingress, egress).
fn standalone_rules(states: &[StateSource]) -> HashMap<String, (Vec<Value>, Vec<Value>)> {
    let mut out: HashMap<String, (Vec<Value>, Vec<Value>)> = HashMap::new();
    for src in states {
        for inst in &src.state.instances {
            let Some((group, ingress, rules)) = rule_of(inst) else {
                continue;
            };
            let e = out.entry(group.to_string()).or_default();
            if ingress {
                e.0.extend(rules);
            } else {
                e.1.extend(rules);
            }
        }
    }
    out
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn port(v: Option<&Value>) -> i32 {
    v.and_then(Value::as_i64).map(|p| p as i32).unwrap_or(0)
}

/// An inline `ingress`/`egress` block (or an `aws_security_group_rule`) exploded to one source
/// per rule, in the live reader's shape.
pub fn explode_block(b: &Value, own_group: &str) -> Vec<Value> {
    let protocol = normalize_protocol(b.get("protocol").and_then(Value::as_str).unwrap_or("-1"));
    let (from, to) = if protocol == "-1" {
        (0, 0)
    } else {
        (port(b.get("from_port")), port(b.get("to_port")))
    };
    let desc = b.get("description").and_then(Value::as_str);
    let mut out = Vec::new();
    for field in ["cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids"] {
        for c in str_list(b.get(field)) {
            out.push(rule(&protocol, from, to, desc, field, &c));
        }
    }
    for g in str_list(b.get("security_groups")) {
        if g == own_group {
            out.push(self_rule(&protocol, from, to, desc));
        } else {
            out.push(rule(&protocol, from, to, desc, "security_groups", &g));
        }
    }
    if b.get("self").and_then(Value::as_bool) == Some(true) {
        out.push(self_rule(&protocol, from, to, desc));
    }
    out
}

fn self_rule(protocol: &str, from: i32, to: i32, desc: Option<&str>) -> Value {
    let mut r = rule(protocol, from, to, desc, "", "");
    if let Some(m) = r.as_object_mut() {
        m.insert("self".into(), Value::Bool(true));
    }
    r
}

fn explode_vpc_rule(a: &Value, own_group: &str) -> Vec<Value> {
    let protocol = normalize_protocol(a.get("ip_protocol").and_then(Value::as_str).unwrap_or("-1"));
    let (from, to) = if protocol == "-1" {
        (0, 0)
    } else {
        (port(a.get("from_port")), port(a.get("to_port")))
    };
    let desc = a.get("description").and_then(Value::as_str);
    let get = |k: &str| a.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut out = Vec::new();
    if let Some(c) = get("cidr_ipv4") {
        out.push(rule(&protocol, from, to, desc, "cidr_blocks", c));
    }
    if let Some(c) = get("cidr_ipv6") {
        out.push(rule(&protocol, from, to, desc, "ipv6_cidr_blocks", c));
    }
    if let Some(c) = get("prefix_list_id") {
        out.push(rule(&protocol, from, to, desc, "prefix_list_ids", c));
    }
    if let Some(g) = get("referenced_security_group_id") {
        if g == own_group {
            out.push(self_rule(&protocol, from, to, desc));
        } else {
            out.push(rule(&protocol, from, to, desc, "security_groups", g));
        }
    }
    out
}

/// Projects the state side onto the compared attributes.
fn desired_projection(
    inst: &StateInstance,
    kind: ResourceKind,
    extra_rules: &HashMap<String, (Vec<Value>, Vec<Value>)>,
    opts: &CompareOptions,
) -> Map<String, Value> {
    let a = inst.raw_attributes();
    let id = inst.id().unwrap_or_default();
    let mut p = Map::new();
    for &attr in compared(kind) {
        let Some(v) = a.get(attr) else { continue };
        let v = match (kind, attr) {
            (ResourceKind::SecurityGroup, "ingress" | "egress") => {
                let mut rules: Vec<Value> = v
                    .as_array()
                    .map(|blocks| blocks.iter().flat_map(|b| explode_block(b, id)).collect())
                    .unwrap_or_default();
                if let Some((ing, eg)) = extra_rules.get(id) {
                    rules.extend(if attr == "ingress" {
                        ing.clone()
                    } else {
                        eg.clone()
                    });
                }
                Value::Array(rules)
            }
            (ResourceKind::Instance, "root_block_device") => {
                match v.as_array().and_then(|l| l.first()) {
                    Some(b) => {
                        let mut m = Map::new();
                        for k in ["volume_size", "volume_type"] {
                            if let Some(x) = b.get(k) {
                                m.insert(k.to_string(), x.clone());
                            }
                        }
                        Value::Array(vec![Value::Object(m)])
                    }
                    None => continue,
                }
            }
            (ResourceKind::Vpc, "enable_dns_support" | "enable_dns_hostnames") if v.is_null() => {
                continue;
            }
            (ResourceKind::LaunchTemplate, "block_device_mappings") => {
                launch_template_block_devices(v)
            }
            (ResourceKind::LaunchTemplate, "tag_specifications") => {
                launch_template_tag_specifications(v)
            }
            (ResourceKind::RouteTable, "route") => Value::Array(
                v.as_array()
                    .map(|routes| {
                        routes
                            .iter()
                            .map(|r| {
                                Value::Object(
                                    ROUTE_FIELDS
                                        .iter()
                                        .filter_map(|k| {
                                            r.get(*k)
                                                .filter(|x| !values::is_empty(x))
                                                .map(|x| (k.to_string(), x.clone()))
                                        })
                                        .collect(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => v.clone(),
        };
        p.insert(attr.to_string(), v);
    }
    // Tags: default_tags from the config, under tags_all, under tags.
    let mut tags = Map::new();
    for (k, v) in &opts.default_tags {
        tags.insert(k.clone(), Value::String(v.clone()));
    }
    for field in ["tags_all", "tags"] {
        if let Some(Value::Object(m)) = a.get(field) {
            for (k, v) in m {
                tags.insert(k.clone(), v.clone());
            }
        }
    }
    if a.get("tags").is_some() || a.get("tags_all").is_some() || !opts.default_tags.is_empty() {
        p.insert("tags".into(), Value::Object(tags));
    }
    canonicalize(&mut p);
    p
}

/// The fields of a launch template's `ebs` block, in the provider's names.
const LAUNCH_TEMPLATE_EBS_FIELDS: [&str; 9] = [
    "delete_on_termination",
    "encrypted",
    "iops",
    "throughput",
    "volume_size",
    "volume_initialization_rate",
    "volume_type",
    "kms_key_id",
    "snapshot_id",
];

/// A launch template's `block_device_mappings` (state or live) in one shape: the provider's
/// fields only, unset values left out (the provider stores `""` and `0` for what the API does not
/// return), booleans as the provider's `"true"`/`"false"` strings, `ebs` as a one-block list,
/// and the mappings sorted by device (the API keeps no order that matters).
pub fn launch_template_block_devices(v: &Value) -> Value {
    let unset = |x: &Value| values::is_empty(x) || x.as_f64() == Some(0.0);
    let as_provider = |x: &Value| match x {
        Value::Bool(b) => Value::String(b.to_string()),
        other => other.clone(),
    };
    let mut out: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut b = Map::new();
            for k in ["device_name", "no_device", "virtual_name"] {
                if let Some(x) = m.get(k).filter(|x| !unset(x)) {
                    b.insert(k.to_string(), x.clone());
                }
            }
            let ebs = match m.get("ebs") {
                Some(Value::Array(l)) => l.first(),
                Some(o @ Value::Object(_)) => Some(o),
                _ => None,
            };
            if let Some(e) = ebs {
                let e: Map<String, Value> = LAUNCH_TEMPLATE_EBS_FIELDS
                    .iter()
                    .filter_map(|k| {
                        e.get(*k)
                            .filter(|x| !unset(x))
                            .map(|x| (k.to_string(), as_provider(x)))
                    })
                    .collect();
                if !e.is_empty() {
                    b.insert("ebs".into(), Value::Array(vec![Value::Object(e)]));
                }
            }
            Value::Object(b)
        })
        .collect();
    out.sort_by_cached_key(|m| {
        (
            m.get("device_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            m.to_string(),
        )
    });
    Value::Array(out)
}

/// A launch template's `tag_specifications` (state or live) in one shape: `{resource_type, tags}`
/// blocks sorted by resource type, `aws:` tags left out.
pub fn launch_template_tag_specifications(v: &Value) -> Value {
    let mut out: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let mut b = Map::new();
            if let Some(r) = t.get("resource_type").filter(|x| !values::is_empty(x)) {
                b.insert("resource_type".into(), r.clone());
            }
            if let Some(Value::Object(tags)) = t.get("tags") {
                let tags: Map<String, Value> = tags
                    .iter()
                    .filter(|(k, _)| !k.starts_with("aws:"))
                    .map(|(k, x)| (k.clone(), x.clone()))
                    .collect();
                b.insert("tags".into(), Value::Object(tags));
            }
            Value::Object(b)
        })
        .collect();
    out.sort_by_cached_key(|t| t.to_string());
    Value::Array(out)
}

fn canonicalize(p: &mut Map<String, Value>) {
    for (k, v) in p.iter_mut() {
        if SET_ATTRIBUTES.contains(&k.as_str()) {
            *v = canonical_set(v);
        }
    }
}

/// The live side, restricted to what the state side carries (an attribute an older provider
/// did not store is not compared).
fn live_projection(l: &Ec2Resource, desired: &Map<String, Value>) -> Map<String, Value> {
    let mut p = Map::new();
    for k in desired.keys() {
        if let Some(v) = l.attributes.get(k) {
            let v = match (k.as_str(), v) {
                ("block_device_mappings", _) if l.kind == ResourceKind::LaunchTemplate => {
                    launch_template_block_devices(v)
                }
                ("tag_specifications", _) if l.kind == ResourceKind::LaunchTemplate => {
                    launch_template_tag_specifications(v)
                }
                ("root_block_device", Value::Array(items)) => Value::Array(
                    items
                        .iter()
                        .map(|b| {
                            Value::Object(
                                ["volume_size", "volume_type"]
                                    .iter()
                                    .filter_map(|f| b.get(*f).map(|x| (f.to_string(), x.clone())))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
                _ => v.clone(),
            };
            p.insert(k.clone(), v);
        }
    }
    canonicalize(&mut p);
    p
}

fn mask_projection(p: &mut Map<String, Value>, inst: &StateInstance) {
    for s in &inst.sensitive {
        let top = s
            .split('/')
            .nth(1)
            .map(|x| x.replace("~1", "/").replace("~0", "~"));
        match top {
            None => {
                for v in p.values_mut() {
                    *v = mask_leaf(v);
                }
            }
            Some(t) => {
                if let Some(v) = p.get_mut(&t) {
                    *v = mask_leaf(v);
                }
            }
        }
    }
}

fn provenance(src: &StateSource, inst: &StateInstance) -> Provenance {
    Provenance {
        source: src.source.clone(),
        file: src.file.clone(),
        line: inst.line,
        commit: src.commit.clone(),
    }
}

fn tf_id(inst: &StateInstance, opts: &CompareOptions) -> ResourceId {
    ResourceId::Terraform {
        workspace: opts.workspace.clone(),
        address: inst.address.clone(),
    }
}

fn modified(
    src: &StateSource,
    inst: &StateInstance,
    kind: ResourceKind,
    l: &Ec2Resource,
    extra_rules: &HashMap<String, (Vec<Value>, Vec<Value>)>,
    opts: &CompareOptions,
) -> Option<Drift> {
    let mut desired = desired_projection(inst, kind, extra_rules, opts);
    let mut live = live_projection(l, &desired);
    desired.retain(|k, _| live.contains_key(k));
    let changes: Vec<FieldChange> = attribute_changes(
        &Value::Object(desired.clone()),
        &Value::Object(live.clone()),
        SET_ATTRIBUTES,
    )
    .into_iter()
    .map(|c| {
        let secret = inst.is_sensitive(&c.path);
        let op = if c.after.is_null() {
            ChangeOp::MissingLive
        } else if c.before.is_null() {
            ChangeOp::ExtraLive
        } else {
            ChangeOp::Changed
        };
        let (d, lv) = if secret {
            (mask_leaf(&c.before), mask_leaf(&c.after))
        } else {
            (c.before, c.after)
        };
        FieldChange {
            path: c.path,
            op,
            desired: d,
            live: lv,
            masked: secret,
            attribution: None,
            class: None,
        }
    })
    .collect();
    if changes.is_empty() {
        return None;
    }
    mask_projection(&mut desired, inst);
    mask_projection(&mut live, inst);
    for m in [&mut desired, &mut live] {
        m.insert("id".into(), Value::String(l.id.clone()));
    }
    live.insert("region".into(), Value::String(l.region.clone()));
    let id = tf_id(inst, opts);
    Some(Drift {
        fingerprint: fingerprint(&opts.target, &id),
        target: opts.target.clone(),
        resource: ResourceRef::from(id),
        kind: DriftKind::Modified,
        changes,
        provenance: Some(provenance(src, inst)),
        verdict: None,
        action: None,
        desired_object: Some(Value::Object(desired)),
        live_object: Some(Value::Object(live)),
    })
}

/// A standalone rule resource whose group no state holds.
struct StandaloneRule<'a> {
    inst: &'a StateInstance,
    group: &'a str,
    ingress: bool,
    /// Exploded to one source each.
    rules: &'a [Value],
}

/// A rule's identity: everything but its description.
fn rule_identity(r: &Value) -> Value {
    let mut r = r.clone();
    if let Some(m) = r.as_object_mut() {
        m.remove("description");
    }
    r
}

/// Compares a standalone rule with the live rules of its group (`None`: the group is gone).
/// Missing when the group or one of the rule's sources is gone live; Modified (one change per
/// source, at `/ingress/<i>` or `/egress/<i>`) when a live rule with the same protocol, ports
/// and source differs.
fn foreign_group_rule(
    src: &StateSource,
    rule: &StandaloneRule<'_>,
    group: Option<&Ec2Resource>,
    opts: &CompareOptions,
) -> Option<Drift> {
    let direction = if rule.ingress { "ingress" } else { "egress" };
    let mut desired = Map::new();
    desired.insert("security_group_id".into(), Value::String(rule.group.into()));
    desired.insert(direction.into(), Value::Array(rule.rules.to_vec()));
    let id = tf_id(rule.inst, opts);
    let drift = |kind, changes, live: Option<Map<String, Value>>| Drift {
        fingerprint: fingerprint(&opts.target, &id),
        target: opts.target.clone(),
        resource: ResourceRef::from(id.clone()),
        kind,
        changes,
        provenance: Some(provenance(src, rule.inst)),
        verdict: None,
        action: None,
        desired_object: Some(Value::Object(desired.clone())),
        live_object: live.map(Value::Object),
    };
    let Some(g) = group else {
        return Some(drift(DriftKind::Missing, Vec::new(), None));
    };
    let live_rules: Vec<Value> = g
        .attributes
        .get(direction)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut changes = Vec::new();
    let mut gone = false;
    for (i, want) in rule.rules.iter().enumerate() {
        if live_rules.contains(want) {
            continue;
        }
        let same = rule_identity(want);
        match live_rules.iter().find(|l| rule_identity(l) == same) {
            Some(l) => changes.push(FieldChange {
                path: format!("/{direction}/{i}/description"),
                op: ChangeOp::Changed,
                desired: want.get("description").cloned().unwrap_or(Value::Null),
                live: l.get("description").cloned().unwrap_or(Value::Null),
                masked: false,
                attribution: None,
                class: None,
            }),
            None => gone = true,
        }
    }
    let mut live = Map::new();
    live.insert("security_group_id".into(), Value::String(g.id.clone()));
    live.insert("region".into(), Value::String(g.region.clone()));
    live.insert(direction.into(), Value::Array(live_rules));
    if gone {
        // The rule is gone from its group: there is nothing live to compare it with.
        return Some(drift(DriftKind::Missing, Vec::new(), None));
    }
    if changes.is_empty() {
        return None;
    }
    Some(drift(DriftKind::Modified, changes, Some(live)))
}

fn missing(
    src: &StateSource,
    inst: &StateInstance,
    kind: ResourceKind,
    opts: &CompareOptions,
) -> Drift {
    let mut desired = desired_projection(inst, kind, &HashMap::new(), opts);
    mask_projection(&mut desired, inst);
    desired.insert(
        "id".into(),
        Value::String(inst.id().unwrap_or_default().to_string()),
    );
    let id = tf_id(inst, opts);
    Drift {
        fingerprint: fingerprint(&opts.target, &id),
        target: opts.target.clone(),
        resource: ResourceRef::from(id),
        kind: DriftKind::Missing,
        changes: Vec::new(),
        provenance: Some(provenance(src, inst)),
        verdict: None,
        action: None,
        desired_object: Some(Value::Object(desired)),
        live_object: None,
    }
}

fn unmanaged(r: &Ec2Resource, opts: &CompareOptions) -> Drift {
    let id = ResourceId::Ec2 {
        account: r.account.clone(),
        region: r.region.clone(),
        resource_type: r.kind.ec2_type().to_string(),
        id: r.id.clone(),
    };
    let mut live = r.attributes.clone();
    if let Some(m) = live.as_object_mut() {
        m.insert(
            "terraform_type".into(),
            Value::String(r.kind.terraform_type().into()),
        );
        m.insert("region".into(), Value::String(r.region.clone()));
    }
    Drift {
        fingerprint: fingerprint(&opts.target, &id),
        target: opts.target.clone(),
        resource: ResourceRef::from(id),
        kind: DriftKind::Unmanaged,
        changes: Vec::new(),
        provenance: None,
        verdict: None,
        action: None,
        desired_object: None,
        live_object: Some(live),
    }
}

/// Whether a value is the mask (a masked value can never be written back).
pub fn is_masked(v: &Value) -> bool {
    v.as_str() == Some(MASK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terraform::state;
    use serde_json::json;

    fn state_of(resources: Value) -> StateSource {
        let doc = json!({"version": 4, "terraform_version": "1.9.5", "serial": 1, "lineage": "x", "resources": resources});
        StateSource {
            state: state::parse(doc.to_string().as_bytes(), "s.tfstate").unwrap(),
            source: "/repo".into(),
            file: "s.tfstate".into(),
            commit: None,
        }
    }

    fn res(kind: ResourceKind, id: &str, attrs: Value) -> Ec2Resource {
        Ec2Resource {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            kind,
            id: id.into(),
            attributes: attrs,
            aws_managed: false,
        }
    }

    fn inventory(resources: Vec<Ec2Resource>) -> Ec2Inventory {
        Ec2Inventory {
            regions: vec!["us-east-1".into()],
            resources,
            ..Ec2Inventory::default()
        }
    }

    fn opts() -> CompareOptions {
        CompareOptions {
            target: "aws".into(),
            workspace: "default".into(),
            unmanaged: true,
            ..CompareOptions::default()
        }
    }

    fn sg_state(ingress: Value) -> StateSource {
        state_of(json!([{
            "mode": "managed", "type": "aws_security_group", "name": "web",
            "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
            "instances": [{"schema_version": 1, "attributes": {
                "id": "sg-1", "arn": "arn:aws:ec2:us-east-1:123456789012:security-group/sg-1",
                "name": "web", "description": "d", "vpc_id": "vpc-1",
                "ingress": ingress, "egress": [], "tags": {"Name": "web"}, "tags_all": {"Name": "web", "team": "core"}
            }}]
        }]))
    }

    fn live_sg(rules: Vec<Value>, tags: Value) -> Ec2Resource {
        res(
            ResourceKind::SecurityGroup,
            "sg-1",
            json!({"id": "sg-1", "name": "web", "description": "d", "vpc_id": "vpc-1", "ingress": rules, "egress": [], "tags": tags}),
        )
    }

    #[test]
    fn grouped_and_exploded_rules_are_in_sync() {
        let st = sg_state(json!([{
            "cidr_blocks": ["10.0.0.0/8", "192.168.0.0/16"], "ipv6_cidr_blocks": [], "prefix_list_ids": [],
            "security_groups": [], "self": false, "description": "", "from_port": 443, "to_port": 443, "protocol": "tcp"
        }]));
        let live = live_sg(
            vec![
                rule("tcp", 443, 443, None, "cidr_blocks", "192.168.0.0/16"),
                rule("tcp", 443, 443, None, "cidr_blocks", "10.0.0.0/8"),
            ],
            json!({"Name": "web", "team": "core"}),
        );
        let out = compare(&[st], &inventory(vec![live]), &opts());
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
        assert_eq!(out.checked, 1);
    }

    #[test]
    fn extra_rule_and_tag_changes_are_modified() {
        let st = sg_state(json!([]));
        let live = live_sg(
            vec![rule("tcp", 22, 22, None, "cidr_blocks", "0.0.0.0/0")],
            json!({"Name": "changed", "team": "core"}),
        );
        let out = compare(&[st], &inventory(vec![live]), &opts());
        assert_eq!(out.drifts.len(), 1);
        let d = &out.drifts[0];
        assert_eq!(d.kind, DriftKind::Modified);
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/ingress", "/tags/Name"]);
        assert_eq!(d.changes[0].live[0]["protocol"], "tcp");
        assert_eq!(d.live_object.as_ref().unwrap()["region"], "us-east-1");
    }

    #[test]
    fn standalone_rules_join_their_group() {
        let mut st = sg_state(json!([]));
        let extra = state_of(json!([{
            "mode": "managed", "type": "aws_vpc_security_group_ingress_rule", "name": "ssh",
            "provider": "p", "instances": [{"schema_version": 0, "attributes": {
                "id": "sgr-1", "security_group_id": "sg-1", "cidr_ipv4": "10.0.0.0/8",
                "from_port": 22, "to_port": 22, "ip_protocol": "tcp"}}]
        }]));
        st.state.instances.extend(extra.state.instances);
        let live = live_sg(
            vec![rule("tcp", 22, 22, None, "cidr_blocks", "10.0.0.0/8")],
            json!({"Name": "web", "team": "core"}),
        );
        let out = compare(&[st], &inventory(vec![live]), &opts());
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
    }

    #[test]
    fn missing_unmanaged_and_defaults() {
        let st = state_of(json!([{
            "mode": "managed", "type": "aws_instance", "name": "gone", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {"id": "i-gone", "availability_zone": "us-east-1a", "tags": {}}}]
        }, {
            "mode": "managed", "type": "aws_s3_bucket", "name": "b", "provider": "p",
            "instances": [{"schema_version": 0, "attributes": {"id": "bucket"}}]
        }]));
        let mut default_vpc = res(ResourceKind::Vpc, "vpc-d", json!({"id": "vpc-d"}));
        default_vpc.aws_managed = true;
        let stray = res(
            ResourceKind::Instance,
            "i-stray",
            json!({"id": "i-stray", "tags": {}}),
        );
        let ignored = res(ResourceKind::KeyPair, "legacy", json!({"id": "legacy"}));
        let mut o = opts();
        o.ignore = IgnoreList::parse(["# noise", "aws_key_pair.*", "!aws_key_pair.keep"]).unwrap();
        let out = compare(&[st], &inventory(vec![default_vpc, stray, ignored]), &o);
        let kinds: Vec<(DriftKind, String)> = out
            .drifts
            .iter()
            .map(|d| (d.kind, d.resource.display.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (DriftKind::Unmanaged, "instance i-stray".to_string()),
                (DriftKind::Missing, "aws_instance.gone".to_string()),
            ]
        );
        assert_eq!(out.ignored, 1);
        assert!(out.notes.iter().any(|n| n.contains("aws_s3_bucket")));
    }

    #[test]
    fn failed_reads_never_produce_missing() {
        let st = state_of(json!([{
            "mode": "managed", "type": "aws_instance", "name": "web", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {"id": "i-1", "availability_zone": "us-east-1a"}}]
        }]));
        let mut inv = inventory(Vec::new());
        inv.failures.push(crate::live::ec2::CallFailure {
            region: "us-east-1".into(),
            call: "DescribeInstances".into(),
            kind: Some(ResourceKind::Instance),
            message: "throttled".into(),
        });
        let out = compare(&[st], &inv, &opts());
        assert!(out.drifts.is_empty());
        assert!(
            out.notes[0].contains("DescribeInstances"),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn empty_values_and_default_tags_are_not_drift() {
        let st = state_of(json!([{
            "mode": "managed", "type": "aws_instance", "name": "web", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {
                "id": "i-1", "availability_zone": "us-east-1a", "key_name": "", "iam_instance_profile": "",
                "vpc_security_group_ids": ["sg-b", "sg-a"], "monitoring": false,
                "root_block_device": [{"volume_size": 8, "volume_type": "gp2", "iops": 100, "volume_id": "vol-1"}],
                "tags": {"Name": "web"}, "tags_all": null, "secret_thing": "x"
            }, "sensitive_attributes": [[{"type": "get_attr", "value": "key_name"}]]}]
        }]));
        let live = res(
            ResourceKind::Instance,
            "i-1",
            json!({"id": "i-1", "availability_zone": "us-east-1a", "key_name": null, "iam_instance_profile": null,
                   "vpc_security_group_ids": ["sg-a", "sg-b"], "monitoring": false,
                   "root_block_device": [{"volume_size": 8, "volume_type": "gp2", "volume_id": "vol-1"}],
                   "tags": {"Name": "web", "team": "core"}}),
        );
        let mut o = opts();
        o.default_tags.insert("team".into(), "core".into());
        let out = compare(
            std::slice::from_ref(&st),
            &inventory(vec![live.clone()]),
            &o,
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
        // The root volume is the instance's, never Unmanaged.
        let vol = res(ResourceKind::Volume, "vol-1", json!({"id": "vol-1"}));
        let out = compare(
            std::slice::from_ref(&st),
            &inventory(vec![live.clone(), vol]),
            &o,
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
        // A sensitive attribute that drifted is masked on both sides.
        let mut l2 = live;
        l2.attributes["key_name"] = json!("other-key");
        let out = compare(&[st], &inventory(vec![l2]), &o);
        let c = &out.drifts[0].changes[0];
        assert_eq!(c.path, "/key_name");
        assert!(c.masked);
        assert_eq!(c.live, MASK);
        assert!(!format!("{:?}", out.drifts).contains("other-key"));
    }

    fn vpc_state(support: Value, hostnames: Value) -> StateSource {
        state_of(json!([{
            "mode": "managed", "type": "aws_vpc", "name": "main", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {
                "id": "vpc-1", "arn": "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1",
                "cidr_block": "10.0.0.0/16", "instance_tenancy": "default",
                "enable_dns_support": support, "enable_dns_hostnames": hostnames,
                "tags": {}, "tags_all": {}
            }}]
        }]))
    }

    #[test]
    fn vpc_dns_attributes_are_compared() {
        let live = |attrs: Value| {
            let mut a = json!({"id": "vpc-1", "cidr_block": "10.0.0.0/16", "instance_tenancy": "default", "tags": {}});
            merge_into(&mut a, attrs);
            res(ResourceKind::Vpc, "vpc-1", a)
        };
        let in_sync = json!({"enable_dns_support": true, "enable_dns_hostnames": false});
        let st = vpc_state(json!(true), json!(false));
        let out = compare(
            std::slice::from_ref(&st),
            &inventory(vec![live(in_sync)]),
            &opts(),
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);

        let drifted = json!({"enable_dns_support": true, "enable_dns_hostnames": true});
        let out = compare(
            std::slice::from_ref(&st),
            &inventory(vec![live(drifted.clone())]),
            &opts(),
        );
        let d = &out.drifts[0];
        assert_eq!(d.kind, DriftKind::Modified);
        let c: Vec<(&str, &Value, &Value)> = d
            .changes
            .iter()
            .map(|c| (c.path.as_str(), &c.desired, &c.live))
            .collect();
        assert_eq!(c, [("/enable_dns_hostnames", &json!(false), &json!(true))]);

        // Not read live (the attribute call failed, or the VPC is not tracked): not compared.
        let out = compare(
            std::slice::from_ref(&st),
            &inventory(vec![live(json!({}))]),
            &opts(),
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
        // Null in the state (an old provider): not compared, never drift against live's value.
        let out = compare(
            &[vpc_state(Value::Null, Value::Null)],
            &inventory(vec![live(drifted)]),
            &opts(),
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
    }

    fn merge_into(a: &mut Value, b: Value) {
        if let (Some(am), Value::Object(bm)) = (a.as_object_mut(), b) {
            am.extend(bm);
        }
    }

    /// An `aws_launch_template` the way the provider writes it: unset values as `""`, `0` and
    /// `[]`, `ebs` booleans as strings.
    fn lt_state(instance_type: &str) -> StateSource {
        lt_state_with(
            instance_type,
            json!([
                {"device_name": "/dev/sdb", "no_device": "", "virtual_name": "ephemeral0", "ebs": []},
                {"device_name": "/dev/xvda", "no_device": "", "virtual_name": "", "ebs": [{
                    "delete_on_termination": "true", "encrypted": "", "iops": 0, "kms_key_id": "",
                    "snapshot_id": "", "throughput": 0, "volume_initialization_rate": 0,
                    "volume_size": 20, "volume_type": "gp3"
                }]}
            ]),
        )
    }

    fn lt_state_with(instance_type: &str, devices: Value) -> StateSource {
        state_of(json!([{
            "mode": "managed", "type": "aws_launch_template", "name": "web", "provider": "p",
            "instances": [{"schema_version": 0, "attributes": {
                "id": "lt-1", "arn": "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1",
                "name": "web", "name_prefix": "", "description": "",
                "default_version": 1, "latest_version": 1, "update_default_version": null,
                "image_id": "ami-1", "instance_type": instance_type, "key_name": "",
                "vpc_security_group_ids": ["sg-b", "sg-a"], "security_group_names": [],
                "user_data": "IyEvYmluL3NoCmVjaG8gaGkK",
                "ebs_optimized": "", "kernel_id": "", "ram_disk_id": "",
                "block_device_mappings": devices,
                "tag_specifications": [
                    {"resource_type": "volume", "tags": {"Name": "web-data"}},
                    {"resource_type": "instance", "tags": {"Name": "web"}}
                ],
                "network_interfaces": [], "monitoring": [], "metadata_options": [],
                "tags": {"Team": "core"}, "tags_all": {"Team": "core"}
            }}]
        }]))
    }

    fn live_lt(instance_type: &str) -> Ec2Resource {
        res(
            ResourceKind::LaunchTemplate,
            "lt-1",
            json!({
                "id": "lt-1", "name": "web", "default_version": 1, "latest_version": 1,
                "tags": {"Team": "core"},
                "image_id": "ami-1", "instance_type": instance_type, "key_name": null,
                "vpc_security_group_ids": ["sg-a", "sg-b"], "user_data": "IyEvYmluL3NoCmVjaG8gaGkK",
                "tag_specifications": [
                    {"resource_type": "instance", "tags": {"Name": "web"}},
                    {"resource_type": "volume", "tags": {"Name": "web-data"}}
                ],
                "block_device_mappings": [
                    {"device_name": "/dev/xvda", "ebs": [{"delete_on_termination": "true", "volume_size": 20, "volume_type": "gp3"}]},
                    {"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}
                ]
            }),
        )
    }

    #[test]
    fn launch_template_contents_compare_without_false_drift() {
        let out = compare(
            &[lt_state("t3.micro")],
            &inventory(vec![live_lt("t3.micro")]),
            &opts(),
        );
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);

        // The contents were not read (no state asked, or the call failed): only the template's
        // own attributes are compared.
        let mut bare = live_lt("t3.large");
        if let Some(m) = bare.attributes.as_object_mut() {
            for k in [
                "image_id",
                "instance_type",
                "key_name",
                "vpc_security_group_ids",
                "user_data",
                "tag_specifications",
                "block_device_mappings",
            ] {
                m.remove(k);
            }
        }
        let out = compare(&[lt_state("t3.micro")], &inventory(vec![bare]), &opts());
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
    }

    #[test]
    fn launch_template_contents_drift_per_field() {
        let mut live = live_lt("t3.large");
        live.attributes["latest_version"] = json!(2);
        live.attributes["user_data"] = json!("IyEvYmluL3NoCmVjaG8gYnllCg==");
        live.attributes["block_device_mappings"] = json!([
            {"device_name": "/dev/xvda", "ebs": [{"delete_on_termination": "true", "volume_size": 50, "volume_type": "gp3"}]}
        ]);
        live.attributes["tag_specifications"] =
            json!([{"resource_type": "instance", "tags": {"Name": "web2"}}]);
        let out = compare(&[lt_state("t3.micro")], &inventory(vec![live]), &opts());
        assert_eq!(out.drifts.len(), 1, "{:#?}", out.drifts);
        let d = &out.drifts[0];
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/block_device_mappings",
                "/instance_type",
                "/latest_version",
                "/tag_specifications",
                "/user_data"
            ],
            "{:#?}",
            d.changes
        );
        let it = &d.changes[1];
        assert_eq!(
            (&it.desired, &it.live),
            (&json!("t3.micro"), &json!("t3.large"))
        );

        // One mapping on each side: the change names the field.
        let one = lt_state_with(
            "t3.micro",
            json!([
                {"device_name": "/dev/xvda", "ebs": [{"delete_on_termination": "true", "volume_size": 20, "volume_type": "gp3", "iops": 0}]}
            ]),
        );
        let mut live = live_lt("t3.micro");
        live.attributes["block_device_mappings"] = json!([
            {"device_name": "/dev/xvda", "ebs": [{"delete_on_termination": true, "volume_size": 30, "volume_type": "gp3"}]}
        ]);
        let out = compare(&[one], &inventory(vec![live]), &opts());
        let paths: Vec<&str> = out.drifts[0]
            .changes
            .iter()
            .map(|c| c.path.as_str())
            .collect();
        assert_eq!(paths, ["/block_device_mappings/0/ebs/0/volume_size"]);
    }

    #[test]
    fn block_devices_and_tag_specifications_normalize() {
        assert_eq!(launch_template_block_devices(&Value::Null), json!([]));
        assert_eq!(
            launch_template_block_devices(&json!([
                {"device_name": "/dev/xvdb", "ebs": {"encrypted": true, "iops": 0}},
                {"device_name": "/dev/xvda", "no_device": "", "ebs": [{"throughput": 125, "kms_key_id": ""}], "extra": 1}
            ])),
            json!([
                {"device_name": "/dev/xvda", "ebs": [{"throughput": 125}]},
                {"device_name": "/dev/xvdb", "ebs": [{"encrypted": "true"}]}
            ])
        );
        assert_eq!(
            launch_template_tag_specifications(&json!([
                {"resource_type": "volume", "tags": {"a": "1"}},
                {"resource_type": "instance", "tags": {"aws:x": "y", "b": "2"}}
            ])),
            json!([
                {"resource_type": "instance", "tags": {"b": "2"}},
                {"resource_type": "volume", "tags": {"a": "1"}}
            ])
        );
    }

    #[test]
    fn regions_come_from_arn_or_zone() {
        let st = state_of(json!([{
            "mode": "managed", "type": "aws_vpc", "name": "a", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {"id": "vpc-1", "arn": "arn:aws:ec2:eu-west-1:1:vpc/vpc-1"}}]
        }, {
            "mode": "managed", "type": "aws_subnet", "name": "b", "provider": "p",
            "instances": [{"schema_version": 1, "attributes": {"id": "subnet-1", "availability_zone": "ap-south-1b"}}]
        }]));
        assert_eq!(
            region_of(&st.state.instances[0]).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of(&st.state.instances[1]).as_deref(),
            Some("ap-south-1")
        );
        let out = compare(&[st], &inventory(Vec::new()), &opts());
        assert_eq!(out.checked, 0);
        assert_eq!(out.notes.len(), 2);
    }
}
