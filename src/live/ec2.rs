//! Live EC2: reads instances, security groups and their rules, VPCs, subnets, EBS volumes,
//! Elastic IPs, network interfaces, key pairs, launch templates, internet and NAT gateways and
//! route tables from one or more regions, with aws-config's standard credential chain (or a
//! named profile) and an optional endpoint override (moto in tests).
//!
//! Reading: one Describe call per resource type and region, paged with the API's largest page
//! size (1000; 200 for launch templates, 100 for route tables), server-side filters where the
//! API has a safe one (terminated instances are filtered out), and adaptive retry so throttling
//! slows the reader down instead of failing it. Attributes the Describe calls do not return are
//! read only for resources a state tracks (Terraform's refresh reads them too), after the
//! Describe calls, with bounded concurrency: `DescribeInstanceAttribute(disableApiTermination)`
//! per instance, `DescribeVpcAttribute(enableDnsSupport | enableDnsHostnames)` per VPC, and one
//! paged `DescribeLaunchTemplateVersions($Latest)` call per region for the contents of launch
//! templates' latest versions (the version the provider reads). Every call, here and in the EC2
//! actuator, is counted in the run's API metrics with its result ([`observe`]).
//!
//! A failed call does not sink the read: it is recorded in [`Ec2Inventory::failures`] naming the
//! call and region, the resources of that type and region are left out, and the run marks the
//! target partial (nothing is reported `Missing` for a type whose read failed, and nothing is
//! deleted). A failed attribute call leaves only those attributes out of those resources (so
//! they are not compared); the read is still partial.
//!
//! Output: every resource as a [`Ec2Resource`] whose `attributes` use the Terraform AWS
//! provider's attribute names (`instance_type`, `vpc_security_group_ids`, `ingress`, `tags`
//! as a map...), so the state-vs-live compare in [`crate::terraform::compare`] is a structural
//! comparison with no per-field translation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::describe_vpc_attribute::DescribeVpcAttributeOutput;
use aws_sdk_ec2::types::{
    Filter, InstanceAttributeName, IpPermission, NatGateway, ResponseLaunchTemplateData, Tag,
    VpcAttributeName,
};
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use crate::config::Ec2Source;

/// The `provider` label of EC2 calls in the API metrics ([`observe`]).
pub const METRICS_PROVIDER: &str = "ec2";
/// The per-instance attribute call (termination protection).
const DESCRIBE_INSTANCE_ATTRIBUTE: &str = "DescribeInstanceAttribute";
/// The per-VPC attribute call (DNS support and hostnames), one attribute per call.
const DESCRIBE_VPC_ATTRIBUTE: &str = "DescribeVpcAttribute";
/// The launch template contents call (every template's `$Latest` version, paged).
const DESCRIBE_LAUNCH_TEMPLATE_VERSIONS: &str = "DescribeLaunchTemplateVersions";
/// The VPC attributes read with `DescribeVpcAttribute`: the provider's name and the API's.
pub const VPC_DNS_ATTRIBUTES: [(&str, &str); 2] = [
    ("enable_dns_support", "enableDnsSupport"),
    ("enable_dns_hostnames", "enableDnsHostnames"),
];
/// Largest page size of most EC2 Describe calls.
pub const MAX_PAGE: i32 = 1000;
/// Largest page size of DescribeRouteTables.
pub const MAX_PAGE_ROUTE_TABLES: i32 = 100;
/// Largest page size of DescribeLaunchTemplates and DescribeLaunchTemplateVersions.
pub const MAX_PAGE_LAUNCH_TEMPLATES: i32 = 200;
/// Concurrent per-resource attribute calls (DescribeInstanceAttribute, DescribeVpcAttribute)
/// per region.
const ATTRIBUTE_CONCURRENCY: usize = 8;
/// Time allowed for one attempt of one call, response included (a 1,000-item page of
/// instances is several MiB).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the EC2 reader could not start at all (per-call failures are data, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error(
        "no AWS region: set `live.ec2.regions` in the config, or AWS_REGION / the profile's region"
    )]
    NoRegion,
}

impl Ec2Error {
    /// True when the user's input is at fault (exit 3).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Ec2Error::NoRegion)
    }
}

/// The EC2 resource types driftwarden reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Instance,
    SecurityGroup,
    Vpc,
    Subnet,
    Volume,
    Eip,
    NetworkInterface,
    KeyPair,
    LaunchTemplate,
    InternetGateway,
    NatGateway,
    RouteTable,
}

impl ResourceKind {
    /// Every kind, in read order.
    pub const ALL: [ResourceKind; 12] = [
        ResourceKind::Instance,
        ResourceKind::SecurityGroup,
        ResourceKind::Vpc,
        ResourceKind::Subnet,
        ResourceKind::Volume,
        ResourceKind::Eip,
        ResourceKind::NetworkInterface,
        ResourceKind::KeyPair,
        ResourceKind::LaunchTemplate,
        ResourceKind::InternetGateway,
        ResourceKind::NatGateway,
        ResourceKind::RouteTable,
    ];

    /// The Terraform AWS provider's resource type.
    pub fn terraform_type(self) -> &'static str {
        match self {
            ResourceKind::Instance => "aws_instance",
            ResourceKind::SecurityGroup => "aws_security_group",
            ResourceKind::Vpc => "aws_vpc",
            ResourceKind::Subnet => "aws_subnet",
            ResourceKind::Volume => "aws_ebs_volume",
            ResourceKind::Eip => "aws_eip",
            ResourceKind::NetworkInterface => "aws_network_interface",
            ResourceKind::KeyPair => "aws_key_pair",
            ResourceKind::LaunchTemplate => "aws_launch_template",
            ResourceKind::InternetGateway => "aws_internet_gateway",
            ResourceKind::NatGateway => "aws_nat_gateway",
            ResourceKind::RouteTable => "aws_route_table",
        }
    }

    /// The EC2 resource type name (as in tag specifications): `instance`, `security-group`...
    pub fn ec2_type(self) -> &'static str {
        match self {
            ResourceKind::Instance => "instance",
            ResourceKind::SecurityGroup => "security-group",
            ResourceKind::Vpc => "vpc",
            ResourceKind::Subnet => "subnet",
            ResourceKind::Volume => "volume",
            ResourceKind::Eip => "elastic-ip",
            ResourceKind::NetworkInterface => "network-interface",
            ResourceKind::KeyPair => "key-pair",
            ResourceKind::LaunchTemplate => "launch-template",
            ResourceKind::InternetGateway => "internet-gateway",
            ResourceKind::NatGateway => "natgateway",
            ResourceKind::RouteTable => "route-table",
        }
    }

    /// The Describe call that reads the kind.
    pub fn describe_call(self) -> &'static str {
        match self {
            ResourceKind::Instance => "DescribeInstances",
            ResourceKind::SecurityGroup => "DescribeSecurityGroups",
            ResourceKind::Vpc => "DescribeVpcs",
            ResourceKind::Subnet => "DescribeSubnets",
            ResourceKind::Volume => "DescribeVolumes",
            ResourceKind::Eip => "DescribeAddresses",
            ResourceKind::NetworkInterface => "DescribeNetworkInterfaces",
            ResourceKind::KeyPair => "DescribeKeyPairs",
            ResourceKind::LaunchTemplate => "DescribeLaunchTemplates",
            ResourceKind::InternetGateway => "DescribeInternetGateways",
            ResourceKind::NatGateway => "DescribeNatGateways",
            ResourceKind::RouteTable => "DescribeRouteTables",
        }
    }

    /// The kind a Terraform resource type describes (including the `aws_default_*` adopters of
    /// AWS-created defaults).
    pub fn from_terraform_type(t: &str) -> Option<ResourceKind> {
        Some(match t {
            "aws_instance" => ResourceKind::Instance,
            "aws_security_group" | "aws_default_security_group" => ResourceKind::SecurityGroup,
            "aws_vpc" | "aws_default_vpc" => ResourceKind::Vpc,
            "aws_subnet" | "aws_default_subnet" => ResourceKind::Subnet,
            "aws_ebs_volume" => ResourceKind::Volume,
            "aws_eip" => ResourceKind::Eip,
            "aws_network_interface" => ResourceKind::NetworkInterface,
            "aws_key_pair" => ResourceKind::KeyPair,
            "aws_launch_template" => ResourceKind::LaunchTemplate,
            "aws_internet_gateway" => ResourceKind::InternetGateway,
            "aws_nat_gateway" => ResourceKind::NatGateway,
            "aws_route_table" | "aws_default_route_table" => ResourceKind::RouteTable,
            _ => return None,
        })
    }
}

// Booleans the API leaves out when false (moto does; the API reference documents false as
// their default) are read as false, so an omitted flag is never drift against Terraform's
// `false`.

/// One live EC2 resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Resource {
    pub region: String,
    /// The owning account, when the API reports it (else the region's first seen owner).
    pub account: String,
    pub kind: ResourceKind,
    /// The id Terraform keeps in state (`id`): instance id, group id, key name, allocation id...
    pub id: String,
    /// The resource under the Terraform AWS provider's attribute names.
    pub attributes: Value,
    /// Created by AWS itself (the default VPC and its subnets, a VPC's default security group and
    /// main route table, an instance's root volume and primary network interface, interfaces
    /// other services manage): never reported `Unmanaged`.
    pub aws_managed: bool,
}

/// One Describe call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub region: String,
    pub call: String,
    /// The kind whose read is incomplete, when the call reads one.
    pub kind: Option<ResourceKind>,
    pub message: String,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EC2 {} in {} failed: {}",
            self.call, self.region, self.message
        )
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct Ec2Inventory {
    pub regions: Vec<String>,
    pub resources: Vec<Ec2Resource>,
    /// Non-empty means the read is partial.
    pub failures: Vec<CallFailure>,
    /// HTTP requests sent, per API action (retries included).
    pub requests: BTreeMap<String, usize>,
}

impl Ec2Inventory {
    /// Whether `kind` was read completely in `region` (an attribute call that failed leaves
    /// only that attribute out, so it does not count here; it still makes the read partial).
    pub fn complete(&self, region: &str, kind: ResourceKind) -> bool {
        self.regions.iter().any(|r| r == region)
            && !self
                .failures
                .iter()
                .any(|f| f.region == region && f.kind == Some(kind))
    }
}

/// What to read beyond the Describe calls.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// Instances whose `disableApiTermination` attribute to read (one call each).
    pub termination_protection_for: BTreeSet<String>,
    /// VPCs whose `enableDnsSupport` and `enableDnsHostnames` attributes to read (one call per
    /// attribute each).
    pub vpc_attributes_for: BTreeSet<String>,
    /// Launch templates whose latest version's contents to read (one paged call per region,
    /// made when any of them exists).
    pub launch_template_data_for: BTreeSet<String>,
}

/// Counts the HTTP requests a client sends, per API action. Attach it to a client with
/// [`aws_sdk_ec2::config::Builder::interceptor`]; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    page_sizes: Arc<Mutex<BTreeMap<String, String>>>,
}

impl RequestCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The total so far.
    pub fn total(&self) -> usize {
        self.snapshot().values().sum()
    }

    /// The `MaxResults` each action last asked for (actions that page).
    pub fn page_sizes(&self) -> BTreeMap<String, String> {
        self.page_sizes
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "driftwarden-request-counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // EC2 speaks the query protocol: the body is `Action=DescribeInstances&Version=...`.
        let body = context
            .request()
            .body()
            .bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        let param = |name: &str| {
            body.split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let action = param("Action").unwrap_or_else(|| "unknown".to_string());
        if let (Some(size), Ok(mut p)) = (param("MaxResults"), self.page_sizes.lock()) {
            p.insert(action.clone(), size);
        }
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(action).or_default() += 1;
        }
        Ok(())
    }
}

/// Builds an EC2 client for `region` (or the chain's region when `None`) from the source's
/// profile and endpoint, with adaptive retry. Returns the client and its region.
pub async fn connect(
    src: &Ec2Source,
    region: Option<&str>,
    counter: &RequestCounter,
) -> Result<(Client, String), Ec2Error> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive().with_max_attempts(src.max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(p) = &src.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(e) = &src.endpoint {
        loader = loader.endpoint_url(e);
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Err(Ec2Error::NoRegion);
    };
    let conf = aws_sdk_ec2::config::Builder::from(&sdk)
        .interceptor(counter.clone())
        .build();
    Ok((Client::from_conf(conf), region))
}

/// Reads every configured region concurrently.
pub async fn read(src: &Ec2Source, req: &ReadRequest) -> Result<Ec2Inventory, Ec2Error> {
    let counter = RequestCounter::default();
    let mut clients = Vec::new();
    if src.regions.is_empty() {
        clients.push(connect(src, None, &counter).await?);
    } else {
        for r in &src.regions {
            clients.push(connect(src, Some(r), &counter).await?);
        }
    }
    let reads = clients
        .iter()
        .map(|(client, region)| read_region(client, region, req));
    let results = futures_join_all(reads).await;
    let mut inv = Ec2Inventory::default();
    for ((_, region), r) in clients.iter().zip(results) {
        inv.regions.push(region.clone());
        inv.resources.extend(r.resources);
        inv.failures.extend(r.failures);
    }
    inv.requests = counter.snapshot();
    debug!(requests = ?inv.requests, resources = inv.resources.len(), "EC2 read");
    Ok(inv)
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    // The futures borrow the clients, so they cannot be spawned; poll them together instead.
    let mut pending: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in set.iter_mut().enumerate() {
            if pending[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => pending[i] = Some(v),
                std::task::Poll::Pending => all = false,
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for p in pending.into_iter().flatten() {
        out.push(p);
    }
    out
}

/// What one region returned.
#[derive(Debug, Default)]
pub struct RegionRead {
    pub resources: Vec<Ec2Resource>,
    pub failures: Vec<CallFailure>,
}

/// Reads every kind in one region. The Describe calls run concurrently.
pub async fn read_region(client: &Client, region: &str, req: &ReadRequest) -> RegionRead {
    let r = region;
    let (inst, sgs, vpcs, subnets, vols, eips, enis, keys, lts, igws, nats, rtbs) = tokio::join!(
        read_instances(client, None),
        read_security_groups(client, None),
        read_vpcs(client, None),
        read_subnets(client, None),
        read_volumes(client, None),
        read_addresses(client, None),
        read_network_interfaces(client, None),
        read_key_pairs(client, None),
        read_launch_templates(client, None),
        read_internet_gateways(client, None),
        read_nat_gateways(client, None),
        read_route_tables(client, None),
    );
    let mut out = RegionRead::default();
    let mut owner: Option<String> = None;
    let mut parts: Vec<Vec<Partial>> = Vec::new();
    for (kind, res) in [
        (ResourceKind::Instance, inst),
        (ResourceKind::SecurityGroup, sgs),
        (ResourceKind::Vpc, vpcs),
        (ResourceKind::Subnet, subnets),
        (ResourceKind::Volume, vols),
        (ResourceKind::Eip, eips),
        (ResourceKind::NetworkInterface, enis),
        (ResourceKind::KeyPair, keys),
        (ResourceKind::LaunchTemplate, lts),
        (ResourceKind::InternetGateway, igws),
        (ResourceKind::NatGateway, nats),
        (ResourceKind::RouteTable, rtbs),
    ] {
        match res {
            Ok(items) => {
                if owner.is_none() {
                    owner = items.iter().find_map(|p| p.owner.clone());
                }
                parts.push(items);
            }
            Err(message) => {
                warn!(region = r, call = kind.describe_call(), %message, "EC2 read failed");
                out.failures.push(CallFailure {
                    region: r.to_string(),
                    call: kind.describe_call().to_string(),
                    kind: Some(kind),
                    message,
                });
                parts.push(Vec::new());
            }
        }
    }
    let account = owner.unwrap_or_else(|| "unknown".to_string());
    let mut resources: Vec<Ec2Resource> = parts
        .into_iter()
        .flatten()
        .map(|p| Ec2Resource {
            region: r.to_string(),
            account: p.owner.unwrap_or_else(|| account.clone()),
            kind: p.kind,
            id: p.id,
            attributes: p.attributes,
            aws_managed: p.aws_managed,
        })
        .collect();
    join_instance_volumes(&mut resources);
    mark_instance_owned(&mut resources);
    mark_nat_gateway_owned(&mut resources);
    // The attributes the Describe calls leave out, for the resources a state tracks that exist.
    let instances = tracked(
        &resources,
        ResourceKind::Instance,
        &req.termination_protection_for,
    );
    let vpcs = tracked(&resources, ResourceKind::Vpc, &req.vpc_attributes_for);
    let templates = tracked(
        &resources,
        ResourceKind::LaunchTemplate,
        &req.launch_template_data_for,
    );
    let sem = tokio::sync::Semaphore::new(ATTRIBUTE_CONCURRENCY);
    let ((tp, tp_failures), (dns, dns_failures), lt_data) = tokio::join!(
        termination_protection(client, r, &instances, &sem),
        vpc_dns_attributes(client, r, &vpcs, &sem),
        read_launch_template_data(client, !templates.is_empty()),
    );
    out.failures.extend(tp_failures);
    out.failures.extend(dns_failures);
    let lt_data = match lt_data {
        Ok(d) => d,
        Err(message) => {
            warn!(region = r, call = DESCRIBE_LAUNCH_TEMPLATE_VERSIONS, %message, "EC2 read failed");
            // The templates are read; only their contents are left out (not compared).
            out.failures.push(CallFailure {
                region: r.to_string(),
                call: DESCRIBE_LAUNCH_TEMPLATE_VERSIONS.to_string(),
                kind: None,
                message,
            });
            HashMap::new()
        }
    };
    for x in resources.iter_mut() {
        let Some(m) = x.attributes.as_object_mut() else {
            continue;
        };
        match x.kind {
            ResourceKind::Instance => {
                if let Some(v) = tp.get(&x.id) {
                    m.insert("disable_api_termination".into(), Value::Bool(*v));
                }
            }
            ResourceKind::Vpc => {
                if let Some(attrs) = dns.get(&x.id) {
                    m.extend(attrs.clone());
                }
            }
            ResourceKind::LaunchTemplate if templates.contains(&x.id) => {
                if let Some(attrs) = lt_data.get(&x.id) {
                    m.extend(attrs.clone());
                }
            }
            _ => {}
        }
    }
    resources.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    out.resources = resources;
    out
}

/// The ids of the resources of `kind` that `set` names (those a state tracks and that exist).
fn tracked(resources: &[Ec2Resource], kind: ResourceKind, set: &BTreeSet<String>) -> Vec<String> {
    resources
        .iter()
        .filter(|x| x.kind == kind && set.contains(&x.id))
        .map(|x| x.id.clone())
        .collect()
}

/// Reads one resource again (to confirm a correction), under the same attribute names as
/// [`read`]. `Ok(None)` when it no longer exists.
pub async fn read_one(
    client: &Client,
    kind: ResourceKind,
    id: &str,
    termination_protection: bool,
) -> Result<Option<Value>, String> {
    let only = Some(id);
    let parts = match kind {
        ResourceKind::Instance => read_instances(client, only).await?,
        ResourceKind::SecurityGroup => read_security_groups(client, only).await?,
        ResourceKind::Vpc => read_vpcs(client, only).await?,
        ResourceKind::Subnet => read_subnets(client, only).await?,
        ResourceKind::Volume => read_volumes(client, only).await?,
        ResourceKind::Eip => read_addresses(client, only).await?,
        ResourceKind::NetworkInterface => read_network_interfaces(client, only).await?,
        ResourceKind::KeyPair => read_key_pairs(client, only).await?,
        ResourceKind::LaunchTemplate => read_launch_templates(client, only).await?,
        ResourceKind::InternetGateway => read_internet_gateways(client, only).await?,
        ResourceKind::NatGateway => read_nat_gateways(client, only).await?,
        ResourceKind::RouteTable => read_route_tables(client, only).await?,
    };
    let Some(p) = parts.into_iter().find(|p| p.id == id) else {
        return Ok(None);
    };
    let mut attrs = p.attributes;
    if let Some(m) = attrs.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_'));
        if termination_protection && kind == ResourceKind::Instance {
            if let Some(v) = read_termination_protection(client, id).await? {
                m.insert("disable_api_termination".into(), Value::Bool(v));
            }
        }
    }
    Ok(Some(attrs))
}

/// A resource before the region's account is known.
struct Partial {
    kind: ResourceKind,
    id: String,
    owner: Option<String>,
    attributes: Value,
    aws_managed: bool,
}

fn err_text<E: std::error::Error>(e: E) -> String {
    DisplayErrorContext(e).to_string()
}

/// [`observe`], with a failure as text.
fn checked<T, E, R>(call: &str, r: Result<T, SdkError<E, R>>) -> Result<T, String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    observe(call, r).map_err(err_text)
}

/// Counts one EC2 call (one request of the SDK's, after its retries: one page of a paged
/// Describe, one correction) in the process-wide API metrics
/// ([`crate::metrics::record_api_call`]): provider [`METRICS_PROVIDER`], the API action as the
/// endpoint (`DescribeInstances`, `CreateTags`), and [`call_result`]. Returns `r` unchanged.
pub fn observe<T, E, R>(call: &str, r: Result<T, SdkError<E, R>>) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
{
    crate::metrics::record_api_call(METRICS_PROVIDER, call, call_result(&r));
    r
}

/// How an EC2 call ended, as the metrics' `result` label: `ok`; the service's error code
/// (`RequestLimitExceeded`, `UnauthorizedOperation`, `DryRunOperation` for an accepted dry run);
/// or, when no error came back from the service, the kind of failure (`timeout`,
/// `dispatch_failure` for a connection that failed, `response_error`, `construction_failure`).
/// Always from a small fixed set: an error code that is not a plain identifier counts as
/// `service_error`.
pub fn call_result<T, E, R>(r: &Result<T, SdkError<E, R>>) -> &str
where
    E: ProvideErrorMetadata,
{
    let e = match r {
        Ok(_) => return "ok",
        Err(e) => e,
    };
    match e {
        SdkError::ServiceError(se) => se
            .err()
            .code()
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= 64
                    && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '.')
            })
            .unwrap_or("service_error"),
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(_) => "dispatch_failure",
        SdkError::ResponseError(_) => "response_error",
        SdkError::ConstructionFailure(_) => "construction_failure",
        _ => "error",
    }
}

/// Tags as the provider's map, without the `aws:` tags AWS reserves (the provider drops them too).
pub fn tag_map(tags: Option<&[Tag]>) -> Value {
    let mut m = Map::new();
    for t in tags.unwrap_or_default() {
        if let Some(k) = t.key() {
            if k.starts_with("aws:") {
                continue;
            }
            m.insert(
                k.to_string(),
                Value::String(t.value().unwrap_or_default().to_string()),
            );
        }
    }
    Value::Object(m)
}

async fn read_instances(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let live_states = ["pending", "running", "shutting-down", "stopping", "stopped"];
    let req = client.describe_instances().filters(
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(live_states.iter().map(|s| s.to_string()).collect()))
            .build(),
    );
    let req = match only {
        Some(id) => req.instance_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::Instance.describe_call(), page)?;
        for res in page.reservations() {
            for i in res.instances() {
                let Some(id) = i.instance_id() else { continue };
                let root_name = i.root_device_name();
                let root: Vec<Value> = i
                    .block_device_mappings()
                    .iter()
                    .filter(|m| m.device_name() == root_name && root_name.is_some())
                    .filter_map(|m| m.ebs())
                    .map(|e| {
                        json!({
                            "volume_id": e.volume_id(),
                            "device_name": root_name,
                            "delete_on_termination": e.delete_on_termination(),
                        })
                    })
                    .collect();
                let attached: Vec<Value> = i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.volume_id()))
                    .map(|v| Value::String(v.to_string()))
                    .collect();
                let mut sgs: Vec<String> = i
                    .security_groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect();
                sgs.sort();
                let profile = i
                    .iam_instance_profile()
                    .and_then(|p| p.arn())
                    .map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_string());
                let monitoring = i
                    .monitoring()
                    .and_then(|m| m.state())
                    .map(|s| matches!(s.as_str(), "enabled" | "pending"));
                let attributes = json!({
                    "id": id,
                    "ami": i.image_id(),
                    "instance_type": i.instance_type().map(|t| t.as_str()),
                    "availability_zone": i.placement().and_then(|p| p.availability_zone()),
                    "tenancy": i.placement().and_then(|p| p.tenancy()).map(|t| t.as_str()),
                    "subnet_id": i.subnet_id(),
                    "vpc_security_group_ids": sgs,
                    "key_name": i.key_name(),
                    "iam_instance_profile": profile,
                    "source_dest_check": i.source_dest_check(),
                    "monitoring": monitoring,
                    "ebs_optimized": i.ebs_optimized().unwrap_or(false),
                    "private_ip": i.private_ip_address(),
                    "instance_state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                    "root_block_device": root,
                    "tags": tag_map(Some(i.tags())),
                    "_attached_volumes": attached,
                });
                out.push(Partial {
                    kind: ResourceKind::Instance,
                    id: id.to_string(),
                    owner: res.owner_id().map(str::to_string),
                    attributes,
                    aws_managed: false,
                });
            }
        }
    }
    Ok(out)
}

/// One security group rule in the provider's inline shape, exploded to one source per rule so
/// rule sets compare as sets whatever the grouping (`cidr_blocks` holding one CIDR, or one of
/// `ipv6_cidr_blocks`, `prefix_list_ids`, `security_groups`, `self`).
pub fn explode_permission(p: &IpPermission, own_group: &str) -> Vec<Value> {
    let protocol = normalize_protocol(p.ip_protocol().unwrap_or("-1"));
    let (from, to) = if protocol == "-1" {
        (0, 0)
    } else {
        (p.from_port().unwrap_or(0), p.to_port().unwrap_or(0))
    };
    let mut out = Vec::new();
    for r in p.ip_ranges() {
        if let Some(c) = r.cidr_ip() {
            out.push(rule(&protocol, from, to, r.description(), "cidr_blocks", c));
        }
    }
    for r in p.ipv6_ranges() {
        if let Some(c) = r.cidr_ipv6() {
            out.push(rule(
                &protocol,
                from,
                to,
                r.description(),
                "ipv6_cidr_blocks",
                c,
            ));
        }
    }
    for r in p.prefix_list_ids() {
        if let Some(c) = r.prefix_list_id() {
            out.push(rule(
                &protocol,
                from,
                to,
                r.description(),
                "prefix_list_ids",
                c,
            ));
        }
    }
    for g in p.user_id_group_pairs() {
        let Some(gid) = g.group_id() else { continue };
        if gid == own_group {
            let mut r = rule(&protocol, from, to, g.description(), "", "");
            if let Some(m) = r.as_object_mut() {
                m.insert("self".into(), Value::Bool(true));
            }
            out.push(r);
        } else {
            out.push(rule(
                &protocol,
                from,
                to,
                g.description(),
                "security_groups",
                gid,
            ));
        }
    }
    out
}

/// A rule with one source. `field` empty builds a rule with no list source (for `self`).
pub fn rule(
    protocol: &str,
    from: i32,
    to: i32,
    description: Option<&str>,
    field: &str,
    value: &str,
) -> Value {
    let mut m = Map::new();
    for f in [
        "cidr_blocks",
        "ipv6_cidr_blocks",
        "prefix_list_ids",
        "security_groups",
    ] {
        let list = if f == field {
            vec![Value::String(value.to_string())]
        } else {
            Vec::new()
        };
        m.insert(f.to_string(), Value::Array(list));
    }
    m.insert(
        "description".into(),
        Value::String(description.unwrap_or_default().to_string()),
    );
    m.insert("from_port".into(), Value::from(from));
    m.insert("to_port".into(), Value::from(to));
    m.insert("protocol".into(), Value::String(protocol.to_string()));
    m.insert("self".into(), Value::Bool(false));
    Value::Object(m)
}

/// The provider's protocol spelling: names for the common numbers, `-1` for all.
pub fn normalize_protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "-1" | "all" => "-1".into(),
        "6" | "tcp" => "tcp".into(),
        "17" | "udp" => "udp".into(),
        "1" | "icmp" => "icmp".into(),
        "58" | "icmpv6" => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn sorted_rules(perms: &[IpPermission], own: &str) -> Value {
    let mut rules: Vec<Value> = perms
        .iter()
        .flat_map(|p| explode_permission(p, own))
        .collect();
    rules.sort_by_cached_key(|r| r.to_string());
    rules.dedup();
    Value::Array(rules)
}

async fn read_security_groups(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_security_groups();
    let req = match only {
        Some(id) => req.group_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::SecurityGroup.describe_call(), page)?;
        for g in page.security_groups() {
            let Some(id) = g.group_id() else { continue };
            let attributes = json!({
                "id": id,
                "name": g.group_name(),
                "description": g.description(),
                "vpc_id": g.vpc_id(),
                "ingress": sorted_rules(g.ip_permissions(), id),
                "egress": sorted_rules(g.ip_permissions_egress(), id),
                "tags": tag_map(Some(g.tags())),
            });
            out.push(Partial {
                kind: ResourceKind::SecurityGroup,
                id: id.to_string(),
                owner: g.owner_id().map(str::to_string),
                attributes,
                aws_managed: g.group_name() == Some("default"),
            });
        }
    }
    Ok(out)
}

async fn read_vpcs(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_vpcs();
    let req = match only {
        Some(id) => req.vpc_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::Vpc.describe_call(), page)?;
        for v in page.vpcs() {
            let Some(id) = v.vpc_id() else { continue };
            out.push(Partial {
                kind: ResourceKind::Vpc,
                id: id.to_string(),
                owner: v.owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "cidr_block": v.cidr_block(),
                    "instance_tenancy": v.instance_tenancy().map(|t| t.as_str()),
                    "dhcp_options_id": v.dhcp_options_id(),
                    "tags": tag_map(Some(v.tags())),
                }),
                aws_managed: v.is_default() == Some(true),
            });
        }
    }
    Ok(out)
}

async fn read_subnets(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_subnets();
    let req = match only {
        Some(id) => req.subnet_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::Subnet.describe_call(), page)?;
        for sn in page.subnets() {
            let Some(id) = sn.subnet_id() else { continue };
            let ipv6 = sn
                .ipv6_cidr_block_association_set()
                .iter()
                .find_map(|a| a.ipv6_cidr_block());
            out.push(Partial {
                kind: ResourceKind::Subnet,
                id: id.to_string(),
                owner: sn.owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "vpc_id": sn.vpc_id(),
                    "cidr_block": sn.cidr_block(),
                    "ipv6_cidr_block": ipv6,
                    "availability_zone": sn.availability_zone(),
                    "map_public_ip_on_launch": sn.map_public_ip_on_launch().unwrap_or(false),
                    "assign_ipv6_address_on_creation": sn.assign_ipv6_address_on_creation().unwrap_or(false),
                    "tags": tag_map(Some(sn.tags())),
                }),
                aws_managed: sn.default_for_az() == Some(true),
            });
        }
    }
    Ok(out)
}

async fn read_volumes(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_volumes();
    let req = match only {
        Some(id) => req.volume_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::Volume.describe_call(), page)?;
        for v in page.volumes() {
            let Some(id) = v.volume_id() else { continue };
            if v.state().is_some_and(|s| s.as_str() == "deleted") {
                continue;
            }
            let vtype = v.volume_type().map(|t| t.as_str().to_string());
            let provisioned = matches!(vtype.as_deref(), Some("io1" | "io2" | "gp3"));
            let attachments: Vec<Value> = v
                .attachments()
                .iter()
                .map(|a| {
                    json!({
                        "instance_id": a.instance_id(),
                        "device": a.device(),
                        "delete_on_termination": a.delete_on_termination(),
                    })
                })
                .collect();
            let mut attributes = json!({
                "id": id,
                "availability_zone": v.availability_zone(),
                "size": v.size(),
                "type": vtype,
                "encrypted": v.encrypted().unwrap_or(false),
                "kms_key_id": v.kms_key_id(),
                "snapshot_id": v.snapshot_id(),
                "multi_attach_enabled": v.multi_attach_enabled().unwrap_or(false),
                "tags": tag_map(Some(v.tags())),
                "_attachments": attachments,
            });
            if let Some(m) = attributes.as_object_mut() {
                if provisioned {
                    m.insert("iops".into(), json!(v.iops()));
                }
                if vtype.as_deref() == Some("gp3") {
                    m.insert("throughput".into(), json!(v.throughput()));
                }
            }
            out.push(Partial {
                kind: ResourceKind::Volume,
                id: id.to_string(),
                owner: None,
                attributes,
                aws_managed: false,
            });
        }
    }
    Ok(out)
}

async fn read_addresses(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    // DescribeAddresses does not page: one call returns every address.
    let out = checked(
        ResourceKind::Eip.describe_call(),
        client
            .describe_addresses()
            .set_allocation_ids(only.map(|id| vec![id.to_string()]))
            .send()
            .await,
    )?;
    Ok(out
        .addresses()
        .iter()
        .filter_map(|a| {
            let id = a.allocation_id().or(a.public_ip())?;
            Some(Partial {
                kind: ResourceKind::Eip,
                id: id.to_string(),
                owner: a.network_interface_owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "allocation_id": a.allocation_id(),
                    "public_ip": a.public_ip(),
                    "domain": a.domain().map(|d| d.as_str()),
                    "instance": a.instance_id(),
                    "network_interface": a.network_interface_id(),
                    "private_ip": a.private_ip_address(),
                    "association_id": a.association_id(),
                    "tags": tag_map(Some(a.tags())),
                }),
                aws_managed: a.service_managed().is_some(),
            })
        })
        .collect())
}

async fn read_network_interfaces(
    client: &Client,
    only: Option<&str>,
) -> Result<Vec<Partial>, String> {
    let req = client.describe_network_interfaces();
    let req = match only {
        Some(id) => req.network_interface_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::NetworkInterface.describe_call(), page)?;
        for n in page.network_interfaces() {
            let Some(id) = n.network_interface_id() else {
                continue;
            };
            let mut ips: Vec<String> = n
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.private_ip_address().map(str::to_string))
                .collect();
            ips.sort();
            let mut groups: Vec<String> = n
                .groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect();
            groups.sort();
            let att = n.attachment();
            let primary_of_instance =
                att.is_some_and(|a| a.instance_id().is_some() && a.device_index() == Some(0));
            let other_service = n.requester_managed() == Some(true)
                || n.interface_type()
                    .is_some_and(|t| t.as_str() != "interface");
            out.push(Partial {
                kind: ResourceKind::NetworkInterface,
                id: id.to_string(),
                owner: n.owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "subnet_id": n.subnet_id(),
                    "description": n.description(),
                    "private_ips": ips,
                    "security_groups": groups,
                    "source_dest_check": n.source_dest_check(),
                    "tags": tag_map(Some(n.tag_set())),
                    "attachment": att.map(|a| json!([{
                        "instance": a.instance_id(),
                        "device_index": a.device_index(),
                        "attachment_id": a.attachment_id(),
                    }])),
                }),
                aws_managed: primary_of_instance || other_service,
            });
        }
    }
    Ok(out)
}

async fn read_key_pairs(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    // DescribeKeyPairs does not page: one call returns every key pair.
    let out = checked(
        ResourceKind::KeyPair.describe_call(),
        client
            .describe_key_pairs()
            .set_key_names(only.map(|id| vec![id.to_string()]))
            .send()
            .await,
    )?;
    Ok(out
        .key_pairs()
        .iter()
        .filter_map(|k| {
            let name = k.key_name()?;
            Some(Partial {
                kind: ResourceKind::KeyPair,
                id: name.to_string(),
                owner: None,
                attributes: json!({
                    "id": name,
                    "key_name": name,
                    "key_pair_id": k.key_pair_id(),
                    "fingerprint": k.key_fingerprint(),
                    "key_type": k.key_type().map(|t| t.as_str()),
                    "tags": tag_map(Some(k.tags())),
                }),
                aws_managed: false,
            })
        })
        .collect())
}

async fn read_launch_templates(
    client: &Client,
    only: Option<&str>,
) -> Result<Vec<Partial>, String> {
    let req = client.describe_launch_templates();
    let req = match only {
        Some(id) => req.launch_template_ids(id),
        None => req.max_results(MAX_PAGE_LAUNCH_TEMPLATES),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::LaunchTemplate.describe_call(), page)?;
        for t in page.launch_templates() {
            let Some(id) = t.launch_template_id() else {
                continue;
            };
            out.push(Partial {
                kind: ResourceKind::LaunchTemplate,
                id: id.to_string(),
                owner: None,
                attributes: json!({
                    "id": id,
                    "name": t.launch_template_name(),
                    "default_version": t.default_version_number(),
                    "latest_version": t.latest_version_number(),
                    "tags": tag_map(Some(t.tags())),
                }),
                aws_managed: t.operator().is_some_and(|o| o.managed() == Some(true)),
            });
        }
    }
    Ok(out)
}

async fn read_internet_gateways(
    client: &Client,
    only: Option<&str>,
) -> Result<Vec<Partial>, String> {
    let req = client.describe_internet_gateways();
    let req = match only {
        Some(id) => req.internet_gateway_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::InternetGateway.describe_call(), page)?;
        for g in page.internet_gateways() {
            let Some(id) = g.internet_gateway_id() else {
                continue;
            };
            out.push(Partial {
                kind: ResourceKind::InternetGateway,
                id: id.to_string(),
                owner: g.owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "vpc_id": g.attachments().iter().find_map(|a| a.vpc_id()),
                    "tags": tag_map(Some(g.tags())),
                }),
                aws_managed: false,
            });
        }
    }
    Ok(out)
}

async fn read_nat_gateways(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_nat_gateways();
    let req = match only {
        Some(id) => req.nat_gateway_ids(id),
        None => req.max_results(MAX_PAGE),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::NatGateway.describe_call(), page)?;
        for g in page.nat_gateways() {
            let Some(id) = g.nat_gateway_id() else {
                continue;
            };
            if g.state()
                .is_some_and(|s| matches!(s.as_str(), "deleted" | "failed"))
            {
                continue;
            }
            out.push(Partial {
                kind: ResourceKind::NatGateway,
                id: id.to_string(),
                owner: None,
                attributes: nat_gateway_attributes(g),
                aws_managed: false,
            });
        }
    }
    Ok(out)
}

/// A NAT gateway under the provider's names. A gateway whose `ConnectivityType` the endpoint
/// leaves out (moto) has the API's default, `public`, as the provider would record it.
fn nat_gateway_attributes(g: &NatGateway) -> Value {
    let primary = g
        .nat_gateway_addresses()
        .iter()
        .find(|a| a.is_primary() != Some(false));
    json!({
        "id": g.nat_gateway_id(),
        "subnet_id": g.subnet_id(),
        "connectivity_type": g.connectivity_type().map_or("public", |c| c.as_str()),
        "allocation_id": primary.and_then(|a| a.allocation_id()),
        "private_ip": primary.and_then(|a| a.private_ip()),
        "public_ip": primary.and_then(|a| a.public_ip()),
        "network_interface_id": primary.and_then(|a| a.network_interface_id()),
        "tags": tag_map(Some(g.tags())),
    })
}

/// The route fields the provider's `route` blocks use, in its names.
pub const ROUTE_FIELDS: [&str; 12] = [
    "cidr_block",
    "ipv6_cidr_block",
    "destination_prefix_list_id",
    "gateway_id",
    "nat_gateway_id",
    "network_interface_id",
    "transit_gateway_id",
    "vpc_peering_connection_id",
    "egress_only_gateway_id",
    "local_gateway_id",
    "carrier_gateway_id",
    "core_network_arn",
];

async fn read_route_tables(client: &Client, only: Option<&str>) -> Result<Vec<Partial>, String> {
    let req = client.describe_route_tables();
    let req = match only {
        Some(id) => req.route_table_ids(id),
        None => req.max_results(MAX_PAGE_ROUTE_TABLES),
    };
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = checked(ResourceKind::RouteTable.describe_call(), page)?;
        for t in page.route_tables() {
            let Some(id) = t.route_table_id() else {
                continue;
            };
            let mut routes: Vec<Value> = t
                .routes()
                .iter()
                // The provider leaves out the local route and propagated routes.
                .filter(|r| r.origin().is_none_or(|o| o.as_str() == "CreateRoute"))
                .filter(|r| r.gateway_id() != Some("local"))
                .map(|r| {
                    let vals = [
                        r.destination_cidr_block(),
                        r.destination_ipv6_cidr_block(),
                        r.destination_prefix_list_id(),
                        r.gateway_id(),
                        r.nat_gateway_id(),
                        r.network_interface_id(),
                        r.transit_gateway_id(),
                        r.vpc_peering_connection_id(),
                        r.egress_only_internet_gateway_id(),
                        r.local_gateway_id(),
                        r.carrier_gateway_id(),
                        r.core_network_arn(),
                    ];
                    let m: Map<String, Value> = ROUTE_FIELDS
                        .iter()
                        .zip(vals)
                        .filter_map(|(k, v)| {
                            v.map(|v| (k.to_string(), Value::String(v.to_string())))
                        })
                        .collect();
                    Value::Object(m)
                })
                .collect();
            routes.sort_by_cached_key(|r| r.to_string());
            let mut vgws: Vec<String> = t
                .propagating_vgws()
                .iter()
                .filter_map(|g| g.gateway_id().map(str::to_string))
                .collect();
            vgws.sort();
            let main = t.associations().iter().any(|a| a.main() == Some(true));
            out.push(Partial {
                kind: ResourceKind::RouteTable,
                id: id.to_string(),
                owner: t.owner_id().map(str::to_string),
                attributes: json!({
                    "id": id,
                    "vpc_id": t.vpc_id(),
                    "route": routes,
                    "propagating_vgws": vgws,
                    "tags": tag_map(Some(t.tags())),
                }),
                aws_managed: main,
            });
        }
    }
    Ok(out)
}

/// Copies each root volume's size and type into its instance's `root_block_device`, and drops
/// the helper fields.
fn join_instance_volumes(resources: &mut [Ec2Resource]) {
    let vols: HashMap<String, (Value, Value)> = resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Volume)
        .map(|r| {
            (
                r.id.clone(),
                (r.attributes["size"].clone(), r.attributes["type"].clone()),
            )
        })
        .collect();
    for r in resources
        .iter_mut()
        .filter(|r| r.kind == ResourceKind::Instance)
    {
        if let Some(Value::Array(root)) = r.attributes.get_mut("root_block_device") {
            for b in root.iter_mut() {
                let vid = b["volume_id"].as_str().unwrap_or_default().to_string();
                if let (Some((size, vtype)), Some(m)) = (vols.get(&vid), b.as_object_mut()) {
                    m.insert("volume_size".into(), size.clone());
                    m.insert("volume_type".into(), vtype.clone());
                }
            }
        }
    }
}

/// Marks the volumes launched with an instance (its block device mappings, deleted with it) as
/// owned by the instance, and drops the helper fields from the attributes.
fn mark_instance_owned(resources: &mut [Ec2Resource]) {
    let mut owned: BTreeSet<String> = BTreeSet::new();
    for r in resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Instance)
    {
        if let Some(Value::Array(root)) = r.attributes.get("root_block_device") {
            owned.extend(
                root.iter()
                    .filter_map(|b| b["volume_id"].as_str().map(str::to_string)),
            );
        }
    }
    for r in resources.iter_mut() {
        if r.kind == ResourceKind::Volume {
            let deleted_with_instance = r.attributes["_attachments"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["delete_on_termination"] == Value::Bool(true))
            });
            if owned.contains(&r.id) || deleted_with_instance {
                r.aws_managed = true;
            }
        }
        if let Some(m) = r.attributes.as_object_mut() {
            m.retain(|k, _| !k.starts_with('_'));
        }
    }
}

/// Marks the network interface each NAT gateway names (its `network_interface_id`) as the
/// gateway's: AWS creates and deletes it with the gateway, whatever interface type and requester
/// the endpoint reports for it (moto reports a plain `interface` that no one requested).
fn mark_nat_gateway_owned(resources: &mut [Ec2Resource]) {
    let owned: BTreeSet<String> = resources
        .iter()
        .filter(|r| r.kind == ResourceKind::NatGateway)
        .filter_map(|r| {
            r.attributes["network_interface_id"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    for r in resources.iter_mut() {
        if r.kind == ResourceKind::NetworkInterface && owned.contains(&r.id) {
            r.aws_managed = true;
        }
    }
}

/// One instance's `disableApiTermination` attribute (`DescribeInstanceAttribute`).
async fn read_termination_protection(client: &Client, id: &str) -> Result<Option<bool>, String> {
    let out = checked(
        DESCRIBE_INSTANCE_ATTRIBUTE,
        client
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send()
            .await,
    )?;
    Ok(out.disable_api_termination().and_then(|b| b.value()))
}

/// Termination protection of `ids`, at most as many calls at once as `sem` admits.
async fn termination_protection(
    client: &Client,
    region: &str,
    ids: &[String],
    sem: &tokio::sync::Semaphore,
) -> (HashMap<String, bool>, Vec<CallFailure>) {
    let mut calls = Vec::new();
    for id in ids {
        calls.push(limited(sem, read_termination_protection(client, id)));
    }
    let mut values = HashMap::new();
    let mut failures = Vec::new();
    for (id, r) in ids.iter().zip(futures_join_all(calls.into_iter()).await) {
        match r {
            Ok(Some(v)) => {
                values.insert(id.clone(), v);
            }
            Ok(None) => {}
            Err(message) => failures.push(CallFailure {
                region: region.to_string(),
                call: format!("{DESCRIBE_INSTANCE_ATTRIBUTE}({id}, disableApiTermination)"),
                kind: None,
                message,
            }),
        }
    }
    // A failed attribute read leaves the attribute out of that instance (not compared); the
    // read is still partial so nothing is deleted.
    (values, failures)
}

/// Runs `call` once `sem` admits it (the per-resource attribute calls' concurrency bound).
async fn limited<F: std::future::Future>(sem: &tokio::sync::Semaphore, call: F) -> F::Output {
    let _permit = sem.acquire().await;
    call.await
}

/// The value of one attribute in a `DescribeVpcAttribute` answer, by its API name.
fn vpc_attribute_value(out: &DescribeVpcAttributeOutput, api_name: &str) -> Option<bool> {
    let v = match api_name {
        "enableDnsSupport" => out.enable_dns_support(),
        "enableDnsHostnames" => out.enable_dns_hostnames(),
        _ => None,
    };
    v.and_then(|b| b.value())
}

/// One VPC attribute (`DescribeVpcAttribute`), by its API name.
async fn read_vpc_attribute(
    client: &Client,
    id: &str,
    api_name: &str,
) -> Result<Option<bool>, String> {
    let out = checked(
        DESCRIBE_VPC_ATTRIBUTE,
        client
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(VpcAttributeName::from(api_name))
            .send()
            .await,
    )?;
    Ok(vpc_attribute_value(&out, api_name))
}

/// `enable_dns_support` and `enable_dns_hostnames` of `ids` (one call per VPC and attribute), at
/// most as many calls at once as `sem` admits. An attribute whose call failed is left out of its
/// VPC (not compared), and the failure is returned (the read is partial).
async fn vpc_dns_attributes(
    client: &Client,
    region: &str,
    ids: &[String],
    sem: &tokio::sync::Semaphore,
) -> (HashMap<String, Map<String, Value>>, Vec<CallFailure>) {
    let mut keys = Vec::new();
    let mut calls = Vec::new();
    for id in ids {
        for (tf_name, api_name) in VPC_DNS_ATTRIBUTES {
            keys.push((id, tf_name, api_name));
            calls.push(limited(sem, read_vpc_attribute(client, id, api_name)));
        }
    }
    let mut values: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut failures = Vec::new();
    let results = futures_join_all(calls.into_iter()).await;
    for ((id, tf_name, api_name), r) in keys.into_iter().zip(results) {
        match r {
            Ok(Some(v)) => {
                values
                    .entry(id.clone())
                    .or_default()
                    .insert(tf_name.to_string(), Value::Bool(v));
            }
            Ok(None) => {}
            Err(message) => {
                warn!(region, vpc = %id, attribute = api_name, %message, "EC2 read failed");
                failures.push(CallFailure {
                    region: region.to_string(),
                    call: format!("{DESCRIBE_VPC_ATTRIBUTE}({id}, {api_name})"),
                    kind: None,
                    message,
                });
            }
        }
    }
    (values, failures)
}

/// The contents of every launch template's latest version (the version the provider reads), per
/// template id: one `DescribeLaunchTemplateVersions` call with `Versions=$Latest` and no template
/// named, paged by the largest page size. No call when not `wanted`.
async fn read_launch_template_data(
    client: &Client,
    wanted: bool,
) -> Result<HashMap<String, Map<String, Value>>, String> {
    if !wanted {
        return Ok(HashMap::new());
    }
    let mut pages = client
        .describe_launch_template_versions()
        .versions("$Latest")
        .max_results(MAX_PAGE_LAUNCH_TEMPLATES)
        .into_paginator()
        .send();
    let mut out = HashMap::new();
    while let Some(page) = pages.next().await {
        let page = checked(DESCRIBE_LAUNCH_TEMPLATE_VERSIONS, page)?;
        for v in page.launch_template_versions() {
            let Some(id) = v.launch_template_id() else {
                continue;
            };
            let data = v
                .launch_template_data()
                .map(launch_template_data)
                .unwrap_or_default();
            out.insert(id.to_string(), data);
        }
    }
    Ok(out)
}

/// A launch template version's contents under the provider's attribute names: `image_id`,
/// `instance_type`, `key_name`, `vpc_security_group_ids` (sorted), `user_data` (base64, as the
/// API and the state keep it), `tag_specifications` (`{resource_type, tags}`, sorted by type) and
/// `block_device_mappings` (`{device_name, no_device, virtual_name, ebs: [{...}]}`, with the
/// provider's string booleans `"true"`/`"false"` for `delete_on_termination` and `encrypted`).
/// Fields the API leaves out stay out.
fn launch_template_data(d: &ResponseLaunchTemplateData) -> Map<String, Value> {
    let mut sgs: Vec<String> = d.security_group_ids().to_vec();
    sgs.sort();
    let mut specs: Vec<Value> = d
        .tag_specifications()
        .iter()
        .map(|t| {
            json!({
                "resource_type": t.resource_type().map(|r| r.as_str()),
                "tags": tag_map(Some(t.tags())),
            })
        })
        .collect();
    specs.sort_by_cached_key(|v| v.to_string());
    let devices: Vec<Value> = d
        .block_device_mappings()
        .iter()
        .map(|m| {
            let mut b = Map::new();
            let strings = [
                ("device_name", m.device_name()),
                ("no_device", m.no_device()),
                ("virtual_name", m.virtual_name()),
            ];
            for (k, v) in strings {
                if let Some(v) = v {
                    b.insert(k.into(), Value::String(v.to_string()));
                }
            }
            if let Some(e) = m.ebs() {
                let ebs = json!({
                    "delete_on_termination": e.delete_on_termination().map(|x| x.to_string()),
                    "encrypted": e.encrypted().map(|x| x.to_string()),
                    "iops": e.iops(),
                    "throughput": e.throughput(),
                    "volume_size": e.volume_size(),
                    "volume_initialization_rate": e.volume_initialization_rate(),
                    "volume_type": e.volume_type().map(|t| t.as_str()),
                    "kms_key_id": e.kms_key_id(),
                    "snapshot_id": e.snapshot_id(),
                });
                let ebs: Map<String, Value> = ebs
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                b.insert("ebs".into(), Value::Array(vec![Value::Object(ebs)]));
            }
            Value::Object(b)
        })
        .collect();
    let attrs = json!({
        "image_id": d.image_id(),
        "instance_type": d.instance_type().map(|t| t.as_str()),
        "key_name": d.key_name(),
        "vpc_security_group_ids": sgs,
        "user_data": d.user_data(),
        "tag_specifications": specs,
        "block_device_mappings": devices,
    });
    match attrs {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{IpRange, UserIdGroupPair};

    #[test]
    fn call_results_are_a_small_fixed_set() {
        use aws_sdk_ec2::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
        type R = Result<(), SdkError<DescribeInstancesError, ()>>;
        let service = |code: &str| -> R {
            Err(SdkError::service_error(
                DescribeInstancesError::generic(ErrorMetadata::builder().code(code).build()),
                (),
            ))
        };
        assert_eq!(call_result(&R::Ok(())), "ok");
        assert_eq!(
            call_result(&service("RequestLimitExceeded")),
            "RequestLimitExceeded"
        );
        assert_eq!(
            call_result(&service("InvalidPermission.Duplicate")),
            "InvalidPermission.Duplicate"
        );
        assert_eq!(call_result(&service("not a code")), "service_error");
        assert_eq!(
            call_result(&R::Err(SdkError::timeout_error("slow"))),
            "timeout"
        );
        let refused = ConnectorError::io("refused".into());
        assert_eq!(
            call_result(&R::Err(SdkError::dispatch_failure(refused))),
            "dispatch_failure"
        );
    }

    #[test]
    fn permissions_explode_to_one_source_per_rule() {
        let p = IpPermission::builder()
            .ip_protocol("6")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
            .ip_ranges(
                IpRange::builder()
                    .cidr_ip("0.0.0.0/0")
                    .description("x")
                    .build(),
            )
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-self").build())
            .build();
        let rules = explode_permission(&p, "sg-self");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["protocol"], "tcp");
        assert_eq!(rules[1]["cidr_blocks"], json!(["0.0.0.0/0"]));
        assert_eq!(rules[2]["self"], true);
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        assert_eq!(explode_permission(&all, "x")[0]["from_port"], 0);
    }

    #[test]
    fn kinds_round_trip_terraform_types() {
        for k in ResourceKind::ALL {
            assert_eq!(
                ResourceKind::from_terraform_type(k.terraform_type()),
                Some(k)
            );
        }
        assert_eq!(
            ResourceKind::from_terraform_type("aws_default_security_group"),
            Some(ResourceKind::SecurityGroup)
        );
        assert_eq!(ResourceKind::from_terraform_type("aws_s3_bucket"), None);
    }

    #[test]
    fn launch_template_data_uses_provider_names() {
        use aws_sdk_ec2::types::{
            InstanceType, LaunchTemplateBlockDeviceMapping, LaunchTemplateEbsBlockDevice,
            LaunchTemplateTagSpecification, ResourceType, VolumeType,
        };
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let d = ResponseLaunchTemplateData::builder()
            .image_id("ami-1")
            .instance_type(InstanceType::T3Micro)
            .key_name("deploy")
            .security_group_ids("sg-b")
            .security_group_ids("sg-a")
            .user_data("IyEvYmluL3NoCg==")
            .tag_specifications(
                LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag("Name", "data"))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag("Name", "web"))
                    .tags(tag("aws:ec2launchtemplate:id", "lt-1"))
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        LaunchTemplateEbsBlockDevice::builder()
                            .volume_size(20)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .encrypted(false)
                            .build(),
                    )
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/sdb")
                    .virtual_name("ephemeral0")
                    .build(),
            )
            .build();
        assert_eq!(
            Value::Object(launch_template_data(&d)),
            json!({
                "image_id": "ami-1",
                "instance_type": "t3.micro",
                "key_name": "deploy",
                "vpc_security_group_ids": ["sg-a", "sg-b"],
                "user_data": "IyEvYmluL3NoCg==",
                "tag_specifications": [
                    {"resource_type": "instance", "tags": {"Name": "web"}},
                    {"resource_type": "volume", "tags": {"Name": "data"}},
                ],
                "block_device_mappings": [
                    {"device_name": "/dev/xvda", "ebs": [{
                        "delete_on_termination": "true", "encrypted": "false",
                        "volume_size": 20, "volume_type": "gp3"
                    }]},
                    {"device_name": "/dev/sdb", "virtual_name": "ephemeral0"},
                ],
            })
        );
        // What the version leaves out is null or empty, never a made-up default.
        let empty = launch_template_data(&ResponseLaunchTemplateData::builder().build());
        assert!(
            empty.values().all(crate::terraform::values::is_empty),
            "{empty:?}"
        );
    }

    #[test]
    fn vpc_attributes_by_api_name() {
        use aws_sdk_ec2::types::AttributeBooleanValue;
        let out = DescribeVpcAttributeOutput::builder()
            .vpc_id("vpc-1")
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
            .build();
        assert_eq!(vpc_attribute_value(&out, "enableDnsHostnames"), Some(true));
        assert_eq!(vpc_attribute_value(&out, "enableDnsSupport"), None);
        for (tf, api) in VPC_DNS_ATTRIBUTES {
            assert!(VpcAttributeName::values().contains(&api), "{tf}: {api}");
        }
    }

    /// A failed attribute call leaves those attributes out and is reported (the read is
    /// partial); it never marks the kind unread. The endpoint refuses every connection.
    #[test]
    fn failed_attribute_calls_are_partial_not_missing() {
        use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
        // A loopback port just released: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-3"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .build();
        let client = Client::from_conf(conf);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sem = tokio::sync::Semaphore::new(ATTRIBUTE_CONCURRENCY);
        let ids = ["vpc-1".to_string(), "vpc-2".to_string()];
        let (values, failures) = rt.block_on(vpc_dns_attributes(&client, "eu-west-3", &ids, &sem));
        assert!(values.is_empty());
        let mut calls: Vec<&str> = failures.iter().map(|f| f.call.as_str()).collect();
        calls.sort();
        assert_eq!(
            calls,
            [
                "DescribeVpcAttribute(vpc-1, enableDnsHostnames)",
                "DescribeVpcAttribute(vpc-1, enableDnsSupport)",
                "DescribeVpcAttribute(vpc-2, enableDnsHostnames)",
                "DescribeVpcAttribute(vpc-2, enableDnsSupport)",
            ]
        );
        assert!(failures.iter().all(|f| f.kind.is_none()));
        assert!(
            rt.block_on(read_launch_template_data(&client, true))
                .is_err()
        );
        // Nothing tracked: no call at all.
        assert_eq!(
            rt.block_on(read_launch_template_data(&client, false)),
            Ok(HashMap::new())
        );
    }

    #[test]
    fn aws_tags_are_dropped() {
        let tags = [
            Tag::builder().key("Name").value("web").build(),
            Tag::builder()
                .key("aws:cloudformation:stack-name")
                .value("x")
                .build(),
        ];
        assert_eq!(tag_map(Some(&tags)), json!({"Name": "web"}));
    }

    /// A NAT gateway without `ConnectivityType` (moto) is `public`, the API's default, as the
    /// provider records it; the interface it names is its own, never Unmanaged.
    #[test]
    fn nat_gateways_default_public_and_own_their_interface() {
        use aws_sdk_ec2::types::{ConnectivityType, NatGatewayAddress};
        let address = NatGatewayAddress::builder()
            .allocation_id("eipalloc-1")
            .network_interface_id("eni-nat")
            .private_ip("10.0.1.5")
            .public_ip("203.0.113.5")
            .build();
        let moto = NatGateway::builder()
            .nat_gateway_id("nat-1")
            .subnet_id("subnet-1")
            .nat_gateway_addresses(address)
            .build();
        let attrs = nat_gateway_attributes(&moto);
        assert_eq!(
            attrs,
            json!({
                "id": "nat-1", "subnet_id": "subnet-1", "connectivity_type": "public",
                "allocation_id": "eipalloc-1", "private_ip": "10.0.1.5",
                "public_ip": "203.0.113.5", "network_interface_id": "eni-nat", "tags": {}
            })
        );
        let private = NatGateway::builder()
            .nat_gateway_id("nat-2")
            .connectivity_type(ConnectivityType::Private)
            .build();
        assert_eq!(
            nat_gateway_attributes(&private)["connectivity_type"],
            "private"
        );

        let res = |kind, id: &str, attributes| Ec2Resource {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            kind,
            id: id.into(),
            attributes,
            aws_managed: false,
        };
        let mut resources = vec![
            res(ResourceKind::NatGateway, "nat-1", attrs),
            res(
                ResourceKind::NetworkInterface,
                "eni-nat",
                json!({"id": "eni-nat"}),
            ),
            res(
                ResourceKind::NetworkInterface,
                "eni-app",
                json!({"id": "eni-app"}),
            ),
        ];
        mark_nat_gateway_owned(&mut resources);
        let managed: Vec<(&str, bool)> = resources
            .iter()
            .map(|r| (r.id.as_str(), r.aws_managed))
            .collect();
        assert_eq!(
            managed,
            [("nat-1", false), ("eni-nat", true), ("eni-app", false)]
        );
    }
}
