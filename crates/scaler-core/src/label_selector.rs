//! Kubernetes label selectors in their string form: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, joined by commas. An empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A selector that failed to parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=` or `==`
    Equals,
    /// `!=`
    NotEquals,
    /// `in (...)`
    In,
    /// `notin (...)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (one for `=`/`!=`, none for exists).
    pub values: Vec<String>,
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Bang => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::NotEq);
                } else {
                    out.push(Token::Bang);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::DoubleEq);
                } else {
                    out.push(Token::Eq);
                }
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            ',' => {
                chars.next();
                out.push(Token::Comma);
            }
            c if is_word_char(c) => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

fn is_name_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("key {key:?}: prefix must be a DNS subdomain"));
        }
    }
    if !is_name_segment(name) {
        return Err(format!(
            "key {key:?}: name must be 63 characters or less, alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_name_segment(v) {
        Ok(())
    } else {
        Err(format!(
            "value {v:?}: must be 63 characters or less, alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            Some(t) => Err(format!("found {t}, expected {what}")),
            None => Err(format!("unexpected end, expected {what}")),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.next();
            let key = self.word("a key after '!'")?;
            validate_key(&key)?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.word("a key")?;
        validate_key(&key)?;
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    op: Operator::Exists,
                    values: vec![],
                })
            }
            Some(Token::Eq) | Some(Token::DoubleEq) => Operator::Equals,
            Some(Token::NotEq) => Operator::NotEquals,
            Some(Token::Word(w)) if w == "in" => Operator::In,
            Some(Token::Word(w)) if w == "notin" => Operator::NotIn,
            Some(t) => {
                return Err(format!(
                    "found {t} after key {key:?}, expected one of '=', '==', '!=', 'in', 'notin'"
                ))
            }
        };
        self.next();
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => {
                // `a=` selects an empty value; `a=,b` too.
                let v = match self.peek() {
                    Some(Token::Word(_)) => self.word("a value")?,
                    None | Some(Token::Comma) => String::new(),
                    Some(t) => return Err(format!("found {t}, expected a value for key {key:?}")),
                };
                validate_value(&v)?;
                vec![v]
            }
        };
        Ok(Requirement { key, op, values })
    }

    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => return Err(format!("found {t}, expected '('")),
            None => return Err("unexpected end, expected '('".to_string()),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => {
                    validate_value(&w)?;
                    values.push(w);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        Some(t) => return Err(format!("found {t}, expected ',' or ')'")),
                        None => return Err("unexpected end, expected ')'".to_string()),
                    }
                }
                Some(Token::Close) if values.is_empty() => {
                    return Err("a value set needs at least one value".to_string())
                }
                Some(t) => return Err(format!("found {t}, expected a value")),
                None => return Err("unexpected end, expected a value".to_string()),
            }
        }
        Ok(values)
    }
}

impl Selector {
    /// `key=value` with nothing else (what every HPA read sends): parsed without the
    /// lexer. Anything else, or anything invalid, is left to the full parser, which
    /// gives the same answer or the error.
    fn single_equality(s: &str) -> Option<Self> {
        let (key, value) = s.split_once('=')?;
        let plain = |x: &str| {
            x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        };
        if key.is_empty() || !plain(key) || !plain(value) {
            return None;
        }
        validate_key(key).ok()?;
        validate_value(value).ok()?;
        Some(Selector {
            requirements: vec![Requirement {
                key: key.to_string(),
                op: Operator::Equals,
                values: vec![value.to_string()],
            }],
        })
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError {
            selector: s.to_string(),
            reason,
        };
        if let Some(fast) = Selector::single_equality(s) {
            return Ok(fast);
        }
        let tokens = lex(s).map_err(err)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if p.peek().is_none() {
            return Ok(Selector::default());
        }
        loop {
            requirements.push(p.requirement().map_err(err)?);
            match p.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(t) => return Err(err(format!("found {t}, expected ','"))),
            }
        }
        Ok(Selector { requirements })
    }
}

impl Selector {
    /// The requirements, in order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Operator::Equals | Operator::In => v.is_some_and(|v| r.values.contains(v)),
                Operator::NotEquals | Operator::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => v.is_some(),
                Operator::DoesNotExist => v.is_none(),
            }
        })
    }

    /// The single value `key` must have: from `key=v`, `key==v` or `key in (v)`.
    pub fn exact_value(&self, key: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find_map(|r| match (r.op, r.values.as_slice()) {
                (Operator::Equals | Operator::In, [v]) if r.key == key => Some(v.as_str()),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full parser alone, for comparing with the fast path.
    fn full(s: &str) -> Result<Selector, String> {
        let tokens = lex(s)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if p.peek().is_none() {
            return Ok(Selector::default());
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(t) => return Err(format!("found {t}, expected ','")),
            }
        }
        Ok(Selector { requirements })
    }

    #[test]
    fn the_single_equality_fast_path_agrees_with_the_parser() {
        for s in [
            "scaledobject.keda.sh/name=web",
            "a=b",
            "a=",
            "a/b/c=d",
            "-a=b",
            "a=-b",
            "a=b.",
            "example.com/=x",
            "x=y=z",
            "a_b=c_d",
            &format!("a={}", "v".repeat(64)),
            &format!("{}=v", "k".repeat(64)),
        ] {
            let fast = Selector::single_equality(s);
            if let Some(f) = &fast {
                assert_eq!(Ok(f.clone()), full(s), "{s:?}");
            }
            assert_eq!(
                s.parse::<Selector>().map_err(|e| e.reason),
                full(s),
                "{s:?}"
            );
        }
        assert!(Selector::single_equality("scaledobject.keda.sh/name=web").is_some());
        assert!(Selector::single_equality("a==b").is_none());
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let l = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("scaledobject.keda.sh/name", "so1"),
        ]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("app notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web, tier=back", false),
            (" app = web ,tier in (front) ", true),
            ("scaledobject.keda.sh/name=so1", true),
            ("app=", false),
        ];
        for (s, want) in cases {
            let sel: Selector = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&l), want, "{s}");
        }
    }

    #[test]
    fn rejects_malformed_selectors() {
        for s in [
            "app=(web)",
            "app in web",
            "app in ()",
            "app in (web",
            "=web",
            "app=web,",
            "app web",
            "a=b=c",
            "-app=web",
            "app=we b",
            "Bad_Prefix/app=web",
            "app=web$",
            "!",
        ] {
            let r: Result<Selector, _> = s.parse();
            assert!(r.is_err(), "{s} should be rejected, got {r:?}");
        }
    }

    #[test]
    fn finds_the_exact_value() {
        let sel: Selector = "a!=x,scaledobject.keda.sh/name in (so1)"
            .parse()
            .expect("valid");
        assert_eq!(sel.exact_value("scaledobject.keda.sh/name"), Some("so1"));
        let sel: Selector = "scaledobject.keda.sh/name in (a,b)".parse().expect("valid");
        assert_eq!(sel.exact_value("scaledobject.keda.sh/name"), None);
        let sel: Selector = "scaledobject.keda.sh/name==so2".parse().expect("valid");
        assert_eq!(sel.exact_value("scaledobject.keda.sh/name"), Some("so2"));
    }
}
