//! The policy engine: loads Rego policies and data once, then classifies drifts.
//!
//! How a verdict is made (docs/policy.md, "Verdicts"):
//! 1. Every package `driftwarden.<name>` that declares `classify` contributes findings
//!    `{"class", "reason", "rule"?, "path"?}`. A package `driftwarden` may also declare
//!    `verdict` (`{"class", "reasons", "rules"?}`), a finding for the whole drift.
//! 2. One evaluation per drift collects them all through a generated module
//!    ([`AGGREGATE_PACKAGE`]); the shapes are checked here, so a wrong one names its rule and file.
//! 3. A finding with a `path` applies to the field changes at, under or above that JSON pointer;
//!    one without applies to every change. A change's class is the most severe finding that
//!    applies to it; a change none applies to is `risky` (fail safe).
//! 4. The drift's class is the most severe of all findings and of its changes' classes; its
//!    reasons and rules are those of the findings at that class. No finding at all: `risky`,
//!    [`DEFAULT_REASON`], [`DEFAULT_RULE`].
//! 5. A finding may carry a `remedy` (`adopt`, `unpin`, `revert`): what a pull request does with
//!    the changes it applies to. A change's remedy comes from the findings at its class that set
//!    one, the most conservative winning (`revert` over `unpin` over `adopt`); none: `adopt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regorus::Engine;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::DeserializationResult;
use regorus::rvm::{Program, RegoVM};
use serde_json::{Map, Value, json};

use super::input::{InputBuilder, KeyCache, RunContext, to_rego};
use super::loader::{self, Loaded, ModuleInfo};
use super::{DEFAULT_REASON, DEFAULT_RULE, PolicyError, Result};
use crate::model::{Class, Drift, Mode, Remedy, Verdict};

/// The generated package that gathers every package's findings in one evaluation.
pub const AGGREGATE_PACKAGE: &str = "driftwarden_engine";
const AGGREGATE_RULE: &str = "data.driftwarden_engine.results";
const AGGREGATE_FILE: &str = "<driftwarden: generated aggregate module>";
/// The key under which the aggregate reports `data.driftwarden.verdict`.
const VERDICT_KEY: &str = "@verdict";
/// Rule names conftest policies answer with.
const CONFTEST_RULES: [&str; 3] = ["deny", "violation", "warn"];

/// One directory (or single file) of policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDir {
    pub path: PathBuf,
    /// Parse this directory's policies as Rego v0 (`deny[msg] { ... }`), for existing libraries
    /// written before OPA 1.0. Rego v1 otherwise.
    pub rego_v0: bool,
}

impl PolicyDir {
    /// A Rego v1 directory.
    pub fn new(path: impl Into<PathBuf>) -> PolicyDir {
        PolicyDir {
            path: path.into(),
            rego_v0: false,
        }
    }

    /// A Rego v0 directory.
    pub fn v0(path: impl Into<PathBuf>) -> PolicyDir {
        PolicyDir {
            path: path.into(),
            rego_v0: true,
        }
    }
}

/// Where policies and their parameters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Directories searched recursively for `*.rego` (tests, `*_test.rego`, are left out of
    /// classification) and for data: every `.json`, `.yaml` and `.yml` file, at the path of its
    /// directory, as `opa test DIR` loads it.
    pub dirs: Vec<PolicyDir>,
    /// Extra JSON or YAML data files, merged at the root of `data` after the directories' ones.
    pub data_files: Vec<PathBuf>,
    /// A builtin error is an error (`--strict-builtins`, `policies.strict_builtins`), not
    /// undefined as in OPA's default. Either way a drift whose evaluation meets one is never safe.
    pub strict_builtins: bool,
}

impl Default for PolicyConfig {
    /// The default library: `policies/`, Rego v1.
    fn default() -> Self {
        PolicyConfig {
            dirs: vec![PolicyDir::new("policies")],
            data_files: Vec::new(),
            strict_builtins: false,
        }
    }
}

/// A package that classifies (declares `classify`).
#[derive(Debug, Clone)]
struct Classifier {
    /// The package path without `data`, e.g. `["driftwarden", "kubernetes"]`.
    package: Vec<String>,
    /// How its rules are named in verdicts: the package path without `driftwarden.`.
    short: String,
    files: String,
}

/// A conftest-style package (declares `deny`, `violation` or `warn`).
#[derive(Debug, Clone)]
struct ConftestPackage {
    package: Vec<String>,
    rules: Vec<&'static str>,
}

/// The compiled policies, ready to classify. Load once with [`PolicyEngine::load`]; the engine is
/// cloned per [`classify`](PolicyEngine::classify) call, so one `PolicyEngine` can serve many
/// threads.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    /// The interpreter, with builtin errors as errors: an evaluation on the interpreter tries it
    /// first, so that a builtin error is always noticed (the compiled program reads a failing
    /// rule as undefined and cannot tell).
    engine: Engine,
    /// The interpreter with builtin errors as undefined (OPA's default), for the evaluations the
    /// strict one stops on; `None` with `strict_builtins`.
    lax: Option<Engine>,
    /// The aggregate rule compiled to regorus' virtual machine, when every construct the
    /// policies use compiles (see [`Evaluator`]); `None` falls back to the tree interpreter.
    compiled: Option<Compiled>,
    /// Why the policies run on the interpreter, when they do.
    interpreted_because: Option<String>,
    classifiers: Vec<Classifier>,
    /// Files of package `driftwarden` that declare `verdict`, when any does.
    verdict_files: Option<String>,
    conftest: Vec<ConftestPackage>,
}

/// What the policies said about one input: the drift's verdict and one class per change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assessment {
    /// A builtin failed during the evaluation and was read as undefined (OPA's default); the
    /// verdict is then never safe.
    pub builtin_error: bool,
    pub verdict: Verdict,
    pub change_classes: Vec<Class>,
}

#[derive(Debug, Clone, PartialEq)]
struct Finding {
    class: Class,
    reason: String,
    rule: String,
    path: Option<String>,
    /// What a pull request does with the changes it applies to; `None`: not said (adopt).
    remedy: Option<Remedy>,
}

impl PolicyEngine {
    /// Loads and compiles every policy and data file. Fails on a syntax or compile error (with
    /// file and line), a call to a builtin regorus lacks, an unreadable directory or a bad data
    /// file.
    pub fn load(cfg: &PolicyConfig) -> Result<PolicyEngine> {
        let Loaded {
            mut engine,
            modules,
            interpreter_only,
            ..
        } = loader::load(
            &cfg.dirs,
            &cfg.data_files,
            loader::LoadOptions {
                include_tests: false,
                strict_builtins: true,
                refusals: loader::Refusals::Fail,
            },
        )?;

        let mut classifiers: Vec<Classifier> = Vec::new();
        let mut conftest: Vec<ConftestPackage> = Vec::new();
        let mut verdict_files: Vec<&str> = Vec::new();
        for m in &modules {
            let in_driftwarden = m.package.first().is_some_and(|p| p == "driftwarden");
            if in_driftwarden && m.package.len() > 1 && m.rules.contains("classify") {
                add_classifier(&mut classifiers, m);
            }
            if in_driftwarden && m.package.len() == 1 && m.rules.contains("verdict") {
                verdict_files.push(&m.file);
            }
            let rules: Vec<&'static str> = CONFTEST_RULES
                .into_iter()
                .filter(|r| m.rules.contains(*r))
                .collect();
            if !rules.is_empty() {
                match conftest.iter_mut().find(|c| c.package == m.package) {
                    Some(c) => {
                        for r in rules {
                            if !c.rules.contains(&r) {
                                c.rules.push(r);
                            }
                        }
                    }
                    None => conftest.push(ConftestPackage {
                        package: m.package.clone(),
                        rules,
                    }),
                }
            }
        }
        let verdict_files = (!verdict_files.is_empty()).then(|| verdict_files.join(", "));

        let aggregate = aggregate_module(&classifiers, verdict_files.is_some());
        engine.set_rego_v0(false);
        engine
            .add_policy(AGGREGATE_FILE.to_string(), aggregate)
            .map_err(|e| loader::compile_error(AGGREGATE_FILE, &e))?;
        loader::prepare(&mut engine)?;
        let lax = (!cfg.strict_builtins).then(|| {
            let mut lax = engine.clone();
            lax.set_strict_builtin_errors(false);
            lax
        });
        let (compiled, interpreted_because) = if classifiers.is_empty() && verdict_files.is_none() {
            (None, Some("no package classifies".to_string()))
        } else if cfg.strict_builtins {
            // The program reads a failing rule body as undefined and cannot report the error.
            (
                None,
                Some("strict builtins: only the interpreter reports a builtin error".to_string()),
            )
        } else if let Some(why) = interpreter_only {
            tracing::info!("classifying with the policy interpreter: {why}");
            (None, Some(why))
        } else {
            match Compiled::new(&mut engine) {
                Ok(c) => (Some(c), None),
                Err(why) => {
                    tracing::info!("classifying with the policy interpreter: {why}");
                    (None, Some(why))
                }
            }
        };

        Ok(PolicyEngine {
            engine,
            lax,
            compiled,
            interpreted_because,
            classifiers,
            verdict_files,
            conftest,
        })
    }

    /// An engine with no policies: every drift gets the fail-safe verdict (`risky`). For a run whose
    /// configured policy directory does not exist ([`PolicyError::MissingDir`]), where the
    /// configuration documents that drift is then unclassified rather than an error.
    pub fn empty() -> Result<PolicyEngine> {
        PolicyEngine::load(&PolicyConfig {
            dirs: Vec::new(),
            data_files: Vec::new(),
            strict_builtins: false,
        })
    }

    /// True when some loaded package classifies drift (`driftwarden.*.classify` or
    /// `data.driftwarden.verdict`).
    pub fn has_classifiers(&self) -> bool {
        !self.classifiers.is_empty() || self.verdict_files.is_some()
    }

    /// The packages that classify, as named in verdicts (`kubernetes`, `aws`, ...).
    pub fn packages(&self) -> Vec<String> {
        self.classifiers.iter().map(|c| c.short.clone()).collect()
    }

    /// Classifies every drift in place: sets `drift.verdict` and each change's `class`.
    ///
    /// Stops at the first policy failure (evaluation error, malformed finding); the caller must
    /// then act on nothing. Drifts before the failing one keep their new verdicts.
    pub fn classify(&self, drifts: &mut [Drift], ctx: &RunContext) -> Result<()> {
        self.classify_with(self.evaluator(), drifts, ctx)
    }

    /// [`classify`](Self::classify) through regorus' tree interpreter even when the policies are
    /// compiled: the reference the compiled program is checked against (tests, benchmarks), and
    /// what `policy test` runs.
    pub fn classify_interpreted(&self, drifts: &mut [Drift], ctx: &RunContext) -> Result<()> {
        let eval = Evaluator::Interpreter(Box::new(self.engine.clone()));
        self.classify_with(eval, drifts, ctx)
    }

    fn classify_with(
        &self,
        mut eval: Evaluator,
        drifts: &mut [Drift],
        ctx: &RunContext,
    ) -> Result<()> {
        let mut inputs = InputBuilder::new(ctx);
        // In autocorrect mode a safe verdict leads to a live write with no person in the loop:
        // the reference interpreter confirms each one the compiled program gives.
        let confirm = ctx.mode == Mode::Autocorrect && matches!(eval, Evaluator::Vm(_));
        let mut reference: Option<Evaluator> = None;
        for drift in drifts.iter_mut() {
            let input = inputs.input(drift);
            let paths: Vec<&str> = drift.changes.iter().map(|c| c.path.as_str()).collect();
            let subject = format!("{} (target {})", drift.resource.display, drift.target);
            let again = confirm.then(|| input.clone());
            let mut assessment = self.assess(&mut eval, input, &paths, &subject)?;
            if let Some(input) = again.filter(|_| assessment.verdict.class == Class::Safe) {
                let reference = reference
                    .get_or_insert_with(|| Evaluator::Interpreter(Box::new(self.engine.clone())));
                let expected = self.assess(reference, input, &paths, &subject)?;
                if expected.builtin_error {
                    // The program read a failing builtin as undefined; the interpreter's
                    // fail-safe answer (never safe) stands.
                    assessment = expected;
                } else if expected != assessment {
                    return Err(PolicyError::Eval {
                        subject,
                        message: format!(
                            "the compiled policy program and the interpreter disagree \
                             (compiled: {:?}; interpreter: {:?}); nothing is corrected",
                            assessment.verdict, expected.verdict
                        ),
                    });
                }
            }
            for (change, class) in drift.changes.iter_mut().zip(assessment.change_classes) {
                change.class = Some(class);
            }
            drift.verdict = Some(assessment.verdict);
        }
        Ok(())
    }

    /// [`classify`](Self::classify) on `threads` threads (at least one), each with its own clone
    /// of the engine, over contiguous chunks of `drifts`. Same result as `classify`; on a policy
    /// failure the first error (in drift order) is returned.
    pub fn classify_parallel(
        &self,
        drifts: &mut [Drift],
        ctx: &RunContext,
        threads: usize,
    ) -> Result<()> {
        let threads = threads.max(1).min(drifts.len().max(1));
        if threads == 1 {
            return self.classify(drifts, ctx);
        }
        let chunk = drifts.len().div_ceil(threads);
        // Each thread evaluates on its own copy of the program and the data: values shared
        // between threads would have their reference counts bounced between the cores on every
        // load, which costs more than the copies (docs/performance.md).
        let program = self
            .compiled
            .as_ref()
            .and_then(|c| c.program.serialize_binary().ok());
        let program = program.as_deref();
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = drifts
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let eval = program
                            .and_then(|bytes| self.compiled.as_ref()?.private_vm(bytes))
                            .map(|vm| Evaluator::Vm(Box::new(vm)))
                            .unwrap_or_else(|| self.evaluator());
                        self.classify_with(eval, part, ctx)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(PolicyError::Eval {
                            subject: "a classification thread".into(),
                            message: "the thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// Evaluates one input document (schema v1) and returns the drift's verdict.
    pub fn evaluate(&self, input: &Value) -> Result<Verdict> {
        Ok(self.evaluate_detailed(input)?.verdict)
    }

    /// Like [`evaluate`](Self::evaluate), with the class of each of `input.changes`.
    pub(crate) fn evaluate_detailed(&self, input: &Value) -> Result<Assessment> {
        let paths = change_paths(input);
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let subject = input
            .pointer("/resource/display")
            .and_then(Value::as_str)
            .unwrap_or("the input document")
            .to_string();
        // One document, for policy authors: the interpreter, whose errors name file and line
        // and which reports conflicting rule values as OPA does.
        let mut eval = Evaluator::Interpreter(Box::new(self.engine.clone()));
        let input = to_rego(input, &mut KeyCache::default(), false);
        self.assess(&mut eval, input, &paths, &subject)
    }

    /// True when drifts are classified by the compiled program rather than the interpreter.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// This engine without its compiled program: every classification runs on the interpreter
    /// (`policies.engine: interpreter`), slower and with the reference semantics throughout.
    pub fn interpreted(mut self) -> PolicyEngine {
        if self.compiled.take().is_some() {
            self.interpreted_because = Some("configured (policies.engine: interpreter)".into());
        }
        self
    }

    /// Why the policies are interpreted rather than compiled, when they are.
    pub fn interpreted_because(&self) -> Option<&str> {
        self.interpreted_because.as_deref()
    }

    /// A fresh evaluator for one batch of drifts: a virtual machine on the compiled program when
    /// there is one, else a clone of the interpreter.
    fn evaluator(&self) -> Evaluator {
        match &self.compiled {
            Some(c) => match c.vm() {
                Ok(vm) => Evaluator::Vm(Box::new(vm)),
                Err(e) => {
                    tracing::debug!("policy program unavailable ({e}); interpreting");
                    Evaluator::Interpreter(Box::new(self.engine.clone()))
                }
            },
            None => Evaluator::Interpreter(Box::new(self.engine.clone())),
        }
    }

    fn assess(
        &self,
        eval: &mut Evaluator,
        input: regorus::Value,
        paths: &[&str],
        subject: &str,
    ) -> Result<Assessment> {
        if !self.has_classifiers() {
            return Ok(aggregate(&[], paths));
        }
        let is_vm = matches!(eval, Evaluator::Vm(_));
        let retry = input.clone();
        let (results, builtin_error) = match eval.results(input, subject) {
            Ok(results) => (results, None),
            Err(strict_error) => match &self.lax {
                // OPA's default: evaluate again with builtin errors as undefined. An error that
                // remains is not a builtin's and stops the run.
                Some(lax) => {
                    let mut lax = Evaluator::Interpreter(Box::new(lax.clone()));
                    let results = lax.results(retry.clone(), subject)?;
                    // The strict interpreter names the failing builtin's file and line; the
                    // program does not.
                    let located = if is_vm {
                        let mut interpreter = Evaluator::Interpreter(Box::new(self.engine.clone()));
                        interpreter.results(retry, subject).err()
                    } else {
                        None
                    };
                    (results, Some(located.unwrap_or(strict_error)))
                }
                // The interpreter names the rule's file and line; the program does not.
                None if is_vm => {
                    let mut interpreter = Evaluator::Interpreter(Box::new(self.engine.clone()));
                    interpreter.results(retry, subject).and(Err(strict_error))?
                }
                None => return Err(strict_error),
            },
        };
        let mut assessment = aggregate(&self.findings(&results)?, paths);
        if let Some(error) = builtin_error {
            tracing::warn!(
                subject,
                %error,
                "a policy builtin failed; read as undefined (OPA's default), and the drift is not safe"
            );
            let detail = match &error {
                PolicyError::Eval { message, .. } => message.lines().next().unwrap_or_default(),
                _ => "",
            };
            never_safe(&mut assessment, detail);
        }
        Ok(assessment)
    }

    /// Turns the aggregate's `[key, value]` pairs into checked findings.
    fn findings(&self, results: &regorus::Value) -> Result<Vec<Finding>> {
        let mut out = Vec::new();
        let set = match results {
            regorus::Value::Undefined => return Ok(out),
            regorus::Value::Set(set) => set,
            other => {
                return Err(PolicyError::Eval {
                    subject: AGGREGATE_RULE.to_string(),
                    message: format!("unexpected aggregate result {other}"),
                });
            }
        };
        for pair in set.iter() {
            let pair = serde_json::to_value(pair).unwrap_or(Value::Null);
            let (Some(key), Some(value)) = (pair.get(0).and_then(Value::as_str), pair.get(1))
            else {
                continue;
            };
            if key == VERDICT_KEY {
                let files = self.verdict_files.clone().unwrap_or_default();
                out.extend(parse_verdict(value, &files)?);
                continue;
            }
            let Some(c) = self.classifiers.iter().find(|c| c.short == key) else {
                continue;
            };
            let rule = format!("data.{}.classify", c.package.join("."));
            let items = match value {
                Value::Array(items) => items,
                _ => {
                    return Err(malformed(
                        "finding",
                        &rule,
                        &c.files,
                        "classify must be a set of findings (`classify contains {...} if ...`)",
                        value,
                    ));
                }
            };
            for item in items {
                out.push(parse_finding(item, &c.short, &rule, &c.files)?);
            }
        }
        Ok(out)
    }

    /// Evaluates conftest-style rules (`deny`, `violation`, `warn`) of every package against
    /// `input`: `{"<package>": {"deny": [...], "warn": [...]}}`.
    fn conftest(&self, input: &Value, subject: &str) -> Result<Map<String, Value>> {
        let mut engine = self.lax.as_ref().unwrap_or(&self.engine).clone();
        let converted: regorus::Value =
            serde_json::from_value(input.clone()).map_err(|e| PolicyError::Input {
                path: PathBuf::from(subject),
                message: format!("cannot be converted: {e}"),
            })?;
        engine.set_input(converted);
        let mut out = Map::new();
        for pkg in &self.conftest {
            let mut answers = Map::new();
            for rule in &pkg.rules {
                let path = format!("{}.{rule}", rego_path(&pkg.package));
                let v = engine
                    .eval_rule(path)
                    .map_err(|e| eval_error(subject, &e))?;
                let v = match v {
                    regorus::Value::Undefined => Value::Array(Vec::new()),
                    v => serde_json::to_value(&v).unwrap_or(Value::Null),
                };
                answers.insert((*rule).to_string(), v);
            }
            out.insert(pkg.package.join("."), Value::Object(answers));
        }
        Ok(out)
    }
}

/// The aggregate rule compiled once to regorus' register virtual machine (RVM). Evaluating a drift
/// there costs a fraction of walking the syntax tree: the rules' scheduling, lookups and
/// comprehensions are resolved at compile time, and no per-evaluation state is rebuilt.
///
/// Compilation is attempted at load; a policy using a construct the compiler does not support
/// (e.g. `with`) keeps the whole engine on the interpreter, with identical results.
#[derive(Debug, Clone)]
struct Compiled {
    policy: regorus::CompiledPolicy,
    program: Arc<Program>,
    data: regorus::Value,
}

/// The most instructions one drift's evaluation may execute: far above what any drift of the
/// default library needs (a few thousand), low enough to stop a runaway policy.
const MAX_INSTRUCTIONS: usize = 50_000_000;

impl Compiled {
    fn new(engine: &mut Engine) -> std::result::Result<Compiled, String> {
        let rule: regorus::Rc<str> = regorus::Rc::from(AGGREGATE_RULE);
        let compiled = engine
            .compile_with_entrypoint(&rule)
            .and_then(|policy| {
                let program = Compiler::compile_from_policy(&policy, &[AGGREGATE_RULE])?;
                Ok((policy, program))
            })
            .map(|(policy, program)| Compiled {
                policy,
                program,
                data: engine.get_data(),
            });
        let compiled = compiled.map_err(|e| {
            format!("the policies use a construct the policy compiler does not support: {e:#}")
        })?;
        compiled
            .vm()
            .map_err(|e| format!("the policy program rejects its data: {e}"))?;
        Ok(compiled)
    }

    /// A virtual machine on a private copy of the program (`bytes`, its binary serialization) and
    /// of the data, sharing no value with other threads' machines. `None` when the copy cannot
    /// be made; the caller then uses [`vm`](Self::vm).
    fn private_vm(&self, bytes: &[u8]) -> Option<RegoVM> {
        let program = match Program::deserialize_binary(bytes) {
            Ok(DeserializationResult::Complete(p)) => p,
            _ => return None,
        };
        let data = regorus::Value::from_json_str(&self.data.to_json_str().ok()?).ok()?;
        self.machine(Arc::new(program), data).ok()
    }

    fn vm(&self) -> std::result::Result<RegoVM, regorus::rvm::vm::VmError> {
        self.machine(Arc::clone(&self.program), self.data.clone())
    }

    /// A virtual machine on `program` and `data` with the engine's limits.
    fn machine(
        &self,
        program: Arc<Program>,
        data: regorus::Value,
    ) -> std::result::Result<RegoVM, regorus::rvm::vm::VmError> {
        let mut vm = RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(program);
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_strict_builtin_errors(true);
        vm.set_data(data)?;
        Ok(vm)
    }
}

/// What evaluates the aggregate rule for one batch of drifts.
enum Evaluator {
    Vm(Box<RegoVM>),
    Interpreter(Box<Engine>),
}

impl Evaluator {
    fn results(&mut self, input: regorus::Value, subject: &str) -> Result<regorus::Value> {
        match self {
            Evaluator::Vm(vm) => {
                vm.set_input(input);
                vm.execute().map_err(|e| PolicyError::Eval {
                    subject: subject.to_string(),
                    message: e.to_string(),
                })
            }
            Evaluator::Interpreter(engine) => {
                engine.set_input(input);
                engine
                    .eval_rule(AGGREGATE_RULE.to_string())
                    .map_err(|e| eval_error(subject, &e))
            }
        }
    }
}

/// An evaluation error, with regorus' location first when it has one:
/// `file:line:col: message` and the code line with its caret.
pub(crate) fn eval_error(subject: &str, err: &anyhow::Error) -> PolicyError {
    let text = format!("{err:#}");
    let message = match loader::locate(&text) {
        Some(l) => format!(
            "{}:{}:{}: {}{}",
            l.file, l.line, l.col, l.message, l.snippet
        ),
        None => text.trim().to_string(),
    };
    PolicyError::Eval {
        subject: subject.to_string(),
        message,
    }
}

fn add_classifier(classifiers: &mut Vec<Classifier>, m: &ModuleInfo) {
    if let Some(c) = classifiers.iter_mut().find(|c| c.package == m.package) {
        c.files.push_str(", ");
        c.files.push_str(&m.file);
        return;
    }
    classifiers.push(Classifier {
        package: m.package.clone(),
        short: m.package[1..].join("."),
        files: m.file.clone(),
    });
}

/// A Rego reference to a package: `data.a.b`, with `["b-c"]` where a component is not an
/// identifier.
pub(crate) fn rego_path(package: &[String]) -> String {
    let mut s = String::from("data");
    for p in package {
        let plain = !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit());
        if plain {
            s.push('.');
            s.push_str(p);
        } else {
            s.push_str(&format!("[{}]", Value::String(p.clone())));
        }
    }
    s
}

/// The generated module: one partial-set rule gathering `[name, findings]` from each classifying
/// package, and `data.driftwarden.verdict` when some policy declares it.
fn aggregate_module(classifiers: &[Classifier], verdict: bool) -> String {
    let mut s = format!("package {AGGREGATE_PACKAGE}\n\n");
    for c in classifiers {
        let refr = rego_path(&c.package);
        s.push_str(&format!(
            "results contains [{}, x] if {{\n\tx := {refr}.classify\n}}\n\n",
            Value::String(c.short.clone())
        ));
    }
    if verdict {
        s.push_str(&format!(
            "results contains [{}, x] if {{\n\tx := data.driftwarden.verdict\n}}\n",
            Value::String(VERDICT_KEY.to_string())
        ));
    }
    if classifiers.is_empty() && !verdict {
        s.push_str("results := set()\n");
    }
    s
}

fn malformed(
    what: &'static str,
    rule: &str,
    files: &str,
    problem: &str,
    value: &Value,
) -> PolicyError {
    PolicyError::Malformed {
        what,
        rule: rule.to_string(),
        files: files.to_string(),
        problem: problem.to_string(),
        value: value.to_string(),
    }
}

fn parse_class(v: Option<&Value>) -> std::result::Result<Class, String> {
    match v {
        None => Err("`class` is missing".into()),
        Some(Value::String(s)) => match s.as_str() {
            "safe" => Ok(Class::Safe),
            "risky" => Ok(Class::Risky),
            "forbidden" => Ok(Class::Forbidden),
            other => Err(format!(
                "`class` is \"{other}\", expected one of \"safe\", \"risky\", \"forbidden\""
            )),
        },
        Some(other) => Err(format!("`class` must be a string, not {other}")),
    }
}

/// Checks one finding: `{"class", "reason", "rule"?, "path"?, "remedy"?}` and nothing else.
fn parse_finding(item: &Value, short: &str, rule: &str, files: &str) -> Result<Finding> {
    let bad = |problem: String| malformed("finding", rule, files, &problem, item);
    let Value::Object(obj) = item else {
        return Err(bad(
            "a finding must be an object {\"class\", \"reason\", \"rule\", \"path\"}".into(),
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "class" | "reason" | "rule" | "path" | "remedy"))
    {
        return Err(bad(format!(
            "unknown key `{k}` (a finding has `class`, `reason` and optionally `rule`, `path` \
             and `remedy`)"
        )));
    }
    let class = parse_class(obj.get("class")).map_err(bad)?;
    let reason = match obj.get("reason") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(bad("`reason` must be a non-empty string".into())),
        None => return Err(bad("`reason` is missing".into())),
    };
    let name = match obj.get("rule") {
        None => short.to_string(),
        Some(Value::String(s)) if s.contains('.') => s.clone(),
        Some(Value::String(s)) if !s.is_empty() => format!("{short}.{s}"),
        Some(_) => return Err(bad("`rule` must be a non-empty string".into())),
    };
    let path = match obj.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => Some(p.clone()),
        Some(_) => {
            return Err(bad(
                "`path` must be a JSON pointer string (\"/spec/replicas\")".into(),
            ));
        }
    };
    let remedy = match obj.get("remedy") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(match r.as_str() {
            "adopt" => Remedy::Adopt,
            "unpin" => Remedy::Unpin,
            "revert" => Remedy::Revert,
            other => {
                return Err(bad(format!(
                    "`remedy` is \"{other}\", expected one of \"adopt\", \"unpin\", \"revert\""
                )));
            }
        }),
        Some(other) => return Err(bad(format!("`remedy` must be a string, not {other}"))),
    };
    Ok(Finding {
        class,
        reason,
        rule: name,
        path,
        remedy,
    })
}

/// Checks `data.driftwarden.verdict`: `{"class", "reasons", "rules"?}`.
fn parse_verdict(value: &Value, files: &str) -> Result<Vec<Finding>> {
    let rule = "data.driftwarden.verdict";
    let bad = |problem: String| malformed("verdict", rule, files, &problem, value);
    let Value::Object(obj) = value else {
        return Err(bad(
            "the verdict must be an object {\"class\", \"reasons\", \"rules\"}".into(),
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "class" | "reasons" | "rules"))
    {
        return Err(bad(format!(
            "unknown key `{k}` (a verdict has `class`, `reasons` and optionally `rules`)"
        )));
    }
    let class = parse_class(obj.get("class")).map_err(bad)?;
    let strings = |key: &str| -> std::result::Result<Option<Vec<String>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`{key}` must hold strings only"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("`{key}` must be an array of strings")),
        }
    };
    let reasons = strings("reasons").map_err(bad)?;
    let Some(reasons) = reasons.filter(|r| !r.is_empty()) else {
        return Err(bad("`reasons` must list at least one reason".into()));
    };
    let rules = strings("rules")
        .map_err(bad)?
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec!["verdict".to_string()]);
    // Each reason pairs with a rule by position; extra reasons take the last rule.
    Ok(reasons
        .into_iter()
        .enumerate()
        .map(|(i, reason)| Finding {
            class,
            reason,
            rule: rules.get(i).or(rules.last()).cloned().unwrap_or_default(),
            path: None,
            remedy: None,
        })
        .collect())
}

/// Whether a finding at `finding` (a JSON pointer) applies to a change at `change`: equal, or one
/// contains the other.
fn applies(finding: &str, change: &str) -> bool {
    let within = |outer: &str, inner: &str| {
        inner == outer
            || outer.is_empty()
            || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
    };
    within(finding, change) || within(change, finding)
}

/// The start of the reason recorded when a builtin error kept a drift from being safe; the
/// builtin's error (file, line, message) follows.
pub const BUILTIN_ERROR_REASON: &str = "a policy builtin failed while classifying this drift, \
     read as undefined as OPA does; a drift whose classification meets a builtin error is never safe";

/// Fail safe after a builtin error read as undefined: the finding that failed might have been
/// the one that made the drift risky or forbidden, so nothing stays `safe`.
fn never_safe(a: &mut Assessment, detail: &str) {
    a.builtin_error = true;
    for c in a.change_classes.iter_mut().filter(|c| **c == Class::Safe) {
        *c = Class::Risky;
    }
    if a.verdict.class == Class::Safe {
        a.verdict.class = Class::Risky;
        a.verdict.reasons = vec![if detail.is_empty() {
            BUILTIN_ERROR_REASON.to_string()
        } else {
            format!("{BUILTIN_ERROR_REASON} ({detail})")
        }];
        a.verdict.rules = vec![DEFAULT_RULE.to_string()];
    }
}

/// Combines findings into the drift's verdict and each change's class (see the module docs).
fn aggregate(findings: &[Finding], paths: &[&str]) -> Assessment {
    let mut change_classes = Vec::with_capacity(paths.len());
    let mut unclassified: Vec<&str> = Vec::new();
    let mut remedies = std::collections::BTreeMap::new();
    for path in paths {
        let applying = || {
            findings
                .iter()
                .filter(|f| f.path.as_deref().is_none_or(|p| applies(p, path)))
        };
        let class = applying().map(|f| f.class).max();
        // The remedy: said by a finding at the change's class; the most conservative wins.
        let remedy = applying()
            .filter(|f| Some(f.class) == class)
            .filter_map(|f| f.remedy)
            .max()
            .unwrap_or_default();
        if remedy != Remedy::Adopt {
            remedies.insert((*path).to_string(), remedy);
        }
        match class {
            Some(c) => change_classes.push(c),
            None => {
                unclassified.push(path);
                change_classes.push(Class::Risky);
            }
        }
    }

    // Reasons follow the order of the changes they explain; drift-wide findings come first.
    let position = |f: &Finding| match &f.path {
        None => 0,
        Some(p) => paths
            .iter()
            .position(|c| applies(p, c))
            .map_or(paths.len() + 1, |i| i + 1),
    };
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    ordered.sort_by(|a, b| {
        position(a)
            .cmp(&position(b))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    let mut decided: Vec<(Class, String, String)> = ordered
        .into_iter()
        .map(|f| (f.class, f.reason.clone(), f.rule.clone()))
        .collect();
    if findings.is_empty() {
        decided.push((Class::Risky, DEFAULT_REASON.into(), DEFAULT_RULE.into()));
    } else {
        for p in &unclassified {
            decided.push((
                Class::Risky,
                format!("no rule classified the change at {p}"),
                DEFAULT_RULE.into(),
            ));
        }
    }
    let class = decided.iter().map(|d| d.0).max().unwrap_or(Class::Risky);
    let mut reasons: Vec<String> = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    for (_, reason, rule) in decided.into_iter().filter(|d| d.0 == class) {
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Assessment {
        builtin_error: false,
        verdict: Verdict {
            class,
            reasons,
            rules,
            remedies,
        },
        change_classes,
    }
}

fn change_paths(input: &Value) -> Vec<String> {
    input
        .get("changes")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("path").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `policy eval`: loads the policies and evaluates one input file (JSON or YAML).
///
/// - When some package classifies drift, the input is a policy input document (schema v1) and
///   the answer is the verdict with each change's class and remedy:
///   `{"class", "reasons", "rules", "changes": [{"path", "class", "remedy"}]}`.
/// - Otherwise, when packages declare conftest rules (`deny`, `violation`, `warn`), the input is
///   any document (a manifest, a plan) and the answer is, per package,
///   `{"main": {"deny": [...], "warn": [...]}}`. A multi-document YAML file is evaluated document
///   by document and the answers are concatenated, as conftest does.
/// - With neither, the fail-safe verdict.
pub fn eval_file(input_path: &Path, cfg: &PolicyConfig) -> Result<Value> {
    let engine = PolicyEngine::load(cfg)?;
    let text = std::fs::read_to_string(input_path).map_err(|error| PolicyError::Io {
        path: input_path.to_path_buf(),
        error,
    })?;
    let docs = read_documents(input_path, &text)?;
    if engine.has_classifiers() || engine.conftest.is_empty() {
        let [input] = docs.as_slice() else {
            return Err(PolicyError::Input {
                path: input_path.to_path_buf(),
                message: format!(
                    "expected one policy input document, found {} YAML documents",
                    docs.len()
                ),
            });
        };
        let a = engine.evaluate_detailed(input)?;
        let changes: Vec<Value> = change_paths(input)
            .into_iter()
            .zip(a.change_classes)
            .map(|(path, class)| {
                let remedy = a.verdict.remedy(&path);
                json!({"path": path, "class": class, "remedy": remedy})
            })
            .collect();
        return Ok(json!({
            "class": a.verdict.class,
            "reasons": a.verdict.reasons,
            "rules": a.verdict.rules,
            "changes": changes,
        }));
    }
    let subject = input_path.display().to_string();
    let mut merged = Map::new();
    for doc in &docs {
        for (pkg, answers) in engine.conftest(doc, &subject)? {
            let slot = merged
                .entry(pkg)
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(slot), Value::Object(answers)) = (slot, answers) {
                for (rule, v) in answers {
                    let list = slot.entry(rule).or_insert_with(|| Value::Array(Vec::new()));
                    if let (Value::Array(list), Value::Array(items)) = (list, v) {
                        list.extend(items);
                    }
                }
            }
        }
    }
    Ok(Value::Object(merged))
}

/// Reads an input file: one JSON document, or one or more YAML documents separated by `---`.
fn read_documents(path: &Path, text: &str) -> Result<Vec<Value>> {
    let bad = |message: String| PolicyError::Input {
        path: path.to_path_buf(),
        message,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if ext == "json" {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| bad(format!("invalid JSON: {e}")));
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(vec![v]);
    }
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| -> Result<()> {
        if current.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        }) {
            let v = regorus::Value::from_yaml_str(current)
                .map_err(|e| bad(format!("invalid YAML: {e:#}")))?;
            docs.push(serde_json::to_value(&v).map_err(|e| bad(e.to_string()))?);
        }
        current.clear();
        Ok(())
    };
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current)?;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current)?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(class: Class, rule: &str, path: Option<&str>) -> Finding {
        Finding {
            class,
            reason: format!("because {rule}"),
            rule: rule.into(),
            path: path.map(str::to_string),
            remedy: None,
        }
    }

    fn with_remedy(mut f: Finding, remedy: Remedy) -> Finding {
        f.remedy = Some(remedy);
        f
    }

    #[test]
    fn a_change_takes_the_remedy_of_the_findings_at_its_class() {
        // The HPA case: the replicas finding says unpin, the image keeps the default (adopt),
        // and only the non-default remedy is recorded.
        let f = [
            with_remedy(
                finding(Class::Risky, "k.replicas_under_hpa", Some("/spec/replicas")),
                Remedy::Unpin,
            ),
            finding(
                Class::Risky,
                "k.image",
                Some("/spec/template/spec/containers/0/image"),
            ),
        ];
        let paths = ["/spec/replicas", "/spec/template/spec/containers/0/image"];
        let a = aggregate(&f, &paths);
        assert_eq!(a.verdict.remedy("/spec/replicas"), Remedy::Unpin);
        assert_eq!(a.verdict.remedy(paths[1]), Remedy::Adopt);
        assert_eq!(
            a.verdict.remedies.into_iter().collect::<Vec<_>>(),
            vec![("/spec/replicas".to_string(), Remedy::Unpin)]
        );

        // A more severe finding without a remedy decides: its class's findings say nothing, so
        // the change is adopted; a drift-wide finding's remedy applies to every change.
        let f = [
            with_remedy(
                finding(Class::Risky, "k.replicas_under_hpa", Some("/spec/replicas")),
                Remedy::Unpin,
            ),
            finding(Class::Forbidden, "org.freeze", None),
        ];
        assert_eq!(
            aggregate(&f, &["/spec/replicas"])
                .verdict
                .remedy("/spec/replicas"),
            Remedy::Adopt
        );
        let f = [
            with_remedy(
                finding(Class::Risky, "k.replicas_under_hpa", Some("/spec/replicas")),
                Remedy::Unpin,
            ),
            with_remedy(finding(Class::Risky, "org.restore", None), Remedy::Revert),
        ];
        let a = aggregate(&f, &["/spec/replicas", "/data/x"]);
        // Disagreeing findings at one class: the most conservative (revert) wins.
        assert_eq!(a.verdict.remedy("/spec/replicas"), Remedy::Revert);
        assert_eq!(a.verdict.remedy("/data/x"), Remedy::Revert);
    }

    #[test]
    fn a_private_program_copy_evaluates_like_the_shared_one() {
        let engine = PolicyEngine::load(&PolicyConfig {
            dirs: vec![PolicyDir::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            )],
            data_files: Vec::new(),
            strict_builtins: false,
        })
        .expect("the default library loads");
        let compiled = engine
            .compiled
            .as_ref()
            .expect("the default library compiles");
        let bytes = compiled.program.serialize_binary().expect("serializes");
        let private = compiled.private_vm(&bytes).expect("a private copy");
        let shared = compiled.vm().expect("a machine");
        let input = to_rego(
            &json!({
                "provider": "kubernetes",
                "kind": "Modified",
                "resource": {"kind": "Deployment", "ref": "Deployment/shop/web"},
                "related": {"hpa_targets": []},
                "changes": [{
                    "path": "/spec/replicas", "parts": ["spec", "replicas"],
                    "desired": 2, "live": 3, "introduced": []
                }]
            }),
            &mut KeyCache::default(),
            false,
        );
        let (mut a, mut b) = (
            Evaluator::Vm(Box::new(private)),
            Evaluator::Vm(Box::new(shared)),
        );
        let from_private = a.results(input.clone(), "test").expect("evaluates");
        let from_shared = b.results(input, "test").expect("evaluates");
        assert_eq!(from_private, from_shared);
        assert!(
            from_private.to_string().contains("replicas_without_hpa"),
            "{from_private}"
        );
        // Bytes that are not a program give no copy; the caller then uses the shared machine.
        assert!(compiled.private_vm(b"not a program").is_none());
    }

    #[test]
    fn no_findings_is_risky_by_default() {
        let a = aggregate(&[], &["/spec/x"]);
        assert_eq!(a.verdict.class, Class::Risky);
        assert_eq!(a.verdict.reasons, vec![DEFAULT_REASON.to_string()]);
        assert_eq!(a.verdict.rules, vec![DEFAULT_RULE.to_string()]);
        assert_eq!(a.change_classes, vec![Class::Risky]);
        assert_eq!(aggregate(&[], &[]).verdict.class, Class::Risky);
    }

    #[test]
    fn most_severe_wins_and_unclassified_changes_stay_risky() {
        let f = [
            finding(Class::Safe, "k.labels", Some("/metadata/labels/tier")),
            finding(Class::Safe, "k.replicas", Some("/spec/replicas")),
        ];
        let a = aggregate(&f, &["/metadata/labels/tier", "/spec/replicas"]);
        assert_eq!(a.verdict.class, Class::Safe);
        assert_eq!(a.verdict.rules, vec!["k.labels", "k.replicas"]);
        assert_eq!(a.change_classes, vec![Class::Safe, Class::Safe]);

        let a = aggregate(&f, &["/metadata/labels/tier", "/data/x"]);
        assert_eq!(a.verdict.class, Class::Risky);
        assert_eq!(a.verdict.rules, vec![DEFAULT_RULE]);
        assert_eq!(a.change_classes, vec![Class::Safe, Class::Risky]);

        let f = [
            finding(Class::Safe, "k.labels", Some("/metadata/labels")),
            finding(Class::Forbidden, "k.priv", None),
        ];
        let a = aggregate(&f, &["/metadata/labels/tier"]);
        assert_eq!(a.verdict.class, Class::Forbidden);
        assert_eq!(a.change_classes, vec![Class::Forbidden]);
    }

    #[test]
    fn paths_apply_above_and_below() {
        assert!(applies("/spec", "/spec/replicas"));
        assert!(applies("/spec/replicas", "/spec"));
        assert!(applies("", "/x"));
        assert!(!applies("/spec/rep", "/spec/replicas"));
    }

    #[test]
    fn findings_are_checked() {
        let ok = json!({"class": "safe", "reason": "r", "rule": "x", "path": "/a"});
        let f = parse_finding(&ok, "pkg", "data.driftwarden.pkg.classify", "f.rego").unwrap();
        assert_eq!(f.rule, "pkg.x");
        assert_eq!(f.remedy, None);
        for (text, remedy) in [
            ("adopt", Remedy::Adopt),
            ("unpin", Remedy::Unpin),
            ("revert", Remedy::Revert),
        ] {
            let item = json!({"class": "risky", "reason": "r", "remedy": text});
            let f = parse_finding(&item, "pkg", "data.driftwarden.pkg.classify", "f.rego").unwrap();
            assert_eq!(f.remedy, Some(remedy));
        }
        for bad in [
            json!({"class": "maybe", "reason": "r"}),
            json!({"class": "safe"}),
            json!({"class": "safe", "reason": "r", "reasons": []}),
            json!({"class": "safe", "reason": "r", "path": "spec"}),
            json!({"class": "safe", "reason": "r", "remedy": "delete"}),
            json!({"class": "safe", "reason": "r", "remedy": true}),
            json!("safe"),
        ] {
            let e = parse_finding(&bad, "pkg", "data.driftwarden.pkg.classify", "f.rego")
                .unwrap_err()
                .to_string();
            assert!(e.contains("f.rego"), "{e}");
        }
        let e = parse_verdict(&json!({"class": "maybe"}), "v.rego")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"maybe\"") && e.contains("v.rego"), "{e}");
    }

    #[test]
    fn rego_paths_quote_odd_components() {
        assert_eq!(rego_path(&["a".into(), "b".into()]), "data.a.b");
        assert_eq!(rego_path(&["a".into(), "b-c".into()]), "data.a[\"b-c\"]");
    }
}
