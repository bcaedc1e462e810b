# The fail-safe default lives in driftwarden itself (a change no rule classifies is risky); these
# tests pin down that the default library leaves such changes unclassified rather than guessing.
package driftwarden.failsafe_test

import data.driftwarden.test_support as t

all_findings := ((data.driftwarden.kubernetes.classify | data.driftwarden.kubernetes_security.classify) | data.driftwarden.aws.classify) | data.driftwarden.lifecycle.classify

test_unknown_kubernetes_change_is_left_to_the_fail_safe if {
	c := t.change(["data", "LOG_LEVEL"], "info", "debug")
	findings := all_findings with input as t.k8s("ConfigMap", [c])
	count(findings) == 0
}

test_unknown_terraform_change_is_left_to_the_fail_safe if {
	c := t.change(["monitoring"], false, true)
	findings := all_findings with input as t.aws("aws_instance", [c], {}, {})
	count(findings) == 0
}

test_unknown_provider_is_left_to_the_fail_safe if {
	inp := object.union(t.k8s("Deployment", [t.change(["spec", "replicas"], 1, 2)]), {"provider": "azure"})
	findings := all_findings with input as inp
	count(findings) == 0
}
