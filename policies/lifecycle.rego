# Whole-resource drift and secret values, for every provider.
package driftwarden.lifecycle

# missing: deleted outside Git; recreating it could undo a deliberate removal, so a person decides.
classify contains {
	"class": "risky",
	"reason": "declared in Git but missing live",
	"rule": "missing",
} if {
	input.kind == "Missing"
}

# unmanaged: exists live but not in Git; adopting or deleting it is a decision.
classify contains {
	"class": "risky",
	"reason": "exists live but is not declared in Git",
	"rule": "unmanaged",
} if {
	input.kind == "Unmanaged"
}

# masked_value: a secret or sensitive value never goes into Git, so it is never adopted blindly.
classify contains {
	"class": "risky",
	"reason": "a secret or sensitive value changed",
	"rule": "masked_value",
	"path": change.path,
} if {
	some change in input.changes
	change.masked == true
}
