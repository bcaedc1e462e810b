//! Parity with OPA: the places where regorus 0.14.1 reads or evaluates a policy differently from
//! OPA, and what driftwarden does about each (docs/policy.md, "Differences from OPA").
//!
//! Every policy file passes through [`prepare`] before regorus sees it:
//! - constructs regorus would read differently but that a small rewrite makes regorus read like
//!   OPA are rewritten in the text given to regorus (a `;` ending an expression that a line
//!   starting with `(` follows; definedness checks next to a negated call whose arguments OPA
//!   evaluates outside the `not`). Rewrites never add or remove a line, and never move the text
//!   before them on their line, so regorus' file and line numbers stay the user's;
//! - constructs it cannot make equal are refused with a [`Refusal`]: file, line, what OPA does,
//!   what regorus would do, and the rewrite that means the same in both.
//!
//! `sprintf` is replaced through regorus' extension API by [`opa_sprintf`] (missing and extra
//! arguments formatted as OPA does). regorus' compiled program cannot call extensions, so a
//! policy whose `sprintf` calls are not all checkably complete keeps the engine on the
//! interpreter ([`Prepared::interpreter_only`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use regorus::unstable::{
    BUILTINS, BoolOp, Expr, Lexer, Literal, LiteralStmt, Query, Rule, RuleHead, TokenKind,
};
use regorus::{Engine, Source, Value};

use super::REGORUS_VERSION;

/// A construct regorus 0.14.1 would evaluate differently from OPA, refused at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub file: String,
    pub line: u32,
    pub col: u32,
    /// The construct, as written (abridged).
    pub construct: String,
    /// What OPA does with it.
    pub opa: String,
    /// What regorus 0.14.1 would do.
    pub regorus: String,
    /// The rewrite that means the same in both.
    pub rewrite: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy {}:{}:{}: `{}` is refused: OPA {}; regorus {REGORUS_VERSION} {}. Write instead: {}",
            self.file, self.line, self.col, self.construct, self.opa, self.regorus, self.rewrite
        )
    }
}

/// One policy file made ready for regorus.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The text to give regorus (the file's own text when nothing was rewritten).
    pub text: String,
    /// Constructs refused in this file.
    pub refusals: Vec<Refusal>,
    /// Why this file must run on the interpreter (a `sprintf` the compiled program would
    /// evaluate differently), with its location.
    pub interpreter_only: Option<String>,
}

/// Rego keywords: an identifier that is one of them does not end a reference.
const KEYWORDS: [&str; 15] = [
    "not", "some", "every", "in", "if", "else", "with", "as", "contains", "default", "import",
    "package", "true", "false", "null",
];

/// Prepares one policy file. `package_rules` lists, per package (components without `data`), the
/// rule names every loaded file declares, so a bare rule name in a `with` target or a negated
/// call's argument is known as a rule.
pub(crate) fn prepare(
    file: &str,
    text: &str,
    rego_v0: bool,
    package_rules: &BTreeMap<Vec<String>, HashSet<String>>,
) -> Prepared {
    let mut refusals = Vec::new();
    let text = split_paren_lines(file, text, &mut refusals);
    let mut scratch = Engine::new();
    scratch.set_rego_v0(rego_v0);
    if let Err(e) = scratch.add_policy(file.to_string(), text.clone()) {
        // The multi-body set rule of Rego v0 does not parse in regorus; anything else is a
        // compile error the loader reports as such.
        let msg = format!("{e:#}");
        if msg.contains("else cannot be used with set rules")
            && let Some(loc) = super::loader::locate(&msg)
        {
            refusals.push(Refusal {
                file: file.to_string(),
                line: loc.line,
                col: loc.col,
                construct: "a set rule with several bodies `s[x] { ... } { ... }`".into(),
                opa: "reads it as one rule per body (the set holds what any body gives)".into(),
                regorus: "rejects it (\"else cannot be used with set rules\")".into(),
                rewrite:
                    "one rule per body, each with the head: `s[x] { ... }` then `s[x] { ... }`"
                        .into(),
            });
        }
        return Prepared {
            text,
            refusals,
            interpreter_only: None,
        };
    }
    let Some(module) = scratch.get_modules().first().cloned() else {
        return Prepared {
            text,
            refusals,
            interpreter_only: None,
        };
    };
    let package = package_of(&module.package.refr);
    let rules = package
        .as_ref()
        .and_then(|p| package_rules.get(p))
        .cloned()
        .unwrap_or_default();
    let mut walk = Walk {
        file,
        text: &text,
        rules: &rules,
        edits: Vec::new(),
        refusals,
        interpreter_only: None,
    };
    for rule in &module.policy {
        walk.rule(rule);
    }
    let Walk {
        mut edits,
        refusals,
        interpreter_only,
        ..
    } = walk;
    edits.sort_by_key(|e| std::cmp::Reverse(e.at));
    let mut out = text.clone();
    for e in edits {
        if e.at <= out.len() && e.at + e.remove <= out.len() {
            out.replace_range(e.at..e.at + e.remove, &e.insert);
        }
    }
    Prepared {
        text: out,
        refusals,
        interpreter_only,
    }
}

/// The package path of a module (components without `data`).
fn package_of(refr: &regorus::unstable::Ref<Expr>) -> Option<Vec<String>> {
    let comps = regorus::unstable::Parser::get_path_ref_components(refr).ok()?;
    Some(
        comps
            .iter()
            .map(|s| s.text().trim_matches('"').to_string())
            .collect(),
    )
}

/// OPA reads `(` as a call only right after a reference, with nothing in between. regorus reads
/// one after any whitespace, newlines included, so `input.a` newline `(1 + 1) == 2` became a call
/// of `input.a`. A newline there: a `;` is added after the reference (two expressions, as OPA
/// reads them). A space or tab on the same line: OPA does not parse it; refused.
fn split_paren_lines(file: &str, text: &str, refusals: &mut Vec<Refusal>) -> String {
    let Ok(source) = Source::from_contents(file.to_string(), text.to_string()) else {
        return text.to_string();
    };
    let mut lexer = Lexer::new(&source);
    let mut inserts: Vec<usize> = Vec::new();
    // The previous token when it can end a reference: its text, end offset and line.
    let mut prev: Option<(String, u32, u32)> = None;
    loop {
        // The parser reports lexical errors with their location; stop here.
        let Ok(token) = lexer.next_token() else {
            break;
        };
        let span = &token.1;
        let tok_text = span.text().to_string();
        match token.0 {
            TokenKind::Eof => break,
            TokenKind::Symbol if tok_text == "(" => {
                if let Some((name, end, line)) = &prev
                    && *end != span.start
                {
                    if *line != span.line {
                        inserts.push(*end as usize);
                    } else {
                        refusals.push(Refusal {
                            file: file.to_string(),
                            line: span.line,
                            col: span.col,
                            construct: format!("{name} ("),
                            opa: "reads no call when whitespace separates a name from `(` and \
                                  rejects the line"
                                .into(),
                            regorus: format!("calls {name}"),
                            rewrite: format!(
                                "`{name}(` with no space for a call, or a new line \
                                              for a separate expression"
                            ),
                        });
                    }
                }
                prev = None;
            }
            TokenKind::Ident if !KEYWORDS.contains(&tok_text.as_str()) => {
                prev = Some((tok_text, span.end, span.line));
            }
            TokenKind::Symbol if tok_text == "]" => {
                prev = Some(("]".to_string(), span.end, span.line));
            }
            _ => prev = None,
        }
    }
    let mut out = text.to_string();
    for at in inserts.into_iter().rev() {
        if out.is_char_boundary(at) {
            out.insert(at, ';');
        }
    }
    out
}

/// A text edit: at byte `at`, remove `remove` bytes and insert `insert`.
struct Edit {
    at: usize,
    remove: usize,
    insert: String,
}

struct Walk<'a> {
    file: &'a str,
    text: &'a str,
    rules: &'a HashSet<String>,
    edits: Vec<Edit>,
    refusals: Vec<Refusal>,
    interpreter_only: Option<String>,
}

impl Walk<'_> {
    fn refuse(&mut self, span: &regorus::unstable::Span, construct: &str, r: [&str; 3]) {
        let construct = construct.split_whitespace().collect::<Vec<_>>().join(" ");
        let construct = if construct.chars().count() > 80 {
            format!("{}...", construct.chars().take(77).collect::<String>())
        } else {
            construct
        };
        self.refusals.push(Refusal {
            file: self.file.to_string(),
            line: span.line,
            col: span.col,
            construct,
            opa: r[0].to_string(),
            regorus: r[1].to_string(),
            rewrite: r[2].to_string(),
        });
    }

    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                    RuleHead::Set { key, .. } => {
                        if let Some(k) = key {
                            self.expr(k);
                        }
                    }
                }
                for (i, body) in bodies.iter().enumerate() {
                    if i > 0 && !body.is_else {
                        let head_text = head_span(head).text().to_string();
                        self.refuse(
                            &body.span,
                            &format!("{head_text} {{ ... }} {{ ... }}"),
                            [
                                "reads a rule with several bodies as one rule per body, each \
                                 with the head's value",
                                "evaluates the later bodies without the head's value (a \
                                 complete rule gives `true`, a function nothing)",
                                &format!(
                                    "one rule per body, each with the head: `{head_text} {{ ... }}` \
                                     repeated"
                                ),
                            ],
                        );
                    }
                    if let Some(a) = &body.assign {
                        self.expr(&a.value);
                    }
                    self.query(&body.query);
                }
            }
            Rule::Default { value, .. } => self.expr(value),
        }
    }

    fn query(&mut self, q: &Query) {
        for stmt in &q.stmts {
            self.stmt(stmt);
        }
    }

    fn stmt(&mut self, stmt: &LiteralStmt) {
        for w in &stmt.with_mods {
            self.with_target(w);
            self.expr(&w.r#as);
        }
        match &stmt.literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
            Literal::Expr { expr, .. } => self.expr(expr),
            Literal::NotExpr { span, expr } => {
                self.negated_call(stmt, span, expr);
                self.expr(expr);
            }
            Literal::Every { domain, query, .. } => {
                self.expr(domain);
                self.query(query);
            }
        }
    }

    /// `with r as v` where `r` is a rule of the same package, named without `data.`: OPA
    /// replaces the rule, regorus reports an undefined rule.
    fn with_target(&mut self, w: &regorus::unstable::WithModifier) {
        let mut root = w.refr.as_ref();
        while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = root {
            root = refr.as_ref();
        }
        let Expr::Var { span, .. } = root else {
            return;
        };
        let name = span.text();
        if name == "input" || name == "data" || !self.rules.contains(name) {
            return;
        }
        let target = w.refr.span().text().to_string();
        self.refuse(
            w.refr.span(),
            &format!("with {target} as ..."),
            [
                "replaces the rule of the same package",
                "reports an undefined rule",
                &format!("name the rule by its full path: `with data.<package>.{target} as ...`"),
            ],
        );
    }

    /// `not f(args)`: OPA's compiler binds the arguments of a call (and of `!=`, `<`, `in`,
    /// arithmetic: calls too) that are references or calls to variables before the negation,
    /// so an undefined argument makes the whole expression undefined; regorus evaluates them
    /// inside it, where undefined makes `not` true. `==` is unification for OPA's compiler: only
    /// calls in its operands, and references used as an index inside a reference, are bound
    /// before; the same holds for a negated reference (`not obj[input.k]`). A check
    /// `arg == arg` next to the negation (undefined exactly when the argument is) restores OPA's
    /// reading.
    fn negated_call(&mut self, stmt: &LiteralStmt, not_span: &regorus::unstable::Span, e: &Expr) {
        let mut dynamic: Vec<&Expr> = Vec::new();
        match e {
            Expr::Call { params, .. } => {
                for p in params {
                    self.dynamic_terms(p, &mut dynamic);
                }
            }
            Expr::BoolExpr {
                op: BoolOp::Eq,
                lhs,
                rhs,
                ..
            } => {
                for side in [lhs, rhs] {
                    nested_calls(side, &mut dynamic);
                    ref_indexes(side, &mut dynamic);
                }
            }
            Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::BinExpr { lhs, rhs, .. } => {
                self.dynamic_terms(lhs, &mut dynamic);
                self.dynamic_terms(rhs, &mut dynamic);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.dynamic_terms(k, &mut dynamic);
                }
                self.dynamic_terms(value, &mut dynamic);
                self.dynamic_terms(collection, &mut dynamic);
            }
            Expr::RefDot { .. } | Expr::RefBrack { .. } => {
                nested_calls(e, &mut dynamic);
                ref_indexes(e, &mut dynamic);
            }
            _ => return,
        }
        dynamic.sort_by_key(|d| (d.span().start, d.span().end));
        dynamic.dedup_by_key(|d| (d.span().start, d.span().end));
        if dynamic.is_empty() {
            return;
        }
        let mut checks = String::new();
        let stmt_end = (stmt.span.end as usize).max(
            stmt.with_mods
                .iter()
                .map(|w| w.span.end as usize)
                .max()
                .unwrap_or(0),
        );
        let not_end = not_span.end as usize;
        let with_text = self
            .text
            .get(not_end.min(stmt_end)..stmt_end)
            .unwrap_or("")
            .to_string();
        for d in dynamic {
            let t = d.span().text();
            if has_wildcard(d) {
                self.refuse(
                    not_span,
                    not_span.text(),
                    [
                        "evaluates the argument, wildcard included, before the negation (some \
                         element for which the call fails)",
                        "evaluates it inside the negation (no element for which the call holds)",
                        "bind the element first: `some x in ...` then `not f(x)`, or use a \
                         comprehension",
                    ],
                );
                return;
            }
            let t = if t.contains('\n') {
                if t.contains('#') || t.contains('`') {
                    self.refuse(
                        not_span,
                        not_span.text(),
                        [
                            "evaluates the argument before the negation",
                            "evaluates it inside the negation, where undefined makes `not` true",
                            "bind the argument first (`x := ...`) and negate the call on `x`",
                        ],
                    );
                    return;
                }
                t.split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                t.to_string()
            };
            checks.push_str(&format!("; {t} == {t}{with_text}"));
        }
        // A body written without braces (`p if not f(x)`) gets them, so the checks join it.
        let before = self.text.get(..stmt.span.start as usize).unwrap_or("");
        let trimmed = before.trim_end();
        let braceless = trimmed.ends_with("if")
            && !trimmed[..trimmed.len() - 2]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if braceless {
            let start = stmt.span.start as usize;
            if before.ends_with(' ') || before.ends_with('\t') {
                self.edits.push(Edit {
                    at: start - 1,
                    remove: 1,
                    insert: "{".into(),
                });
            } else {
                self.edits.push(Edit {
                    at: trimmed.len(),
                    remove: 0,
                    insert: "{".into(),
                });
            }
            checks.push_str(" }");
        }
        self.edits.push(Edit {
            at: stmt_end,
            remove: 0,
            insert: checks,
        });
    }

    /// The argument terms OPA evaluates before a negated call: references (a bare rule name
    /// included) and calls, found through array, set and object literals.
    fn dynamic_terms<'e>(&self, e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::RefDot { .. }
            | Expr::RefBrack { .. }
            | Expr::Call { .. }
            | Expr::ArithExpr { .. }
            | Expr::BinExpr { .. }
            | Expr::BoolExpr { .. }
            | Expr::Membership { .. } => out.push(e),
            Expr::Var { span, .. } => {
                let name = span.text();
                if name == "input" || name == "data" || self.rules.contains(name) {
                    out.push(e);
                }
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.dynamic_terms(i, out);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.dynamic_terms(k, out);
                    self.dynamic_terms(v, out);
                }
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.expr(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k);
                    self.expr(v);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call {
                span, fcn, params, ..
            } => {
                if fcn.span().text() == "sprintf" {
                    self.sprintf_call(span, params);
                }
                self.expr(fcn);
                for p in params {
                    self.expr(p);
                }
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::RefDot { refr, .. } => self.expr(refr),
            Expr::RefBrack { refr, index, .. } => {
                self.expr(refr);
                self.expr(index);
            }
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
            _ => {}
        }
    }

    /// A `sprintf` whose format is a string literal and whose arguments are an array literal with
    /// one item per verb gives the same text in regorus' compiled program and in the
    /// interpreter's OPA-compatible `sprintf`; any other keeps the engine on the interpreter.
    fn sprintf_call(
        &mut self,
        span: &regorus::unstable::Span,
        params: &[regorus::unstable::Ref<Expr>],
    ) {
        if self.interpreter_only.is_some() {
            return;
        }
        let checked = match (
            params.first().map(|p| p.as_ref()),
            params.get(1).map(|p| p.as_ref()),
        ) {
            (
                Some(Expr::String { value, .. } | Expr::RawString { value, .. }),
                Some(Expr::Array { items, .. }),
            ) => value
                .as_string()
                .ok()
                .is_some_and(|f| count_verbs(f) == Some(items.len())),
            _ => false,
        };
        if !checked {
            self.interpreter_only = Some(format!(
                "{}:{}:{}: a sprintf whose verbs and arguments cannot be counted at load time",
                self.file, span.line, span.col
            ));
        }
    }
}

/// Calls (and operators that are calls) in an expression, through array, set and object
/// literals and reference indexes: what OPA's compiler binds before the expression.
fn nested_calls<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Call { .. }
        | Expr::ArithExpr { .. }
        | Expr::BinExpr { .. }
        | Expr::BoolExpr { .. }
        | Expr::Membership { .. } => out.push(e),
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            for i in items {
                nested_calls(i, out);
            }
        }
        Expr::Object { fields, .. } => {
            for (_, k, v) in fields {
                nested_calls(k, out);
                nested_calls(v, out);
            }
        }
        Expr::RefDot { refr, .. } => nested_calls(refr, out),
        Expr::RefBrack { refr, index, .. } => {
            nested_calls(refr, out);
            nested_calls(index, out);
        }
        _ => {}
    }
}

/// References and calls used as an index inside a reference (`obj[input.k]`): OPA's compiler
/// binds them before the expression that holds the reference.
fn ref_indexes<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::RefDot { refr, .. } => ref_indexes(refr, out),
        Expr::RefBrack { refr, index, .. } => {
            ref_indexes(refr, out);
            match index.as_ref() {
                Expr::RefDot { .. } | Expr::RefBrack { .. } | Expr::Call { .. } => out.push(index),
                other => ref_indexes(other, out),
            }
        }
        _ => {}
    }
}

fn head_span(head: &RuleHead) -> &regorus::unstable::Span {
    match head {
        RuleHead::Compr { span, .. } | RuleHead::Set { span, .. } | RuleHead::Func { span, .. } => {
            span
        }
    }
}

/// Whether an expression mentions the wildcard `_`.
fn has_wildcard(e: &Expr) -> bool {
    let Ok(source) = Source::from_contents("<arg>".into(), e.span().text().to_string()) else {
        return true;
    };
    let mut lexer = Lexer::new(&source);
    while let Ok(t) = lexer.next_token() {
        match t.0 {
            TokenKind::Eof => return false,
            TokenKind::Ident if t.1.text() == "_" => return true,
            _ => {}
        }
    }
    true
}

/// One piece of a format string, read the way regorus' `sprintf` reads it: `%`, an optional
/// width (`5`, `05`, `.2`), one verb character.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Verb { spec: String, verb: char },
}

fn pieces(format: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        match chars.peek() {
            Some('%') => {
                chars.next();
                text.push('%');
                continue;
            }
            None => return None,
            _ => {}
        }
        let mut spec = String::from("%");
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || (d == '.' && spec.len() == 1) {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next()?;
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        spec.push(verb);
        out.push(Piece::Verb { spec, verb });
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Some(out)
}

/// The number of verbs in a format string; `None` when it ends inside a verb.
fn count_verbs(format: &str) -> Option<usize> {
    Some(
        pieces(format)?
            .iter()
            .filter(|p| matches!(p, Piece::Verb { .. }))
            .count(),
    )
}

/// `sprintf` as OPA formats it: regorus' own formatting for every verb that has its argument;
/// a verb without one prints `%!v(MISSING)` (its own verb letter), and arguments beyond the
/// verbs are listed as `%!(EXTRA int=2, string=x)`, as Go's `fmt` (and so OPA) does.
pub(crate) fn opa_sprintf(args: Vec<Value>) -> anyhow::Result<Value> {
    let [format, list] = args.as_slice() else {
        anyhow::bail!("sprintf expects 2 arguments");
    };
    let format = format
        .as_string()
        .map_err(|_| anyhow::anyhow!("sprintf: operand 1 must be string but got {format}"))?
        .to_string();
    let items = list
        .as_array()
        .map_err(|_| anyhow::anyhow!("sprintf: operand 2 must be array but got {list}"))?
        .to_vec();
    let Some(parts) = pieces(&format) else {
        // Let regorus report the malformed format string.
        return regorus_sprintf(&format, items);
    };
    let verbs = parts
        .iter()
        .filter(|p| matches!(p, Piece::Verb { .. }))
        .count();
    if verbs == items.len() {
        return regorus_sprintf(&format, items);
    }
    if verbs > items.len() {
        // Format the part that has its arguments with regorus, the rest as Go does.
        let mut head = String::new();
        let mut tail = String::new();
        let mut used = 0;
        let mut missing = false;
        for p in &parts {
            match p {
                Piece::Verb { spec, .. } if !missing && used < items.len() => {
                    head.push_str(spec);
                    used += 1;
                }
                Piece::Verb { verb, .. } => {
                    missing = true;
                    tail.push_str(&format!("%!{verb}(MISSING)"));
                }
                Piece::Text(t) if missing => tail.push_str(t),
                Piece::Text(t) => head.push_str(&t.replace('%', "%%")),
            }
        }
        let formatted = regorus_sprintf(&head, items)?;
        let formatted = formatted.as_string()?.to_string();
        return Ok(Value::from(format!("{formatted}{tail}")));
    }
    let (used, extra) = items.split_at(verbs);
    let formatted = regorus_sprintf(&format, used.to_vec())?;
    let extras: Vec<String> = extra
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(format!("string={s}")),
            Value::Number(n) if n.is_integer() => Ok(format!("int={v}")),
            Value::Number(_) => Ok(format!("float64={v}")),
            other => Err(anyhow::anyhow!(
                "sprintf: an extra argument of this type ({other}) is not formatted as OPA \
                 formats it; pass one argument per verb"
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Value::from(format!(
        "{}%!(EXTRA {})",
        formatted.as_string()?,
        extras.join(", ")
    )))
}

/// regorus' builtin `sprintf`, called directly (its parameters are only used for error
/// locations, so they point at a one-line stand-in).
fn regorus_sprintf(format: &str, items: Vec<Value>) -> anyhow::Result<Value> {
    let (f, _) = BUILTINS
        .get("sprintf")
        .ok_or_else(|| anyhow::anyhow!("regorus has no sprintf builtin"))?;
    let source = Source::from_contents("<sprintf>".into(), "sprintf(format, values)".into())?;
    let span = |start: u32, end: u32| regorus::unstable::Span {
        source: source.clone(),
        line: 1,
        col: start + 1,
        start,
        end,
    };
    let var = |start: u32, end: u32, name: &str| {
        regorus::unstable::Ref::new(Expr::Var {
            span: span(start, end),
            value: Value::from(name),
            eidx: 0,
        })
    };
    let params = [var(8, 14, "format"), var(16, 22, "values")];
    f(
        &span(0, 23),
        &params,
        &[Value::from(format), Value::from(items)],
        true,
    )
    .map_err(|e| {
        let text = format!("{e:#}");
        let message = text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_string();
        anyhow::anyhow!("sprintf: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(format: &str, items: Vec<Value>) -> String {
        opa_sprintf(vec![Value::from(format), Value::from(items)])
            .unwrap()
            .as_string()
            .unwrap()
            .to_string()
    }

    #[test]
    fn sprintf_formats_missing_and_extra_arguments_like_go() {
        assert_eq!(s("%v %v", vec![Value::from(1)]), "1 %!v(MISSING)");
        assert_eq!(s("%v", vec![]), "%!v(MISSING)");
        assert_eq!(
            s("a %d b %s c", vec![Value::from(7)]),
            "a 7 b %!s(MISSING) c"
        );
        assert_eq!(s("100%% %v", vec![]), "100% %!v(MISSING)");
        assert_eq!(
            s("%v", vec![Value::from(1), Value::from(2), Value::from("x")]),
            "1%!(EXTRA int=2, string=x)"
        );
        assert_eq!(
            s("port %v/%s", vec![Value::from(22), Value::from("tcp")]),
            "port 22/tcp"
        );
    }

    #[test]
    fn verbs_are_counted_like_regorus_reads_them() {
        assert_eq!(count_verbs("%v %5d %.2f %%"), Some(3));
        assert_eq!(count_verbs("no verbs"), Some(0));
        assert_eq!(count_verbs("ends in %"), None);
    }

    fn prep(text: &str) -> Prepared {
        prepare("p.rego", text, false, &BTreeMap::new())
    }

    #[test]
    fn a_paren_line_after_a_reference_is_a_new_expression() {
        let p = prep("package p\nt if {\n  input.a\n  (1 + 1) == 2\n}\n");
        assert!(p.refusals.is_empty());
        assert_eq!(p.text, "package p\nt if {\n  input.a;\n  (1 + 1) == 2\n}\n");
        let p = prep("package p\nt if { count ([1]) == 1 }\n");
        assert_eq!(p.refusals.len(), 1, "{:?}", p.refusals);
        assert_eq!((p.refusals[0].line, p.refusals[0].col), (2, 14));
        // Calls written as OPA writes them are left alone.
        let p = prep("package p\nt if { count([1]) == 1\n  not (1 == 2) }\n");
        assert!(p.refusals.is_empty());
        assert_eq!(
            p.text,
            "package p\nt if { count([1]) == 1\n  not (1 == 2) }\n"
        );
    }

    #[test]
    fn negated_calls_get_definedness_checks_on_their_own_line() {
        let p = prep("package p\nf(x) if x == 1\nt if { not f(input.missing) }\n");
        assert_eq!(
            p.text,
            "package p\nf(x) if x == 1\nt if { not f(input.missing); input.missing == input.missing }\n"
        );
        let p = prep("package p\nf(x) if x == 1\nt if not f(input.missing)\n");
        assert_eq!(
            p.text,
            "package p\nf(x) if x == 1\nt if{not f(input.missing); input.missing == input.missing }\n"
        );
        // `==` is unification for OPA: its references stay inside the negation, its calls and
        // reference indexes do not.
        let p = prep("package p\nt if { not input.x == 1 }\n");
        assert_eq!(p.text, "package p\nt if { not input.x == 1 }\n");
        let p = prep("package p\nt if { not count(input.x) == 0 }\n");
        assert_eq!(
            p.text,
            "package p\nt if { not count(input.x) == 0; count(input.x) == count(input.x) }\n"
        );
        let p = prep("package p\nt if { not input.x != 1 }\n");
        assert_eq!(
            p.text,
            "package p\nt if { not input.x != 1; input.x == input.x }\n"
        );
        let p = prep("package p\nobj := {}\nt if { not obj[input.k] }\n");
        assert_eq!(
            p.text,
            "package p\nobj := {}\nt if { not obj[input.k]; input.k == input.k }\n"
        );
        // Local variables need no check.
        let p = prep("package p\nf(x) if x == 1\nt if { x := 2; not f(x) }\n");
        assert_eq!(
            p.text,
            "package p\nf(x) if x == 1\nt if { x := 2; not f(x) }\n"
        );
    }

    /// The default library is written so that regorus reads it as OPA does with no rewrite:
    /// the text regorus evaluates is the text in the repository (and costs nothing extra), and
    /// every `sprintf` is checkable, so it runs compiled.
    #[test]
    fn the_default_library_needs_no_rewrite() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rego") || name.ends_with("_test.rego") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let p = prepare(&name, &text, false, &BTreeMap::new());
            assert!(p.refusals.is_empty(), "{name}: {:?}", p.refusals);
            assert_eq!(p.interpreter_only, None, "{name}");
            assert!(p.text == text, "{name} was rewritten");
            checked += 1;
        }
        assert!(checked >= 5, "{checked} files");
    }
}
