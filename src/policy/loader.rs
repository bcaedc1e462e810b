//! Finds policy and data files, loads them into a regorus engine, and checks what regorus itself
//! checks only late: which rules each module declares, and whether every function a policy calls
//! exists (regorus reports a missing builtin only when evaluation reaches the call).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use regorus::unstable::{BUILTINS, Lexer, Parser, Rule, RuleHead, TokenKind};
use regorus::{Engine, Source};

use super::engine::PolicyDir;
use super::{PolicyError, Result};

/// Names of data files picked up from policy directories (merged at the root of `data`).
const DATA_FILE_NAMES: [&str; 3] = ["data.json", "data.yaml", "data.yml"];

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
}

struct PolicyFile {
    path: PathBuf,
    rego_v0: bool,
    is_test: bool,
}

/// Loads every `.rego` file under `dirs` (tests only when `include_tests`), the data files found
/// in those directories (`data.json`, `data.yaml`, `data.yml`) and `data_files`, then checks the
/// calls. The engine is not yet prepared for evaluation; see [`prepare`].
pub(crate) fn load(
    dirs: &[PolicyDir],
    data_files: &[PathBuf],
    include_tests: bool,
) -> Result<Loaded> {
    let mut files = Vec::new();
    let mut data = Vec::new();
    for dir in dirs {
        collect(&dir.path, dir.rego_v0, &mut files, &mut data)?;
    }
    data.extend(data_files.iter().cloned());

    let mut engine = Engine::new();
    let mut modules = Vec::new();
    for f in files.iter().filter(|f| include_tests || !f.is_test) {
        let text = fs::read_to_string(&f.path).map_err(|error| PolicyError::Io {
            path: f.path.clone(),
            error,
        })?;
        let name = f.path.display().to_string();
        engine.set_rego_v0(f.rego_v0);
        engine
            .add_policy(name.clone(), text)
            .map_err(|e| compile_error(&name, &e))?;
        modules.push(ModuleInfo {
            file: name,
            package: Vec::new(),
            rules: BTreeSet::new(),
            is_test: f.is_test,
        });
    }
    engine.set_rego_v0(false);

    let functions = describe_modules(&mut engine, &mut modules)?;
    check_calls(&mut engine, &modules, &functions)?;

    for path in &data {
        engine
            .add_data(read_data(path)?)
            .map_err(|e| PolicyError::Data {
                path: path.clone(),
                message: format!("cannot merge into data: {e}"),
            })?;
    }
    Ok(Loaded { engine, modules })
}

/// Runs regorus' analysis (rule scheduling, recursion, safety checks) now, so that such errors
/// surface at load time with their file and line, and so that clones start prepared.
pub(crate) fn prepare(engine: &mut Engine) -> Result<()> {
    engine
        .eval_query("true".to_string(), false)
        .map(|_| ())
        .map_err(|e| compile_error("a policy", &e))
}

fn collect(
    path: &Path,
    rego_v0: bool,
    files: &mut Vec<PolicyFile>,
    data: &mut Vec<PathBuf>,
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
        push_file(path, rego_v0, files, data);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|error| PolicyError::Io {
            path: path.to_path_buf(),
            error,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, rego_v0, files, data)?;
        } else {
            push_file(&entry, rego_v0, files, data);
        }
    }
    Ok(())
}

fn push_file(path: &Path, rego_v0: bool, files: &mut Vec<PolicyFile>, data: &mut Vec<PathBuf>) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.ends_with(".rego") {
        files.push(PolicyFile {
            path: path.to_path_buf(),
            rego_v0,
            is_test: name.ends_with("_test.rego"),
        });
    } else if DATA_FILE_NAMES.contains(&name) {
        data.push(path.to_path_buf());
    }
}

/// Reads a data file: JSON, or YAML for `.yaml`/`.yml`. The root must be an object.
pub(crate) fn read_data(path: &Path) -> Result<regorus::Value> {
    let text = fs::read_to_string(path).map_err(|error| PolicyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let value = parse_document(path, &text).map_err(|message| PolicyError::Data {
        path: path.to_path_buf(),
        message,
    })?;
    if value.as_object().is_err() {
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

fn ref_components(
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
                TokenKind::Symbol if text == "(" && !chain.is_empty() && !after_dot => {
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
