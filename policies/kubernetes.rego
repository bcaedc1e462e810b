# Kubernetes drift that is routine (scale, metadata) or a release decision (images, resources,
# Secret content).
package driftwarden.kubernetes

import data.driftwarden.lib

# The package's answer: its findings, for Kubernetes drifts only. The gate keeps the cost of other
# providers' drifts to this one rule body.
classify contains finding if {
	data.driftwarden.lib.is_kubernetes
	some finding in findings
}

replicas := lib.param("replicas", {})

min_live := object.get(replicas, "min_live", 1)

max_delta := object.get(replicas, "max_delta", 0)

# Without a data file every label and annotation counts as protected: nothing is safe by accident.
protected_labels := lib.param("protected_labels", ["*"])

protected_annotations := lib.param("protected_annotations", ["*"])

# [change, key] for each label (annotation) key a change touches.
label_changed contains [change, key] if {
	some change in input.changes
	change.parts[0] == "metadata"
	some key in lib.changed_keys(change, "labels")
}

annotation_changed contains [change, key] if {
	some change in input.changes
	change.parts[0] == "metadata"
	some key in lib.changed_keys(change, "annotations")
}

replica_change contains change if {
	some change in input.changes
	change.parts == ["spec", "replicas"]
}

within_limits(change) if {
	is_number(change.live)
	is_number(change.desired)
	change.live >= min_live
	abs(change.live - change.desired) <= max_delta
}

# replicas_without_hpa: a hand scale of an object no autoscaler manages; restoring Git is routine.
findings contains {
	"class": "safe",
	"reason": "replica count changed by hand and no HorizontalPodAutoscaler manages it",
	"rule": "replicas_without_hpa",
	"path": change.path,
} if {
	some change in replica_change
	not data.driftwarden.lib.hpa_managed
	within_limits(change)
}

# replicas_beyond_limits: scaled to near zero or by more than the configured step (an emergency
# stop or an incident's capacity); a person decides.
findings contains {
	"class": "risky",
	"reason": sprintf("replica count changed from %v to %v, beyond the limits for automatic correction (min %v, step %v)", [change.desired, change.live, min_live, max_delta]),
	"rule": "replicas_beyond_limits",
	"path": change.path,
} if {
	some change in replica_change
	not data.driftwarden.lib.hpa_managed
	not within_limits(change)
}

# replicas_under_hpa: an autoscaler owns the replica count; Git should stop pinning it. The
# pull request removes `replicas` from the manifest (remedy unpin) instead of writing the
# autoscaler's count of the moment into Git.
findings contains {
	"class": "risky",
	"reason": "a HorizontalPodAutoscaler manages the replica count; Git should not pin it",
	"rule": "replicas_under_hpa",
	"path": change.path,
	"remedy": "unpin",
} if {
	some change in replica_change
	data.driftwarden.lib.hpa_managed
}

# unprotected_label: a label outside the protected list; restoring Git's labels is routine.
findings contains {
	"class": "safe",
	"reason": sprintf("label %s is not protected", [key]),
	"rule": "unprotected_label",
	"path": change.path,
} if {
	some [change, key] in label_changed
	not lib.matches_any(key, protected_labels)
}

# protected_label: selectors, ownership and admission labels change behaviour; a person decides.
findings contains {
	"class": "risky",
	"reason": sprintf("label %s is protected", [key]),
	"rule": "protected_label",
	"path": change.path,
} if {
	some [change, key] in label_changed
	lib.matches_any(key, protected_labels)
}

# unprotected_annotation: an annotation outside the protected list; restoring Git's is routine.
findings contains {
	"class": "safe",
	"reason": sprintf("annotation %s is not protected", [key]),
	"rule": "unprotected_annotation",
	"path": change.path,
} if {
	some [change, key] in annotation_changed
	not lib.matches_any(key, protected_annotations)
}

# protected_annotation: annotations that configure controllers, identity or load balancers.
findings contains {
	"class": "risky",
	"reason": sprintf("annotation %s is protected", [key]),
	"rule": "protected_annotation",
	"path": change.path,
} if {
	some [change, key] in annotation_changed
	lib.matches_any(key, protected_annotations)
}

# image: a different container image is a release; adopting or reverting it is a decision.
findings contains {
	"class": "risky",
	"reason": "container image changed",
	"rule": "image",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	lib.last(n.segs) == "image"
	lib.in_container(n.segs, "image")
}

# resources: requests and limits decide scheduling and throttling; a person decides.
findings contains {
	"class": "risky",
	"reason": "container resources or limits changed",
	"rule": "resources",
	"path": n.path,
} if {
	some n in data.driftwarden.lib.nodes
	lib.in_container(n.segs, "resources")
}

# secret_content: a Secret's value never goes into Git, so it is never corrected blindly either.
findings contains {
	"class": "risky",
	"reason": "Secret content changed",
	"rule": "secret_content",
	"path": change.path,
} if {
	input.resource.kind == "Secret"
	some change in input.changes
	secret_field(change.parts)
}

secret_field(parts) if parts[0] in {"data", "stringData"}

secret_field(parts) if count(parts) == 0
