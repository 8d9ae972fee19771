//! Tokens -> [`Expr`]: a precedence-climbing parser for the FHIRPath grammar (normative N1
//! precedence table). Function names and arities are checked here; errors carry the byte offset
//! of the offending token.
//!
//! Hand-written because both evaluators need positions in their errors (the policy checker turns
//! them into line and column) and an AST of their own shape (functions as an enum, constants
//! resolved later); the published FHIRPath crates evaluate over their own object models instead.

use super::lexer::{Token, tokenize};
use super::{BinOp, Expr, Func, Literal, TypeSpec};
use crate::error::{Error, Result};

/// Parses one FHIRPath expression.
pub fn parse(src: &str) -> Result<Expr> {
    let tokens = tokenize(src)?;
    let mut parser = Parser { tokens, pos: 0 };
    if parser.peek() == &Token::Eof {
        return parser.error("empty expression");
    }
    let expr = parser.expression(0)?;
    match parser.peek() {
        Token::Eof => Ok(expr),
        other => parser.error(format!("unexpected {}", other.describe())),
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

/// Binding power of infix operators (higher binds tighter), per the FHIRPath precedence table.
fn infix(token: &Token) -> Option<(u8, BinOp)> {
    let op = match token {
        Token::Sym("*") => (9, BinOp::Mul),
        Token::Sym("/") => (9, BinOp::Div),
        Token::Ident(s) if s == "div" => (9, BinOp::IntDiv),
        Token::Ident(s) if s == "mod" => (9, BinOp::Mod),
        Token::Sym("+") => (8, BinOp::Add),
        Token::Sym("-") => (8, BinOp::Sub),
        Token::Sym("&") => (8, BinOp::Concat),
        Token::Ident(s) if s == "is" => (7, BinOp::Is),
        Token::Ident(s) if s == "as" => (7, BinOp::As),
        Token::Sym("|") => (6, BinOp::Union),
        Token::Sym("<") => (5, BinOp::Lt),
        Token::Sym(">") => (5, BinOp::Gt),
        Token::Sym("<=") => (5, BinOp::Le),
        Token::Sym(">=") => (5, BinOp::Ge),
        Token::Sym("=") => (4, BinOp::Eq),
        Token::Sym("!=") => (4, BinOp::Ne),
        Token::Sym("~") => (4, BinOp::Equiv),
        Token::Sym("!~") => (4, BinOp::NotEquiv),
        Token::Ident(s) if s == "in" => (3, BinOp::In),
        Token::Ident(s) if s == "contains" => (3, BinOp::Contains),
        Token::Ident(s) if s == "and" => (2, BinOp::And),
        Token::Ident(s) if s == "or" => (1, BinOp::Or),
        Token::Ident(s) if s == "xor" => (1, BinOp::Xor),
        Token::Ident(s) if s == "implies" => (0, BinOp::Implies),
        _ => return None,
    };
    Some(op)
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].1
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].0
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    /// An error at the current token.
    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(Error::fhirpath_syntax(self.offset(), message))
    }

    fn expect(&mut self, sym: &'static str) -> Result<()> {
        if self.peek() == &Token::Sym(sym) {
            self.bump();
            Ok(())
        } else {
            let found = self.peek().describe();
            self.error(format!("expected `{sym}`, found {found}"))
        }
    }

    /// Precedence climbing: parses operators binding at least `min`.
    fn expression(&mut self, min: u8) -> Result<Expr> {
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

    fn unary(&mut self) -> Result<Expr> {
        match self.peek() {
            Token::Sym("-") => {
                self.bump();
                let operand = self.unary()?;
                Ok(Expr::Negate(Box::new(operand)))
            }
            Token::Sym("+") => {
                self.bump();
                self.unary()
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr> {
        let mut expr = self.term()?;
        loop {
            match self.peek() {
                Token::Sym(".") => {
                    self.bump();
                    expr = self.invocation(Some(expr))?;
                }
                Token::Sym("[") => {
                    self.bump();
                    let index = self.expression(0)?;
                    self.expect("]")?;
                    expr = Expr::Index(Box::new(expr), Box::new(index));
                }
                _ => return Ok(expr),
            }
        }
    }

    fn term(&mut self) -> Result<Expr> {
        let token = self.peek().clone();
        let literal = match &token {
            Token::Str(s) => Some(Literal::String(s.clone())),
            Token::Int(i) => Some(Literal::Integer(*i)),
            Token::Dec(f, text) => Some(Literal::Decimal(*f, text.clone())),
            Token::Date(s) => Some(Literal::Date(s.clone())),
            Token::DateTime(s) => Some(Literal::DateTime(s.clone())),
            Token::Time(s) => Some(Literal::Time(s.clone())),
            Token::Ident(s) if s == "true" => Some(Literal::Boolean(true)),
            Token::Ident(s) if s == "false" => Some(Literal::Boolean(false)),
            _ => None,
        };
        if let Some(literal) = literal {
            self.bump();
            return Ok(Expr::Literal(literal));
        }
        match token {
            Token::Sym("(") => {
                self.bump();
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Sym("{") => {
                self.bump();
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Token::Const(name) => {
                self.bump();
                Ok(Expr::Constant(name))
            }
            Token::Var(name) => {
                let variable = match name.as_str() {
                    "this" => Expr::This,
                    "index" => Expr::IndexVar,
                    "total" => Expr::Empty,
                    other => return self.error(format!("unknown variable `${other}`")),
                };
                self.bump();
                Ok(variable)
            }
            Token::Ident(_) | Token::Quoted(_) => self.invocation(None),
            other => self.error(format!("unexpected {}", other.describe())),
        }
    }

    /// A name (plain or quoted); the error points at the token that is not one.
    fn identifier(&mut self) -> Result<String> {
        match self.peek() {
            Token::Ident(_) | Token::Quoted(_) => match self.bump() {
                Token::Ident(s) | Token::Quoted(s) => Ok(s),
                _ => unreachable!("peeked a name"),
            },
            other => {
                let found = other.describe();
                self.error(format!("expected a name, found {found}"))
            }
        }
    }

    fn type_spec(&mut self) -> Result<TypeSpec> {
        let first = self.identifier()?;
        if self.peek() == &Token::Sym(".")
            && let Some((_, Token::Ident(_) | Token::Quoted(_))) = self.tokens.get(self.pos + 1)
        {
            self.bump();
            let name = self.identifier()?;
            return Ok(TypeSpec::new(Some(first), name));
        }
        Ok(TypeSpec::new(None, first))
    }

    /// The type argument of `ofType(T)`, `is(T)`, `as(T)`: a type specifier, or its name as a
    /// string (`ofType('Quantity')`, as the Microsoft anonymizer's rules write it).
    fn type_argument(&mut self) -> Result<TypeSpec> {
        if let Token::Str(name) = self.peek() {
            let ty = TypeSpec::new(None, name.clone());
            self.bump();
            return Ok(ty);
        }
        self.type_spec()
    }

    /// A member access or a function call on `base` (None: on the focus).
    fn invocation(&mut self, base: Option<Expr>) -> Result<Expr> {
        let quoted = matches!(self.peek(), Token::Quoted(_));
        let offset = self.offset();
        let name = self.identifier()?;
        if quoted || self.peek() != &Token::Sym("(") {
            return Ok(Expr::Member(base.map(Box::new), name));
        }
        self.bump();
        // Type-argument functions take a type specifier, not an expression.
        if matches!(name.as_str(), "ofType" | "is" | "as") {
            let ty = self.type_argument()?;
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
            let ty = if self.peek() == &Token::Sym(")") {
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
        let args = self.arguments()?;
        let func = Func::from_name(&name).ok_or_else(|| {
            Error::fhirpath_syntax(offset, format!("unknown function `{name}()`"))
        })?;
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                min.to_string()
            } else {
                format!("{min} to {max}")
            };
            return Err(Error::fhirpath_syntax(
                offset,
                format!(
                    "`{name}()` takes {expected} argument(s), got {}",
                    args.len()
                ),
            ));
        }
        Ok(Expr::Call {
            base: base.map(Box::new),
            func,
            args,
            type_arg: None,
        })
    }

    /// Comma-separated arguments after the `(`, through the `)`.
    fn arguments(&mut self) -> Result<Vec<Expr>> {
        let mut args = Vec::new();
        if self.peek() != &Token::Sym(")") {
            loop {
                args.push(self.expression(0)?);
                if self.peek() == &Token::Sym(",") {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset and message of a syntax error.
    fn error(src: &str) -> (usize, String) {
        match parse(src) {
            Err(Error::FhirPathSyntax { offset, message }) => (offset, message),
            Ok(expr) => panic!("{src} parsed: {expr:?}"),
        }
    }

    fn member(base: Option<Expr>, name: &str) -> Expr {
        Expr::Member(base.map(Box::new), name.to_string())
    }

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
    fn parses_rule_paths() {
        for path in [
            "Resource.id",
            "Patient.address.state",
            "nodesByType('HumanName')",
            "Patient.nodesByType('Address').where(city='KeepTest')",
            "Observation.value as Quantity",
            "Observation.value.ofType(Quantity).value",
            "Observation.value.ofType('Quantity').value",
            "Device.where(id.exists()).id",
            "$this in ('en-AU' | 'en-CA')",
            "('es-AR' | 'es-ES') contains $this",
            "$this <= @2020-01-01 and $this >= @1990-01-01",
            "$this.substring(0,3)+'****'",
            "$this>=0 and $this<20",
            "Patient.descendants()",
        ] {
            parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }

    #[test]
    fn as_binds_to_the_path() {
        assert_eq!(
            parse("Observation.value as Quantity").unwrap(),
            Expr::TypeOp {
                is: false,
                base: Box::new(member(Some(member(None, "Observation")), "value")),
                ty: TypeSpec::new(None, "Quantity".into()),
            }
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(error("@@").0, 0);
        assert!(parse("name.").is_err());
        assert!(parse("foo(").is_err());
        assert!(error("name.bogus()").1.contains("bogus"));
        assert!(error("first(1)").1.contains("argument"));
        assert!(parse("'open").is_err());
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(error("Patient.name.where(").0, 19);
        assert_eq!(error("Patient..name").0, 8);
        assert_eq!(error("").0, 0);
        assert!(parse("Patient.name 'x'").is_err());
        assert!(parse("'open").is_err());
        assert_eq!(error("name.bogus()").0, 5);
    }
}
