package driftwarden.aws_test

import data.driftwarden.aws
import data.driftwarden.test_support as t

instance(changes) := t.aws("aws_instance", changes, {}, {})

test_unprotected_tag_is_safe if {
	findings := aws.classify with input as instance([t.change(["tags", "Name"], "web", "web-old")])
	t.rules(findings) == {"unprotected_tag"}
	t.has(findings, "safe", "unprotected_tag")
}

test_whole_tag_map_is_safe if {
	c := t.change(["tags"], {"Name": "web"}, {"Name": "web", "Owner": "bob"})
	findings := aws.classify with input as instance([c])
	t.has(findings, "safe", "unprotected_tag")
	some f in findings
	f.reason == "tag Owner is not protected"
}

test_protected_tag_is_risky if {
	c := t.change(["tags", "kubernetes.io/cluster/prod"], "owned", "shared")
	findings := aws.classify with input as instance([c])
	t.rules(findings) == {"protected_tag"}
	t.has(findings, "risky", "protected_tag")
}

test_ec2_tag_list_is_safe if {
	d := {"Tags": [{"Key": "Name", "Value": "web"}]}
	l := {"Tags": [{"Key": "Name", "Value": "web2"}]}
	inp := t.ec2("instance", [t.change(["Tags", 0, "Value"], "web", "web2")], d, l)
	findings := aws.classify with input as inp
	t.has(findings, "safe", "unprotected_tag")
}

test_instance_type_is_risky if {
	findings := aws.classify with input as instance([t.change(["instance_type"], "t3.small", "t3.large")])
	t.rules(findings) == {"instance_type"}
	t.has(findings, "risky", "instance_type")
}

test_ec2_instance_type_is_risky if {
	inp := t.ec2("instance", [t.change(["InstanceType"], "t3.small", "t3.large")], {}, {})
	findings := aws.classify with input as inp
	t.has(findings, "risky", "instance_type")
}

test_ami_is_risky if {
	findings := aws.classify with input as instance([t.change(["ami"], "ami-1", "ami-2")])
	t.rules(findings) == {"ami"}
	t.has(findings, "risky", "ami")
}

test_root_volume_size_is_risky if {
	findings := aws.classify with input as instance([t.change(["root_block_device", 0, "volume_size"], 20, 40)])
	t.rules(findings) == {"volume_size"}
	t.has(findings, "risky", "volume_size")
}

test_ebs_volume_size_is_risky if {
	findings := aws.classify with input as t.aws("aws_ebs_volume", [t.change(["size"], 100, 200)], {}, {})
	t.has(findings, "risky", "volume_size")
}

test_iam_instance_profile_is_risky if {
	findings := aws.classify with input as instance([t.change(["iam_instance_profile"], "web", "admin")])
	t.rules(findings) == {"iam_instance_profile"}
	t.has(findings, "risky", "iam_instance_profile")
}

sg(desired_ingress, live_ingress) := t.aws(
	"aws_security_group",
	[t.change(["ingress"], desired_ingress, live_ingress)],
	{"ingress": desired_ingress}, {"ingress": live_ingress},
)

https := {"cidr_blocks": ["0.0.0.0/0"], "ipv6_cidr_blocks": [], "from_port": 443, "to_port": 443, "protocol": "tcp"}

test_public_ssh_is_forbidden if {
	ssh := {"cidr_blocks": ["0.0.0.0/0"], "ipv6_cidr_blocks": [], "from_port": 22, "to_port": 22, "protocol": "tcp"}
	findings := aws.classify with input as sg([https], [https, ssh])
	t.rules(findings) == {"public_ingress"}
	some f in findings
	f.reason == "security group ingress open to 0.0.0.0/0 on port 22/tcp"
}

test_public_ipv6_range_is_forbidden if {
	r := {"cidr_blocks": [], "ipv6_cidr_blocks": ["::/0"], "from_port": 80, "to_port": 443, "protocol": "tcp"}
	findings := aws.classify with input as sg([], [r])
	t.has(findings, "forbidden", "public_ingress")
}

test_public_all_traffic_is_forbidden if {
	r := {"cidr_blocks": ["0.0.0.0/0"], "from_port": 0, "to_port": 0, "protocol": "-1"}
	findings := aws.classify with input as sg([], [r])
	some f in findings
	f.reason == "security group ingress open to 0.0.0.0/0 on all traffic"
}

test_public_https_is_allowed if {
	findings := aws.classify with input as sg([], [https])
	count(findings) == 0
}

test_private_ssh_is_not_forbidden if {
	r := {"cidr_blocks": ["10.0.0.0/8"], "from_port": 22, "to_port": 22, "protocol": "tcp"}
	findings := aws.classify with input as sg([], [r])
	count(findings) == 0
}

test_existing_public_rule_is_not_new if {
	old := {"cidr_blocks": ["0.0.0.0/0"], "from_port": 22, "to_port": 22, "protocol": "tcp"}
	findings := aws.classify with input as sg([old], [https, old])
	count(findings) == 0
}

test_allowed_ports_come_from_data if {
	ssh := {"cidr_blocks": ["0.0.0.0/0"], "from_port": 22, "to_port": 22, "protocol": "tcp"}
	findings := aws.classify with input as sg([], [ssh])
		with data.driftwarden.config.public_ingress as {"cidrs": ["0.0.0.0/0"], "allowed_ports": [22]}
	count(findings) == 0
}

test_standalone_ingress_rule_is_forbidden if {
	d := {"cidr_ipv4": "10.0.0.0/8", "from_port": 5432, "to_port": 5432, "ip_protocol": "tcp"}
	l := {"cidr_ipv4": "0.0.0.0/0", "from_port": 5432, "to_port": 5432, "ip_protocol": "tcp"}
	inp := t.aws("aws_vpc_security_group_ingress_rule", [t.change(["cidr_ipv4"], d.cidr_ipv4, l.cidr_ipv4)], d, l)
	findings := aws.classify with input as inp
	t.has(findings, "forbidden", "public_ingress")
}

test_ec2_ip_permissions_are_forbidden if {
	perm := {"IpProtocol": "tcp", "FromPort": 3389, "ToPort": 3389, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
	inp := t.ec2("security-group", [t.change(["IpPermissions", 0], null, perm)], {"IpPermissions": []}, {"IpPermissions": [perm]})
	findings := aws.classify with input as inp
	t.has(findings, "forbidden", "public_ingress")
}

test_kubernetes_is_ignored if {
	inp := object.union(instance([t.change(["instance_type"], "a", "b")]), {"provider": "kubernetes"})
	findings := aws.classify with input as inp
	count(findings) == 0
}
