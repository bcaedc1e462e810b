//! Adoption edits to YAML manifests (`act::edit_yaml`): only the drifted lines change, byte for
//! byte everything else stays — comments, key order, quoting, anchors, flow style and the other
//! documents of the file — and where no honest edit exists the editor says so.

#[path = "support/common.rs"]
mod common;

use common::{field_change as change, root};
use driftwarden::act::edit_yaml::{
    DocRef, EditError, adopt_changes, adopted_manifest, apply_remedies, remove_document,
    remove_value, set_value,
};
use driftwarden::model::{ChangeOp, Remedy};
use serde_json::{Value, json};

fn demo(file: &str) -> String {
    std::fs::read_to_string(root().join("fixtures/demo/desired").join(file)).unwrap()
}

/// The lines that differ between two texts of the same line count, as (line, old, new).
fn changed_lines(old: &str, new: &str) -> Vec<(usize, String, String)> {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    assert_eq!(a.len(), b.len(), "line count changed:\n{new}");
    a.iter()
        .zip(&b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i + 1, x.to_string(), y.to_string()))
        .collect()
}

fn doc<'a>(kind: &'a str, name: &'a str) -> DocRef<'a> {
    DocRef {
        kind,
        name,
        namespace: Some("shop"),
        line: None,
    }
}

#[test]
fn demo_deployment_adoption_touches_exactly_two_lines() {
    let text = demo("bookstore/web.yaml");
    let live: Value = json!({
        "spec": {"replicas": 6, "template": {"spec": {"containers": [
            {"name": "web", "image": "ghcr.io/example/bookstore-web:2.4.2-hotfix1"},
            {"name": "metrics-exporter", "image": "ghcr.io/example/puma-exporter:0.9.3"}
        ]}}}
    });
    let changes = [
        change("/spec/replicas", ChangeOp::Changed, json!(3), json!(6)),
        change(
            "/spec/template/spec/containers/0/image",
            ChangeOp::Changed,
            json!("ghcr.io/example/bookstore-web:2.4.1"),
            json!("ghcr.io/example/bookstore-web:2.4.2-hotfix1"),
        ),
    ];
    let out = adopt_changes(
        &text,
        &doc("Deployment", "bookstore-web"),
        &changes,
        Some(&live),
    )
    .unwrap();
    assert_eq!(
        changed_lines(&text, &out.text),
        vec![
            (17, "  replicas: 3\n".into(), "  replicas: 6\n".into()),
            (
                32,
                "          image: ghcr.io/example/bookstore-web:2.4.1\n".into(),
                "          image: ghcr.io/example/bookstore-web:2.4.2-hotfix1\n".into()
            ),
        ]
    );
    assert_eq!(
        out.touched,
        vec![
            ("/spec/replicas".to_string(), 17),
            ("/spec/template/spec/containers/0/image".to_string(), 32)
        ]
    );
}

#[test]
fn remedies_unpin_removes_the_field_and_revert_leaves_git_alone() {
    let text = demo("bookstore/web.yaml");
    let live: Value = json!({
        "spec": {"replicas": 6, "template": {"spec": {"containers": [
            {"name": "web", "image": "ghcr.io/example/bookstore-web:2.4.2-hotfix1"},
            {"name": "metrics-exporter", "image": "ghcr.io/example/puma-exporter:0.9.3"}
        ]}}}
    });
    let replicas = change("/spec/replicas", ChangeOp::Changed, json!(3), json!(6));
    let image = change(
        "/spec/template/spec/containers/0/image",
        ChangeOp::Changed,
        json!("ghcr.io/example/bookstore-web:2.4.1"),
        json!("ghcr.io/example/bookstore-web:2.4.2-hotfix1"),
    );
    let dep = doc("Deployment", "bookstore-web");
    let changes = [replicas.clone(), image.clone()];

    // unpin the replicas, adopt the image: one line gone, one line changed, nothing else.
    let out = apply_remedies(&text, &dep, &changes, Some(&live), |c| {
        if c.path == "/spec/replicas" {
            Remedy::Unpin
        } else {
            Remedy::Adopt
        }
    })
    .unwrap();
    assert_eq!(
        out.text,
        text.replacen("  replicas: 3\n", "", 1).replacen(
            "bookstore-web:2.4.1",
            "bookstore-web:2.4.2-hotfix1",
            1
        )
    );
    assert_eq!(
        out.touched,
        vec![
            ("/spec/replicas".to_string(), 17),
            ("/spec/template/spec/containers/0/image".to_string(), 32)
        ]
    );

    // revert the image: Git keeps its value; only the replicas line goes.
    let out = apply_remedies(&text, &dep, &changes, Some(&live), |c| {
        if c.path == "/spec/replicas" {
            Remedy::Unpin
        } else {
            Remedy::Revert
        }
    })
    .unwrap();
    assert_eq!(out.text, text.replacen("  replicas: 3\n", "", 1));
    assert_eq!(out.touched, vec![("/spec/replicas".to_string(), 17)]);

    // Unpinning a whole mapping removes its lines; a file that already dropped the field is
    // unpinned already (no edit); a file holding another value than the drift's is stale.
    let resources = change(
        "/spec/template/spec/containers/1/resources/limits",
        ChangeOp::Changed,
        json!({"cpu": "100m", "memory": "64Mi"}),
        json!({"cpu": "200m", "memory": "64Mi"}),
    );
    let out = apply_remedies(&text, &dep, &[resources], Some(&live), |_| Remedy::Unpin).unwrap();
    assert_eq!(
        out.text,
        text.replacen(
            "            limits:\n              cpu: 100m\n              memory: 64Mi\n",
            "",
            1
        )
    );
    let unpinned = text.replacen("  replicas: 3\n", "", 1);
    let out = apply_remedies(
        &unpinned,
        &dep,
        std::slice::from_ref(&replicas),
        Some(&live),
        |_| Remedy::Unpin,
    )
    .unwrap();
    assert_eq!(out.text, unpinned);
    let other = text.replacen("  replicas: 3\n", "  replicas: 4\n", 1);
    let e = apply_remedies(&other, &dep, &[replicas], Some(&live), |_| Remedy::Unpin).unwrap_err();
    assert!(matches!(e, EditError::Stale(_)), "{e}");
}

#[test]
fn quoted_value_keeps_its_quotes_and_comment() {
    let text = demo("bookstore/config.yaml");
    let out = adopt_changes(
        &text,
        &doc("ConfigMap", "bookstore-config"),
        &[change(
            "/data/SEARCH_TIMEOUT_MS",
            ChangeOp::Changed,
            json!("800"),
            json!("2500"),
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        changed_lines(&text, &out.text),
        vec![(
            16,
            "  SEARCH_TIMEOUT_MS: \"800\" # p99 of the search API is ~450ms\n".into(),
            "  SEARCH_TIMEOUT_MS: \"2500\" # p99 of the search API is ~450ms\n".into()
        )]
    );
    // The Secret document after it is untouched, byte for byte.
    let secret_at = text.find("kind: Secret").unwrap();
    assert_eq!(
        &out.text[out.text.find("kind: Secret").unwrap()..],
        &text[secret_at..]
    );
}

#[test]
fn styles_are_kept_per_scalar() {
    let text = "# top comment\nkind: ConfigMap\nmetadata: {name: app, namespace: shop}  # flow\ndata:\n  double: \"a\"   # d\n  single: 'b'\n  plain: c\n  number: 5\n  \"quoted key\": x\n";
    let d = DocRef {
        kind: "ConfigMap",
        name: "app",
        namespace: None,
        line: None,
    };
    let out = adopt_changes(
        text,
        &d,
        &[
            change(
                "/data/double",
                ChangeOp::Changed,
                json!("a"),
                json!("it's \"new\""),
            ),
            change(
                "/data/single",
                ChangeOp::Changed,
                json!("b"),
                json!("don't"),
            ),
            change("/data/plain", ChangeOp::Changed, json!("c"), json!("123")),
            change("/data/number", ChangeOp::Changed, json!(5), json!(7)),
            change(
                "/data/quoted key",
                ChangeOp::Changed,
                json!("x"),
                json!("y: z"),
            ),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        out.text,
        "# top comment\nkind: ConfigMap\nmetadata: {name: app, namespace: shop}  # flow\ndata:\n  double: \"it's \\\"new\\\"\"   # d\n  single: 'don''t'\n  plain: \"123\"\n  number: 7\n  \"quoted key\": \"y: z\"\n"
    );
}

#[test]
fn flow_collections_stay_flow() {
    let text = "kind: Deployment\nmetadata:\n  name: app\nspec:\n  args: [\"--listen=:9090\", --verbose]  # flags\n  labels: {a: \"1\", b: two}\n  tail: end\n";
    // A whole list replaced: written in flow style in place.
    let out = set_value(
        text,
        0,
        "/spec/args",
        &json!(["--listen=:9191", "--quiet", "a,b"]),
    )
    .unwrap();
    assert_eq!(
        changed_lines(text, &out),
        vec![(
            5,
            "  args: [\"--listen=:9090\", --verbose]  # flags\n".into(),
            "  args: [\"--listen=:9191\", \"--quiet\", \"a,b\"]  # flags\n".into()
        )]
    );
    // One key of a flow mapping.
    let out = set_value(text, 0, "/spec/labels/b", &json!("three")).unwrap();
    assert_eq!(
        changed_lines(text, &out)[0].2,
        "  labels: {a: \"1\", b: three}\n"
    );
    // A key added to a flow mapping, one removed.
    let out = set_value(text, 0, "/spec/labels/c", &json!(3)).unwrap();
    assert_eq!(
        changed_lines(text, &out)[0].2,
        "  labels: {a: \"1\", b: two, c: 3}\n"
    );
    let out = remove_value(text, 0, "/spec/labels/a").unwrap();
    assert_eq!(changed_lines(text, &out)[0].2, "  labels: {b: two}\n");
    let out = remove_value(text, 0, "/spec/labels/b").unwrap();
    assert_eq!(changed_lines(text, &out)[0].2, "  labels: {a: \"1\"}\n");
    // An item appended to a flow list.
    let out = set_value(text, 0, "/spec/args/2", &json!("--x")).unwrap();
    assert_eq!(
        changed_lines(text, &out)[0].2,
        "  args: [\"--listen=:9090\", --verbose, \"--x\"]  # flags\n"
    );
}

#[test]
fn multi_document_files_keep_other_documents_byte_identical() {
    let text = "# file header\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  k: v1 # first\n---\n# second doc\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\ndata:\n  k: v2\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: three\ndata:\n  k: v3\n";
    let out = adopt_changes(
        text,
        &DocRef {
            kind: "ConfigMap",
            name: "two",
            namespace: None,
            line: None,
        },
        &[change(
            "/data/k",
            ChangeOp::Changed,
            json!("v2"),
            json!("changed"),
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        changed_lines(text, &out.text),
        vec![(15, "  k: v2\n".into(), "  k: changed\n".into())]
    );
}

#[test]
fn anchors_and_aliases_have_no_honest_edit() {
    let text = "kind: Deployment\nmetadata:\n  name: app\n  labels: &labels\n    team: a\nspec:\n  selector:\n    matchLabels: *labels\n  base: &base\n    cpu: 1\n    mem: 2\n  merged:\n    <<: *base\n    mem: 3\n  single: &one solo\n";
    let d = DocRef {
        kind: "Deployment",
        name: "app",
        namespace: None,
        line: None,
    };
    let err = |path: &str, desired: Value, live: Value| {
        adopt_changes(
            text,
            &d,
            &[change(path, ChangeOp::Changed, desired, live)],
            None,
        )
        .unwrap_err()
    };
    // Reached through an alias.
    let e = err("/spec/selector/matchLabels/team", json!("a"), json!("b"));
    assert!(
        matches!(&e, EditError::NoHonestEdit(m) if m.contains("alias")),
        "{e}"
    );
    // Shared through an anchor that an alias repeats.
    let e = err("/metadata/labels/team", json!("a"), json!("b"));
    assert!(
        matches!(&e, EditError::NoHonestEdit(m) if m.contains("anchor")),
        "{e}"
    );
    // Inherited from a merge key.
    let e = err("/spec/merged/cpu", json!(1), json!(4));
    assert!(
        matches!(&e, EditError::NoHonestEdit(m) if m.contains("merge key")),
        "{e}"
    );
    // A key that overrides the merge is its own line: editable, and the anchors stay.
    let out = adopt_changes(
        text,
        &d,
        &[change(
            "/spec/merged/mem",
            ChangeOp::Changed,
            json!(3),
            json!(5),
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        changed_lines(text, &out.text),
        vec![(14, "    mem: 3\n".into(), "    mem: 5\n".into())]
    );
    // An anchor nobody aliases is just a name: editing is honest.
    let out = set_value(text, 0, "/spec/single", &json!("duo")).unwrap();
    assert_eq!(changed_lines(text, &out)[0].2, "  single: &one duo\n");
}

#[test]
fn keyed_lists_map_live_indices_to_git() {
    // Live has an injected sidecar first; Git declares `web` only.
    let text = "kind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n        - name: web # main\n          image: web:1\n          env:\n            - name: A\n              value: \"1\"\n            - name: B\n              value: \"2\"\n";
    let live = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "istio-proxy", "image": "proxy:9"},
        {"name": "web", "image": "web:2", "env": [{"name": "A", "value": "1"}]}
    ]}}}});
    let d = DocRef {
        kind: "Deployment",
        name: "app",
        namespace: None,
        line: None,
    };
    let out = adopt_changes(
        text,
        &d,
        &[
            change(
                "/spec/template/spec/containers/1/image",
                ChangeOp::Changed,
                json!("web:1"),
                json!("web:2"),
            ),
            // Live lacks env B: adopting removes it from Git (found by its name).
            change(
                "/spec/template/spec/containers/1/env/1",
                ChangeOp::MissingLive,
                json!({"name": "B", "value": "2"}),
                Value::Null,
            ),
        ],
        Some(&live),
    )
    .unwrap();
    assert_eq!(
        out.text,
        "kind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n        - name: web # main\n          image: web:2\n          env:\n            - name: A\n              value: \"1\"\n"
    );
}

#[test]
fn fields_are_added_and_removed_on_their_own_lines() {
    let text = "kind: Ingress\nmetadata:\n  name: web\n  labels:\n    a: x # keep me\n    b: y\n  annotations:\n    note: hi\nspec: {}\n";
    let d = DocRef {
        kind: "Ingress",
        name: "web",
        namespace: None,
        line: None,
    };
    // A label Git dropped while driftwarden still owns it live: adopting adds it back.
    let out = adopt_changes(
        text,
        &d,
        &[change(
            "/metadata/labels/c",
            ChangeOp::ExtraLive,
            Value::Null,
            json!("z"),
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        out.text,
        "kind: Ingress\nmetadata:\n  name: web\n  labels:\n    a: x # keep me\n    b: y\n    c: z\n  annotations:\n    note: hi\nspec: {}\n"
    );
    // A field live no longer has: adopting removes its line only.
    let out = adopt_changes(
        text,
        &d,
        &[change(
            "/metadata/labels/b",
            ChangeOp::MissingLive,
            json!("y"),
            Value::Null,
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        out.text,
        "kind: Ingress\nmetadata:\n  name: web\n  labels:\n    a: x # keep me\n  annotations:\n    note: hi\nspec: {}\n"
    );
    // A nested map added where Git has none.
    let out = set_value(text, 0, "/spec/rules", &json!([{"host": "a.example.com"}])).unwrap();
    assert_eq!(
        out,
        "kind: Ingress\nmetadata:\n  name: web\n  labels:\n    a: x # keep me\n    b: y\n  annotations:\n    note: hi\nspec: {rules: [{host: a.example.com}]}\n"
    );
    let out = set_value(
        text,
        0,
        "/metadata/annotations/owner",
        &json!({"team": "sre"}),
    )
    .unwrap();
    assert_eq!(
        out,
        "kind: Ingress\nmetadata:\n  name: web\n  labels:\n    a: x # keep me\n    b: y\n  annotations:\n    note: hi\n    owner:\n      team: sre\nspec: {}\n"
    );
}

#[test]
fn block_scalars_are_rewritten_as_literals_in_place() {
    let text = "kind: ConfigMap\nmetadata:\n  name: app\ndata:\n  features.yaml: | # the flags\n    a: true\n    b: false\n  after: x\n";
    let out = set_value(
        text,
        0,
        "/data/features.yaml",
        &json!("a: true\nb: true\nc: 1\n"),
    )
    .unwrap();
    assert_eq!(
        out,
        "kind: ConfigMap\nmetadata:\n  name: app\ndata:\n  features.yaml: | # the flags\n    a: true\n    b: true\n    c: 1\n  after: x\n"
    );
    let out = set_value(text, 0, "/data/features.yaml", &json!("no newline")).unwrap();
    assert_eq!(
        out,
        "kind: ConfigMap\nmetadata:\n  name: app\ndata:\n  features.yaml: |- # the flags\n    no newline\n  after: x\n"
    );
}

#[test]
fn crlf_files_stay_crlf() {
    let text = "kind: ConfigMap\r\nmetadata:\r\n  name: app\r\ndata:\r\n  a: \"1\"\r\n";
    let out = set_value(text, 0, "/data/b", &json!("2")).unwrap();
    assert_eq!(
        out,
        "kind: ConfigMap\r\nmetadata:\r\n  name: app\r\ndata:\r\n  a: \"1\"\r\n  b: \"2\"\r\n"
    );
}

#[test]
fn a_missing_object_is_removed_with_its_separator_only() {
    let text = demo("bookstore/web.yaml");
    let out = remove_document(&text, &doc("Service", "bookstore-web"))
        .unwrap()
        .unwrap();
    let start = text.find("---\napiVersion: v1\nkind: Service").unwrap();
    let end = text.find("---\napiVersion: autoscaling/v2").unwrap();
    let mut want = text.clone();
    want.replace_range(start..end, "");
    assert_eq!(out, want);
    // The first document of a file: removed with the separator after it; the file's header
    // comment stays.
    let out = remove_document(&text, &doc("Deployment", "bookstore-web"))
        .unwrap()
        .unwrap();
    assert!(out.starts_with("# bookstore-web: the storefront"), "{out}");
    assert!(out.contains("\napiVersion: v1\nkind: Service"), "{out}");
    assert!(!out.contains("kind: Deployment\nmetadata"));
    // A file's only document: the file goes.
    let only = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
    assert_eq!(
        remove_document(
            only,
            &DocRef {
                kind: "ConfigMap",
                name: "x",
                namespace: None,
                line: None
            }
        )
        .unwrap(),
        None
    );
}

#[test]
fn secrets_never_reach_git() {
    let text = demo("bookstore/config.yaml");
    let mut c = change(
        "/data/PAYMENT_API_KEY",
        ChangeOp::Changed,
        json!("(masked)"),
        json!("(masked)"),
    );
    c.masked = true;
    let e = adopt_changes(&text, &doc("Secret", "bookstore-secrets"), &[c], None).unwrap_err();
    assert!(matches!(e, EditError::NoHonestEdit(_)), "{e}");
    let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "(masked)"}});
    assert!(adopted_manifest(&live, "x").is_err());
}

#[test]
fn stale_files_are_reported_not_overwritten() {
    let text = demo("bookstore/web.yaml");
    let e = adopt_changes(
        &text,
        &doc("Deployment", "bookstore-web"),
        &[change(
            "/spec/replicas",
            ChangeOp::Changed,
            json!(4),
            json!(6),
        )],
        None,
    )
    .unwrap_err();
    assert!(matches!(e, EditError::Stale(_)), "{e}");
    let e = adopt_changes(
        &text,
        &doc("Deployment", "gone"),
        &[change(
            "/spec/replicas",
            ChangeOp::Changed,
            json!(3),
            json!(6),
        )],
        None,
    )
    .unwrap_err();
    assert!(matches!(e, EditError::Stale(_)), "{e}");
}

#[test]
fn unmanaged_objects_become_clean_manifests() {
    let live = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "hotfix",
            "namespace": "shop",
            "uid": "1234",
            "resourceVersion": "99",
            "creationTimestamp": "2026-11-21T03:26:30Z",
            "labels": {"team": "sre"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl"}]
        },
        "data": {"FLAG": "on", "port": "8080"},
        "status": {"x": 1}
    });
    let text = adopted_manifest(&live, "Adopted from live by driftwarden.").unwrap();
    assert_eq!(
        text,
        "# Adopted from live by driftwarden.\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hotfix\n  namespace: shop\n  labels:\n    team: sre\ndata:\n  FLAG: \"on\"\n  port: \"8080\"\n"
    );
    // Reading it back gives the object, as data.
    let docs = driftwarden::yaml::parse_documents(&text).unwrap();
    assert_eq!(docs[0].value["data"], json!({"FLAG": "on", "port": "8080"}));
}

#[test]
fn every_demo_file_survives_a_no_op_parse() {
    // Setting a value to what it already is leaves the file byte-identical.
    for f in [
        "bookstore/web.yaml",
        "bookstore/config.yaml",
        "bookstore/ingress.yaml",
        "bookstore/cache.yaml",
    ] {
        let text = demo(f);
        let out = set_value(
            &text,
            0,
            "/metadata/name",
            &driftwarden::yaml::parse_documents(&text).unwrap()[0].value["metadata"]["name"],
        )
        .unwrap();
        assert_eq!(out, text, "{f}");
    }
}

// Regressions found by `tests/properties.rs` (`adoption_laws`): each edit was refused as
// dishonest (or, for `.inf`, would have changed the value) although an honest one exists.

#[test]
fn strings_that_read_as_special_floats_are_quoted() {
    // `.inf` and `.nan` read back as floats, which JSON holds as "inf" and "NaN".
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: x\n";
    for v in [".inf", "-.inf", ".NaN"] {
        let out = set_value(text, 0, "/data/b", &json!(v)).unwrap();
        assert!(out.contains(&format!("b: \"{v}\"")), "{out}");
    }
}

#[test]
fn a_list_at_its_keys_column_can_become_a_scalar_or_empty() {
    // `key:` then `- item` at the key's column: the new value goes on the key's line.
    let text = "spec:\n  args:\n  - -1\n  - b\n  env:\n  - name: A\n    value: x\n";
    assert_eq!(
        set_value(text, 0, "/spec/args", &json!(false)).unwrap(),
        "spec:\n  args: false\n  env:\n  - name: A\n    value: x\n"
    );
    assert_eq!(
        remove_value(text, 0, "/spec/env/0").unwrap(),
        "spec:\n  args:\n  - -1\n  - b\n  env: []\n"
    );
    // Indented under its key, a list is replaced where its first dash stands.
    let text = "args:\n    - a\n    - b\nk: 1\n";
    assert_eq!(
        set_value(text, 0, "/args", &json!(["c"])).unwrap(),
        "args:\n    - c\nk: 1\n"
    );
}

#[test]
fn items_below_their_dash_are_found_past_a_comment() {
    let text = "env:\n- # the first\n  name: A\n  value: x\n- name: B\n  value: y\n";
    assert_eq!(
        remove_value(text, 0, "/env/0").unwrap(),
        "env:\n- name: B\n  value: y\n"
    );
    let text = "env:\n-  # the only one\n  name: A\n";
    assert_eq!(remove_value(text, 0, "/env/0").unwrap(), "env: []\n");
}

#[test]
fn a_list_whose_first_item_is_a_flow_list_is_a_block_list() {
    let text = "a: 1\nkp:\n- []\n- x\n---\nb: 1\n";
    assert_eq!(remove_value(text, 0, "/kp").unwrap(), "a: 1\n---\nb: 1\n");
    assert_eq!(
        remove_value(text, 0, "/kp/1").unwrap(),
        "a: 1\nkp:\n- []\n---\nb: 1\n"
    );
}

#[test]
fn an_appended_item_that_is_a_list_stays_a_list() {
    let text = "spec:\n  ka: []\n  kb:\n  - [1]\n";
    assert_eq!(
        set_value(text, 0, "/spec/ka/0", &json!([false])).unwrap(),
        "spec:\n  ka: [[false]]\n  kb:\n  - [1]\n"
    );
    assert_eq!(
        set_value(text, 0, "/spec/kb/1", &json!([2])).unwrap(),
        "spec:\n  ka: []\n  kb:\n  - [1]\n  - - 2\n"
    );
}
