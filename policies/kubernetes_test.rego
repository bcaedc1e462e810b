package driftwarden.kubernetes_test

import data.driftwarden.kubernetes
import data.driftwarden.test_support as t

replicas(desired, live) := t.k8s("Deployment", [t.change(["spec", "replicas"], desired, live)])

test_replicas_without_hpa_is_safe if {
	findings := kubernetes.classify with input as replicas(2, 5)
	t.has(findings, "safe", "replicas_without_hpa")
	t.rules(findings) == {"replicas_without_hpa"}
}

test_replicas_under_hpa_is_risky if {
	inp := object.union(replicas(2, 5), {"related": {"hpa_targets": ["Deployment/shop/web"]}})
	findings := kubernetes.classify with input as inp
	t.rules(findings) == {"replicas_under_hpa"}
	t.has(findings, "risky", "replicas_under_hpa")
}

# The remedy agrees with the reason: Git should stop pinning the count, so the pull request
# removes `replicas` rather than writing the autoscaler's count of the moment into Git.
test_replicas_under_hpa_unpins_the_field if {
	inp := object.union(replicas(2, 5), {"related": {"hpa_targets": ["Deployment/shop/web"]}})
	findings := kubernetes.classify with input as inp
	some f in findings
	f.rule == "replicas_under_hpa"
	f.remedy == "unpin"
	f.path == "/spec/replicas"
}

# Without an autoscaler the hand scale is restored or adopted as usual: no remedy is set.
test_replicas_without_hpa_sets_no_remedy if {
	findings := kubernetes.classify with input as replicas(2, 5)
	every f in findings {
		not f.remedy
	}
}

test_replicas_scaled_to_zero_is_risky if {
	findings := kubernetes.classify with input as replicas(3, 0)
	t.rules(findings) == {"replicas_beyond_limits"}
	t.has(findings, "risky", "replicas_beyond_limits")
}

test_replicas_big_step_is_risky if {
	findings := kubernetes.classify with input as replicas(2, 40)
	t.has(findings, "risky", "replicas_beyond_limits")
}

test_replicas_limits_come_from_data if {
	findings := kubernetes.classify with input as replicas(2, 40)
		with data.driftwarden.config.replicas as {"min_live": 1, "max_delta": 100}
	t.has(findings, "safe", "replicas_without_hpa")
}

test_unprotected_label_is_safe if {
	c := t.change(["metadata", "labels", "tier"], "frontend", "web")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.has(findings, "safe", "unprotected_label")
	t.rules(findings) == {"unprotected_label"}
}

test_protected_label_is_risky if {
	c := t.change(["metadata", "labels", "app.kubernetes.io/name"], "web", "other")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.rules(findings) == {"protected_label"}
	t.has(findings, "risky", "protected_label")
}

test_protected_label_prefix_is_risky if {
	c := t.change(["metadata", "labels", "pod-security.kubernetes.io/enforce"], "restricted", "privileged")
	findings := kubernetes.classify with input as t.k8s("Namespace", [c])
	t.has(findings, "risky", "protected_label")
}

test_whole_label_map_mixes_classes if {
	c := t.change(["metadata", "labels"], {"app": "web", "tier": "a"}, {"app": "other", "tier": "b"})
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.has(findings, "safe", "unprotected_label")
	t.has(findings, "risky", "protected_label")
}

test_pod_template_labels_are_not_metadata_labels if {
	c := t.change(["spec", "template", "metadata", "labels", "tier"], "a", "b")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	count(findings) == 0
}

test_unprotected_annotation_is_safe if {
	c := t.change(["metadata", "annotations", "team.shop/incident"], null, "INC-2041")
	findings := kubernetes.classify with input as t.k8s("Service", [c])
	t.rules(findings) == {"unprotected_annotation"}
	t.has(findings, "safe", "unprotected_annotation")
}

test_protected_annotation_is_risky if {
	c := t.change(["metadata", "annotations", "eks.amazonaws.com/role-arn"], "arn:a", "arn:b")
	findings := kubernetes.classify with input as t.k8s("ServiceAccount", [c])
	t.rules(findings) == {"protected_annotation"}
}

test_everything_protected_without_data if {
	c := t.change(["metadata", "labels", "tier"], "frontend", "web")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c]) with data.driftwarden.config as {}
	t.rules(findings) == {"protected_label"}
}

test_image_is_risky if {
	c := t.change(t.container_path("image"), "nginx:1.27.3", "nginx:1.27.4")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.rules(findings) == {"image"}
	t.has(findings, "risky", "image")
}

test_image_inside_a_whole_container_is_risky if {
	c := t.change(
		["spec", "template", "spec", "initContainers", 0],
		{"name": "init", "image": "busybox:1"}, {"name": "init", "image": "busybox:2"},
	)
	findings := kubernetes.classify with input as t.k8s("StatefulSet", [c])
	t.has(findings, "risky", "image")
}

test_cronjob_image_is_risky if {
	parts := ["spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "image"]
	findings := kubernetes.classify with input as t.k8s("CronJob", [t.change(parts, "a:1", "a:2")])
	t.has(findings, "risky", "image")
}

test_resources_are_risky if {
	c := t.change(array.concat(t.container_path("resources"), ["limits", "memory"]), "1Gi", "2Gi")
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.rules(findings) == {"resources"}
	t.has(findings, "risky", "resources")
}

test_requests_are_risky if {
	c := t.change(t.container_path("resources"), {"requests": {"cpu": "500m"}}, {"requests": {"cpu": "2"}})
	findings := kubernetes.classify with input as t.k8s("Deployment", [c])
	t.has(findings, "risky", "resources")
}

test_secret_content_is_risky if {
	c := object.union(t.change(["data", "API_KEY"], "(masked)", "(masked)"), {"masked": true})
	findings := kubernetes.classify with input as t.k8s("Secret", [c])
	t.rules(findings) == {"secret_content"}
	t.has(findings, "risky", "secret_content")
}

test_configmap_data_is_not_secret_content if {
	c := t.change(["data", "LOG_LEVEL"], "info", "debug")
	findings := kubernetes.classify with input as t.k8s("ConfigMap", [c])
	count(findings) == 0
}

test_other_providers_are_ignored if {
	inp := object.union(replicas(2, 5), {"provider": "terraform"})
	findings := kubernetes.classify with input as inp
	count(findings) == 0
}
