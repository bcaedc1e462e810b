//! The commands around the tool itself: `version` (and `--version`, and the build metadata in
//! every JSON report), `completion` for each shell (bash's script is run in a real bash), and
//! `man` (the roff page names every command).

#[path = "support/common.rs"]
mod common;

use std::process::Command;

use common::{bin, code, run, stderr, stdout};
use serde_json::Value;

/// `driftwarden version` as `key: value` lines after the first (`driftwarden X.Y.Z`).
fn version_fields() -> (String, String, String) {
    let out = run(bin().arg("version"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    let version = first.strip_prefix("driftwarden ").unwrap().to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    (version, field("commit"), field("build date"))
}

#[test]
fn version_prints_version_commit_and_build_date() {
    let (version, commit, date) = version_fields();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // Built from this Git checkout: the commit is HEAD's when the tests run from one (the build
    // script reads `git rev-parse HEAD`), else `unknown`.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) => assert!(
            commit == h || commit.bytes().all(|b| b.is_ascii_hexdigit()) && commit.len() == 40,
            "commit {commit}, HEAD {h}"
        ),
        None => assert_eq!(commit, "unknown"),
    }
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{date}");
    let (y, m, d): (u32, u32, u32) = (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    );
    assert!(
        y >= 2024 && (1..=12).contains(&m) && (1..=31).contains(&d),
        "{date}"
    );

    // --version and -V print the same three facts on one line.
    for flag in ["--version", "-V"] {
        let out = run(bin().arg(flag));
        assert_eq!(code(&out), 0);
        assert_eq!(
            stdout(&out).trim_end(),
            format!("driftwarden {version} (commit {commit}, built {date})")
        );
    }
}

#[test]
fn every_json_report_carries_the_build_metadata() {
    let (version, commit, date) = version_fields();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    // The offline demo: -o json on stdout and --json-report beside the table.
    let out = run(bin()
        .args(["reconcile", "-o", "table", "--json-report"])
        .arg(&json));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run(bin().args(["diff", "-o", "json"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let from_stdout: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let from_file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for report in [&from_stdout, &from_file] {
        assert_eq!(report["tool_version"], version.as_str());
        assert_eq!(report["tool_commit"], commit.as_str());
        assert_eq!(report["tool_build_date"], date.as_str());
    }
    // A merged report is written by the merging binary.
    let merged = run(bin().args(["report", "merge", "-o", "json"]).arg(&json));
    assert_eq!(code(&merged), 2, "{}", stderr(&merged));
    let merged: Value = serde_json::from_str(&stdout(&merged)).unwrap();
    assert_eq!(merged["tool_commit"], commit.as_str());
}

/// The subcommands clap knows, from `--help`'s command list.
fn subcommands() -> Vec<String> {
    let out = run(bin().arg("--help"));
    let help = stdout(&out);
    let list = &help[help.find("Commands:").unwrap()..help.find("Options:").unwrap()];
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    names
}

#[test]
fn bash_completion_completes_commands_and_flags_in_bash() {
    let out = run(bin().args(["completion", "bash"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("driftwarden.bash");
    std::fs::write(&script, stdout(&out)).unwrap();
    // Source the script in a real bash and ask it what it completes, as the shell does on <TAB>.
    let complete = |words: &str, cword: usize| {
        let probe = format!(
            "source {}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{words}'\n\
             COMP_POINT=${{#COMP_LINE}}\n_driftwarden driftwarden \"${{COMP_WORDS[$COMP_CWORD]}}\" \
             \"${{COMP_WORDS[$COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            script.display()
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &probe])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let all = complete("driftwarden ''", 1);
    for name in subcommands() {
        assert!(all.contains(&name), "{name} not completed: {all:?}");
    }
    assert_eq!(
        complete("driftwarden rec", 1),
        vec!["reconcile".to_string()]
    );
    let flags = complete("driftwarden reconcile --dry", 2);
    assert_eq!(flags, vec!["--dry-run".to_string()]);
    let shells = complete("driftwarden completion ''", 2);
    for s in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.contains(&s.to_string()), "{shells:?}");
    }
}

#[test]
fn zsh_fish_and_powershell_scripts_name_every_command() {
    let commands = subcommands();
    for (shell, marker) in [
        ("zsh", "#compdef driftwarden"),
        ("fish", "complete -c driftwarden"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(bin().args(["completion", shell]));
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker}");
        for name in &commands {
            assert!(
                script.contains(name.as_str()),
                "{shell} script lacks {name}"
            );
        }
    }
    // An unknown shell is invalid input.
    let out = run(bin().args(["completion", "tcsh"]));
    assert_eq!(code(&out), 2, "clap's usage error");
    assert!(
        stderr(&out).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn man_page_is_roff_naming_every_command() {
    let out = run(bin().arg("man"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &page[..80.min(page.len())]
    );
    assert!(page.contains(".TH driftwarden 1"), "{page}");
    assert!(page.contains(env!("CARGO_PKG_VERSION")));
    for name in subcommands() {
        // roff escapes every hyphen.
        let reference = format!("driftwarden-{name}(1)").replace('-', "\\-");
        assert!(page.contains(&reference), "{name}");
    }

    // --dir writes one page per command.
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin().arg("man").arg("--dir").arg(dir.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(dir.path().join("driftwarden.1").is_file());
    for name in subcommands() {
        let sub = dir.path().join(format!("driftwarden-{name}.1"));
        let text = std::fs::read_to_string(&sub).unwrap_or_else(|e| panic!("{sub:?}: {e}"));
        assert!(text.contains(".TH driftwarden-"), "{name}");
    }
}
