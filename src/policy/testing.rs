//! `driftwarden policy test`: runs every `test_*` rule of every package, the way `opa test` does.
//! regorus has no test runner, so the rules are discovered from the parsed modules. A test passes
//! only when it evaluates to `true`; `false`, undefined and errors fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regorus::unstable::{Rule, RuleHead};
use serde::Serialize;

use super::Result;
use super::engine::{PolicyConfig, rego_path};
use super::loader;

/// One test rule's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    /// The rule's full path: `data.driftwarden.kubernetes_test.test_image_is_risky`.
    pub name: String,
    /// The file that declares it.
    pub file: String,
    pub passed: bool,
    /// Why it failed: `result was false`, `result was undefined`, or the evaluation error.
    pub error: Option<String>,
}

/// All test results, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub outcomes: Vec<TestOutcome>,
    pub passed: usize,
    pub failed: usize,
}

/// Line coverage of one policy file (test files excluded), from regorus' coverage feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileCoverage {
    pub file: String,
    pub covered: BTreeSet<u32>,
    pub not_covered: BTreeSet<u32>,
}

impl FileCoverage {
    /// Covered share of the lines regorus tracks, 0.0–100.0.
    pub fn percent(&self) -> f64 {
        let total = self.covered.len() + self.not_covered.len();
        if total == 0 {
            100.0
        } else {
            self.covered.len() as f64 * 100.0 / total as f64
        }
    }
}

/// Runs every `test_*` rule definition found in `cfg.dirs` (with the directories' data files and
/// `cfg.data_files` loaded, as classification sees them). `filter` keeps the tests whose full
/// name contains it. Like `opa test`, each definition of a test name runs and is reported on its
/// own: the second `test_a` of a package is `test_a#01`, the third `test_a#02`. A construct
/// regorus would evaluate differently from OPA is a failed test carrying the refusal.
///
/// Fails only when the policies cannot be loaded (compile error, missing builtin, bad data); a
/// failing test is an outcome, not an error.
pub fn run_tests(cfg: &PolicyConfig, filter: Option<&str>) -> Result<TestReport> {
    Ok(run(cfg, filter, false)?.0)
}

/// [`run_tests`] with line coverage of the non-test policy files (`policy test --coverage`).
pub fn run_tests_with_coverage(
    cfg: &PolicyConfig,
    filter: Option<&str>,
) -> Result<(TestReport, Vec<FileCoverage>)> {
    run(cfg, filter, true)
}

fn run(
    cfg: &PolicyConfig,
    filter: Option<&str>,
    coverage: bool,
) -> Result<(TestReport, Vec<FileCoverage>)> {
    let mut loaded = loader::load(
        &cfg.dirs,
        &cfg.data_files,
        loader::LoadOptions {
            include_tests: true,
            strict_builtins: cfg.strict_builtins,
            refusals: loader::Refusals::Collect,
        },
    )?;
    loader::prepare(&mut loaded.engine)?;

    let mut report = TestReport::default();
    for refusal in &loaded.refusals {
        report.failed += 1;
        report.outcomes.push(TestOutcome {
            name: format!("{}:{}:{}", refusal.file, refusal.line, refusal.col),
            file: refusal.file.clone(),
            passed: false,
            error: Some(refusal.to_string()),
        });
    }

    let asts = loaded.engine.get_modules().clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lines: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
    for (module, ast) in loaded.modules.iter().zip(asts.iter()) {
        for rule in &ast.policy {
            let Rule::Spec {
                head: RuleHead::Compr { refr, .. },
                ..
            } = rule.as_ref()
            else {
                continue;
            };
            let Ok(comps) = loader::ref_components(refr, &module.file) else {
                continue;
            };
            let [test] = comps.as_slice() else {
                continue;
            };
            if !test.starts_with("test_") {
                continue;
            }
            let base = format!("{}.{test}", rego_path(&module.package));
            let count = seen.entry(base.clone()).or_insert(0);
            let name = match *count {
                0 => base,
                n => format!("{base}#{n:02}"),
            };
            *count += 1;
            if filter.is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let mut engine = loaded.engine.clone();
            if coverage {
                engine.set_enable_coverage(true);
            }
            let error = match engine.eval_rule_in_module(ast, rule, false) {
                Ok(data) => {
                    let mut value = &data;
                    for key in module.package.iter().chain(std::iter::once(test)) {
                        value = &value[&regorus::Value::from(key.as_str())];
                    }
                    match value {
                        regorus::Value::Bool(true) => None,
                        regorus::Value::Undefined => Some("result was undefined".to_string()),
                        other => Some(format!("result was {other}")),
                    }
                }
                Err(e) => Some(format!("{e:#}").trim().to_string()),
            };
            if coverage && let Ok(cov) = engine.get_coverage_report() {
                for f in cov.files {
                    let entry = lines.entry(f.path).or_default();
                    entry.0.extend(f.covered);
                    entry.1.extend(f.not_covered);
                }
            }
            let passed = error.is_none();
            if passed {
                report.passed += 1;
            } else {
                report.failed += 1;
            }
            report.outcomes.push(TestOutcome {
                name,
                file: module.file.clone(),
                passed,
                error,
            });
        }
    }

    let test_files: BTreeSet<&str> = loaded
        .modules
        .iter()
        .filter(|m| m.is_test)
        .map(|m| m.file.as_str())
        .collect();
    let files = lines
        .into_iter()
        .filter(|(file, _)| !test_files.contains(file.as_str()) && !file.starts_with('<'))
        .map(|(file, (covered, not_covered))| FileCoverage {
            not_covered: not_covered.difference(&covered).copied().collect(),
            covered,
            file,
        })
        .collect();
    Ok((report, files))
}

/// The report as `policy test` prints it: failures (every test with `verbose`) grouped by file,
/// then a last line that is exactly `N passed, N failed` (ending in a newline).
pub fn render_test_report(r: &TestReport, verbose: bool) -> String {
    let mut out = String::new();
    let mut current_file: Option<&str> = None;
    for o in r.outcomes.iter().filter(|o| verbose || !o.passed) {
        if current_file != Some(o.file.as_str()) {
            if current_file.is_some() {
                out.push('\n');
            }
            out.push_str(&format!("{}:\n", o.file));
            current_file = Some(&o.file);
        }
        let status = if o.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!("{}: {status}\n", o.name));
        if let Some(e) = &o.error {
            for line in e.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    if !out.is_empty() {
        out.push_str(&format!("{}\n", "-".repeat(80)));
    }
    out.push_str(&format!("{} passed, {} failed\n", r.passed, r.failed));
    out
}

/// Coverage as `policy test --coverage` prints it, after the test results: a `coverage:` header,
/// one line per policy file with its share of covered lines, the covered and tracked line counts
/// and the lines no test reached (as ranges, like `opa test --coverage`), then the total:
///
/// ```text
/// coverage:
/// policies/aws.rego: 97.3% (73/75 lines); not covered: 40-41
/// policies/lib.rego: 100.0% (31/31 lines)
/// total: 98.1% (104/106 lines)
/// ```
pub fn render_coverage(files: &[FileCoverage]) -> String {
    let mut out = String::from("coverage:\n");
    let (mut covered, mut tracked) = (0, 0);
    for f in files {
        let total = f.covered.len() + f.not_covered.len();
        covered += f.covered.len();
        tracked += total;
        out.push_str(&format!(
            "{}: {:.1}% ({}/{} lines)",
            f.file,
            f.percent(),
            f.covered.len(),
            total
        ));
        if !f.not_covered.is_empty() {
            out.push_str(&format!("; not covered: {}", line_ranges(&f.not_covered)));
        }
        out.push('\n');
    }
    let percent = if tracked == 0 {
        100.0
    } else {
        covered as f64 * 100.0 / tracked as f64
    };
    out.push_str(&format!(
        "total: {percent:.1}% ({covered}/{tracked} lines)\n"
    ));
    out
}

/// Line numbers as ranges: `3, 7-9, 12`.
fn line_ranges(lines: &BTreeSet<u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &n in lines {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(n) => *end = n,
            _ => ranges.push((n, n)),
        }
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ends_with_counts() {
        let r = TestReport {
            outcomes: vec![
                TestOutcome {
                    name: "data.p.test_a".into(),
                    file: "p_test.rego".into(),
                    passed: true,
                    error: None,
                },
                TestOutcome {
                    name: "data.p.test_b".into(),
                    file: "p_test.rego".into(),
                    passed: false,
                    error: Some("result was false".into()),
                },
            ],
            passed: 1,
            failed: 1,
        };
        let quiet = render_test_report(&r, false);
        assert!(!quiet.contains("test_a"));
        assert!(quiet.contains("data.p.test_b: FAIL\n    result was false"));
        assert!(quiet.ends_with("\n1 passed, 1 failed\n"));
        let verbose = render_test_report(&r, true);
        assert!(verbose.contains("data.p.test_a: PASS"));
        assert_eq!(
            render_test_report(&TestReport::default(), false),
            "0 passed, 0 failed\n"
        );
    }

    #[test]
    fn coverage_lists_files_ranges_and_total() {
        let files = vec![
            FileCoverage {
                file: "policies/a.rego".into(),
                covered: [1, 2, 5].into_iter().collect(),
                not_covered: [3, 4, 7, 9, 10, 11].into_iter().collect(),
            },
            FileCoverage {
                file: "policies/b.rego".into(),
                covered: [4].into_iter().collect(),
                not_covered: BTreeSet::new(),
            },
        ];
        assert_eq!(
            render_coverage(&files),
            "coverage:\n\
             policies/a.rego: 33.3% (3/9 lines); not covered: 3-4, 7, 9-11\n\
             policies/b.rego: 100.0% (1/1 lines)\n\
             total: 40.0% (4/10 lines)\n"
        );
        assert_eq!(
            render_coverage(&[]),
            "coverage:\ntotal: 100.0% (0/0 lines)\n"
        );
    }
}
