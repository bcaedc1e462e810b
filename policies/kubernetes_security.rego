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
	may_add_capabilities(n)
	added := capabilities_added(n)
	count(added) > 0
}

# may_add_capabilities(n): a cheap test first. A node that adds capabilities is the object itself,
# or its last segment is an array index or one on the way to an add list, or it sits in an add
# list (entry_added). It holds for every node capabilities_added can match.
may_add_capabilities(n) if count(n.segs) == 0

may_add_capabilities(n) if template_segment(lib.last(n.segs))

may_add_capabilities(n) if n.segs[count(n.segs) - 2] == "add"

# capabilities_added(n): capabilities a node adds. Either the node holds whole add lists (the
# list itself, or a container or pod spec around it), compared as sets with desired's list at the
# same place, or the node is one entry of an add list.
capabilities_added(n) := listed_added(n) | entry_added(n)

listed_added(n) := {c |
	some [p, list] in add_lists(n)
	desired := desired_capabilities(n, p)
	some c in list
	not c in desired
}

desired_capabilities(n, p) := {c |
	some d in n.desired
	some c in lib.arr(at(d, p))
}

# Where add lists sit: in each container of a pod spec, wherever an object carries a pod spec
# (a Pod, a workload's template, a CronJob's job template). "*" stands for a container's index.
add_list_templates contains t if {
	some prefix in [["spec"], ["spec", "template", "spec"], ["spec", "jobTemplate", "spec", "template", "spec"]]
	some list in ["containers", "initContainers", "ephemeralContainers"]
	t := array.concat(prefix, [list, "*", "securityContext", "capabilities", "add"])
}

# [p, list] for each add list inside node n's value, p its path relative to the node.
add_lists(n) := container_add_lists(n) | ancestor_add_lists(n)

# The node is a container or inside one (the common case: a change at a container's field):
# segs = [..., "containers", i, rest...], where rest leads towards securityContext.capabilities.add.
container_add_lists(n) := {[p, list] |
	some k in container_index(n)
	rest := array.slice(n.segs, k + 1, count(n.segs))
	count(rest) <= 3
	array.slice(add_suffix, 0, count(rest)) == rest
	p := array.slice(add_suffix, count(rest), 3)
	list := at(n.value, p)
	is_array(list)
}

add_suffix := ["securityContext", "capabilities", "add"]

# container_index(n): where a container's index sits in the node's path, when it does.
container_index(n) := {k |
	some k, seg in n.segs
	is_number(seg)
	k > 0
	n.segs[k - 1] in data.driftwarden.lib.container_lists
}

# The node holds containers: the object, its spec, a pod template or spec, a containers list.
ancestor_add_lists(n) := {pair |
	count(container_index(n)) == 0
	may_hold_add_list(n)
	some t in add_list_templates
	count(n.segs) <= count(t)
	count({k | some k, seg in n.segs; pattern := t[k]; not template_matches(pattern, seg)}) == 0
	rest := array.slice(t, count(n.segs), count(t))
	some pair in lists_at(n.value, rest)
}

# may_hold_add_list(n): a cheap test first. A node on the way to an add list is the object itself
# or sits under spec, and its last segment is one a template has (or a container's index).
may_hold_add_list(n) if count(n.segs) == 0

may_hold_add_list(n) if {
	n.segs[0] == "spec"
	template_segment(lib.last(n.segs))
}

template_segment(seg) if is_number(seg)

template_segment(seg) if seg in {"spec", "template", "jobTemplate", "containers", "initContainers", "ephemeralContainers", "securityContext", "capabilities", "add"}

template_matches("*", seg) if is_number(seg)

template_matches(t, seg) if {
	t != "*"
	t == seg
}

lists_at(v, rest) := starred_lists(v, rest) | plain_lists(v, rest)

# rest still crosses the container index: one list per container.
starred_lists(v, rest) := {[p, list] |
	some j, seg in rest
	seg == "*"
	pre := array.slice(rest, 0, j)
	post := array.slice(rest, j + 1, count(rest))
	some i, container in lib.arr(at(v, pre))
	list := at(container, post)
	is_array(list)
	p := array.concat(array.concat(pre, [i]), post)
}

plain_lists(v, rest) := {[rest, list] |
	not "*" in rest
	list := at(v, rest)
	is_array(list)
}

# at(v, path): the value at path (object keys and array indexes) inside v, null when absent.
at(v, path) := object.get({"v": v}, array.concat(["v"], path), null)

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

# Ports that must never be reachable from the internet through a Service or a NetworkPolicy
# (data.json: public_exposure.forbidden_ports), and the source ranges that mean "the internet"
# (public_ingress.cidrs, shared with aws.public_ingress). Without a data file: SSH, 0.0.0.0/0, ::/0.
forbidden_ports := object.get(lib.param("public_exposure", {}), "forbidden_ports", [22])

world_cidrs := object.get(lib.param("public_ingress", {}), "cidrs", ["0.0.0.0/0", "::/0"])

# port_number(p): a port as a number: a number, or a string of digits (a named port is not one).
port_number(p) := p if is_number(p)

port_number(p) := to_number(p) if {
	is_string(p)
	regex.match(`^[0-9]+$`, p)
}

# Service: the forbidden ports an object exposes to the internet, with why the internet reaches
# them. A LoadBalancer or NodePort Service reaches them from outside the cluster unless
# loadBalancerSourceRanges narrows the sources to ranges that are not the whole internet.
service_exposed(o) := {port: why |
	o.kind == "Service"
	spec := lib.obj(o.spec)
	spec.type in {"LoadBalancer", "NodePort"}
	why := open_sources(spec)
	some port in forbidden_ports
	some p in lib.arr(spec.ports)
	some field in ["port", "targetPort"]
	port_number(object.get(p, field, null)) == port
}

open_sources(spec) := sprintf("type %s, no loadBalancerSourceRanges", [spec.type]) if {
	count(lib.arr(object.get(spec, "loadBalancerSourceRanges", []))) == 0
}

open_sources(spec) := sprintf("type %s, loadBalancerSourceRanges include %s", [spec.type, concat(", ", sort(open))]) if {
	open := {c | some c in lib.arr(spec.loadBalancerSourceRanges); c in world_cidrs}
	count(open) > 0
}

# NetworkPolicy: {port: [internet cidrs]} for the forbidden ports an ingress rule admits from an
# ipBlock that is the whole internet. A rule without ports admits every port; a port entry
# without a port admits every port of its protocol; endPort makes a range. Named ports are not
# resolved (the pods' container ports are not in the object).
network_policy_open(o) := {port: cidrs |
	o.kind == "NetworkPolicy"
	some port in forbidden_ports
	cidrs := {c |
		some r in lib.arr(object.get(lib.obj(o.spec), "ingress", []))
		admits(r, port)
		some peer in lib.arr(object.get(r, "from", []))
		c := lib.obj(peer.ipBlock).cidr
		c in world_cidrs
	}
	count(cidrs) > 0
}

admits(r, _) if count(lib.arr(object.get(r, "ports", []))) == 0

admits(r, _) if {
	some p in lib.arr(r.ports)
	not p.port
}

admits(r, port) if {
	some p in lib.arr(r.ports)
	port_number(p.port) == port
}

admits(r, port) if {
	some p in lib.arr(r.ports)
	port_number(p.port) <= port
	port <= object.get(p, "endPort", -1)
}

# The changes a finding about spec fields names: those at or above spec.<field>, else the whole
# drift (an Unmanaged object has no changes; an ignore rule may have dropped them).
spec_paths(fields) := {c.path |
	some c in input.changes
	spec_change(c.parts, fields)
}

spec_change(parts, _) if count(parts) == 0

spec_change(parts, _) if parts == ["spec"]

spec_change(parts, fields) if {
	parts[0] == "spec"
	parts[1] in fields
}

exposure_paths(fields) := spec_paths(fields) if count(spec_paths(fields)) > 0

exposure_paths(fields) := {""} if count(spec_paths(fields)) == 0

# public_service: live (or the pull request) exposes a forbidden port to the internet through a
# LoadBalancer or NodePort Service and Git did not: adopting it would publish SSH to the world.
findings contains {
	"class": "forbidden",
	"reason": sprintf("Service exposes port %v to the internet (%s)", [port, why]),
	"rule": "public_service",
	"path": path,
} if {
	input.resource.kind == "Service"
	before := service_exposed(lib.obj(input.desired))
	some port, why in service_exposed(lib.obj(input.live))
	not before[port]
	some path in exposure_paths({"type", "ports", "loadBalancerSourceRanges"})
}

# public_network_policy: a NetworkPolicy now admits a forbidden port from an ipBlock that is the
# whole internet, which Git did not.
findings contains {
	"class": "forbidden",
	"reason": sprintf("NetworkPolicy admits port %v from %s", [port, concat(", ", sort(new))]),
	"rule": "public_network_policy",
	"path": path,
} if {
	input.resource.kind == "NetworkPolicy"
	before := network_policy_open(lib.obj(input.desired))
	some port, cidrs in network_policy_open(lib.obj(input.live))
	new := cidrs - object.get(before, port, set())
	count(new) > 0
	some path in exposure_paths({"ingress", "policyTypes"})
}
