# Terraform and EC2 drift: tags are routine, compute and storage changes are decisions, and a
# security group opened to the internet is forbidden. Attributes are read under their Terraform
# names (instance_type) and their EC2 API names (InstanceType).
package driftwarden.aws

import data.driftwarden.lib

# The package's answer: its findings, for Terraform and EC2 drifts only. The gate keeps the cost of other
# providers' drifts to this one rule body.
classify contains finding if {
	data.driftwarden.lib.is_aws
	some finding in findings
}

# changed_tags(change): the tag keys a change touches.
changed_tags(change) := {change.parts[1]} if {
	count(change.parts) == 2
	change.parts[0] in {"tags", "tags_all"}
}

changed_tags(change) := lib.map_diff(lib.obj(change.desired), lib.obj(change.live)) if {
	count(change.parts) == 1
	change.parts[0] in {"tags", "tags_all"}
}

changed_tags(change) := lib.map_diff(lib.tag_map(input.desired), lib.tag_map(input.live)) if {
	change.parts[0] == "Tags"
}

# tag_change: the changes at a tags attribute, found once for both tag rules.
tag_change contains change if {
	some change in input.changes
	change.parts[0] in {"tags", "tags_all", "Tags"}
}

# unprotected_tag: tags are bookkeeping; restoring Git's is routine.
findings contains {
	"class": "safe",
	"reason": sprintf("tag %s is not protected", [key]),
	"rule": "unprotected_tag",
	"path": change.path,
} if {
	some change in tag_change
	some key in changed_tags(change)
	protected := lib.param("protected_tags", ["*"])
	not lib.matches_any(key, protected)
}

# protected_tag: tags other systems act on (cluster discovery, autoscalers); a person decides.
findings contains {
	"class": "risky",
	"reason": sprintf("tag %s is protected", [key]),
	"rule": "protected_tag",
	"path": change.path,
} if {
	some change in tag_change
	some key in changed_tags(change)
	lib.matches_any(key, lib.param("protected_tags", ["*"]))
}

# instance_type: resizing restarts the instance and changes cost; a person decides.
findings contains {
	"class": "risky",
	"reason": "instance type changed",
	"rule": "instance_type",
	"path": change.path,
} if {
	some change in input.changes
	change.parts[0] in {"instance_type", "InstanceType"}
}

# ami: a different image is a different machine; adopting or reverting it is a release decision.
findings contains {
	"class": "risky",
	"reason": "AMI changed",
	"rule": "ami",
	"path": change.path,
} if {
	some change in input.changes
	change.parts[0] in {"ami", "ImageId"}
}

# volume_size: volumes only grow; reverting a resize is impossible and adopting it costs money.
# A volume_size attribute anywhere (an instance's root or EBS block device)...
findings contains {
	"class": "risky",
	"reason": "volume size changed",
	"rule": "volume_size",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	n.segs[count(n.segs) - 1] in {"volume_size", "VolumeSize"}
}

# ...or an EBS volume's own size.
findings contains {
	"class": "risky",
	"reason": "volume size changed",
	"rule": "volume_size",
	"path": n.path,
} if {
	input.resource.type in {"aws_ebs_volume", "volume"}
	some n in data.driftwarden.lib.nodes
	n.segs in {["size"], ["Size"]}
}

# iam_instance_profile: the instance's AWS permissions changed; a person decides.
findings contains {
	"class": "risky",
	"reason": "IAM instance profile changed",
	"rule": "iam_instance_profile",
	"path": change.path,
} if {
	some change in input.changes
	change.parts[0] in {"iam_instance_profile", "IamInstanceProfile"}
}

public := lib.param("public_ingress", {})

world_cidrs := object.get(public, "cidrs", ["0.0.0.0/0", "::/0"])

allowed_ports := object.get(public, "allowed_ports", [])

# Ingress rules live holds and desired does not, normalized to {cidrs, from, to, protocol}:
# inline blocks of aws_security_group (ingress) or EC2 IpPermissions...
new_ingress contains rule if {
	some key in ["ingress", "IpPermissions"]
	before := lib.arr(object.get(lib.obj(input.desired), key, []))
	some r in lib.arr(object.get(lib.obj(input.live), key, []))
	not r in before
	rule := normalize(r)
}

# ...or a standalone ingress rule resource that drifted.
new_ingress contains rule if {
	standalone_ingress
	input.live != input.desired
	rule := normalize(input.live)
}

standalone_ingress if input.resource.type == "aws_vpc_security_group_ingress_rule"

standalone_ingress if {
	input.resource.type == "aws_security_group_rule"
	input.live.type == "ingress"
}

normalize(r) := {
	"cidrs": cidrs(r),
	"from": first_of(r, ["from_port", "FromPort"], -1),
	"to": first_of(r, ["to_port", "ToPort"], -1),
	"protocol": format_protocol(first_of(r, ["protocol", "ip_protocol", "IpProtocol"], "-1")),
}

cidrs(r) := ({c | some k in ["cidr_blocks", "ipv6_cidr_blocks"]; some c in lib.arr(object.get(r, k, []))} | {c | some k in ["cidr_ipv4", "cidr_ipv6"]; c := object.get(r, k, null); is_string(c)}) | ({x.CidrIp | some x in lib.arr(object.get(r, "IpRanges", []))} | {x.CidrIpv6 | some x in lib.arr(object.get(r, "Ipv6Ranges", []))})

first_of(r, keys, fallback) := v if {
	vs := [x | some k in keys; x := r[k]; x != null]
	count(vs) > 0
	v := vs[0]
} else := fallback

format_protocol(p) := lower(p) if is_string(p)

format_protocol(p) := format_int(p, 10) if is_number(p)

# A rule open to the world is acceptable only for one allowed port of one protocol.
ports_allowed(rule) if {
	protocol := rule.protocol
	not protocol in {"-1", "all"}
	rule.from == rule.to
	rule.from in allowed_ports
}

describe_ports(rule) := "all traffic" if rule.protocol in {"-1", "all"}

describe_ports(rule) := sprintf("port %v/%s", [rule.from, rule.protocol]) if {
	protocol := rule.protocol
	not protocol in {"-1", "all"}
	rule.from == rule.to
}

describe_ports(rule) := sprintf("ports %v-%v/%s", [rule.from, rule.to, rule.protocol]) if {
	protocol := rule.protocol
	not protocol in {"-1", "all"}
	rule.from != rule.to
}

ingress_attributes := {
	"ingress", "IpPermissions", "cidr_blocks", "ipv6_cidr_blocks", "cidr_ipv4", "cidr_ipv6",
	"from_port", "to_port", "protocol", "ip_protocol", "type",
}

ingress_paths contains change.path if {
	some change in input.changes
	change.parts[0] in ingress_attributes
}

ingress_paths contains "" if count({c | some c in input.changes; c.parts[0] in ingress_attributes}) == 0

# public_ingress: the internet may now reach a port other than the allowed ones (80, 443).
findings contains {
	"class": "forbidden",
	"reason": sprintf("security group ingress open to %s on %s", [cidr, describe_ports(rule)]),
	"rule": "public_ingress",
	"path": path,
} if {
	some rule in new_ingress
	some cidr in rule.cidrs
	cidr in world_cidrs
	not ports_allowed(rule)
	some path in ingress_paths
}
