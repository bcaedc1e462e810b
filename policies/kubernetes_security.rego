# Kubernetes drift that weakens isolation or widens access: never adopted into Git silently.
package driftwarden.kubernetes_security

import data.driftwarden.lib

# The package's answer: its findings, for Kubernetes drifts only. The gate keeps the cost of other
# providers' drifts to this one rule body.
classify contains finding if {
	data.driftwarden.lib.is_kubernetes
	some finding in findings
}

# privileged: a privileged container owns its node.
findings contains {
	"class": "forbidden",
	"reason": "a container was made privileged",
	"rule": "privileged",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	n.value == true
	lib.last(n.segs) == "privileged"
	n.segs[count(n.segs) - 2] == "securityContext"
}

# host_namespaces: hostNetwork, hostPID or hostIPC share the node's namespaces with the pod.
findings contains {
	"class": "forbidden",
	"reason": sprintf("%s was enabled", [lib.last(n.segs)]),
	"rule": "host_namespaces",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	n.value == true
	lib.last(n.segs) in {"hostNetwork", "hostPID", "hostIPC"}
}

# host_path: a hostPath volume exposes the node's filesystem to the pod.
findings contains {
	"class": "forbidden",
	"reason": "a hostPath volume was added or changed",
	"rule": "host_path",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	n.value != null
	some k, seg in n.segs
	seg == "volumes"
	is_number(n.segs[k + 1])
	n.segs[k + 2] == "hostPath"
}

# added_capabilities: new Linux capabilities (securityContext.capabilities.add).
findings contains {
	"class": "forbidden",
	"reason": sprintf("Linux capabilities added: %s", [concat(", ", sort(added))]),
	"rule": "added_capabilities",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	added := capabilities_added(n)
	count(added) > 0
}

# capabilities_added(n): capabilities a node adds. Either the node holds whole add lists (the
# list itself, or a container or pod spec around it), compared as sets with desired's list at the
# same place, or the node is one entry of an add list.
capabilities_added(n) := listed_added(n) | entry_added(n)

listed_added(n) := {c |
	walk(n.value, [p, list])
	full := array.concat(n.segs, p)
	count(full) >= 2
	full[count(full) - 2] == "capabilities"
	lib.last(full) == "add"
	is_array(list)
	some c in list
	not c in desired_capabilities(n, p)
}

desired_capabilities(n, p) := {c |
	some d in n.desired
	walk(d, [p, old])
	some c in lib.arr(old)
}

entry_added(n) := {v |
	v := n.value
	n.root
	is_string(v)
	count(n.segs) >= 3
	n.segs[count(n.segs) - 2] == "add"
	n.segs[count(n.segs) - 3] == "capabilities"
}

rbac_role if input.resource.kind in {"Role", "ClusterRole"}

rbac_binding if input.resource.kind in {"RoleBinding", "ClusterRoleBinding"}

# What a list of RBAC rules grants, one entry per group/resource/verb/name combination.
grants(rules) := {g |
	some r in lib.arr(rules)
	some g in rule_grants(r)
}

rule_grants(r) := resource_grants(r) | url_grants(r)

resource_grants(r) := {{"kind": "resource", "group": grp, "resource": res, "verb": verb, "name": name} |
	some grp in object.get(r, "apiGroups", [""])
	some res in object.get(r, "resources", [])
	some verb in object.get(r, "verbs", [])
	some name in names(r)
}

url_grants(r) := {{"kind": "url", "group": "", "resource": url, "verb": verb, "name": "*"} |
	some url in object.get(r, "nonResourceURLs", [])
	some verb in object.get(r, "verbs", [])
}

names(r) := r.resourceNames if count(object.get(r, "resourceNames", [])) > 0

names(r) := ["*"] if count(object.get(r, "resourceNames", [])) == 0

covers(d, g) if {
	d.kind == g.kind
	wild(d.group, g.group)
	wild(d.resource, g.resource)
	wild(d.verb, g.verb)
	wild(d.name, g.name)
}

wild(a, _) if a == "*"

wild(a, b) if a == b

# Grants live holds that no desired grant covers.
widened contains g if {
	rbac_role
	input.kind == "Modified"
	desired := grants(object.get(lib.obj(input.desired), "rules", []))
	some g in grants(object.get(lib.obj(input.live), "rules", []))
	not covered(g, desired)
}

covered(g, desired) if {
	some d in desired
	covers(d, g)
}

rule_paths contains change.path if {
	some change in input.changes
	change.parts[0] == "rules"
}

rule_paths contains "" if {
	not any_rule_change
}

any_rule_change if {
	some change in input.changes
	change.parts[0] == "rules"
}

# rbac_widened: live grants what Git does not; adopting it would launder a privilege escalation.
findings contains {
	"class": "forbidden",
	"reason": sprintf("RBAC rules widened: %s", [describe(widened)]),
	"rule": "rbac_widened",
	"path": path,
} if {
	count(widened) > 0
	some path in rule_paths
}

describe(gs) := concat(", ", sort([s |
	some g in gs
	s := sprintf("%s %s", [g.verb, resource_name(g)])
]))

resource_name(g) := g.resource if g.kind == "url"

resource_name(g) := sprintf("%s.%s", [g.resource, g.group]) if {
	g.kind == "resource"
	g.group != ""
}

resource_name(g) := g.resource if {
	g.kind == "resource"
	g.group == ""
}

subject_key(s) := sprintf("%s/%s/%s", [object.get(s, "kind", ""), object.get(s, "namespace", ""), object.get(s, "name", "")])

new_subjects contains key if {
	rbac_binding
	input.kind == "Modified"
	before := {subject_key(d) | some d in lib.arr(object.get(lib.obj(input.desired), "subjects", []))}
	some s in lib.arr(object.get(lib.obj(input.live), "subjects", []))
	key := subject_key(s)
	not key in before
}

# rbac_binding_widened: a binding grants its role to subjects Git does not name.
findings contains {
	"class": "forbidden",
	"reason": sprintf("binding grants its role to new subjects: %s", [concat(", ", sort(new_subjects))]),
	"rule": "rbac_binding_widened",
	"path": change.path,
} if {
	count(new_subjects) > 0
	some change in input.changes
	change.parts[0] in {"subjects", "roleRef"}
}
