package driftwarden.lifecycle_test

import data.driftwarden.lifecycle
import data.driftwarden.test_support as t

test_missing_is_risky if {
	inp := object.union(t.k8s("Service", []), {"kind": "Missing"})
	findings := lifecycle.classify with input as inp
	t.rules(findings) == {"missing"}
	t.has(findings, "risky", "missing")
}

test_unmanaged_is_risky if {
	inp := object.union(t.aws("aws_instance", [], null, {"instance_type": "t3.small"}), {"kind": "Unmanaged"})
	findings := lifecycle.classify with input as inp
	t.rules(findings) == {"unmanaged"}
	t.has(findings, "risky", "unmanaged")
}

test_masked_value_is_risky if {
	c := object.union(t.change(["password"], "(masked)", "(masked)"), {"masked": true})
	findings := lifecycle.classify with input as t.aws("aws_db_instance", [c], {}, {})
	t.has(findings, "risky", "masked_value")
}

test_modified_is_left_to_other_packages if {
	findings := lifecycle.classify with input as t.k8s("Deployment", [t.change(["spec", "replicas"], 1, 2)])
	count(findings) == 0
}
