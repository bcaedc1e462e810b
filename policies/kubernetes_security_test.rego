package driftwarden.kubernetes_security_test

import data.driftwarden.kubernetes_security as sec
import data.driftwarden.test_support as t

pod(changes) := t.k8s("Deployment", changes)

test_privileged_is_forbidden if {
	c := t.change(array.concat(t.container_path("securityContext"), ["privileged"]), null, true)
	findings := sec.classify with input as pod([c])
	t.rules(findings) == {"privileged"}
	t.has(findings, "forbidden", "privileged")
}

test_privileged_inside_a_security_context_is_forbidden if {
	c := t.change(t.container_path("securityContext"), {"runAsNonRoot": true}, {"runAsNonRoot": true, "privileged": true})
	findings := sec.classify with input as pod([c])
	t.has(findings, "forbidden", "privileged")
}

test_unprivileged_is_not_forbidden if {
	c := t.change(array.concat(t.container_path("securityContext"), ["privileged"]), true, false)
	findings := sec.classify with input as pod([c])
	count(findings) == 0
}

test_host_network_is_forbidden if {
	c := t.change(["spec", "template", "spec", "hostNetwork"], null, true)
	findings := sec.classify with input as pod([c])
	t.rules(findings) == {"host_namespaces"}
	t.has(findings, "forbidden", "host_namespaces")
}

test_host_pid_is_forbidden if {
	c := t.change(["spec", "hostPID"], false, true)
	findings := sec.classify with input as t.k8s("Pod", [c])
	t.has(findings, "forbidden", "host_namespaces")
}

test_host_path_volume_is_forbidden if {
	c := t.change(
		["spec", "template", "spec", "volumes", 3], null,
		{"name": "root", "hostPath": {"path": "/", "type": ""}},
	)
	findings := sec.classify with input as pod([c])
	t.rules(findings) == {"host_path"}
	t.has(findings, "forbidden", "host_path")
}

test_host_path_change_is_forbidden if {
	c := t.change(["spec", "template", "spec", "volumes", 0, "hostPath", "path"], "/var/log", "/")
	findings := sec.classify with input as pod([c])
	t.has(findings, "forbidden", "host_path")
}

test_removed_host_path_is_not_forbidden if {
	c := t.change(["spec", "template", "spec", "volumes", 0, "hostPath"], {"path": "/var/log"}, null)
	findings := sec.classify with input as pod([c])
	count(findings) == 0
}

test_added_capability_is_forbidden if {
	c := t.change(
		array.concat(t.container_path("securityContext"), ["capabilities", "add"]),
		["NET_BIND_SERVICE"], ["NET_BIND_SERVICE", "SYS_ADMIN"],
	)
	findings := sec.classify with input as pod([c])
	t.rules(findings) == {"added_capabilities"}
	some f in findings
	f.reason == "Linux capabilities added: SYS_ADMIN"
}

test_added_capability_entry_is_forbidden if {
	c := t.change(array.concat(t.container_path("securityContext"), ["capabilities", "add", 1]), null, "NET_ADMIN")
	findings := sec.classify with input as pod([c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_in_a_new_container_are_forbidden if {
	c := t.change(
		["spec", "template", "spec", "containers", 1], null,
		{"name": "debug", "image": "busybox", "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}},
	)
	findings := sec.classify with input as pod([c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_in_a_replaced_container_list_are_forbidden if {
	c := t.change(
		["spec", "template", "spec", "containers"],
		[{"name": "app", "image": "app:1"}],
		[{"name": "app", "image": "app:1"}, {"name": "debug", "image": "busybox", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}],
	)
	findings := sec.classify with input as pod([c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_in_a_pod_spec_are_forbidden if {
	c := t.change(
		["spec"],
		{"containers": [{"name": "app", "image": "app:1"}]},
		{"containers": [{"name": "app", "image": "app:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
	)
	findings := sec.classify with input as t.k8s("Pod", [c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_in_a_cron_job_template_are_forbidden if {
	c := t.change(
		["spec", "jobTemplate", "spec", "template", "spec", "initContainers", 0, "securityContext"],
		null,
		{"capabilities": {"add": ["SYS_ADMIN"]}},
	)
	findings := sec.classify with input as t.k8s("CronJob", [c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_in_a_replaced_object_are_forbidden if {
	pod := {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
	privileged := {"spec": {"containers": [{"name": "app", "image": "app:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}
	findings := sec.classify with input as t.k8s("Pod", [t.change([], pod, privileged)])
	t.has(findings, "forbidden", "added_capabilities")
}

test_capabilities_under_a_new_capabilities_block_are_forbidden if {
	c := t.change(array.concat(t.container_path("securityContext"), ["capabilities"]), {"drop": ["ALL"]}, {"drop": ["ALL"], "add": ["NET_ADMIN"]})
	findings := sec.classify with input as t.k8s("Deployment", [c])
	t.has(findings, "forbidden", "added_capabilities")
}

test_a_change_beside_the_add_lists_is_not_looked_into if {
	c := t.change(t.container_path("image"), "app:1", "app:2")
	not sec.may_add_capabilities(c.introduced[0])
	sec.may_add_capabilities({"segs": []})
	sec.may_add_capabilities({"segs": t.container_path("securityContext")})
	sec.may_add_capabilities({"segs": ["spec", "template", "spec", "containers", 0]})
	sec.may_add_capabilities({"segs": array.concat(t.container_path("securityContext"), ["capabilities", "add", "x"])})
}

# An add "list" written as a map (the API server rejects it, a pull request may still carry it).
test_a_capability_under_an_add_map_is_forbidden if {
	c := t.change(array.concat(t.container_path("securityContext"), ["capabilities", "add", "x"]), null, "SYS_ADMIN")
	findings := sec.classify with input as t.k8s("Deployment", [c])
	t.has(findings, "forbidden", "added_capabilities")
}

# may_add_capabilities only saves time: every node under every path of these objects that adds a
# capability passes it.
test_the_pre_test_passes_every_node_that_adds_capabilities if {
	caps := {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}}
	container := object.union({"name": "app", "image": "app:1"}, caps)
	pod_spec := {"containers": [container], "initContainers": [container], "ephemeralContainers": [container]}
	objects := [
		{"spec": pod_spec},
		{"spec": {"template": {"spec": pod_spec}}},
		{"spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}},
		{"spec": {"containers": [{"securityContext": {"capabilities": {"add": {"x": "NET_ADMIN"}}}}]}},
	]
	nodes := [n |
		some obj in objects
		walk(obj, [p, v])
		some n in t.introduced(t.pointer(p), p, null, v)
	]
	adding := [n | some n in nodes; count(sec.capabilities_added(n)) > 0]
	count(adding) > 50
	missed := [n.segs | some n in adding; not sec.may_add_capabilities(n)]
	missed == []
}

test_capabilities_kept_from_git_in_a_pod_spec_are_not_added if {
	spec := {"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]}
	c := t.change(["spec"], spec, spec)
	findings := sec.classify with input as t.k8s("Pod", [c])
	not "added_capabilities" in t.rules(findings)
}

test_reordered_capabilities_are_not_forbidden if {
	c := t.change(
		array.concat(t.container_path("securityContext"), ["capabilities", "add"]),
		["A", "B"], ["B", "A"],
	)
	findings := sec.classify with input as pod([c])
	count(findings) == 0
}

test_dropped_capabilities_are_not_added if {
	c := t.change(array.concat(t.container_path("securityContext"), ["capabilities", "drop"]), ["ALL"], ["NET_RAW"])
	findings := sec.classify with input as pod([c])
	count(findings) == 0
}

role(desired_rules, live_rules) := t.k8s_objects(
	"ClusterRole",
	[t.change(["rules"], desired_rules, live_rules)],
	{"rules": desired_rules}, {"rules": live_rules},
)

test_rbac_new_verb_is_forbidden if {
	d := [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
	l := [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "delete"]}]
	findings := sec.classify with input as role(d, l)
	t.rules(findings) == {"rbac_widened"}
	some f in findings
	f.reason == "RBAC rules widened: delete nodes"
}

test_rbac_wildcard_is_forbidden if {
	d := [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]
	l := [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
	findings := sec.classify with input as role(d, l)
	t.has(findings, "forbidden", "rbac_widened")
}

test_rbac_dropped_resource_names_is_forbidden if {
	d := [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tls"], "verbs": ["get"]}]
	l := [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
	findings := sec.classify with input as role(d, l)
	t.has(findings, "forbidden", "rbac_widened")
}

test_rbac_non_resource_url_is_forbidden if {
	d := [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
	l := [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]
	findings := sec.classify with input as role(d, l)
	t.has(findings, "forbidden", "rbac_widened")
}

test_rbac_narrowed_is_not_forbidden if {
	d := [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
	l := [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
	findings := sec.classify with input as role(d, l)
	count(findings) == 0
}

test_rbac_covered_by_wildcard_is_not_forbidden if {
	d := [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]
	l := [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get"]}]
	findings := sec.classify with input as role(d, l)
	count(findings) == 0
}

test_binding_new_subject_is_forbidden if {
	subjects := [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]
	more := array.concat(subjects, [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}])
	inp := t.k8s_objects(
		"RoleBinding", [t.change(["subjects", 1], null, more[1])],
		{"subjects": subjects}, {"subjects": more},
	)
	findings := sec.classify with input as inp
	t.rules(findings) == {"rbac_binding_widened"}
	some f in findings
	f.reason == "binding grants its role to new subjects: User//mallory"
}

# Services and NetworkPolicies that open SSH to the internet.

service(desired_spec, live_spec) := t.k8s_objects(
	"Service",
	[t.change(["spec"], desired_spec, live_spec)],
	{"kind": "Service", "spec": desired_spec}, {"kind": "Service", "spec": live_spec},
)

ssh_port := {"name": "ssh", "port": 2222, "targetPort": 22, "protocol": "TCP"}

test_load_balancer_exposing_ssh_is_forbidden if {
	findings := sec.classify with input as service({"type": "ClusterIP", "ports": [ssh_port]}, {"type": "LoadBalancer", "ports": [ssh_port]})
	t.rules(findings) == {"public_service"}
	some f in findings
	f.class == "forbidden"
	f.path == "/spec"
	f.reason == "Service exposes port 22 to the internet (type LoadBalancer, no loadBalancerSourceRanges)"
}

test_node_port_open_to_the_world_is_forbidden if {
	live := {"type": "NodePort", "ports": [{"port": 22}], "loadBalancerSourceRanges": ["10.0.0.0/8", "::/0"]}
	findings := sec.classify with input as service({"type": "NodePort", "ports": [{"port": 22}], "loadBalancerSourceRanges": ["10.0.0.0/8"]}, live)
	some f in findings
	f.rule == "public_service"
	f.reason == "Service exposes port 22 to the internet (type NodePort, loadBalancerSourceRanges include ::/0)"
}

test_added_service_exposing_ssh_is_forbidden if {
	# What pr-check sends for a Service a pull request adds: no desired object, the spec introduced.
	spec := {"type": "LoadBalancer", "ports": [{"port": "22"}]}
	inp := object.union(
		t.k8s_objects("Service", [t.change(["spec"], null, spec)], null, {"kind": "Service", "spec": spec}),
		{"kind": "Unmanaged"},
	)
	findings := sec.classify with input as inp
	t.has(findings, "forbidden", "public_service")
}

test_service_ssh_restricted_to_known_ranges_is_not_forbidden if {
	live := {"type": "LoadBalancer", "ports": [ssh_port], "loadBalancerSourceRanges": ["203.0.113.0/24"]}
	findings := sec.classify with input as service({"type": "ClusterIP", "ports": [ssh_port]}, live)
	count(findings) == 0
}

test_cluster_ip_or_other_ports_are_not_forbidden if {
	findings := sec.classify with input as service({"type": "ClusterIP", "ports": [{"port": 80}]}, {"type": "ClusterIP", "ports": [{"port": 22}]})
	count(findings) == 0
	https := {"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 8443}]}
	more := sec.classify with input as service({"type": "ClusterIP"}, https)
	count(more) == 0
}

test_ssh_already_public_in_git_is_not_new if {
	d := {"type": "LoadBalancer", "ports": [{"port": 22}]}
	l := {"type": "LoadBalancer", "ports": [{"port": 22}], "externalTrafficPolicy": "Local"}
	inp := t.k8s_objects(
		"Service", [t.change(["spec", "externalTrafficPolicy"], "Cluster", "Local")],
		{"kind": "Service", "spec": d}, {"kind": "Service", "spec": l},
	)
	findings := sec.classify with input as inp
	count(findings) == 0
}

test_forbidden_ports_come_from_data if {
	live := {"type": "LoadBalancer", "ports": [{"port": 3389}]}
	findings := sec.classify with input as service({"type": "ClusterIP"}, live)
		with data.driftwarden.config.public_exposure.forbidden_ports as [22, 3389]
	some f in findings
	f.reason == "Service exposes port 3389 to the internet (type LoadBalancer, no loadBalancerSourceRanges)"
}

netpol(desired_ingress, live_ingress) := t.k8s_objects(
	"NetworkPolicy",
	[t.change(["spec", "ingress"], desired_ingress, live_ingress)],
	{"kind": "NetworkPolicy", "spec": {"ingress": desired_ingress}},
	{"kind": "NetworkPolicy", "spec": {"ingress": live_ingress}},
)

vpn_ssh := {"from": [{"ipBlock": {"cidr": "10.8.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 22}]}

test_network_policy_ssh_from_the_world_is_forbidden if {
	world := {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}], "ports": [{"protocol": "TCP", "port": 22}]}
	findings := sec.classify with input as netpol([vpn_ssh], [vpn_ssh, world])
	t.rules(findings) == {"public_network_policy"}
	some f in findings
	f.class == "forbidden"
	f.path == "/spec/ingress"
	f.reason == "NetworkPolicy admits port 22 from 0.0.0.0/0, ::/0"
}

test_network_policy_all_ports_or_a_range_from_the_world_is_forbidden if {
	all_ports := {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}
	findings := sec.classify with input as netpol([], [all_ports])
	t.has(findings, "forbidden", "public_network_policy")
	range := {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 20, "endPort": 25}]}
	more := sec.classify with input as netpol([], [range])
	t.has(more, "forbidden", "public_network_policy")
}

test_network_policy_other_ports_or_private_sources_are_not_forbidden if {
	https := {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}, {"port": 8000, "endPort": 8100}]}
	findings := sec.classify with input as netpol([vpn_ssh], [vpn_ssh, https])
	count(findings) == 0
	office := {"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 22}]}
	more := sec.classify with input as netpol([vpn_ssh], [office])
	count(more) == 0
}
