//! Corrects safe EC2 drift through the API: the EC2 half of "correct live to match Git".
//!
//! What it can set, and how:
//!
//! | change | call |
//! |---|---|
//! | `/tags/KEY` (desired value) | `CreateTags` |
//! | `/tags/KEY` (desired absent) | `DeleteTags` |
//! | `/ingress`, `/egress` of a security group | `RevokeSecurityGroup{Ingress,Egress}` for the extra rules, `AuthorizeSecurityGroup{Ingress,Egress}` for the missing ones |
//! | `/source_dest_check` of an instance or network interface | `ModifyInstanceAttribute` / `ModifyNetworkInterfaceAttribute` |
//! | `/disable_api_termination` of an instance | `ModifyInstanceAttribute` |
//! | `/monitoring` of an instance | `MonitorInstances` / `UnmonitorInstances` |
//!
//! A drift is corrected whole or not at all: when one of its changes has no such call (an
//! instance type, an AMI), or holds a masked value, the drift is escalated as if risky (a pull
//! request or an issue). Only drifts `decide` chose to correct (safe, autocorrect mode) are
//! touched; `Missing` and `Unmanaged` resources are never recreated or deleted here.
//!
//! Guardrails ([`super::guardrails`], shared with the Kubernetes actuator and checked in the
//! same order): after a partial read nothing is removed (no `DeleteTags`, no revocation); a
//! resource corrected `max_remediations_per_hour` times in the last hour escalates; and when a
//! run would make more corrections than `max_corrections` / `max_correction_percent` of the
//! resources checked allow, nothing is corrected. `--dry-run` sends every call with
//! `DryRun=true` and records nothing.
//!
//! Every correction is confirmed by reading the resource again; the outcome lands in
//! `drift.action` (`done` only when the re-read matches Git). Every call, the re-read's included,
//! is counted in the run's API metrics by action and result ([`ec2::observe`]).

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, IpPermission, IpRange, Ipv6Range, PrefixListId, Tag, UserIdGroupPair,
};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::ActContext;
use super::guardrails::{self, Removal, escalate, record, source_error};
use crate::config::LiveSource;
use crate::live::ec2::{self, RequestCounter, ResourceKind};
use crate::model::{ActionResult, Drift, DriftKind, MASK, SourceError, pointer_segments};
use crate::terraform::values::{canonical_set, equivalent};

/// One API operation of a correction.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    CreateTags(Vec<(String, String)>),
    DeleteTags(Vec<String>),
    Authorize { ingress: bool, rules: Vec<Value> },
    Revoke { ingress: bool, rules: Vec<Value> },
    SourceDestCheck(bool),
    TerminationProtection(bool),
    Monitoring(bool),
}

impl Op {
    fn removes(&self) -> bool {
        matches!(self, Op::DeleteTags(_) | Op::Revoke { .. })
    }

    /// The EC2 API action that carries the operation out on a resource of `kind` (also the
    /// endpoint it is counted under in the API metrics).
    fn call(&self, kind: ResourceKind) -> &'static str {
        match self {
            Op::CreateTags(_) => "CreateTags",
            Op::DeleteTags(_) => "DeleteTags",
            Op::Authorize { ingress: true, .. } => "AuthorizeSecurityGroupIngress",
            Op::Authorize { ingress: false, .. } => "AuthorizeSecurityGroupEgress",
            Op::Revoke { ingress: true, .. } => "RevokeSecurityGroupIngress",
            Op::Revoke { ingress: false, .. } => "RevokeSecurityGroupEgress",
            Op::SourceDestCheck(_) if kind == ResourceKind::NetworkInterface => {
                "ModifyNetworkInterfaceAttribute"
            }
            Op::SourceDestCheck(_) | Op::TerminationProtection(_) => "ModifyInstanceAttribute",
            Op::Monitoring(true) => "MonitorInstances",
            Op::Monitoring(false) => "UnmonitorInstances",
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::CreateTags(t) => format!(
                "CreateTags {}",
                t.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Op::DeleteTags(k) => format!("DeleteTags {}", k.join(", ")),
            Op::Authorize { rules, .. } | Op::Revoke { rules, .. } => format!(
                "{} ({} rule{})",
                self.call(ResourceKind::SecurityGroup),
                rules.len(),
                if rules.len() == 1 { "" } else { "s" }
            ),
            Op::SourceDestCheck(v) => format!("source/dest check = {v}"),
            Op::TerminationProtection(v) => format!("DisableApiTermination = {v}"),
            Op::Monitoring(true) => "MonitorInstances".into(),
            Op::Monitoring(false) => "UnmonitorInstances".into(),
        }
    }
}

/// The API operations that bring a drift's resource back to Git, or why there are none.
fn plan_ops(kind: ResourceKind, drift: &Drift) -> Result<Vec<Op>, String> {
    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut ops = Vec::new();
    for c in &drift.changes {
        if c.masked || c.desired.as_str() == Some(MASK) {
            return Err(format!(
                "{} holds a sensitive value, which is never written from a report",
                c.path
            ));
        }
        let segs = pointer_segments(&c.path);
        match (
            kind,
            segs.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
        ) {
            (_, ["tags" | "tags_all", key]) => match &c.desired {
                Value::Null => delete.push(key.to_string()),
                Value::String(v) => create.push((key.to_string(), v.clone())),
                other => create.push((key.to_string(), other.to_string())),
            },
            (_, ["tags" | "tags_all"]) => {
                let empty = Map::new();
                let d = c.desired.as_object().unwrap_or(&empty);
                let l = c.live.as_object().unwrap_or(&empty);
                for (k, v) in d {
                    if l.get(k) != Some(v) {
                        create.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
                    }
                }
                for k in l.keys() {
                    if !d.contains_key(k) {
                        delete.push(k.clone());
                    }
                }
            }
            (ResourceKind::SecurityGroup, [dir @ ("ingress" | "egress")]) => {
                let ingress = *dir == "ingress";
                let d = rules_of(&c.desired);
                let l = rules_of(&c.live);
                let extra: Vec<Value> = l.iter().filter(|r| !d.contains(r)).cloned().collect();
                let missing: Vec<Value> = d.iter().filter(|r| !l.contains(r)).cloned().collect();
                if !extra.is_empty() {
                    ops.push(Op::Revoke {
                        ingress,
                        rules: extra,
                    });
                }
                if !missing.is_empty() {
                    ops.push(Op::Authorize {
                        ingress,
                        rules: missing,
                    });
                }
            }
            (ResourceKind::Instance | ResourceKind::NetworkInterface, ["source_dest_check"]) => {
                ops.push(Op::SourceDestCheck(bool_of(&c.desired, &c.path)?))
            }
            (ResourceKind::Instance, ["disable_api_termination"]) => {
                ops.push(Op::TerminationProtection(bool_of(&c.desired, &c.path)?))
            }
            (ResourceKind::Instance, ["monitoring"]) => {
                ops.push(Op::Monitoring(bool_of(&c.desired, &c.path)?))
            }
            _ => {
                return Err(format!(
                    "{} cannot be changed through the EC2 API in place",
                    c.path
                ));
            }
        }
    }
    if !delete.is_empty() {
        ops.insert(0, Op::DeleteTags(delete));
    }
    if !create.is_empty() {
        ops.insert(0, Op::CreateTags(create));
    }
    Ok(ops)
}

fn bool_of(v: &Value, path: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{path}: Git's value is not true or false"))
}

fn rules_of(v: &Value) -> Vec<Value> {
    match canonical_set(v) {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// One exploded rule as an `IpPermission`.
fn permission(rule: &Value, group_id: &str, with_description: bool) -> IpPermission {
    let protocol = rule.get("protocol").and_then(Value::as_str).unwrap_or("-1");
    let mut p = IpPermission::builder().ip_protocol(protocol);
    if protocol != "-1" {
        let port = |k: &str| rule.get(k).and_then(Value::as_i64).unwrap_or(0) as i32;
        p = p.from_port(port("from_port")).to_port(port("to_port"));
    }
    let description = rule
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| with_description && !d.is_empty())
        .map(str::to_string);
    let first = |k: &str| {
        rule.get(k)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(c) = first("cidr_blocks") {
        p = p.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .set_description(description)
                .build(),
        );
    } else if let Some(c) = first("ipv6_cidr_blocks") {
        p = p.ipv6_ranges(
            Ipv6Range::builder()
                .cidr_ipv6(c)
                .set_description(description)
                .build(),
        );
    } else if let Some(c) = first("prefix_list_ids") {
        p = p.prefix_list_ids(
            PrefixListId::builder()
                .prefix_list_id(c)
                .set_description(description)
                .build(),
        );
    } else {
        let gid = if rule.get("self").and_then(Value::as_bool) == Some(true) {
            group_id.to_string()
        } else {
            first("security_groups").unwrap_or_else(|| group_id.to_string())
        };
        p = p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(gid)
                .set_description(description)
                .build(),
        );
    }
    p.build()
}

/// One correction to carry out.
struct Job {
    index: usize,
    kind: ResourceKind,
    id: String,
    region: String,
    ops: Vec<Op>,
}

/// Carries out the EC2 corrections `decide` chose for one target and records each outcome in
/// `drift.action`. Returns the failures for the report's errors (a failed call, an unreadable
/// history). Drifts of other providers, and targets that do not read EC2, are left alone.
pub async fn run(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let LiveSource::Ec2(src) = &ctx.target.live else {
        return Vec::new();
    };
    let mut errors = Vec::new();

    // 1. What each drift needs; what cannot be done through the API escalates.
    let mut jobs = Vec::new();
    for (index, d) in drifts.iter_mut().enumerate() {
        let chosen = matches!(d.resource.id.provider(), "terraform" | "ec2")
            && guardrails::is_planned_correction(d);
        if !chosen {
            continue;
        }
        match d.kind {
            DriftKind::Modified => {}
            DriftKind::Missing => {
                escalate(
                    d,
                    ctx,
                    "recreating a missing resource needs `terraform apply`, not an EC2 call",
                );
                continue;
            }
            DriftKind::Unmanaged => {
                escalate(
                    d,
                    ctx,
                    "an unmanaged EC2 resource is never deleted by a correction",
                );
                continue;
            }
        }
        let Some(kind) = ResourceKind::from_terraform_type(&d.resource.id.type_name()) else {
            escalate(
                d,
                ctx,
                &format!("no EC2 correction for {}", d.resource.id.type_name()),
            );
            continue;
        };
        let live = d.live_object.as_ref();
        let field = |k: &str| {
            live.and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (Some(id), Some(region)) = (field("id"), field("region")) else {
            escalate(d, ctx, "the live resource id or region is unknown");
            continue;
        };
        let ops = match plan_ops(kind, d) {
            Ok(ops) => ops,
            Err(why) => {
                escalate(d, ctx, &format!("not correctable: {why}"));
                continue;
            }
        };
        if ops.iter().any(Op::removes)
            && guardrails::hold_removal(ctx, d, Removal::Parts("tags, rules"))
        {
            continue;
        }
        jobs.push(Job {
            index,
            kind,
            id,
            region,
            ops,
        });
    }
    if jobs.is_empty() {
        return errors;
    }

    // 2. The remediation history, the hourly limit per resource (past it, escalate) and the
    // blast radius (all or nothing).
    let Some(mut admitted) =
        guardrails::admit(ctx, drifts, &mut jobs, |job| job.index, &mut errors)
    else {
        return errors;
    };

    // 3. Act, then read again to confirm.
    let counter = RequestCounter::default();
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    for job in &jobs {
        let Some(d) = drifts.get_mut(job.index) else {
            continue;
        };
        let client = match clients.get(&job.region) {
            Some(c) => c.clone(),
            None => match ec2::connect(src, Some(&job.region), &counter).await {
                Ok((c, _)) => {
                    clients.insert(job.region.clone(), c.clone());
                    c
                }
                Err(e) => {
                    record(d, ActionResult::Failed, format!("cannot connect: {e}"));
                    errors.push(source_error(
                        ctx,
                        format!("{}: cannot connect: {e}", d.resource.display),
                    ));
                    continue;
                }
            },
        };
        let live = d.live_object.clone().unwrap_or(Value::Null);
        let done: Vec<String> = job.ops.iter().map(Op::describe).collect();
        // Consecutive failures on the target stop its corrections for the run.
        if let Some(reason) = ctx.audit.corrections_stopped(&ctx.target.name) {
            guardrails::skip(d, "consecutive failures", reason);
            continue;
        }
        // The intent is on disk before the first call, or no call is made.
        let id = match ctx.audit.intent(d, "correct", &done.join("; ")) {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("not corrected: {}", e.refusal());
                errors.push(source_error(ctx, format!("{}: {msg}", d.resource.display)));
                record(d, ActionResult::Failed, msg);
                continue;
            }
        };
        let outcome = correct_one(ctx, &client, job, d, &live, &done, &mut admitted).await;
        if let Some(e) = outcome.error {
            errors.push(e);
        }
        if let Err(e) = ctx.audit.result(&id, d, outcome.confirmed) {
            errors.push(source_error(
                ctx,
                format!(
                    "{}: the result of the correction could not be recorded: {}",
                    d.resource.display,
                    crate::errors::error_chain(&e)
                ),
            ));
        }
    }
    errors.extend(admitted.save(ctx));
    errors
}

/// How one EC2 correction went: the error for the report, and whether a re-read confirmed it.
struct Corrected {
    error: Option<SourceError>,
    confirmed: Option<bool>,
}

/// Sends one job's calls, then reads the resource again to confirm; records the outcome on `d`.
async fn correct_one(
    ctx: &ActContext<'_>,
    client: &Client,
    job: &Job,
    d: &mut Drift,
    live: &Value,
    done: &[String],
    admitted: &mut guardrails::Admitted,
) -> Corrected {
    let mut failed = None;
    for op in &job.ops {
        if let Err(e) = apply(client, job.kind, &job.id, live, op, ctx.dry_run).await {
            failed = Some(format!("{} on {} failed: {e}", op.describe(), job.id));
            break;
        }
    }
    if let Some(msg) = failed {
        warn!(target = %ctx.target.name, resource = %d.resource.display, "{msg}");
        let error = Some(source_error(ctx, format!("{}: {msg}", d.resource.display)));
        record(d, ActionResult::Failed, msg);
        return Corrected {
            error,
            confirmed: Some(false),
        };
    }
    if ctx.dry_run {
        record(
            d,
            ActionResult::Planned,
            format!("dry run: the EC2 API accepted {}", done.join("; ")),
        );
        return Corrected {
            error: None,
            confirmed: None,
        };
    }
    admitted.record(d);
    let wants_tp = d
        .changes
        .iter()
        .any(|c| c.path == "/disable_api_termination");
    let confirmed = match ec2::read_one(client, job.kind, &job.id, wants_tp).await {
        Ok(Some(after)) => confirm(d, &after),
        Ok(None) => Err(format!("{} no longer exists", job.id)),
        Err(e) => Err(format!("the re-read failed: {e}")),
    };
    match confirmed {
        Ok(()) => {
            info!(target = %ctx.target.name, resource = %d.resource.display, ops = %done.join("; "), "EC2 drift corrected");
            record(
                d,
                ActionResult::Done,
                format!(
                    "corrected through the EC2 API: {}; the re-read matches Git",
                    done.join("; ")
                ),
            );
        }
        Err(why) => {
            let error = Some(source_error(ctx, format!("{}: {why}", d.resource.display)));
            record(
                d,
                ActionResult::Failed,
                format!("applied {}, but {why}", done.join("; ")),
            );
            return Corrected {
                error,
                confirmed: Some(false),
            };
        }
    }
    Corrected {
        error: None,
        confirmed: Some(true),
    }
}

/// Whether the re-read resource matches Git at every corrected path.
fn confirm(drift: &Drift, now: &Value) -> Result<(), String> {
    for c in &drift.changes {
        let got = now.pointer(&c.path).cloned().unwrap_or(Value::Null);
        let ok = match c.path.as_str() {
            "/ingress" | "/egress" => equivalent(&canonical_set(&c.desired), &canonical_set(&got)),
            _ => equivalent(&c.desired, &got),
        };
        if !ok {
            return Err(format!("the re-read still differs at {}", c.path));
        }
    }
    Ok(())
}

fn tagging_id(kind: ResourceKind, id: &str, live: &Value) -> String {
    match kind {
        // Key pairs are tagged by their key-... id, not their name.
        ResourceKind::KeyPair => live
            .get("key_pair_id")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        _ => id.to_string(),
    }
}

/// Sends one EC2 request with `DryRun` set as asked, counts it in the API metrics under `call`
/// ([`ec2::observe`]) and turns its error into text. A macro because every operation's builder
/// is its own type.
macro_rules! send {
    ($call:expr, $dry_run:expr, $request:expr) => {
        ec2::observe($call, $request.dry_run($dry_run).send().await)
            .map(|_| ())
            .map_err(err)
    };
}

async fn apply(
    client: &Client,
    kind: ResourceKind,
    id: &str,
    live: &Value,
    op: &Op,
    dry_run: bool,
) -> Result<(), String> {
    let call = op.call(kind);
    let r: Result<(), String> = match op {
        Op::CreateTags(tags) => {
            let tags = tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build());
            let target = tagging_id(kind, id, live);
            send!(
                call,
                dry_run,
                client
                    .create_tags()
                    .resources(target)
                    .set_tags(Some(tags.collect()))
            )
        }
        Op::DeleteTags(keys) => {
            let tags = keys.iter().map(|k| Tag::builder().key(k).build());
            let target = tagging_id(kind, id, live);
            send!(
                call,
                dry_run,
                client
                    .delete_tags()
                    .resources(target)
                    .set_tags(Some(tags.collect()))
            )
        }
        Op::Authorize { ingress, rules } | Op::Revoke { ingress, rules } => {
            let authorize = matches!(op, Op::Authorize { .. });
            // A rule is authorized with its description and revoked without one: EC2 finds
            // the rule to revoke by protocol, ports and source.
            let perms: Option<Vec<IpPermission>> =
                Some(rules.iter().map(|r| permission(r, id, authorize)).collect());
            match (authorize, *ingress) {
                (true, true) => send!(
                    call,
                    dry_run,
                    client
                        .authorize_security_group_ingress()
                        .group_id(id)
                        .set_ip_permissions(perms)
                ),
                (true, false) => send!(
                    call,
                    dry_run,
                    client
                        .authorize_security_group_egress()
                        .group_id(id)
                        .set_ip_permissions(perms)
                ),
                (false, true) => send!(
                    call,
                    dry_run,
                    client
                        .revoke_security_group_ingress()
                        .group_id(id)
                        .set_ip_permissions(perms)
                ),
                (false, false) => send!(
                    call,
                    dry_run,
                    client
                        .revoke_security_group_egress()
                        .group_id(id)
                        .set_ip_permissions(perms)
                ),
            }
        }
        Op::SourceDestCheck(v) => {
            let val = AttributeBooleanValue::builder().value(*v).build();
            if kind == ResourceKind::NetworkInterface {
                send!(
                    call,
                    dry_run,
                    client
                        .modify_network_interface_attribute()
                        .network_interface_id(id)
                        .source_dest_check(val)
                )
            } else {
                send!(
                    call,
                    dry_run,
                    client
                        .modify_instance_attribute()
                        .instance_id(id)
                        .source_dest_check(val)
                )
            }
        }
        Op::TerminationProtection(v) => send!(
            call,
            dry_run,
            client
                .modify_instance_attribute()
                .instance_id(id)
                .disable_api_termination(AttributeBooleanValue::builder().value(*v).build())
        ),
        Op::Monitoring(true) => send!(call, dry_run, client.monitor_instances().instance_ids(id)),
        Op::Monitoring(false) => {
            send!(call, dry_run, client.unmonitor_instances().instance_ids(id))
        }
    };
    match r {
        // With DryRun, success is the DryRunOperation error.
        Err(e) if dry_run && e.starts_with("DryRunOperation") => Ok(()),
        // The rule is already there / already gone (someone else fixed it, or a retried
        // request landed twice): the goal is reached, and the re-read confirms it.
        Err(e)
            if matches!(op, Op::Authorize { .. })
                && e.starts_with("InvalidPermission.Duplicate") =>
        {
            Ok(())
        }
        Err(e)
            if matches!(op, Op::Revoke { .. }) && e.starts_with("InvalidPermission.NotFound") =>
        {
            Ok(())
        }
        other => other,
    }
}

fn err<E, R>(e: aws_sdk_ec2::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or_default()
        ),
        None => aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeOp, FieldChange, ResourceId, ResourceRef, fingerprint};
    use crate::terraform::values::prune_empty;
    use serde_json::json;

    fn drift(address: &str, changes: Vec<(&str, Value, Value)>) -> Drift {
        let id = ResourceId::Terraform {
            workspace: "default".into(),
            address: address.into(),
        };
        Drift {
            fingerprint: fingerprint("t", &id),
            target: "t".into(),
            resource: ResourceRef::from(id),
            kind: DriftKind::Modified,
            changes: changes
                .into_iter()
                .map(|(p, d, l)| FieldChange {
                    path: p.into(),
                    op: ChangeOp::Changed,
                    desired: d,
                    live: l,
                    masked: false,
                    attribution: None,
                    class: None,
                })
                .collect(),
            provenance: None,
            verdict: None,
            action: None,
            desired_object: None,
            live_object: Some(json!({"id": "sg-1", "region": "us-east-1"})),
        }
    }

    #[test]
    fn plans_tags_rules_and_attributes() {
        let r22 = ec2::rule("tcp", 22, 22, None, "cidr_blocks", "0.0.0.0/0");
        let r443 = ec2::rule("tcp", 443, 443, None, "cidr_blocks", "10.0.0.0/8");
        let d = drift(
            "aws_security_group.web",
            vec![
                ("/tags/Name", json!("web"), json!("changed")),
                ("/tags/Extra", Value::Null, json!("x")),
                ("/ingress", json!([r443.clone()]), json!([r22.clone()])),
            ],
        );
        let ops = plan_ops(ResourceKind::SecurityGroup, &d).unwrap();
        assert_eq!(
            ops,
            [
                Op::CreateTags(vec![("Name".into(), "web".into())]),
                Op::DeleteTags(vec!["Extra".into()]),
                Op::Revoke {
                    ingress: true,
                    rules: vec![prune_empty(&r22)]
                },
                Op::Authorize {
                    ingress: true,
                    rules: vec![prune_empty(&r443)]
                },
            ]
        );
        let d = drift(
            "aws_instance.web",
            vec![("/instance_type", json!("t3.micro"), json!("t3.large"))],
        );
        assert!(
            plan_ops(ResourceKind::Instance, &d)
                .unwrap_err()
                .contains("/instance_type")
        );
        let d = drift(
            "aws_instance.web",
            vec![
                ("/monitoring", json!(true), json!(false)),
                ("/disable_api_termination", json!(true), json!(false)),
            ],
        );
        assert_eq!(
            plan_ops(ResourceKind::Instance, &d).unwrap(),
            [Op::Monitoring(true), Op::TerminationProtection(true)]
        );
    }

    #[test]
    fn each_op_names_its_api_action() {
        let rules = vec![json!({})];
        let cases = [
            (Op::CreateTags(vec![]), ResourceKind::Vpc, "CreateTags"),
            (Op::DeleteTags(vec![]), ResourceKind::Vpc, "DeleteTags"),
            (
                Op::Authorize {
                    ingress: false,
                    rules: rules.clone(),
                },
                ResourceKind::SecurityGroup,
                "AuthorizeSecurityGroupEgress",
            ),
            (
                Op::Revoke {
                    ingress: true,
                    rules: rules.clone(),
                },
                ResourceKind::SecurityGroup,
                "RevokeSecurityGroupIngress",
            ),
            (
                Op::SourceDestCheck(true),
                ResourceKind::NetworkInterface,
                "ModifyNetworkInterfaceAttribute",
            ),
            (
                Op::SourceDestCheck(true),
                ResourceKind::Instance,
                "ModifyInstanceAttribute",
            ),
            (
                Op::TerminationProtection(false),
                ResourceKind::Instance,
                "ModifyInstanceAttribute",
            ),
            (
                Op::Monitoring(false),
                ResourceKind::Instance,
                "UnmonitorInstances",
            ),
        ];
        for (op, kind, call) in cases {
            assert_eq!(op.call(kind), call, "{op:?}");
        }
        let revoke = Op::Revoke {
            ingress: false,
            rules: vec![json!({}), json!({})],
        };
        assert_eq!(revoke.describe(), "RevokeSecurityGroupEgress (2 rules)");
    }

    #[test]
    fn permissions_carry_one_source() {
        let p = permission(
            &ec2::rule("-1", 0, 0, Some("all"), "ipv6_cidr_blocks", "::/0"),
            "sg-1",
            true,
        );
        assert_eq!(p.ip_protocol(), Some("-1"));
        assert_eq!(p.from_port(), None);
        assert_eq!(p.ipv6_ranges()[0].cidr_ipv6(), Some("::/0"));
        let mut selfr = ec2::rule("tcp", 80, 80, None, "", "");
        selfr["self"] = json!(true);
        let p = permission(&selfr, "sg-own", false);
        assert_eq!(p.user_id_group_pairs()[0].group_id(), Some("sg-own"));
    }
}
