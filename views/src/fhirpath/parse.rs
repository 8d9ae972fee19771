//! FHIRPath text -> [`Expr`]: a lexer and a precedence-climbing parser for the FHIRPath grammar
//! (normative N1 precedence table). Function names are resolved here, so an unknown function or
//! a wrong number of arguments is a compile error of the view, never a runtime surprise.
//!
//! Hand-written because the view compiler needs its own AST (constants resolved at compile time,
//! functions as an enum) and no maintained Rust FHIRPath crate exposes one that fits.

use super::{BinOp, Expr, Func, Literal, TypeSpec};

/// A parse error: byte offset into the expression and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What was expected or found.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A `backtick`-delimited identifier (never a keyword).
    Quoted(String),
    Str(String),
    Int(i64),
    Dec(f64, String),
    Date(String),
    DateTime(String),
    Time(String),
    Const(String),
    Var(String),
    Sym(&'static str),
    Eof,
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

const SYMBOLS: [&str; 20] = [
    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "=", "~", "<", ">", "+", "-",
    "*", "/",
];

impl<'s> Lexer<'s> {
    fn error<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset,
            message: message.into(),
        })
    }

    fn tokens(mut self) -> Result<Vec<(usize, Tok)>, ParseError> {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            let start = self.pos;
            let tok = self.next_tok()?;
            let end = tok == Tok::Eof;
            out.push((start, tok));
            if end {
                return Ok(out);
            }
        }
    }

    fn skip_space(&mut self) {
        loop {
            let rest = &self.src[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if trimmed.starts_with("/*") {
                self.pos += trimmed.find("*/").map_or(trimmed.len(), |i| i + 2);
            } else {
                return;
            }
        }
    }

    fn next_tok(&mut self) -> Result<Tok, ParseError> {
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Ok(Tok::Eof);
        };
        let start = self.pos;
        if c.is_ascii_alphabetic() || c == '_' {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            self.pos += len;
            return Ok(Tok::Ident(rest[..len].to_string()));
        }
        if c.is_ascii_digit() {
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let after = &rest[int_len..];
            if after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()) {
                let frac_len = after[1..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len() - 1);
                let text = &rest[..int_len + 1 + frac_len];
                self.pos += text.len();
                return text
                    .parse::<f64>()
                    .map(|f| Tok::Dec(f, text.to_string()))
                    .or_else(|_| self.error(start, "invalid number"));
            }
            self.pos += int_len;
            // A trailing `L` marks a Long literal; same value here.
            if self.src[self.pos..].starts_with('L') {
                self.pos += 1;
            }
            return rest[..int_len]
                .parse::<i64>()
                .map(Tok::Int)
                .or_else(|_| self.error(start, "integer out of range"));
        }
        match c {
            '\'' => self.string('\'').map(Tok::Str),
            '`' => self.string('`').map(Tok::Quoted),
            '@' => self.date_time(),
            '%' => {
                self.pos += 1;
                let rest = &self.src[self.pos..];
                if rest.starts_with('`') || rest.starts_with('\'') {
                    let quote = rest.chars().next().unwrap_or('`');
                    return self.string(quote).map(Tok::Const);
                }
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                if len == 0 {
                    return self.error(start, "`%` must be followed by a name");
                }
                self.pos += len;
                Ok(Tok::Const(rest[..len].to_string()))
            }
            '$' => {
                self.pos += 1;
                let rest = &self.src[self.pos..];
                let len = rest
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(Tok::Var(rest[..len].to_string()))
            }
            '|' => {
                self.pos += 1;
                Ok(Tok::Sym("|"))
            }
            '&' => {
                self.pos += 1;
                Ok(Tok::Sym("&"))
            }
            _ => {
                for sym in SYMBOLS {
                    if rest.starts_with(sym) {
                        self.pos += sym.len();
                        return Ok(Tok::Sym(sym));
                    }
                }
                self.error(start, format!("unexpected character `{c}`"))
            }
        }
    }

    fn string(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                return Ok(out);
            }
            if c == '\\' {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        let code = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        match code {
                            Some(c) => out.push(c),
                            None => return self.error(start, "invalid \\u escape"),
                        }
                    }
                    other => out.push(other),
                }
            } else {
                out.push(c);
            }
        }
        self.error(start, "unterminated string")
    }

    fn date_time(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | '.' | '+' | 'Z')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        self.pos += len;
        if let Some(time) = text.strip_prefix('T') {
            if super::temporal::parse_time(time).is_none() {
                return self.error(start, "invalid time literal");
            }
            return Ok(Tok::Time(time.to_string()));
        }
        if text.contains('T') {
            let text = text.strip_suffix('T').unwrap_or(text);
            if super::temporal::DateTimeParts::parse(text).is_none() {
                return self.error(start, "invalid dateTime literal");
            }
            return Ok(Tok::DateTime(text.to_string()));
        }
        if super::temporal::DateTimeParts::parse(text).is_none() || text.is_empty() {
            return self.error(start, "invalid date literal");
        }
        Ok(Tok::Date(text.to_string()))
    }
}

/// Parses one FHIRPath expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = Lexer { src, pos: 0 }.tokens()?;
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.expression(0)?;
    match parser.peek() {
        Tok::Eof => Ok(expr),
        other => parser.error(format!("unexpected {}", describe(other))),
    }
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) | Tok::Quoted(s) => format!("`{s}`"),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::Eof => "end of expression".to_string(),
        Tok::Const(s) => format!("`%{s}`"),
        Tok::Var(s) => format!("`${s}`"),
        _ => "literal".to_string(),
    }
}

/// Binding power of infix operators (higher binds tighter), per the FHIRPath precedence table.
fn infix(tok: &Tok) -> Option<(u8, BinOp)> {
    let op = match tok {
        Tok::Sym("*") => (9, BinOp::Mul),
        Tok::Sym("/") => (9, BinOp::Div),
        Tok::Ident(s) if s == "div" => (9, BinOp::IntDiv),
        Tok::Ident(s) if s == "mod" => (9, BinOp::Mod),
        Tok::Sym("+") => (8, BinOp::Add),
        Tok::Sym("-") => (8, BinOp::Sub),
        Tok::Sym("&") => (8, BinOp::Concat),
        Tok::Ident(s) if s == "is" => (7, BinOp::Is),
        Tok::Ident(s) if s == "as" => (7, BinOp::As),
        Tok::Sym("|") => (6, BinOp::Union),
        Tok::Sym("<") => (5, BinOp::Lt),
        Tok::Sym(">") => (5, BinOp::Gt),
        Tok::Sym("<=") => (5, BinOp::Le),
        Tok::Sym(">=") => (5, BinOp::Ge),
        Tok::Sym("=") => (4, BinOp::Eq),
        Tok::Sym("!=") => (4, BinOp::Ne),
        Tok::Sym("~") => (4, BinOp::Equiv),
        Tok::Sym("!~") => (4, BinOp::NotEquiv),
        Tok::Ident(s) if s == "in" => (3, BinOp::In),
        Tok::Ident(s) if s == "contains" => (3, BinOp::Contains),
        Tok::Ident(s) if s == "and" => (2, BinOp::And),
        Tok::Ident(s) if s == "or" => (1, BinOp::Or),
        Tok::Ident(s) if s == "xor" => (1, BinOp::Xor),
        Tok::Ident(s) if s == "implies" => (0, BinOp::Implies),
        _ => return None,
    };
    Some(op)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].1
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].0
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Sym(sym) {
            self.bump();
            Ok(())
        } else {
            let found = describe(self.peek());
            self.error(format!("expected `{sym}`, found {found}"))
        }
    }

    /// Precedence climbing: parses operators binding at least `min`.
    fn expression(&mut self, min: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((power, op)) = infix(self.peek()) {
            if power < min {
                break;
            }
            self.bump();
            if matches!(op, BinOp::Is | BinOp::As) {
                let ty = self.type_spec()?;
                lhs = Expr::TypeOp {
                    is: op == BinOp::Is,
                    base: Box::new(lhs),
                    ty,
                };
                continue;
            }
            // All binary operators are left-associative.
            let rhs = self.expression(power + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Tok::Sym("-") => {
                self.bump();
                let operand = self.unary()?;
                Ok(Expr::Negate(Box::new(operand)))
            }
            Tok::Sym("+") => {
                self.bump();
                self.unary()
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.term()?;
        loop {
            match self.peek() {
                Tok::Sym(".") => {
                    self.bump();
                    expr = self.invocation(Some(expr))?;
                }
                Tok::Sym("[") => {
                    self.bump();
                    let index = self.expression(0)?;
                    self.expect("]")?;
                    expr = Expr::Index(Box::new(expr), Box::new(index));
                }
                _ => return Ok(expr),
            }
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let tok = self.peek().clone();
        let literal = match &tok {
            Tok::Str(s) => Some(Literal::String(s.clone())),
            Tok::Int(i) => Some(Literal::Integer(*i)),
            Tok::Dec(f, text) => Some(Literal::Decimal(*f, text.clone())),
            Tok::Date(s) => Some(Literal::Date(s.clone())),
            Tok::DateTime(s) => Some(Literal::DateTime(s.clone())),
            Tok::Time(s) => Some(Literal::Time(s.clone())),
            Tok::Ident(s) if s == "true" => Some(Literal::Boolean(true)),
            Tok::Ident(s) if s == "false" => Some(Literal::Boolean(false)),
            _ => None,
        };
        if let Some(literal) = literal {
            self.bump();
            return Ok(Expr::Literal(literal));
        }
        match tok {
            Tok::Sym("(") => {
                self.bump();
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Sym("{") => {
                self.bump();
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Tok::Const(name) => {
                self.bump();
                Ok(Expr::Constant(name))
            }
            Tok::Var(name) => {
                self.bump();
                match name.as_str() {
                    "this" => Ok(Expr::This),
                    "index" => Ok(Expr::IndexVar),
                    "total" => Ok(Expr::Empty),
                    other => self.error(format!("unknown variable `${other}`")),
                }
            }
            Tok::Ident(_) | Tok::Quoted(_) => self.invocation(None),
            other => self.error(format!("unexpected {}", describe(&other))),
        }
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        match self.bump() {
            Tok::Ident(s) | Tok::Quoted(s) => Ok(s),
            other => self.error(format!("expected a name, found {}", describe(&other))),
        }
    }

    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let first = self.identifier()?;
        if self.peek() == &Tok::Sym(".")
            && let Tok::Ident(_) | Tok::Quoted(_) = self.tokens[self.pos + 1].1
        {
            self.bump();
            let name = self.identifier()?;
            return Ok(TypeSpec::new(Some(first), name));
        }
        Ok(TypeSpec::new(None, first))
    }

    /// A member access or a function call on `base` (None: on the focus).
    fn invocation(&mut self, base: Option<Expr>) -> Result<Expr, ParseError> {
        let quoted = matches!(self.peek(), Tok::Quoted(_));
        let offset = self.offset();
        let name = self.identifier()?;
        if quoted || self.peek() != &Tok::Sym("(") {
            return Ok(Expr::Member(base.map(Box::new), name));
        }
        self.bump();
        // Type-argument functions take a type specifier, not an expression.
        if matches!(name.as_str(), "ofType" | "is" | "as") {
            let ty = self.type_spec()?;
            self.expect(")")?;
            let base = Box::new(base.unwrap_or(Expr::This));
            return Ok(match name.as_str() {
                "ofType" => Expr::OfType(base, ty),
                other => Expr::TypeOp {
                    is: other == "is",
                    base,
                    ty,
                },
            });
        }
        if name == "getReferenceKey" {
            let ty = if self.peek() == &Tok::Sym(")") {
                None
            } else {
                Some(self.type_spec()?)
            };
            self.expect(")")?;
            return Ok(Expr::Call {
                base: base.map(Box::new),
                func: Func::GetReferenceKey,
                args: Vec::new(),
                type_arg: ty,
            });
        }
        let mut args = Vec::new();
        if self.peek() != &Tok::Sym(")") {
            loop {
                args.push(self.expression(0)?);
                if self.peek() == &Tok::Sym(",") {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        let func = Func::from_name(&name).ok_or_else(|| ParseError {
            offset,
            message: format!("unknown function `{name}()`"),
        })?;
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            return Err(ParseError {
                offset,
                message: format!(
                    "`{name}()` takes {} argument(s), got {}",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("{min} to {max}")
                    },
                    args.len()
                ),
            });
        }
        Ok(Expr::Call {
            base: base.map(Box::new),
            func,
            args,
            type_arg: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_invocations() {
        let e = parse("name.where(use = 'official').family.first()").unwrap();
        assert!(matches!(
            e,
            Expr::Call {
                func: Func::First,
                ..
            }
        ));
        let e = parse("a = 1 and b = 2 or c").unwrap();
        assert!(matches!(e, Expr::Binary(BinOp::Or, _, _)));
        let e = parse("1 + 2 * 3").unwrap();
        let Expr::Binary(BinOp::Add, _, rhs) = e else {
            panic!()
        };
        assert!(matches!(*rhs, Expr::Binary(BinOp::Mul, _, _)));
        assert!(matches!(
            parse("value.ofType(FHIR.Quantity)").unwrap(),
            Expr::OfType(_, _)
        ));
        assert!(matches!(
            parse("name[%i].family").unwrap(),
            Expr::Member(Some(_), _)
        ));
        assert!(parse("@2010-10-10T10:00:00Z = @T12:00").is_ok());
        assert!(parse("(gender = 'male').not()").is_ok());
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(parse("@@").unwrap_err().offset, 0);
        assert!(parse("name.").is_err());
        assert!(parse("foo(").is_err());
        assert!(parse("name.bogus()").unwrap_err().message.contains("bogus"));
        assert!(parse("first(1)").unwrap_err().message.contains("argument"));
        assert!(parse("'open").is_err());
    }
}
