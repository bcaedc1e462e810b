# Input builders for the library's tests (loaded only by `policy test`).
package driftwarden.test_support

k8s(kind, changes) := {
	"schema_version": "1",
	"target": "test",
	"provider": "kubernetes",
	"kind": "Modified",
	"resource": {
		"cluster": "test", "group": "apps", "version": "v1", "kind": kind,
		"namespace": "shop", "name": "web", "ref": sprintf("%s/shop/web", [kind]),
		"type": kind, "display": sprintf("%s shop/web", [kind]),
	},
	"changes": changes,
	"desired": {},
	"live": {},
	"labels": {},
	"annotations": {},
	"tags": {},
	"provenance": null,
	"related": {"hpa_targets": []},
	"context": {"mode": "recommend", "time": "2026-11-22T03:15:00Z", "command": "test"},
}

# k8s_objects: a Kubernetes input with whole desired and live objects.
k8s_objects(kind, changes, desired, live) := object.union(k8s(kind, changes), {"desired": desired, "live": live})

aws(type, changes, desired, live) := {
	"schema_version": "1",
	"target": "test",
	"provider": "terraform",
	"kind": "Modified",
	"resource": {
		"workspace": "default", "address": sprintf("%s.web", [type]),
		"type": type, "display": sprintf("%s.web", [type]),
	},
	"changes": changes,
	"desired": desired,
	"live": live,
	"labels": {},
	"annotations": {},
	"tags": {},
	"provenance": null,
	"related": {"hpa_targets": []},
	"context": {"mode": "recommend", "time": "2026-11-22T03:15:00Z", "command": "test"},
}

ec2(type, changes, desired, live) := object.union(aws(type, changes, desired, live), {"provider": "ec2"})

change(parts, desired, live) := {
	"path": pointer(parts),
	"parts": parts,
	"op": "changed",
	"desired": desired,
	"live": live,
	"masked": false,
	"attribution": null,
	"introduced": introduced(pointer(parts), parts, desired, live),
}

# What driftwarden computes for change.introduced (src/policy/input.rs), the slow way.
introduced(path, parts, desired, live) := [node |
	dmap := {dp: dv | walk(desired, [dp, dv])}
	walk(live, [p, v])
	not same_at(dmap, p, v)
	node := {
		"path": path,
		"segs": array.concat(parts, p),
		"value": v,
		"desired": [x | x := dmap[p]],
		"root": count(p) == 0,
	}
]

same_at(m, k, v) if m[k] == v

pointer(parts) := concat("", [sprintf("/%s", [seg(p)]) | some p in parts])

seg(p) := replace(replace(p, "~", "~0"), "/", "~1") if is_string(p)

seg(p) := format_int(p, 10) if is_number(p)

# has(findings, class, rule): some finding has this class and rule.
has(findings, class, rule) if {
	some f in findings
	f.class == class
	f.rule == rule
}

# rules(findings): the rule names found, for "nothing else fired" checks.
rules(findings) := {f.rule | some f in findings}

container_path(field) := ["spec", "template", "spec", "containers", 0, field]
