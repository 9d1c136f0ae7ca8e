//! The part of OData `$filter` the emulator understands, evaluated the way
//! Graph does for directory objects: `eq`, `ne`, `in`, `startswith`,
//! `endswith`, `not`, `and`, `or` and parentheses, over string, boolean and
//! null literals, with case-insensitive string comparison. `ne`, `not` and
//! `endswith` are advanced queries: Graph answers them only with
//! `ConsistencyLevel: eventual` and `$count=true`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, Literal),
    Ne(String, Literal),
    In(String, Vec<Literal>),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Bool(bool),
    Null,
}

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, String> {
        let tokens = tokenize(input)?;
        let mut parser = Parser { tokens, at: 0 };
        let filter = parser.or()?;
        if parser.at != parser.tokens.len() {
            return Err(format!("unexpected {:?}", parser.tokens[parser.at]));
        }
        Ok(filter)
    }

    /// Whether the filter needs the advanced query capabilities.
    pub fn is_advanced(&self) -> bool {
        match self {
            Filter::Ne(..) | Filter::EndsWith(..) | Filter::Not(_) => true,
            Filter::And(a, b) | Filter::Or(a, b) => a.is_advanced() || b.is_advanced(),
            _ => false,
        }
    }

    pub fn matches(&self, object: &Map<String, Value>) -> bool {
        match self {
            Filter::Eq(p, l) => literal_eq(lookup(object, p), l),
            Filter::Ne(p, l) => !literal_eq(lookup(object, p), l),
            Filter::In(p, ls) => ls.iter().any(|l| literal_eq(lookup(object, p), l)),
            Filter::StartsWith(p, s) => text(lookup(object, p))
                .is_some_and(|v| v.to_lowercase().starts_with(&s.to_lowercase())),
            Filter::EndsWith(p, s) => text(lookup(object, p))
                .is_some_and(|v| v.to_lowercase().ends_with(&s.to_lowercase())),
            Filter::Not(f) => !f.matches(object),
            Filter::And(a, b) => a.matches(object) && b.matches(object),
            Filter::Or(a, b) => a.matches(object) || b.matches(object),
        }
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('/');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

fn literal_eq(value: Option<&Value>, literal: &Literal) -> bool {
    match (value, literal) {
        (Some(Value::String(v)), Literal::Text(l)) => v.eq_ignore_ascii_case(l),
        (Some(Value::Bool(v)), Literal::Bool(l)) => v == l,
        (None | Some(Value::Null), Literal::Null) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Text(s));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '-' || c == '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_/-.".contains(chars[i]))
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, token: Token) -> Result<(), String> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            other => Err(format!("expected {token:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                self.expect(Token::Close)?;
                Ok(inner)
            }
            Some(Token::Word(w))
                if w.eq_ignore_ascii_case("startswith") || w.eq_ignore_ascii_case("endswith") =>
            {
                self.expect(Token::Open)?;
                let property = self.property()?;
                self.expect(Token::Comma)?;
                let Literal::Text(value) = self.literal()? else {
                    return Err(format!("{w} takes a string"));
                };
                self.expect(Token::Close)?;
                Ok(if w.eq_ignore_ascii_case("startswith") {
                    Filter::StartsWith(property, value)
                } else {
                    Filter::EndsWith(property, value)
                })
            }
            Some(Token::Word(property)) => match self.next() {
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => {
                    Ok(Filter::Eq(property, self.literal()?))
                }
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("ne") => {
                    Ok(Filter::Ne(property, self.literal()?))
                }
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("in") => {
                    self.expect(Token::Open)?;
                    let mut values = vec![self.literal()?];
                    while self.tokens.get(self.at) == Some(&Token::Comma) {
                        self.at += 1;
                        values.push(self.literal()?);
                    }
                    self.expect(Token::Close)?;
                    Ok(Filter::In(property, values))
                }
                other => Err(format!("unsupported operator {other:?}")),
            },
            other => Err(format!("unexpected {other:?}")),
        }
    }

    fn property(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            other => Err(format!("expected a property, found {other:?}")),
        }
    }

    fn literal(&mut self) -> Result<Literal, String> {
        match self.next() {
            Some(Token::Text(s)) => Ok(Literal::Text(s)),
            Some(Token::Word(w)) if w == "true" => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w == "false" => Ok(Literal::Bool(false)),
            Some(Token::Word(w)) if w == "null" => Ok(Literal::Null),
            other => Err(format!("expected a literal, found {other:?}")),
        }
    }
}
