//! The Git desired source against real repositories made in temp dirs: refs (branch, tag,
//! commit), subdirectories, include/exclude globs, provenance, a bare repository reached by a
//! file:// URL, and the promise that the user's work tree and index are never touched.

#[path = "support/common.rs"]
mod common;

use std::path::Path;

use common::commit_files;
use driftwarden::config::{DesiredLocation, DesiredSource, GitSource};
use driftwarden::desired::{self, DesiredError};
use git2::{Repository, Signature};

fn cm(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: shop\ndata:\n  key: {value}\n"
    )
}

fn source(repo: &str, reference: &str, path: &str) -> DesiredSource {
    DesiredSource {
        location: DesiredLocation::Git(GitSource {
            repo: repo.to_string(),
            reference: reference.to_string(),
            token_env: None,
            ssh_key: None,
        }),
        path: path.to_string(),
        include: vec!["**/*.yaml".into(), "**/*.yml".into(), "**/*.json".into()],
        exclude: Vec::new(),
        render: None,
    }
}

fn names(set: &desired::DesiredSet) -> Vec<String> {
    set.objects
        .iter()
        .map(|o| o.value["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    first: git2::Oid,
    second: git2::Oid,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gitops");
    let repo = Repository::init(&path).unwrap();
    let first = commit_files(
        &repo,
        &[
            ("apps/shop/a.yaml", &cm("a", "one")),
            ("apps/shop/nested/b.yml", &cm("b", "one")),
            ("apps/shop/README.md", "not a manifest"),
            ("apps/other/c.yaml", &cm("c", "one")),
        ],
        "first",
    );
    let sig = Signature::now("Test", "test@example.com").unwrap();
    repo.tag(
        "v1",
        &repo.find_object(first, None).unwrap(),
        &sig,
        "v1",
        false,
    )
    .unwrap();
    let second = commit_files(
        &repo,
        &[(
            "apps/shop/a.yaml",
            &format!("# changed\n{}---\n{}", cm("a", "two"), cm("d", "two")),
        )],
        "second",
    );
    Fixture {
        _dir: dir,
        path,
        first,
        second,
    }
}

#[test]
fn reads_head_subdir_with_provenance() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    let set = desired::load(
        &source(f.path.to_str().unwrap(), "HEAD", "apps/shop"),
        cache.path(),
    )
    .unwrap();
    assert_eq!(names(&set), vec!["a", "d", "b"]);
    assert_eq!(set.commit.as_deref(), Some(f.second.to_string().as_str()));
    let a = &set.objects[0];
    assert_eq!(a.file, "apps/shop/a.yaml");
    assert_eq!(a.line, 2, "the document starts after the comment");
    assert_eq!(set.objects[1].line, 10);
}

#[test]
fn reads_tag_and_commit_refs() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    let repo = f.path.to_str().unwrap();
    let at_tag = desired::load(&source(repo, "v1", "apps/shop"), cache.path()).unwrap();
    assert_eq!(names(&at_tag), vec!["a", "b"]);
    assert_eq!(at_tag.objects[0].value["data"]["key"], "one");
    let at_commit =
        desired::load(&source(repo, &f.first.to_string(), "apps"), cache.path()).unwrap();
    assert_eq!(names(&at_commit), vec!["c", "a", "b"]);
    let branch = desired::load(&source(repo, "master", "apps/shop"), cache.path())
        .or_else(|_| desired::load(&source(repo, "main", "apps/shop"), cache.path()))
        .unwrap();
    assert_eq!(
        branch.commit.as_deref(),
        Some(f.second.to_string().as_str())
    );
}

#[test]
fn include_and_exclude_globs() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    let mut src = source(f.path.to_str().unwrap(), "HEAD", "apps/shop");
    src.exclude = vec!["nested/**".into()];
    let set = desired::load(&src, cache.path()).unwrap();
    assert_eq!(names(&set), vec!["a", "d"]);
    src.exclude = Vec::new();
    src.include = vec!["**/*.yml".into()];
    let set = desired::load(&src, cache.path()).unwrap();
    assert_eq!(names(&set), vec!["b"]);
}

#[test]
fn never_touches_work_tree_or_index() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    // An uncommitted edit and a staged file: both must stay exactly as they are, and neither is
    // read (desired state is what is committed at the ref).
    let dirty = f.path.join("apps/shop/a.yaml");
    std::fs::write(&dirty, cm("a", "uncommitted")).unwrap();
    std::fs::write(f.path.join("apps/shop/staged.yaml"), cm("s", "x")).unwrap();
    let repo = Repository::open(&f.path).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("apps/shop/staged.yaml")).unwrap();
    index.write().unwrap();
    let index_before = std::fs::read(f.path.join(".git/index")).unwrap();
    let head_before = std::fs::read(f.path.join(".git/HEAD")).unwrap();

    let set = desired::load(
        &source(f.path.to_str().unwrap(), "v1", "apps/shop"),
        cache.path(),
    )
    .unwrap();
    assert_eq!(names(&set), vec!["a", "b"]);
    assert_eq!(set.objects[0].value["data"]["key"], "one");

    assert_eq!(
        std::fs::read_to_string(&dirty).unwrap(),
        cm("a", "uncommitted")
    );
    assert_eq!(
        std::fs::read(f.path.join(".git/index")).unwrap(),
        index_before
    );
    assert_eq!(
        std::fs::read(f.path.join(".git/HEAD")).unwrap(),
        head_before
    );
}

#[test]
fn bare_remote_over_file_url_is_fetched_into_cache() {
    let f = fixture();
    let remote_dir = tempfile::tempdir().unwrap();
    let bare = remote_dir.path().join("remote.git");
    Repository::init_bare(&bare).unwrap();
    let repo = Repository::open(&f.path).unwrap();
    let mut remote = repo.remote("origin", bare.to_str().unwrap()).unwrap();
    let head = repo.head().unwrap();
    let branch = head.shorthand().unwrap().to_string();
    remote
        .push(
            &[
                format!("refs/heads/{branch}:refs/heads/{branch}"),
                "refs/tags/v1:refs/tags/v1".to_string(),
            ],
            None,
        )
        .unwrap();
    // Make the bare repository's HEAD point at the pushed branch.
    Repository::open_bare(&bare)
        .unwrap()
        .set_head(&format!("refs/heads/{branch}"))
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bare.display());
    let at_head = desired::load(&source(&url, "HEAD", "apps/shop"), cache.path()).unwrap();
    assert_eq!(names(&at_head), vec!["a", "d", "b"]);
    assert_eq!(at_head.source, url);
    let at_branch = desired::load(&source(&url, &branch, "apps/shop"), cache.path()).unwrap();
    assert_eq!(at_branch.commit, at_head.commit);
    let at_tag = desired::load(&source(&url, "v1", "apps/shop"), cache.path()).unwrap();
    assert_eq!(names(&at_tag), vec!["a", "b"]);
    // The cache is a bare repository named by a hash: nothing of the URL in the path.
    let cached: Vec<_> = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
}

#[test]
fn missing_ref_path_and_repo_are_input_errors() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    let repo = f.path.to_str().unwrap();
    let e = desired::load(&source(repo, "no-such-branch", ""), cache.path()).unwrap_err();
    assert!(e.is_invalid_input());
    assert!(
        e.to_string()
            .contains("ref `no-such-branch` does not exist"),
        "{e}"
    );
    let e = desired::load(&source(repo, "HEAD", "apps/nope"), cache.path()).unwrap_err();
    assert!(
        matches!(e, DesiredError::Git(_)) && e.is_invalid_input(),
        "{e}"
    );
    assert!(e.to_string().contains("apps/nope"), "{e}");
    let e = desired::load(&source("/no/such/repo", "HEAD", ""), cache.path()).unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
}

#[test]
fn broken_manifest_in_git_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    commit_files(
        &repo,
        &[(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: [unclosed\n",
        )],
        "bad",
    );
    let cache = tempfile::tempdir().unwrap();
    let e = desired::load(
        &source(dir.path().to_str().unwrap(), "HEAD", ""),
        cache.path(),
    )
    .unwrap_err();
    assert!(e.is_invalid_input());
    let text = e.to_string();
    assert!(text.starts_with("bad.yaml:"), "{text}");
}

/// Both renderer cases in one test: they change PATH, which the process shares.
#[test]
fn renderers_run_from_path_and_a_missing_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "resources: []\n").unwrap();
    let src = DesiredSource {
        location: DesiredLocation::Dir(dir.path().to_path_buf()),
        path: String::new(),
        include: vec!["**/*.yaml".into()],
        exclude: Vec::new(),
        render: Some(driftwarden::config::Render::Kustomize),
    };
    // An empty PATH stands for a machine without kustomize.
    let e = with_path("", || desired::load(&src, dir.path())).unwrap_err();
    assert!(
        e.to_string().contains("`kustomize` was not found on PATH"),
        "{e}"
    );
    assert!(
        !e.is_invalid_input(),
        "a missing binary is the machine's fault, not the input's"
    );

    // A stand-in `helm` that records its arguments and prints two rendered documents, the way
    // `helm template` does (with `# Source:` comments).
    let bin = tempfile::tempdir().unwrap();
    let args_file = bin.path().join("args");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {}\ncat <<'YAML'\n---\n# Source: web/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n---\n# Source: web/templates/svc.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nYAML\n",
        args_file.display()
    );
    let helm = bin.path().join("helm");
    std::fs::write(&helm, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(chart.path().join("charts/web/templates")).unwrap();
    std::fs::write(
        chart.path().join("charts/web/Chart.yaml"),
        "name: web\nversion: 1.0.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.path().join("charts/web/values-prod.yaml"),
        "replicas: 3\n",
    )
    .unwrap();
    let src = DesiredSource {
        location: DesiredLocation::Dir(chart.path().to_path_buf()),
        path: "charts/web".into(),
        include: vec!["**/*.yaml".into()],
        exclude: Vec::new(),
        render: Some(driftwarden::config::Render::Helm {
            release: "web".into(),
            values: vec!["values-prod.yaml".into()],
            namespace: Some("shop".into()),
        }),
    };
    let set = with_path(&format!("{}:/usr/bin:/bin", bin.path().display()), || {
        desired::load(&src, chart.path())
    })
    .unwrap();
    assert_eq!(names(&set), vec!["web-config", "web"]);
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(args.starts_with("template web "), "{args}");
    assert!(args.contains("--namespace shop"), "{args}");
    assert!(args.contains("values-prod.yaml"), "{args}");
    assert!(
        set.objects[0].file.contains("helm template web charts/web"),
        "{}",
        set.objects[0].file
    );
}

fn with_path<T>(path: &str, f: impl FnOnce() -> T) -> T {
    let old = std::env::var_os("PATH");
    // SAFETY: no other test in this binary reads PATH (git2 does not use it).
    unsafe { std::env::set_var("PATH", path) };
    let out = f();
    if let Some(p) = old {
        unsafe { std::env::set_var("PATH", p) };
    }
    out
}
