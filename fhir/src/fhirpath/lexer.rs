//! FHIRPath text -> tokens, each with its byte offset. Comments (`//`, `/* */`) and white space
//! are skipped; date/time literals are checked for shape here, so `@2020-13` is an error at the
//! `@`.

use crate::error::{Error, Result};

/// One token of a FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A name or keyword (`name`, `where`, `and`, `true`).
    Ident(String),
    /// A `backtick`-delimited identifier (never a keyword).
    Quoted(String),
    /// A `'string'` literal, escapes resolved.
    Str(String),
    /// An integer literal (a trailing `L` is accepted and dropped).
    Int(i64),
    /// A decimal literal: value and source text, whose digits set the precision.
    Dec(f64, String),
    /// `@2020-01-02` (without the `@`).
    Date(String),
    /// `@2020-01-02T10:00Z` (without the `@`; a trailing `T` dropped).
    DateTime(String),
    /// `@T10:00` (without the `@T`).
    Time(String),
    /// `%name`, `` %`name` ``, `%'name'`.
    Const(String),
    /// `$this`, `$index`, `$total` (the name after the `$`).
    Var(String),
    /// An operator or punctuation.
    Sym(&'static str),
    /// The end of the expression.
    Eof,
}

impl Token {
    /// How an error message names the token: names and symbols as written, literals only as
    /// "literal" (their text may be data).
    pub fn describe(&self) -> String {
        match self {
            Token::Ident(s) | Token::Quoted(s) => format!("`{s}`"),
            Token::Sym(s) => format!("`{s}`"),
            Token::Eof => "end of expression".to_string(),
            Token::Const(s) => format!("`%{s}`"),
            Token::Var(s) => format!("`${s}`"),
            _ => "literal".to_string(),
        }
    }
}

/// The tokens of `src` with their byte offsets, ending with [`Token::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<(usize, Token)>> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    loop {
        lexer.skip_space();
        let start = lexer.pos;
        let token = lexer.next_token()?;
        let end = token == Token::Eof;
        out.push((start, token));
        if end {
            return Ok(out);
        }
    }
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

/// Multi-character symbols first, so `<=` is not read as `<`.
const SYMBOLS: [&str; 22] = [
    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "=", "~", "<", ">", "+", "-",
    "*", "/", "|", "&",
];

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Lexer<'_> {
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

    fn next_token(&mut self) -> Result<Token> {
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Ok(Token::Eof);
        };
        let start = self.pos;
        if is_name_start(c) {
            let len = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            self.pos += len;
            return Ok(Token::Ident(rest[..len].to_string()));
        }
        if c.is_ascii_digit() {
            return self.number();
        }
        match c {
            '\'' => self.string('\'').map(Token::Str),
            '`' => self.string('`').map(Token::Quoted),
            '@' => self.date_time(),
            '%' => {
                self.pos += 1;
                let rest = &self.src[self.pos..];
                if let Some(quote) = rest.chars().next().filter(|q| matches!(q, '`' | '\'')) {
                    return self.string(quote).map(Token::Const);
                }
                let len = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
                if len == 0 {
                    return Err(Error::fhirpath_syntax(
                        start,
                        "`%` must be followed by a name",
                    ));
                }
                self.pos += len;
                Ok(Token::Const(rest[..len].to_string()))
            }
            '$' => {
                self.pos += 1;
                let rest = &self.src[self.pos..];
                let len = rest
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(Token::Var(rest[..len].to_string()))
            }
            _ => {
                for sym in SYMBOLS {
                    if rest.starts_with(sym) {
                        self.pos += sym.len();
                        return Ok(Token::Sym(sym));
                    }
                }
                Err(Error::fhirpath_syntax(
                    start,
                    format!("unexpected character `{c}`"),
                ))
            }
        }
    }

    fn number(&mut self) -> Result<Token> {
        let start = self.pos;
        let rest = &self.src[self.pos..];
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
                .map(|f| Token::Dec(f, text.to_string()))
                .map_err(|_| Error::fhirpath_syntax(start, "invalid number"));
        }
        self.pos += int_len;
        // A trailing `L` marks a Long literal; same value here.
        if self.src[self.pos..].starts_with('L') {
            self.pos += 1;
        }
        rest[..int_len]
            .parse::<i64>()
            .map(Token::Int)
            .map_err(|_| Error::fhirpath_syntax(start, "integer out of range"))
    }

    fn string(&mut self, quote: char) -> Result<String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, escaped)) = chars.next() else {
                break;
            };
            match escaped {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) => out.push(c),
                        None => return Err(Error::fhirpath_syntax(start, "invalid \\u escape")),
                    }
                }
                other => out.push(other),
            }
        }
        Err(Error::fhirpath_syntax(start, "unterminated string"))
    }

    fn date_time(&mut self) -> Result<Token> {
        let start = self.pos;
        self.pos += 1;
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | '.' | '+' | 'Z')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        self.pos += len;
        let invalid = |what: &str| {
            Err(Error::fhirpath_syntax(
                start,
                format!("invalid {what} literal"),
            ))
        };
        if let Some(time) = text.strip_prefix('T') {
            if !is_time(time) {
                return invalid("time");
            }
            return Ok(Token::Time(time.to_string()));
        }
        if text.contains('T') {
            let text = text.strip_suffix('T').unwrap_or(text);
            if !is_date_time(text) {
                return invalid("dateTime");
            }
            return Ok(Token::DateTime(text.to_string()));
        }
        if !is_date_time(text) {
            return invalid("date");
        }
        Ok(Token::Date(text.to_string()))
    }
}

/// `digits` ASCII digits whose value is at most `max`.
fn is_number(s: &str, digits: usize, max: u32) -> bool {
    s.len() == digits
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u32>().is_ok_and(|v| v <= max)
}

/// An absent or two-digit component of at most `max`.
fn is_optional(part: Option<&str>, max: u32) -> bool {
    part.is_none_or(|p| is_number(p, 2, max))
}

/// `hh[:mm[:ss[.fff]]]`; with `need_minutes`, `hh:mm` at least (a time-zone offset).
fn time_parts(s: &str, need_minutes: bool) -> bool {
    let mut parts = s.splitn(3, ':');
    let hour = parts.next().is_some_and(|h| is_number(h, 2, 23));
    let minute = parts.next();
    if !hour || !is_optional(minute, 59) || (need_minutes && minute.is_none()) {
        return false;
    }
    parts.next().is_none_or(|sec| match sec.split_once('.') {
        Some((whole, fraction)) => {
            !fraction.is_empty()
                && fraction.bytes().all(|b| b.is_ascii_digit())
                && is_number(whole, 2, 60)
        }
        None => is_number(sec, 2, 60),
    })
}

/// A FHIRPath time literal after the `@T`.
fn is_time(s: &str) -> bool {
    time_parts(s, false)
}

/// A FHIR date or dateTime of any precision (`2010`, `2010-10-10T10:00:00.5+02:00`).
fn is_date_time(s: &str) -> bool {
    let (date, rest) = match s.split_once('T') {
        Some((date, rest)) => (date, Some(rest)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    if !parts.next().is_some_and(|y| is_number(y, 4, 9999)) {
        return false;
    }
    let (month, day) = (parts.next(), parts.next());
    if parts.next().is_some()
        || !is_optional(month, 12)
        || !is_optional(day, 31)
        || month == Some("00")
        || day == Some("00")
    {
        return false;
    }
    let Some(rest) = rest else {
        return true;
    };
    if day.is_none() {
        return false;
    }
    let (time, tz) = match rest.find(['Z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let tz_ok = tz.is_none_or(|tz| tz == "Z" || time_parts(&tz[1..], true));
    tz_ok && (time.is_empty() || is_time(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_keep_their_kind_and_text() {
        let tokens: Vec<Token> = tokenize("@2020-01-02 @2020-01-02T10:00Z @T10:00 4.50 7L `div`")
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            tokens,
            [
                Token::Date("2020-01-02".into()),
                Token::DateTime("2020-01-02T10:00Z".into()),
                Token::Time("10:00".into()),
                Token::Dec(4.5, "4.50".into()),
                Token::Int(7),
                Token::Quoted("div".into()),
                Token::Eof,
            ]
        );
    }

    #[test]
    fn malformed_literals_are_errors_at_their_start() {
        for (src, offset) in [
            ("a = @2020-13", 4),
            ("@T25:00", 0),
            ("'open", 0),
            ("x #", 2),
        ] {
            match tokenize(src) {
                Err(Error::FhirPathSyntax { offset: at, .. }) => assert_eq!(at, offset, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
        assert!(tokenize("@2020-01-01T10:00+02").is_err());
        assert!(tokenize("@2020T10:00").is_err());
    }
}
