//! Finds policy and data files, loads them into a regorus engine, and checks what regorus itself
//! checks only late: which rules each module declares, and whether every function a policy calls
//! exists (regorus reports a missing builtin only when evaluation reaches the call).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use regorus::unstable::{BUILTINS, Lexer, Parser, Rule, RuleHead, TokenKind};
use regorus::{Engine, Source};

use super::engine::PolicyDir;
use super::parity::{self, Refusal};
use super::{PolicyError, Result};

/// Extensions of the files loaded as data, like `opa test DIR` and `opa eval -d DIR` load them.
const DATA_EXTENSIONS: [&str; 3] = ["json", "yaml", "yml"];

/// Rego keywords that a `(` may follow without the pair being a call.
const KEYWORDS: [&str; 14] = [
    "not", "some", "every", "in", "if", "else", "with", "as", "contains", "default", "import",
    "package", "true", "false",
];

/// One loaded policy module and what it declares.
#[derive(Debug, Clone)]
pub(crate) struct ModuleInfo {
    /// The file as named to the user (the configured directory joined with the relative path).
    pub file: String,
    /// Package path components, without the leading `data`.
    pub package: Vec<String>,
    /// Root names of the rules it declares (functions excluded).
    pub rules: BTreeSet<String>,
    /// Whether the file is a `*_test.rego`.
    pub is_test: bool,
}

/// The engine with every policy and data file loaded, and what each module declares.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub engine: Engine,
    pub modules: Vec<ModuleInfo>,
    /// Constructs refused at load ([`Refusals::Collect`] only; with [`Refusals::Fail`] the first
    /// one is the load's error).
    pub refusals: Vec<Refusal>,
    /// Why the policies must run on regorus' interpreter rather than its compiled program, when
    /// they must (a `sprintf` only the interpreter formats as OPA does).
    pub interpreter_only: Option<String>,
}

/// What loading does with a construct regorus would evaluate differently from OPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusals {
    /// Fail the load (classification, `policy eval`): exit 3, nothing evaluated.
    Fail,
    /// Keep going and report them (`policy test`, where each is a failed test).
    Collect,
}

/// How builtin errors evaluate (docs/policy.md, "Differences from OPA").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadOptions {
    pub include_tests: bool,
    /// Builtin errors are errors (`--strict-builtins`), not undefined (OPA's default).
    pub strict_builtins: bool,
    pub refusals: Refusals,
}

struct PolicyFile {
    path: PathBuf,
    rego_v0: bool,
    is_test: bool,
}

/// A data file and the path under `data` its document is loaded at (its directory relative to
/// the configured one; empty: merged at the root).
struct DataFile {
    path: PathBuf,
    prefix: Vec<String>,
}

/// Loads every `.rego` file under `dirs` (tests only when `include_tests`), every JSON and YAML
/// file under them as data at the path of its directory (as `opa test DIR` does), then
/// `data_files` at the root, and checks the calls. Each file passes through
/// [`parity::prepare`] first. The engine is not yet prepared for evaluation; see [`prepare`].
pub(crate) fn load(
    dirs: &[PolicyDir],
    data_files: &[PathBuf],
    opts: LoadOptions,
) -> Result<Loaded> {
    let mut files = Vec::new();
    let mut data = Vec::new();
    for dir in dirs {
        collect(&dir.path, dir.rego_v0, &[], &mut files, &mut data)?;
    }
    data.extend(data_files.iter().map(|p| DataFile {
        path: p.clone(),
        prefix: Vec::new(),
    }));

    let mut texts = Vec::new();
    for f in files.iter().filter(|f| opts.include_tests || !f.is_test) {
        let text = fs::read_to_string(&f.path).map_err(|error| PolicyError::Io {
            path: f.path.clone(),
            error,
        })?;
        texts.push((f, f.path.display().to_string(), text));
    }
    let package_rules = declared_rules(&texts);

    let mut engine = Engine::new();
    engine.set_strict_builtin_errors(opts.strict_builtins);
    engine
        .add_extension("sprintf".to_string(), 2, Box::new(parity::opa_sprintf))
        .map_err(|e| compile_error("sprintf", &e))?;
    let mut modules = Vec::new();
    let mut refusals = Vec::new();
    let mut interpreter_only = None;
    for (f, name, text) in &texts {
        let prepared = parity::prepare(name, text, f.rego_v0, &package_rules);
        let refused = !prepared.refusals.is_empty();
        let mut found = prepared.refusals.into_iter();
        if opts.refusals == Refusals::Fail
            && let Some(first) = found.next()
        {
            return Err(PolicyError::Refused(Box::new(first)));
        }
        refusals.extend(found);
        interpreter_only = interpreter_only.or(prepared.interpreter_only);
        engine.set_rego_v0(f.rego_v0);
        match engine.add_policy(name.clone(), prepared.text) {
            Ok(_) => {}
            // A file whose refused construct regorus cannot parse is left out of the tests;
            // its refusal is reported as a failed test.
            Err(_) if refused => continue,
            Err(e) => return Err(compile_error(name, &e)),
        }
        modules.push(ModuleInfo {
            file: name.clone(),
            package: Vec::new(),
            rules: BTreeSet::new(),
            is_test: f.is_test,
        });
    }
    engine.set_rego_v0(false);

    let functions = describe_modules(&mut engine, &mut modules)?;
    check_calls(&mut engine, &modules, &functions)?;

    for d in &data {
        let mut value = read_data(&d.path, d.prefix.is_empty())?;
        for key in d.prefix.iter().rev() {
            let mut obj = regorus::Value::new_object();
            if let Ok(map) = obj.as_object_mut() {
                map.insert(regorus::Value::from(key.as_str()), value);
            }
            value = obj;
        }
        engine.add_data(value).map_err(|e| PolicyError::Data {
            path: d.path.clone(),
            message: format!("cannot merge into data: {e}"),
        })?;
    }
    Ok(Loaded {
        engine,
        modules,
        refusals,
        interpreter_only,
    })
}

/// The rule names (functions excluded) each package declares across `texts` (a file that does
/// not parse is skipped; loading it reports the error).
fn declared_rules(
    texts: &[(&PolicyFile, String, String)],
) -> BTreeMap<Vec<String>, HashSet<String>> {
    let mut out: BTreeMap<Vec<String>, HashSet<String>> = BTreeMap::new();
    for (f, name, text) in texts {
        let mut scratch = Engine::new();
        scratch.set_rego_v0(f.rego_v0);
        if scratch.add_policy(name.clone(), text.clone()).is_err() {
            continue;
        }
        let mut infos = vec![ModuleInfo {
            file: name.clone(),
            package: Vec::new(),
            rules: BTreeSet::new(),
            is_test: f.is_test,
        }];
        // Rules only: a function named in `with` is replaced by regorus as by OPA.
        if describe_modules(&mut scratch, &mut infos).is_ok() {
            let entry = out.entry(infos[0].package.clone()).or_default();
            entry.extend(infos[0].rules.iter().cloned());
        }
    }
    out
}

/// Runs regorus' analysis (rule scheduling, recursion, safety checks) now, so that such errors
/// surface at load time with their file and line, and so that clones start prepared.
pub(crate) fn prepare(engine: &mut Engine) -> Result<()> {
    engine
        .eval_query("true".to_string(), false)
        .map(|_| ())
        .map_err(|e| compile_error("a policy", &e))
}

/// Walks a configured path like OPA's loader: `.rego` files are policies, `.json`, `.yaml` and
/// `.yml` files data (under `prefix`, the directories walked below the configured one), other
/// files are skipped; a `.tar.gz` bundle is an error (bundles are not supported).
fn collect(
    path: &Path,
    rego_v0: bool,
    prefix: &[String],
    files: &mut Vec<PolicyFile>,
    data: &mut Vec<DataFile>,
) -> Result<()> {
    let meta = fs::metadata(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            PolicyError::MissingDir(path.to_path_buf())
        } else {
            PolicyError::Io {
                path: path.to_path_buf(),
                error,
            }
        }
    })?;
    if meta.is_file() {
        return push_file(path, rego_v0, prefix, files, data);
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|error| PolicyError::Io {
            path: path.to_path_buf(),
            error,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            let mut below = prefix.to_vec();
            below.push(
                entry
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            collect(&entry, rego_v0, &below, files, data)?;
        } else {
            push_file(&entry, rego_v0, prefix, files, data)?;
        }
    }
    Ok(())
}

fn push_file(
    path: &Path,
    rego_v0: bool,
    prefix: &[String],
    files: &mut Vec<PolicyFile>,
    data: &mut Vec<DataFile>,
) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if ext == "rego" {
        files.push(PolicyFile {
            path: path.to_path_buf(),
            rego_v0,
            is_test: name.ends_with("_test.rego"),
        });
    } else if DATA_EXTENSIONS.contains(&ext) {
        data.push(DataFile {
            path: path.to_path_buf(),
            prefix: prefix.to_vec(),
        });
    } else if name.ends_with(".tar.gz") {
        return Err(PolicyError::Data {
            path: path.to_path_buf(),
            message: "a bundle; OPA would load its policies and data, driftwarden does not read \
                      bundles: extract it into the directory"
                .into(),
        });
    }
    Ok(())
}

/// Reads a data file: JSON, or YAML for `.yaml`/`.yml`. A file merged at the root of `data`
/// (`at_root`) must hold an object; one below it may hold any value.
pub(crate) fn read_data(path: &Path, at_root: bool) -> Result<regorus::Value> {
    let text = fs::read_to_string(path).map_err(|error| PolicyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let value = parse_document(path, &text).map_err(|message| PolicyError::Data {
        path: path.to_path_buf(),
        message,
    })?;
    if at_root && value.as_object().is_err() {
        return Err(PolicyError::Data {
            path: path.to_path_buf(),
            message: "the top level must be an object (it is merged at the root of data)".into(),
        });
    }
    Ok(value)
}

/// Parses one JSON or YAML document (by extension; `.json` and unknown extensions try JSON
/// first). Errors carry the line and column.
pub(crate) fn parse_document(
    path: &Path,
    text: &str,
) -> std::result::Result<regorus::Value, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let yaml = matches!(ext, "yaml" | "yml");
    if !yaml {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => return Ok(regorus::Value::from(v)),
            Err(e) if ext == "json" => return Err(format!("invalid JSON: {e}")),
            Err(_) => {}
        }
    }
    regorus::Value::from_yaml_str(text).map_err(|e| format!("invalid YAML: {e}"))
}

/// Fills each module's package and declared rules; returns every function each package defines
/// (`pkg` → function names relative to the package).
fn describe_modules(
    engine: &mut Engine,
    modules: &mut [ModuleInfo],
) -> Result<BTreeMap<Vec<String>, HashSet<String>>> {
    let mut functions: BTreeMap<Vec<String>, HashSet<String>> = BTreeMap::new();
    let loaded = engine.get_modules().clone();
    for (info, module) in modules.iter_mut().zip(loaded.iter()) {
        info.package = ref_components(&module.package.refr, &info.file)?;
        let funcs = functions.entry(info.package.clone()).or_default();
        for rule in &module.policy {
            let (refr, is_func) = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
                    RuleHead::Func { refr, .. } => (refr, true),
                },
                Rule::Default { refr, args, .. } => (refr, !args.is_empty()),
            };
            let comps = ref_components(refr, &info.file)?;
            if is_func {
                funcs.insert(comps.join("."));
            } else if let Some(root) = comps.first() {
                info.rules.insert(root.clone());
            }
        }
    }
    Ok(functions)
}

pub(crate) fn ref_components(
    refr: &regorus::unstable::Ref<regorus::unstable::Expr>,
    file: &str,
) -> Result<Vec<String>> {
    let spans = Parser::get_path_ref_components(refr).map_err(|e| compile_error(file, &e))?;
    Ok(spans
        .iter()
        .map(|s| s.text().trim_matches('"').to_string())
        .collect())
}

/// Fails on the first call to a function that is neither a regorus builtin nor defined by a
/// loaded policy, naming the file, line and column. Calls through `data.` or through an import
/// alias are resolved by regorus at evaluation time and skipped here.
fn check_calls(
    engine: &mut Engine,
    modules: &[ModuleInfo],
    functions: &BTreeMap<Vec<String>, HashSet<String>>,
) -> Result<()> {
    let loaded = engine.get_modules().clone();
    for (info, module) in modules.iter().zip(loaded.iter()) {
        let mut aliases: HashSet<String> = HashSet::new();
        for import in &module.imports {
            if let Some(alias) = &import.r#as {
                aliases.insert(alias.text().to_string());
            } else if let Ok(comps) = ref_components(&import.refr, &info.file)
                && let Some(last) = comps.last()
            {
                aliases.insert(last.clone());
            }
        }
        let own = functions.get(&info.package);
        let source: &Source = &module.package.span.source;
        let mut lexer = Lexer::new(source);
        // The dotted name being read, its first token's position, and the token before it.
        let mut chain: Vec<String> = Vec::new();
        let mut start = (0u32, 0u32);
        let mut prev_text = String::new();
        let mut before_chain = String::new();
        let mut after_dot = false;
        // Where the previous token ends: OPA reads `(` as a call only right there.
        let mut prev_end = 0u32;
        loop {
            // The parser accepted the file; a lexer disagreement is not worth failing on.
            let Ok(token) = lexer.next_token() else {
                break;
            };
            let text = token.1.text().to_string();
            match token.0 {
                TokenKind::Eof => break,
                TokenKind::Ident if after_dot && !chain.is_empty() => {
                    chain.push(text.clone());
                    after_dot = false;
                }
                TokenKind::Ident => {
                    before_chain = std::mem::take(&mut prev_text);
                    chain = vec![text.clone()];
                    start = (token.1.line, token.1.col);
                    after_dot = false;
                }
                TokenKind::Symbol if text == "." && !chain.is_empty() && !after_dot => {
                    after_dot = true;
                }
                TokenKind::Symbol
                    if text == "("
                        && !chain.is_empty()
                        && !after_dot
                        && token.1.start == prev_end =>
                {
                    let name = chain.join(".");
                    let head = chain[0].as_str();
                    let known = before_chain == "."
                        || before_chain == "]"
                        || head == "data"
                        || head == "input"
                        || name == "print"
                        || (chain.len() == 1 && KEYWORDS.contains(&head))
                        || aliases.contains(head)
                        || own.is_some_and(|f| f.contains(&name))
                        || BUILTINS.contains_key(name.as_str());
                    if !known {
                        return Err(PolicyError::MissingBuiltin {
                            file: info.file.clone(),
                            line: start.0,
                            col: start.1,
                            name,
                        });
                    }
                    chain.clear();
                }
                _ => {
                    chain.clear();
                    after_dot = false;
                }
            }
            prev_text = text;
            prev_end = token.1.end;
        }
    }
    Ok(())
}

/// Maps a regorus error to [`PolicyError::Compile`], keeping regorus' text. regorus formats
/// located errors as `\n--> file:line:col\n  |\nN | code\n  | ^\nerror: message`.
pub(crate) fn compile_error(fallback_file: &str, err: &anyhow::Error) -> PolicyError {
    let text = format!("{err:#}");
    match locate(&text) {
        Some(loc) => PolicyError::Compile {
            file: loc.file,
            line: loc.line,
            col: loc.col,
            message: loc.message,
            detail: loc.snippet,
        },
        None => PolicyError::Compile {
            file: fallback_file.to_string(),
            line: 0,
            col: 0,
            message: text.trim().to_string(),
            detail: String::new(),
        },
    }
}

/// A location parsed out of a regorus error text.
pub(crate) struct Located {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
    /// The code lines with the caret, each starting with a newline.
    pub snippet: String,
}

pub(crate) fn locate(text: &str) -> Option<Located> {
    let mut lines = text.lines();
    let loc = lines
        .by_ref()
        .find_map(|l| l.trim_start().strip_prefix("--> "))?;
    let mut parts = loc.rsplitn(3, ':');
    let col = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    let mut snippet = String::new();
    let mut message = String::new();
    for l in lines {
        if let Some(m) = l.strip_prefix("error: ") {
            message = m.to_string();
        } else if message.is_empty() {
            snippet.push('\n');
            snippet.push_str(l);
        } else {
            // Context anyhow appended after the located part.
            message.push_str("; ");
            message.push_str(l.trim());
        }
    }
    if message.is_empty() {
        message = text.trim().to_string();
    }
    Some(Located {
        file,
        line,
        col,
        message,
        snippet,
    })
}
