# Helpers shared by the default library. This package classifies nothing itself.
package driftwarden.lib

# Tuning parameters from data.driftwarden.config (policies/data.json). A missing file or key
# falls back to the defaults in each rule, chosen so that nothing becomes safe by accident.
default config := {}

config := data.driftwarden.config

param(key, fallback) := object.get(config, key, fallback)

is_kubernetes if input.provider == "kubernetes"

is_aws if input.provider in {"terraform", "ec2"}

obj(x) := x if is_object(x)

obj(x) := {} if not is_object(x)

arr(x) := x if is_array(x)

arr(x) := [] if not is_array(x)

last(xs) := xs[count(xs) - 1]

# matches_any(key, patterns): key equals a pattern, or a pattern ends in "*" and key starts with
# the text before it.
matches_any(key, patterns) if key in patterns

matches_any(key, patterns) if {
	some p in patterns
	endswith(p, "*")
	startswith(key, trim_suffix(p, "*"))
}

# Every node a drift introduced: each value inside a change's live side that the change's desired
# side does not hold at the same place. driftwarden computes them per change
# (input.changes[_].introduced, docs/policy.md):
#   path:    the change's JSON pointer (what a finding's "path" should name)
#   segs:    the node's full path from the object root (array indices are numbers)
#   value:   the live value there
#   desired: [the desired value there], or [] when desired has nothing there
#   root:    true for the change's own value (the node at the change's path)
nodes contains node if {
	some change in input.changes
	some node in change.introduced
}

# The lists of a pod spec that hold containers.
container_lists := {"containers", "initContainers", "ephemeralContainers"}

# in_container(segs, field): segs points at or below field `field` of a container.
in_container(segs, field) if {
	some k, list in segs
	list in container_lists
	is_number(segs[k + 1])
	segs[k + 2] == field
}

# changed_keys(change, field): the keys of metadata.<field> (labels, annotations) a change
# touches, whether it names one key or the whole map.
changed_keys(change, field) := {change.parts[2]} if {
	count(change.parts) == 3
	change.parts[0] == "metadata"
	change.parts[1] == field
}

changed_keys(change, field) := keys if {
	change.parts == ["metadata", field]
	keys := map_diff(obj(change.desired), obj(change.live))
}

# map_diff(a, b): keys whose values differ between two maps (present in one only included).
# The comparison sits in a function of local variables: a negated `a[k] == b[k]` would be
# undefined, in OPA, for a key one map lacks (docs/policy.md, "Differences from OPA").
map_diff(a, b) := {k | some k, _ in object.union(a, b); not same_at(a, b, k)}

same_at(a, b, k) if a[k] == b[k]

# hpa_managed: a HorizontalPodAutoscaler (or KEDA ScaledObject) scales this object.
hpa_managed if input.resource.ref in input.related.hpa_targets

# tag_map(x): tags of an object as one map: Terraform's tags map or EC2's [{Key, Value}] list.
tag_map(x) := tags if {
	tags := obj(x).tags
	is_object(tags)
}

tag_map(x) := {t.Key: t.Value | some t in arr(o.Tags)} if {
	o := obj(x)
	not has_tag_map(o)
}

has_tag_map(o) if is_object(o.tags)
