//! `spec.advanced.scalingModifiers`: KEDA's formula language (expr-lang) for combining
//! triggers into one `composite-metric`, as a small evaluator of the subset KEDA users
//! write. See `docs/scaling-modifiers.md` for the subset.
//!
//! Operator precedence follows expr-lang: ternary `?:` lowest, then `||`/`or`, `&&`/`and`,
//! comparisons, `+ -`, `* / %`, unary `!`/`not` and `-`, `**`/`^` (right-associative), and
//! `??` binding tightest.

use std::collections::BTreeMap;

/// Longest formula accepted.
pub const MAX_FORMULA_BYTES: usize = 4096;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// A formula that failed to parse, check or evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormulaError {
    /// Syntax, with the byte position.
    #[error("error parsing formula: {message} at {position}")]
    Parse {
        /// What was wrong.
        message: String,
        /// Byte offset in the formula.
        position: usize,
    },
    /// A name that is not a trigger.
    #[error("error compiling formula: unknown name {0}")]
    UnknownName(String),
    /// A runtime type error and the like.
    #[error("error evaluating formula: {0}")]
    Eval(String),
    /// A field of `scalingModifiers` is missing or invalid.
    #[error("spec.advanced.scalingModifiers.{field}: {message}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    Hash,
    End,
}

const OPS: [&str; 28] = [
    "**", "??", "==", "!=", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%", "^", "<", ">", "!",
    "?", ":", "(", ")", "[", "]", ",", "{", "}", ".", "#",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, FormulaError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |message: String, position| FormulaError::Parse { message, position };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text = src[start..i].replace('_', "");
            let n = text
                .parse::<f64>()
                .map_err(|_| err(format!("invalid number {:?}", &src[start..i]), start))?;
            out.push((Tok::Num(n), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            let word = &src[start..i];
            let tok = match word {
                "and" => Tok::Op("&&"),
                "or" => Tok::Op("||"),
                "not" => Tok::Op("!"),
                _ => Tok::Ident(word.to_string()),
            };
            out.push((tok, start));
            continue;
        }
        if c == b'"' || c == b'\'' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err(err("unterminated string".into(), start));
                };
                if ch == c {
                    i += 1;
                    break;
                }
                if ch == b'\\' {
                    i += 1;
                }
                let ch_str = src
                    .get(i..)
                    .and_then(|r| r.chars().next())
                    .ok_or_else(|| err("unterminated string".into(), start))?;
                s.push(ch_str);
                i += ch_str.len_utf8();
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        let rest = &src[i..];
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(&"#") => {
                out.push((Tok::Hash, start));
                i += 1;
            }
            Some(op) => {
                out.push((Tok::Op(op), start));
                i += op.len();
            }
            None => {
                let ch = rest.chars().next().unwrap_or('?');
                return Err(err(format!("unexpected character {ch:?}"), start));
            }
        }
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Str(String),
    Bool(bool),
    Nil,
    Var(String),
    /// The current element inside a predicate.
    Elem,
    Array(Vec<Expr>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    /// `{ ... }`, a predicate over `#`.
    Closure(Box<Expr>),
}

fn binary_precedence(op: &str) -> Option<(u16, bool)> {
    // (precedence, right-associative)
    Some(match op {
        "||" => (10, false),
        "&&" => (15, false),
        "==" | "!=" | "<" | ">" | "<=" | ">=" => (20, false),
        "+" | "-" => (30, false),
        "*" | "/" | "%" => (60, false),
        "**" | "^" => (100, true),
        "??" => (500, false),
        _ => return None,
    })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn at(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, FormulaError> {
        Err(FormulaError::Parse {
            message: message.into(),
            position: self.at(),
        })
    }

    fn expect(&mut self, op: &'static str) -> Result<(), FormulaError> {
        if *self.peek() == Tok::Op(op) {
            self.next();
            Ok(())
        } else {
            let found = describe(self.peek());
            self.fail(format!("expected '{op}', found {found}"))
        }
    }

    fn enter(&mut self) -> Result<(), FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("formula nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Expr, FormulaError> {
        self.enter()?;
        let cond = self.binary(0)?;
        let e = if *self.peek() == Tok::Op("?") {
            self.next();
            let yes = self.expression()?;
            self.expect(":")?;
            let no = self.expression()?;
            Expr::Ternary(Box::new(cond), Box::new(yes), Box::new(no))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(e)
    }

    fn binary(&mut self, min: u16) -> Result<Expr, FormulaError> {
        let mut left = self.unary()?;
        while let Tok::Op(op) = self.peek().clone() {
            let Some((prec, right)) = binary_precedence(op) else {
                break;
            };
            if prec < min {
                break;
            }
            self.next();
            self.enter()?;
            let rhs = self.binary(if right { prec } else { prec + 1 })?;
            self.depth -= 1;
            left = Expr::Binary(op, Box::new(left), Box::new(rhs));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FormulaError> {
        match self.peek().clone() {
            Tok::Op("!") => {
                self.next();
                self.enter()?;
                let e = self.binary(50)?;
                self.depth -= 1;
                Ok(Expr::Unary("!", Box::new(e)))
            }
            Tok::Op(op @ ("-" | "+")) => {
                self.next();
                self.enter()?;
                let e = self.binary(90)?;
                self.depth -= 1;
                Ok(Expr::Unary(op, Box::new(e)))
            }
            _ => self.primary(),
        }
    }

    fn list(&mut self, close: &'static str) -> Result<Vec<Expr>, FormulaError> {
        let mut items = Vec::new();
        if *self.peek() == Tok::Op(close) {
            self.next();
            return Ok(items);
        }
        loop {
            items.push(self.expression()?);
            let at = self.at();
            match self.next() {
                Tok::Op(",") if *self.peek() == Tok::Op(close) => {
                    self.next();
                    return Ok(items);
                }
                Tok::Op(",") => {}
                Tok::Op(op) if op == close => return Ok(items),
                other => {
                    return Err(FormulaError::Parse {
                        message: format!("expected ',' or '{close}', found {}", describe(&other)),
                        position: at,
                    })
                }
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, FormulaError> {
        let at = self.at();
        match self.next() {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Hash => Ok(Expr::Elem),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "nil" => Ok(Expr::Nil),
                _ if *self.peek() == Tok::Op("(") => {
                    self.next();
                    self.enter()?;
                    let args = self.list(")")?;
                    self.depth -= 1;
                    Ok(Expr::Call(name, args))
                }
                _ => Ok(Expr::Var(name)),
            },
            Tok::Op("(") => {
                let e = self.expression()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                self.enter()?;
                let items = self.list("]")?;
                self.depth -= 1;
                Ok(Expr::Array(items))
            }
            Tok::Op("{") => {
                let body = self.expression()?;
                self.expect("}")?;
                Ok(Expr::Closure(Box::new(body)))
            }
            other => Err(FormulaError::Parse {
                message: format!("unexpected {}", describe(&other)),
                position: at,
            }),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(i) => format!("name {i}"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::Hash => "'#'".into(),
        Tok::End => "end of formula".into(),
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Bool(bool),
    Str(String),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Num(_) => "number",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Nil => "nil",
            Value::Array(_) => "array",
        }
    }
}

fn eval_err<T>(m: impl Into<String>) -> Result<T, FormulaError> {
    Err(FormulaError::Eval(m.into()))
}

/// A parsed formula.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    expr: Expr,
}

impl Formula {
    /// Parse `src`.
    pub fn parse(src: &str) -> Result<Self, FormulaError> {
        if src.len() > MAX_FORMULA_BYTES {
            return Err(FormulaError::Parse {
                message: format!(
                    "formula is {} bytes; at most {MAX_FORMULA_BYTES} are accepted",
                    src.len()
                ),
                position: 0,
            });
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        let expr = p.expression()?;
        if *p.peek() != Tok::End {
            let found = describe(p.peek());
            return p.fail(format!("unexpected {found} after the expression"));
        }
        Ok(Self { expr })
    }

    /// Every name the formula uses must be a trigger name (or a builtin).
    pub fn check(&self, names: &[&str]) -> Result<(), FormulaError> {
        fn walk(e: &Expr, names: &[&str]) -> Result<(), FormulaError> {
            match e {
                Expr::Var(v) if !names.contains(&v.as_str()) => {
                    Err(FormulaError::UnknownName(v.clone()))
                }
                Expr::Call(f, args) => {
                    if !["min", "max", "abs", "ceil", "floor", "count"].contains(&f.as_str()) {
                        return Err(FormulaError::UnknownName(format!("{f}()")));
                    }
                    args.iter().try_for_each(|a| walk(a, names))
                }
                Expr::Array(items) => items.iter().try_for_each(|a| walk(a, names)),
                Expr::Unary(_, a) | Expr::Closure(a) => walk(a, names),
                Expr::Binary(_, a, b) => walk(a, names).and(walk(b, names)),
                Expr::Ternary(a, b, c) => walk(a, names).and(walk(b, names)).and(walk(c, names)),
                _ => Ok(()),
            }
        }
        walk(&self.expr, names)
    }

    /// The value with `vars` bound; `None` when the formula yields nil.
    pub fn eval(&self, vars: &BTreeMap<String, f64>) -> Result<Option<f64>, FormulaError> {
        match eval(&self.expr, vars, None)? {
            Value::Num(n) if n.is_finite() => Ok(Some(n)),
            Value::Num(n) => eval_err(format!("the formula's result {n} is not a finite number")),
            Value::Nil => Ok(None),
            other => eval_err(format!(
                "the formula must give a number, not a {}",
                other.kind()
            )),
        }
    }
}

fn num(v: &Value, what: &str) -> Result<f64, FormulaError> {
    match v {
        Value::Num(n) => Ok(*n),
        other => eval_err(format!("invalid operation: {what} on a {}", other.kind())),
    }
}

fn truthy(v: &Value, what: &str) -> Result<bool, FormulaError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => eval_err(format!("{what} needs a bool, not a {}", other.kind())),
    }
}

fn numbers(args: &[Value], f: &str) -> Result<Vec<f64>, FormulaError> {
    let flat: Vec<&Value> = match args {
        [Value::Array(items)] => items.iter().collect(),
        _ => args.iter().collect(),
    };
    if flat.is_empty() {
        return eval_err(format!("{f}() needs at least one number"));
    }
    flat.into_iter()
        .map(|v| num(v, &format!("{f}()")))
        .collect()
}

fn eval(
    e: &Expr,
    vars: &BTreeMap<String, f64>,
    elem: Option<&Value>,
) -> Result<Value, FormulaError> {
    Ok(match e {
        Expr::Num(n) => Value::Num(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Nil => Value::Nil,
        Expr::Var(v) => match vars.get(v) {
            Some(n) => Value::Num(*n),
            None => Value::Nil,
        },
        Expr::Elem => match elem {
            Some(v) => v.clone(),
            None => {
                return eval_err(
                    "'#' is only meaningful inside a predicate such as count(list, {# > 1})",
                )
            }
        },
        Expr::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, vars, elem))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Closure(_) => {
            return eval_err("a predicate {...} is only meaningful as count's second argument")
        }
        Expr::Unary(op, a) => {
            let v = eval(a, vars, elem)?;
            match *op {
                "!" => Value::Bool(!truthy(&v, "'!'")?),
                "-" => Value::Num(-num(&v, "'-'")?),
                _ => Value::Num(num(&v, "'+'")?),
            }
        }
        Expr::Ternary(c, y, n) => {
            if truthy(&eval(c, vars, elem)?, "the condition of '?:'")? {
                eval(y, vars, elem)?
            } else {
                eval(n, vars, elem)?
            }
        }
        Expr::Binary(op, a, b) => {
            match *op {
                "??" => {
                    let l = eval(a, vars, elem)?;
                    return if l == Value::Nil {
                        eval(b, vars, elem)
                    } else {
                        Ok(l)
                    };
                }
                "&&" => {
                    return Ok(Value::Bool(
                        truthy(&eval(a, vars, elem)?, "'&&'")?
                            && truthy(&eval(b, vars, elem)?, "'&&'")?,
                    ))
                }
                "||" => {
                    return Ok(Value::Bool(
                        truthy(&eval(a, vars, elem)?, "'||'")?
                            || truthy(&eval(b, vars, elem)?, "'||'")?,
                    ))
                }
                _ => {}
            }
            let (l, r) = (eval(a, vars, elem)?, eval(b, vars, elem)?);
            match *op {
                "==" => Value::Bool(l == r),
                "!=" => Value::Bool(l != r),
                _ => {
                    let what = format!("'{op}'");
                    if !matches!((&l, &r), (Value::Num(_), Value::Num(_))) {
                        return eval_err(format!(
                            "invalid operation: {} {op} {}",
                            l.kind(),
                            r.kind()
                        ));
                    }
                    let (x, y) = (num(&l, &what)?, num(&r, &what)?);
                    match *op {
                        "<" => Value::Bool(x < y),
                        ">" => Value::Bool(x > y),
                        "<=" => Value::Bool(x <= y),
                        ">=" => Value::Bool(x >= y),
                        "+" => Value::Num(x + y),
                        "-" => Value::Num(x - y),
                        "*" => Value::Num(x * y),
                        "/" => Value::Num(x / y),
                        "%" => {
                            if y == 0.0 {
                                return eval_err("integer divide by zero");
                            }
                            Value::Num(x % y)
                        }
                        _ => Value::Num(x.powf(y)),
                    }
                }
            }
        }
        Expr::Call(f, args) => {
            if f == "count" {
                let [list, Expr::Closure(pred)] = args.as_slice() else {
                    return eval_err(
                        "count() takes a list and a predicate: count([a, b], {# > 1})",
                    );
                };
                let Value::Array(items) = eval(list, vars, elem)? else {
                    return eval_err("count()'s first argument must be a list");
                };
                let mut n = 0.0;
                for item in &items {
                    if truthy(&eval(pred, vars, Some(item))?, "count()'s predicate")? {
                        n += 1.0;
                    }
                }
                return Ok(Value::Num(n));
            }
            let vals: Vec<Value> = args
                .iter()
                .map(|a| eval(a, vars, elem))
                .collect::<Result<_, _>>()?;
            match (f.as_str(), vals.as_slice()) {
                ("min", _) => Value::Num(
                    numbers(&vals, "min")?
                        .into_iter()
                        .fold(f64::INFINITY, f64::min),
                ),
                ("max", _) => Value::Num(
                    numbers(&vals, "max")?
                        .into_iter()
                        .fold(f64::NEG_INFINITY, f64::max),
                ),
                ("abs", [v]) => Value::Num(num(v, "abs()")?.abs()),
                ("ceil", [v]) => Value::Num(num(v, "ceil()")?.ceil()),
                ("floor", [v]) => Value::Num(num(v, "floor()")?.floor()),
                ("abs" | "ceil" | "floor", _) => {
                    return eval_err(format!("{f}() takes one argument"))
                }
                _ => return eval_err(format!("unknown function {f}()")),
            }
        }
    })
}

/// The checked formula and target of a ScaledObject's `scalingModifiers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Modifiers {
    /// The formula.
    pub formula: Formula,
    /// Target of the composite metric.
    pub target: f64,
    /// Active strictly above this.
    pub activation_target: f64,
}

/// KEDA's validation of `scalingModifiers`: formula required and compiling against the
/// trigger names, target required and > 0, activationTarget a number, metricType not
/// Utilization.
pub fn validate(
    formula: Option<&str>,
    target: Option<&str>,
    activation_target: Option<&str>,
    metric_type: Option<&str>,
    trigger_names: &[&str],
) -> Result<Modifiers, FormulaError> {
    let field = |field, message: &str| FormulaError::Field {
        field,
        message: message.into(),
    };
    let src = formula
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| field("formula", "required when scalingModifiers is set"))?;
    let target = target
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| field("target", "required when scalingModifiers is set"))?
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0)
        .ok_or_else(|| field("target", "must be a number greater than 0"))?;
    let activation_target = match activation_target.map(str::trim).filter(|t| !t.is_empty()) {
        None => 0.0,
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| field("activationTarget", "must be a number"))?,
    };
    if metric_type == Some("Utilization") {
        return Err(field(
            "metricType",
            "Utilization is not supported for the composite metric; use AverageValue or Value",
        ));
    }
    let formula = Formula::parse(src)?;
    formula.check(trigger_names)?;
    Ok(Modifiers {
        formula,
        target,
        activation_target,
    })
}

/// The name of the one metric the HPA reads when `scalingModifiers` is set.
pub const COMPOSITE_METRIC: &str = "composite-metric";

/// The ScaledObject's `scalingModifiers`, validated against its trigger names; `None`
/// when it has none. Any field set counts (KEDA's `IsUsingModifiers`), so a target without
/// a formula is the "formula required" error, not silently no modifiers.
pub fn of_scaled_object(so: &crate::ScaledObject) -> Option<Result<Modifiers, FormulaError>> {
    if !so.spec.uses_modifiers() {
        return None;
    }
    let m = so.spec.advanced.as_ref()?.scaling_modifiers.as_ref()?;
    let names: Vec<&str> = so
        .spec
        .triggers
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    Some(validate(
        m.formula.as_deref(),
        m.target.as_deref(),
        m.activation_target.as_deref(),
        m.metric_type.as_deref(),
        &names,
    ))
}

/// The HPA metric for the composite: `composite-metric` with the modifiers' target and type.
pub fn composite_spec(so: &crate::ScaledObject, m: &Modifiers) -> crate::MetricSpec {
    let value_type = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .and_then(|s| s.metric_type.as_deref())
        == Some("Value");
    crate::MetricSpec {
        name: COMPOSITE_METRIC.to_string(),
        target_type: if value_type {
            crate::MetricTargetType::Value
        } else {
            crate::MetricTargetType::AverageValue
        },
        target: crate::quantity::MilliQuantity::from_value(m.target),
    }
}

/// The composite metric's value and activity: nil falls back to
/// `fallback_replicas × target` when a fallback is configured; active iff the value is
/// strictly above `activationTarget` and no scaler errored.
pub fn composite(
    m: &Modifiers,
    vars: &BTreeMap<String, f64>,
    any_error: bool,
    fallback_replicas: Option<i32>,
) -> Result<(f64, bool), FormulaError> {
    let value = match m.formula.eval(vars)? {
        Some(v) => v,
        None => match fallback_replicas {
            Some(r) => f64::from(r) * m.target,
            None => return eval_err("formula evaluated to nil but no fallback is configured"),
        },
    };
    Ok((value, !any_error && value > m.activation_target))
}

/// One named trigger's part in a composite read: its value, or its failure and whether
/// that failure is past the fallback's `failureThreshold`.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The source answered.
    Value(f64),
    /// The source failed.
    Failed {
        /// Why.
        error: String,
        /// Past `failureThreshold` with a usable fallback.
        past_threshold: bool,
    },
}

/// What a read of `composite-metric` serves, as KEDA decides it.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The formula over these values. A trigger past its threshold under the
    /// `scalingModifiers` fallback behaviour is left out: the formula sees nil (for `??`).
    Evaluate(BTreeMap<String, f64>),
    /// The fallback value for the composite target (a trigger past its threshold under
    /// any other behaviour).
    Fallback,
    /// A trigger failed and no fallback covers it: the read fails.
    Error(String),
}

/// KEDA's composite read: failures within the threshold fail the read; past it, the
/// `scalingModifiers` behaviour turns the trigger into nil and the others serve the
/// fallback value, which wins over other triggers' errors.
pub fn plan(behavior_is_modifiers: bool, outcomes: &[(String, Outcome)]) -> Plan {
    let mut vars = BTreeMap::new();
    let mut errors = Vec::new();
    let mut fallback = false;
    for (name, outcome) in outcomes {
        match outcome {
            Outcome::Value(v) => {
                vars.insert(name.clone(), *v);
            }
            Outcome::Failed {
                past_threshold: true,
                ..
            } if behavior_is_modifiers => {}
            Outcome::Failed {
                past_threshold: true,
                ..
            } => fallback = true,
            Outcome::Failed { error, .. } => errors.push(format!("trigger {name:?}: {error}")),
        }
    }
    if fallback {
        Plan::Fallback
    } else if !errors.is_empty() {
        Plan::Error(errors.join("; "))
    } else {
        Plan::Evaluate(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_plan_follows_keda() {
        let ok = |n: &str, v: f64| (n.to_string(), Outcome::Value(v));
        let failed = |n: &str, past: bool| {
            (
                n.to_string(),
                Outcome::Failed {
                    error: "down".into(),
                    past_threshold: past,
                },
            )
        };
        let vars = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        // All answer: the formula runs.
        assert_eq!(
            plan(false, &[ok("a", 1.0), ok("b", 2.0)]),
            Plan::Evaluate(vars(&[("a", 1.0), ("b", 2.0)]))
        );
        // Within the threshold a failure fails the read, whatever the behaviour.
        for modifiers in [false, true] {
            assert_eq!(
                plan(modifiers, &[ok("a", 1.0), failed("b", false)]),
                Plan::Error("trigger \"b\": down".into())
            );
        }
        // Past it: nil for the formula under the scalingModifiers behaviour...
        assert_eq!(
            plan(true, &[ok("a", 1.0), failed("b", true)]),
            Plan::Evaluate(vars(&[("a", 1.0)]))
        );
        // ...the fallback value under the others, even beside another failure.
        assert_eq!(
            plan(false, &[failed("a", false), failed("b", true)]),
            Plan::Fallback
        );
        assert_eq!(
            plan(true, &[failed("a", false), failed("b", true)]),
            Plan::Error("trigger \"a\": down".into())
        );
    }

    fn vars() -> BTreeMap<String, f64> {
        [("trig_one", 4.0), ("trig_two", 2.0), ("trig_three", 0.5)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn run(src: &str) -> Result<Option<f64>, FormulaError> {
        Formula::parse(src)?.eval(&vars())
    }

    #[test]
    fn evaluation_table() {
        let cases: &[(&str, Option<f64>)] = &[
            ("(trig_one + trig_two) / 2", Some(3.0)),
            ("trig_one > 2 ? trig_one + trig_two : 1", Some(6.0)),
            ("trig_one < 2 ? trig_one + trig_two : 1", Some(1.0)),
            (
                "count([trig_one, trig_two, trig_three], {#>1}) > 1 ? 5 : 0",
                Some(5.0),
            ),
            (
                "count([trig_one, trig_two, trig_three], {# == 2})",
                Some(1.0),
            ),
            ("missing ?? 5", Some(5.0)),
            ("trig_one ?? 5", Some(4.0)),
            ("nil", None),
            ("missing", None),
            ("1 + 2 * 3", Some(7.0)),
            ("(1 + 2) * 3", Some(9.0)),
            ("2 ** 3 ** 2", Some(512.0)),
            ("2 ^ 3", Some(8.0)),
            ("-2 ** 2", Some(-4.0)),
            ("10 % 4", Some(2.0)),
            ("7 / 2", Some(3.5)),
            ("10 - 4 - 3", Some(3.0)),
            ("min(trig_one, trig_two, trig_three)", Some(0.5)),
            ("max([trig_one, trig_two])", Some(4.0)),
            ("abs(-3)", Some(3.0)),
            ("ceil(trig_three)", Some(1.0)),
            ("floor(2.7)", Some(2.0)),
            ("trig_one == 4 && trig_two != 3 ? 1 : 0", Some(1.0)),
            ("trig_one > 5 || trig_two >= 2 ? 1 : 0", Some(1.0)),
            ("not (trig_one > 5) and true ? 1 : 0", Some(1.0)),
            ("!false ? 2 : 3", Some(2.0)),
            ("trig_one <= 4 ? (trig_two > 1 ? 10 : 20) : 30", Some(10.0)),
            ("1_000 + 1e3", Some(2000.0)),
            ("[1, 2,][1] ?? 0", None),
        ];
        for (src, want) in cases {
            match (run(src), want) {
                (Ok(got), want) => assert_eq!(got, *want, "{src}"),
                (Err(e), _) if *src == "[1, 2,][1] ?? 0" => {
                    // Indexing is outside the subset: a parse error, not a panic.
                    assert!(matches!(e, FormulaError::Parse { .. }), "{src}: {e}");
                }
                (Err(e), _) => panic!("{src}: {e}"),
            }
        }
    }

    #[test]
    fn errors_are_clear() {
        let cases = [
            (
                "trig_one +",
                "error parsing formula: unexpected end of formula at 10",
            ),
            ("(trig_one", "expected ')', found end of formula"),
            ("trig_one $$ 2", "unexpected name $$ after the expression"),
            ("trig_one @ 2", "unexpected character '@' at 9"),
            ("true + 1", "invalid operation: bool + number"),
            ("missing + 1", "invalid operation: nil + number"),
            ("1 % 0", "integer divide by zero"),
            ("1 / 0", "not a finite number"),
            ("trig_one > 1", "must give a number, not a bool"),
            ("count(trig_one, {# > 1})", "first argument must be a list"),
            ("count([1], 2)", "count() takes a list and a predicate"),
            ("# + 1", "'#' is only meaningful inside a predicate"),
            ("min()", "min() needs at least one number"),
            ("trig_one ? 1 : 2", "the condition of '?:' needs a bool"),
            ("\"a\" + 1", "invalid operation: string + number"),
        ];
        for (src, want) in cases {
            let e = run(src).expect_err(src).to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn validation_follows_keda() {
        let names = ["trig_one", "trig_two"];
        let ok = validate(
            Some("trig_one + trig_two"),
            Some("2"),
            Some("1.5"),
            None,
            &names,
        )
        .expect("valid");
        assert_eq!((ok.target, ok.activation_target), (2.0, 1.5));
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
        );
        let cases: [Case; 7] = [
            (None, Some("2"), None, "scalingModifiers.formula: required"),
            (
                Some("trig_one"),
                None,
                None,
                "scalingModifiers.target: required",
            ),
            (
                Some("trig_one"),
                Some("0"),
                None,
                "target: must be a number greater than 0",
            ),
            (
                Some("trig_one"),
                Some("x"),
                None,
                "target: must be a number greater than 0",
            ),
            (
                Some("trig_one"),
                Some("2"),
                Some("Utilization"),
                "metricType: Utilization is not supported",
            ),
            (
                Some("trig_one + trig_four"),
                Some("2"),
                None,
                "error compiling formula: unknown name trig_four",
            ),
            (
                Some("sqrt(trig_one)"),
                Some("2"),
                None,
                "unknown name sqrt()",
            ),
        ];
        for (formula, target, metric_type, want) in cases {
            let e = validate(formula, target, None, metric_type, &names)
                .expect_err(want)
                .to_string();
            assert!(e.contains(want), "{formula:?}: {e}");
        }
    }

    #[test]
    fn composite_activity_and_nil_fallback() {
        let m = validate(
            Some("trig_one ?? nil"),
            Some("2"),
            Some("3"),
            None,
            &["trig_one"],
        )
        .expect("valid");
        let one = |v: f64| BTreeMap::from([("trig_one".to_string(), v)]);
        assert_eq!(composite(&m, &one(4.0), false, None), Ok((4.0, true)));
        assert_eq!(
            composite(&m, &one(3.0), false, None),
            Ok((3.0, false)),
            "strictly above"
        );
        assert_eq!(
            composite(&m, &one(4.0), true, None),
            Ok((4.0, false)),
            "errors deactivate"
        );
        assert_eq!(
            composite(&m, &BTreeMap::new(), false, Some(5)),
            Ok((10.0, true))
        );
        let e = composite(&m, &BTreeMap::new(), false, None).expect_err("nil");
        assert!(e
            .to_string()
            .contains("formula evaluated to nil but no fallback is configured"));
    }

    #[test]
    fn hostile_input_never_panics() {
        assert!(Formula::parse(&"(".repeat(10_000)).is_err(), "too long");
        let deep = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
        assert!(Formula::parse(&deep).is_err(), "too deep");
        let deep_unary = "-".repeat(2000) + "1";
        assert!(Formula::parse(&deep_unary).is_err());
        let alphabet: Vec<char> = "trig_one 0123.e+-*/%^!?:()[]{},#\"'<>=&|nil true ??é"
            .chars()
            .collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let len = (state % 30) as usize;
            let s: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(f) = Formula::parse(&s) {
                let _ = f.eval(&vars());
                let _ = f.check(&["trig_one"]);
            }
        }
    }
}
