//! `roleMappings[].matcher`: the part of CEL that ToolHive documents for matchers, over the
//! caller's claims (`claims`, a map). What is not listed here is refused when the config loads,
//! with the construct and its position; it never silently evaluates to something else.
//!
//! Supported: `claims`, member access `claims["key"]` and `claims.key` (to any depth), string
//! literals (`"..."` or `'...'`, escapes `\\ \" \' \n \t \r`), non-negative integers, `true`,
//! `false`, `null`, list literals `[a, b]`, `==`, `!=`, `in` (element of a list, or key of a
//! map), `!`, `&&`, `||` and parentheses. E.g. `"admins" in claims["groups"]`,
//! `claims["sub"] == "user123" && !("act" in claims)`.
//!
//! Evaluation follows CEL: equality across types is false (numbers compare by value); a missing
//! key or a type error is an error, which `&&` and `||` absorb when the other side decides
//! (`false && error` is false, `true || error` is true). A matcher matches only when it
//! evaluates to `true`; an error means no match (as in ToolHive, which skips the mapping).
//! Bounds: [`MAX_SOURCE`] bytes and [`MAX_DEPTH`] levels of nesting.

use serde_json::{Map, Value};

/// Longest matcher accepted, in bytes.
pub(crate) const MAX_SOURCE: usize = 4096;
/// Deepest nesting accepted (parentheses, `!`, lists, operators).
pub(crate) const MAX_DEPTH: usize = 32;

/// A parsed matcher.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matcher(Expr);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Claims,
    Lit(Value),
    List(Vec<Expr>),
    Index(Box<Expr>, String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Int(u64),
    Ident(String),
    Op(&'static str),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i + 1;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' {
            let (s, next) = string(src, i)?;
            out.push((at, Tok::Str(s)));
            i = next;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'.' || b[i].is_ascii_alphabetic()) {
                return Err(format!("at {at}: only whole non-negative numbers are supported"));
            }
            let n = src[start..i].parse().map_err(|_| format!("at {at}: number too large"))?;
            out.push((at, Tok::Int(n)));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((at, Tok::Ident(src[start..i].to_owned())));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let op = match two {
            "==" => Some("=="),
            "!=" => Some("!="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            _ => None,
        };
        if let Some(op) = op {
            out.push((at, Tok::Op(op)));
            i += 2;
            continue;
        }
        let op = match c {
            b'!' => "!",
            b'(' => "(",
            b')' => ")",
            b'[' => "[",
            b']' => "]",
            b',' => ",",
            b'.' => ".",
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(format!("at {at}: {ch:?} is not supported"));
            }
        };
        out.push((at, Tok::Op(op)));
        i += 1;
    }
    Ok(out)
}

/// A quoted string starting at byte `i`; returns it and the byte after its closing quote.
fn string(src: &str, i: usize) -> Result<(String, usize), String> {
    let quote = src.as_bytes()[i] as char;
    let mut out = String::new();
    let mut chars = src[i + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, i + 1 + j + 1)),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('\'') => out.push('\''),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                _ => return Err(format!("at {}: unsupported escape in a string", i + 2 + j)),
            },
            c => out.push(c),
        }
    }
    Err(format!("at {}: unterminated string", i + 1))
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len + 1, |(a, _)| *a)
    }

    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Op(o)) if *o == op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) { Ok(()) } else { Err(format!("at {}: expected {op:?}", self.at())) }
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.deeper()?;
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            self.deeper()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.relation()
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let left = self.member()?;
        let op = if self.eat("==") {
            Expr::Eq
        } else if self.eat("!=") {
            Expr::Ne
        } else if self.peek() == Some(&Tok::Ident("in".into())) {
            self.pos += 1;
            Expr::In
        } else {
            return Ok(left);
        };
        Ok(op(Box::new(left), Box::new(self.member()?)))
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat("[") {
                let at = self.at();
                let Some(Tok::Str(key)) = self.peek().cloned() else {
                    return Err(format!("at {at}: only string keys are supported in [...]"));
                };
                self.pos += 1;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), key);
            } else if self.eat(".") {
                let at = self.at();
                let Some(Tok::Ident(key)) = self.peek().cloned() else {
                    return Err(format!("at {at}: expected a field name after '.'"));
                };
                self.pos += 1;
                if self.peek() == Some(&Tok::Op("(")) {
                    return Err(format!("at {at}: method calls ({key}()) are not supported"));
                }
                e = Expr::Index(Box::new(e), key);
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let at = self.at();
        let Some(tok) = self.peek().cloned() else {
            return Err(format!("at {at}: unexpected end of the expression"));
        };
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Int(n) => Ok(Expr::Lit(Value::from(n))),
            Tok::Ident(id) => {
                if self.peek() == Some(&Tok::Op("(")) {
                    return Err(format!("at {at}: function calls ({id}()) are not supported"));
                }
                match id.as_str() {
                    "claims" => Ok(Expr::Claims),
                    "true" => Ok(Expr::Lit(Value::Bool(true))),
                    "false" => Ok(Expr::Lit(Value::Bool(false))),
                    "null" => Ok(Expr::Lit(Value::Null)),
                    other => {
                        Err(format!("at {at}: unknown name {other:?} (only `claims` is defined)"))
                    }
                }
            }
            Tok::Op("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                self.deeper()?;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                self.depth -= 1;
                Ok(Expr::List(items))
            }
            Tok::Op(op) => Err(format!("at {at}: unexpected {op:?}")),
        }
    }
}

impl Matcher {
    /// Parses `src`; the error names the position (1-based byte) and what is not supported.
    pub(crate) fn parse(src: &str) -> Result<Self, String> {
        if src.len() > MAX_SOURCE {
            return Err(format!("longer than {MAX_SOURCE} bytes"));
        }
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0, depth: 0, len: src.len() };
        let e = p.or()?;
        if p.pos < p.toks.len() {
            return Err(format!("at {}: unexpected text after the expression", p.at()));
        }
        Ok(Self(e))
    }

    /// Whether the caller with `claims` matches: the expression is `true`.
    pub(crate) fn matches(&self, claims: &Map<String, Value>) -> bool {
        eval(&self.0, claims) == Ok(Value::Bool(true))
    }
}

/// An evaluation error (a missing key, a type error); it carries nothing.
#[derive(Debug, PartialEq)]
struct EvalError;

fn eval(e: &Expr, claims: &Map<String, Value>) -> Result<Value, EvalError> {
    let boolean = |e: &Expr| match eval(e, claims) {
        Ok(Value::Bool(b)) => Ok(b),
        _ => Err(EvalError),
    };
    match e {
        Expr::Claims => Ok(Value::Object(claims.clone())),
        Expr::Lit(v) => Ok(v.clone()),
        Expr::List(items) => {
            items.iter().map(|i| eval(i, claims)).collect::<Result<_, _>>().map(Value::Array)
        }
        Expr::Index(base, key) => match eval(base, claims)? {
            Value::Object(mut m) => m.remove(key).ok_or(EvalError),
            _ => Err(EvalError),
        },
        Expr::Not(x) => boolean(x).map(|b| Value::Bool(!b)),
        Expr::And(a, b) => match (boolean(a), boolean(b)) {
            (Ok(false), _) | (_, Ok(false)) => Ok(Value::Bool(false)),
            (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
            _ => Err(EvalError),
        },
        Expr::Or(a, b) => match (boolean(a), boolean(b)) {
            (Ok(true), _) | (_, Ok(true)) => Ok(Value::Bool(true)),
            (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
            _ => Err(EvalError),
        },
        Expr::Eq(a, b) => Ok(Value::Bool(equal(&eval(a, claims)?, &eval(b, claims)?))),
        Expr::Ne(a, b) => Ok(Value::Bool(!equal(&eval(a, claims)?, &eval(b, claims)?))),
        Expr::In(a, b) => {
            let needle = eval(a, claims)?;
            match eval(b, claims)? {
                Value::Array(items) => Ok(Value::Bool(items.iter().any(|i| equal(&needle, i)))),
                Value::Object(m) => match needle {
                    Value::String(k) => Ok(Value::Bool(m.contains_key(&k))),
                    _ => Err(EvalError),
                },
                _ => Err(EvalError),
            }
        }
    }
}

/// CEL's heterogeneous equality: numbers by value, lists and maps element-wise, other types
/// only equal to themselves.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
