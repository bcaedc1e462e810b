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
