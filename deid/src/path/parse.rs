//! Lexer and parser for the FHIRPath subset de-identification rules use.
//!
//! Hand-written: the rule language must report errors by character offset (the policy checker turns
//! them into line and column), and the grammar is small; the published FHIRPath crates either lack
//! positions or evaluate over their own object models instead of the raw JSON we rewrite in place.

use std::fmt;

/// A parse error with the character offset into the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 0-based character offset.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`
    String(String),
    /// `12`, `1.5`
    Number(f64),
    /// `true`, `false`
    Bool(bool),
    /// `@2020-01-01`, `@2020-01-01T10:00:00Z` (without the `@`)
    DateTime(String),
    /// `{}`
    Empty,
}

/// Binary operators, FHIRPath precedence handled by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `&`
    Concat,
    /// `|`
    Union,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `~`
    Equiv,
    /// `!~`
    NotEquiv,
    /// `in`
    In,
    /// `contains`
    Contains,
    /// `and`
    And,
    /// `or`
    Or,
    /// `xor`
    Xor,
    /// `implies`
    Implies,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An identifier at the start of a path (type name or member of the focus).
    Ident(String),
    /// `$this`
    This,
    /// A literal.
    Literal(Literal),
    /// `expr.name`
    Member(Box<Expr>, String),
    /// `[expr.]name(args)`
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    /// `expr[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `expr as Type`
    As(Box<Expr>, String),
    /// `expr is Type`
    Is(Box<Expr>, String),
    /// `-expr`
    Neg(Box<Expr>),
    /// `a op b`
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Date(String),
    This,
    Sym(&'static str),
    End,
}

struct Lexer {
    toks: Vec<(Tok, usize)>,
}

fn err(offset: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        offset,
        message: message.into(),
    }
}

fn lex(text: &str) -> Result<Lexer, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push((Tok::Ident(chars[start..i].iter().collect()), start));
            continue;
        }
        if c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != '`' {
                i += 1;
            }
            if i >= chars.len() {
                return Err(err(start, "unterminated `identifier`"));
            }
            toks.push((Tok::Ident(chars[start + 1..i].iter().collect()), start));
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = chars[start..i].iter().collect();
            let n = s.parse().map_err(|_| err(start, "invalid number"))?;
            toks.push((Tok::Num(n), start));
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unterminated string literal")),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            toks.push((Tok::Str(s), start));
            continue;
        }
        if c == '@' {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '-' | ':' | '.' | '+'))
            {
                i += 1;
            }
            toks.push((Tok::Date(chars[start + 1..i].iter().collect()), start));
            continue;
        }
        if c == '$' {
            let rest: String = chars[i..].iter().take(5).collect();
            if rest == "$this" {
                toks.push((Tok::This, start));
                i += 5;
                continue;
            }
            return Err(err(start, "only the variable $this is supported"));
        }
        let two: String = chars[i..].iter().take(2).collect();
        let sym = match two.as_str() {
            "<=" => Some("<="),
            ">=" => Some(">="),
            "!=" => Some("!="),
            "!~" => Some("!~"),
            _ => None,
        };
        if let Some(sym) = sym {
            toks.push((Tok::Sym(sym), start));
            i += 2;
            continue;
        }
        let sym = match c {
            '.' => ".",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            '{' => "{",
            '}' => "}",
            ',' => ",",
            '=' => "=",
            '~' => "~",
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '&' => "&",
            '|' => "|",
            _ => return Err(err(start, format!("unexpected character '{c}'"))),
        };
        toks.push((Tok::Sym(sym), start));
        i += 1;
    }
    toks.push((Tok::End, chars.len()));
    Ok(Lexer { toks })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

/// Parses one expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let lexer = lex(text)?;
    let mut p = Parser {
        toks: lexer.toks,
        pos: 0,
    };
    if matches!(p.peek(), Tok::End) {
        return Err(err(0, "empty expression"));
    }
    let e = p.expr(0)?;
    match p.peek() {
        Tok::End => Ok(e),
        _ => Err(err(p.offset(), "unexpected text after the expression")),
    }
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn offset(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(s) if *s == sym) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, sym: &str) -> Result<(), ParseError> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(err(self.offset(), format!("expected '{sym}'")))
        }
    }

    /// The binary operator at the cursor and its precedence (higher binds tighter).
    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Sym("*") => (BinOp::Mul, 9),
            Tok::Sym("/") => (BinOp::Div, 9),
            Tok::Sym("+") => (BinOp::Add, 8),
            Tok::Sym("-") => (BinOp::Sub, 8),
            Tok::Sym("&") => (BinOp::Concat, 8),
            Tok::Sym("|") => (BinOp::Union, 6),
            Tok::Sym("<") => (BinOp::Lt, 5),
            Tok::Sym("<=") => (BinOp::Le, 5),
            Tok::Sym(">") => (BinOp::Gt, 5),
            Tok::Sym(">=") => (BinOp::Ge, 5),
            Tok::Sym("=") => (BinOp::Eq, 4),
            Tok::Sym("!=") => (BinOp::Ne, 4),
            Tok::Sym("~") => (BinOp::Equiv, 4),
            Tok::Sym("!~") => (BinOp::NotEquiv, 4),
            Tok::Ident(s) if s == "in" => (BinOp::In, 3),
            Tok::Ident(s) if s == "contains" => (BinOp::Contains, 3),
            Tok::Ident(s) if s == "and" => (BinOp::And, 2),
            Tok::Ident(s) if s == "or" => (BinOp::Or, 1),
            Tok::Ident(s) if s == "xor" => (BinOp::Xor, 1),
            Tok::Ident(s) if s == "implies" => (BinOp::Implies, 0),
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        loop {
            // `is` / `as` bind at precedence 7.
            if let Tok::Ident(s) = self.peek()
                && (s == "is" || s == "as")
                && min_prec <= 7
            {
                let is = s == "is";
                self.bump();
                let ty = self.type_name()?;
                lhs = if is {
                    Expr::Is(Box::new(lhs), ty)
                } else {
                    Expr::As(Box::new(lhs), ty)
                };
                continue;
            }
            let Some((op, prec)) = self.binop() else {
                break;
            };
            if prec < min_prec {
                break;
            }
            self.bump();
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn type_name(&mut self) -> Result<String, ParseError> {
        let at = self.offset();
        match self.bump() {
            Tok::Ident(mut name) => {
                // `FHIR.Quantity`, `System.String`
                while self.eat(".") {
                    match self.bump() {
                        Tok::Ident(part) => name = part,
                        _ => return Err(err(at, "expected a type name")),
                    }
                }
                Ok(name)
            }
            _ => Err(err(at, "expected a type name")),
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat("+") {
            return self.unary();
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.term()?;
        loop {
            if self.eat(".") {
                let at = self.offset();
                let name = match self.bump() {
                    Tok::Ident(name) => name,
                    _ => return Err(err(at, "expected a name after '.'")),
                };
                if self.eat("(") {
                    let args = self.args()?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else {
                    e = Expr::Member(Box::new(e), name);
                }
            } else if self.eat("[") {
                let index = self.expr(0)?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(index));
            } else {
                return Ok(e);
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0)?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let at = self.offset();
        match self.bump() {
            Tok::Ident(name) => {
                if self.eat("(") {
                    let args = self.args()?;
                    return Ok(Expr::Call(None, name, args));
                }
                Ok(match name.as_str() {
                    "true" => Expr::Literal(Literal::Bool(true)),
                    "false" => Expr::Literal(Literal::Bool(false)),
                    _ => Expr::Ident(name),
                })
            }
            Tok::Str(s) => Ok(Expr::Literal(Literal::String(s))),
            Tok::Num(n) => Ok(Expr::Literal(Literal::Number(n))),
            Tok::Date(d) => Ok(Expr::Literal(Literal::DateTime(d))),
            Tok::This => Ok(Expr::This),
            Tok::Sym("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("{") => {
                self.expect("}")?;
                Ok(Expr::Literal(Literal::Empty))
            }
            Tok::End => Err(err(at, "unexpected end of expression")),
            _ => Err(err(at, "expected a name, literal or '('")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rule_paths() {
        for path in [
            "Resource.id",
            "Patient.address.state",
            "nodesByType('HumanName')",
            "Patient.nodesByType('Address').where(city='KeepTest')",
            "Observation.value as Quantity",
            "Observation.value.ofType(Quantity).value",
            "Device.where(id.exists()).id",
            "$this in ('en-AU' | 'en-CA')",
            "('es-AR' | 'es-ES') contains $this",
            "$this <= @2020-01-01 and $this >= @1990-01-01",
            "$this.substring(0,3)+'****'",
            "$this>=0 and $this<20",
        ] {
            parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }

    #[test]
    fn as_binds_to_the_path() {
        assert_eq!(
            parse("Observation.value as Quantity").unwrap(),
            Expr::As(
                Box::new(Expr::Member(
                    Box::new(Expr::Ident("Observation".into())),
                    "value".into()
                )),
                "Quantity".into()
            )
        );
    }

    #[test]
    fn errors_carry_offsets() {
        let e = parse("Patient.name.where(").unwrap_err();
        assert_eq!(e.offset, 19);
        let e = parse("Patient..name").unwrap_err();
        assert_eq!(e.offset, 8);
        assert!(parse("Patient.name 'x'").is_err());
        assert!(parse("'open").is_err());
    }
}
