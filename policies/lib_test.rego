package driftwarden.lib_test

import data.driftwarden.lib
import data.driftwarden.test_support as t

test_matches_any_exact_and_prefix if {
	lib.matches_any("app", ["app"])
	lib.matches_any("kubernetes.io/metadata.name", ["kubernetes.io/*"])
	not lib.matches_any("tier", ["app", "kubernetes.io/*"])
}

test_nodes_are_only_what_live_introduced if {
	c := t.change(["spec", "template", "spec", "containers", 0], {"name": "web", "image": "a"}, {"name": "web", "image": "b"})
	nodes := lib.nodes with input as t.k8s("Deployment", [c])
	segs := {n.segs | some n in nodes}
	["spec", "template", "spec", "containers", 0, "image"] in segs
	not ["spec", "template", "spec", "containers", 0, "name"] in segs
}

test_changed_keys_of_a_whole_map if {
	c := t.change(["metadata", "labels"], {"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"})
	lib.changed_keys(c, "labels") == {"b", "c"}
}

test_hpa_managed if {
	inp := object.union(t.k8s("Deployment", []), {"related": {"hpa_targets": ["Deployment/shop/web"]}})
	lib.hpa_managed with input as inp
}

test_tag_map_reads_ec2_lists if {
	lib.tag_map({"Tags": [{"Key": "Name", "Value": "web"}]}) == {"Name": "web"}
	lib.tag_map({"tags": {"Name": "web"}}) == {"Name": "web"}
}

test_config_comes_from_data if {
	lib.param("replicas", {}).max_delta == 10
}
