//! The fhirlake policy format (TOML): `name`, `[defaults]`, and `[[rules]]` of
//! `{ path, method, params }`. Every error carries the line and column of what is wrong.

use serde::Deserialize;
use toml::Spanned;

use super::{
    Defaults, Fallback, Generalize, Method, Perturb, Policy, PolicyError, Rule, line_col, text_hash,
};
use crate::path::{Selector, parse as parse_expr};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    elements: Option<Spanned<String>>,
    free_text: Option<Spanned<String>>,
    extensions: Option<Spanned<String>>,
    modifier_extensions: Option<Spanned<String>>,
    unknown_elements: Option<Spanned<String>>,
    date_shift_days: Option<Spanned<i64>>,
    restricted_zip3: Option<Spanned<Vec<String>>>,
    dates_over_89: Option<Spanned<String>>,
    vocabulary: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Spanned<String>,
    method: Spanned<String>,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
}

struct Ctx<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl Ctx<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        let (line, column) = line_col(self.text, offset);
        PolicyError {
            source_name: self.source_name.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Parses and validates a TOML policy.
pub fn parse(text: &str, source_name: &str, name: &str) -> Result<Policy, PolicyError> {
    let ctx = Ctx { text, source_name };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ctx.error(offset, e.message().to_string())
    })?;
    let defaults = match &raw.defaults {
        Some(d) => defaults(&ctx, d.get_ref())?,
        None => Defaults::default(),
    };
    let mut rules = Vec::with_capacity(raw.rules.len());
    for spanned in &raw.rules {
        rules.push(rule(&ctx, spanned)?);
    }
    Ok(Policy {
        name: raw.name.clone().unwrap_or_else(|| name.to_string()),
        hash: text_hash(text),
        rules,
        defaults,
        ms: None,
        vocabulary: None,
    })
}

fn fallback(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    allowed: &[Fallback],
    default: Fallback,
) -> Result<Fallback, PolicyError> {
    match value {
        None => Ok(default),
        Some(v) => Fallback::parse(v.get_ref(), allowed).ok_or_else(|| {
            ctx.error(
                v.span().start,
                format!(
                    "`{}` is not allowed here (one of: {})",
                    v.get_ref(),
                    allowed
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }),
    }
}

fn defaults(ctx: &Ctx<'_>, raw: &RawDefaults) -> Result<Defaults, PolicyError> {
    use Fallback::*;
    let base = Defaults::default();
    let days = match &raw.date_shift_days {
        None => base.date_shift_days,
        Some(d) => {
            let v = *d.get_ref();
            if !(1..=3650).contains(&v) {
                return Err(ctx.error(d.span().start, "date_shift_days must be 1 to 3650"));
            }
            v as u32
        }
    };
    let restricted_zip3 = match &raw.restricted_zip3 {
        None => base.restricted_zip3,
        Some(list) => {
            if let Some(bad) = list
                .get_ref()
                .iter()
                .find(|z| z.len() != 3 || !z.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ctx.error(
                    list.span().start,
                    format!("restricted_zip3 entries are 3 digits; `{bad}` is not"),
                ));
            }
            list.get_ref().clone()
        }
    };
    Ok(Defaults {
        elements: fallback(ctx, &raw.elements, &[Keep, Redact], Keep)?,
        free_text: fallback(ctx, &raw.free_text, &[Keep, Redact, Scrub], Keep)?,
        extensions: fallback(ctx, &raw.extensions, &[Keep, Redact], Keep)?,
        modifier_extensions: fallback(ctx, &raw.modifier_extensions, &[Keep, DropResource], Keep)?,
        unknown_elements: fallback(ctx, &raw.unknown_elements, &[Keep, Redact], Keep)?,
        date_shift_days: days,
        restricted_zip3,
        dates_over_89: fallback(ctx, &raw.dates_over_89, &[Keep, Redact], Keep)?,
        vocabulary_files: match &raw.vocabulary {
            None => Vec::new(),
            Some(files) => {
                let (line, _) = line_col(ctx.text, files.span().start);
                files.get_ref().iter().map(|f| (f.clone(), line)).collect()
            }
        },
    })
}

fn rule(ctx: &Ctx<'_>, spanned: &Spanned<RawRule>) -> Result<Rule, PolicyError> {
    let raw = spanned.get_ref();
    let path_span = raw.path.span();
    // +1 skips the opening quote of the TOML string.
    let selector = Selector::compile(raw.path.get_ref()).map_err(|e| {
        ctx.error(
            path_span.start + 1 + e.offset,
            format!("bad path: {}", e.message),
        )
    })?;
    let params = raw.params.as_ref().map(|p| (p.get_ref(), p.span().start));
    let method = method(ctx, &raw.method, params)?;
    let (line, _) = line_col(ctx.text, spanned.span().start);
    Ok(Rule {
        selector,
        method,
        line,
    })
}

fn method(
    ctx: &Ctx<'_>,
    name: &Spanned<String>,
    params: Option<(&toml::Table, usize)>,
) -> Result<Method, PolicyError> {
    let at = params.map_or(name.span().start, |(_, at)| at);
    let empty = toml::Table::new();
    let table = params.map_or(&empty, |(t, _)| t);
    let allow = |keys: &[&str]| -> Result<(), PolicyError> {
        match table.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(ctx.error(
                at,
                format!(
                    "`{}` takes no parameter `{k}`{}",
                    name.get_ref(),
                    if keys.is_empty() {
                        String::new()
                    } else {
                        format!(" (parameters: {})", keys.join(", "))
                    }
                ),
            )),
            None => Ok(()),
        }
    };
    let missing = |p: &str| {
        ctx.error(
            at,
            format!("`{}` needs the parameter `{p}`", name.get_ref()),
        )
    };
    let method = match name.get_ref().as_str() {
        "keep" => Method::Keep,
        "redact" => Method::Redact,
        "pseudonymize" => Method::Pseudonymize,
        "encrypt" => Method::Encrypt,
        "date_shift" => Method::DateShift,
        "scrub" => Method::Scrub,
        "allow" => Method::Allow,
        "terminology" => Method::Terminology,
        "substitute" => {
            allow(&["replace_with"])?;
            let value = table
                .get("replace_with")
                .ok_or_else(|| missing("replace_with"))?;
            Method::Substitute(
                serde_json::to_value(value)
                    .map_err(|e| ctx.error(at, format!("replace_with: {e}")))?,
            )
        }
        "perturb" => {
            allow(&["span", "range_type", "round_to"])?;
            let span = table
                .get("span")
                .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                .ok_or_else(|| missing("span"))?;
            if span < 0.0 {
                return Err(ctx.error(at, "perturb: span must not be negative"));
            }
            let proportional = match table.get("range_type").and_then(|v| v.as_str()) {
                None | Some("fixed") => false,
                Some("proportional") => true,
                Some(_) => {
                    return Err(ctx.error(at, "perturb: range_type is `fixed` or `proportional`"));
                }
            };
            let round_to = match table.get("round_to") {
                None => 2,
                Some(v) => match v.as_integer() {
                    Some(n @ 0..=28) => n as u32,
                    _ => return Err(ctx.error(at, "perturb: round_to is an integer 0 to 28")),
                },
            };
            Method::Perturb(Perturb {
                span,
                proportional,
                round_to,
            })
        }
        "generalize" => {
            allow(&["to", "over_89_band", "cases", "other_values"])?;
            match (table.get("to").and_then(|v| v.as_str()), table.get("cases")) {
                (Some(to), None) => Method::Generalize(match to {
                    "year" => Generalize::Year {
                        over_89_band: table
                            .get("over_89_band")
                            .and_then(toml::Value::as_bool)
                            .unwrap_or(false),
                    },
                    "month" => Generalize::Month,
                    "zip3" => Generalize::Zip3,
                    "age" => Generalize::Age,
                    _ => {
                        return Err(ctx.error(
                            at,
                            "generalize: `to` is one of year, month, zip3, age (or give `cases`)",
                        ));
                    }
                }),
                (None, Some(cases)) => {
                    let Some(cases) = cases.as_table() else {
                        return Err(
                            ctx.error(at, "generalize: cases is a table of condition = result")
                        );
                    };
                    let mut compiled = Vec::new();
                    for (cond, result) in cases {
                        let Some(result) = result.as_str() else {
                            return Err(ctx.error(
                                at,
                                "generalize: each case result is an expression string",
                            ));
                        };
                        let c = parse_expr(cond).map_err(|e| {
                            ctx.error(at, format!("generalize case condition: {e}"))
                        })?;
                        let r = parse_expr(result)
                            .map_err(|e| ctx.error(at, format!("generalize case result: {e}")))?;
                        compiled.push((c, r));
                    }
                    let other = match table.get("other_values").and_then(|v| v.as_str()) {
                        None | Some("redact") => Fallback::Redact,
                        Some("keep") => Fallback::Keep,
                        Some(_) => {
                            return Err(
                                ctx.error(at, "generalize: other_values is `redact` or `keep`")
                            );
                        }
                    };
                    Method::Generalize(Generalize::Cases {
                        cases: compiled,
                        other,
                    })
                }
                _ => return Err(missing("to")),
            }
        }
        other => {
            return Err(ctx.error(
                name.span().start,
                format!(
                    "unknown method `{other}` (methods: {})",
                    super::METHOD_NAMES.join(", ")
                ),
            ));
        }
    };
    if matches!(
        method,
        Method::Keep
            | Method::Redact
            | Method::Pseudonymize
            | Method::Encrypt
            | Method::DateShift
            | Method::Scrub
            | Method::Allow
            | Method::Terminology
    ) {
        allow(&[])?;
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PolicyError {
        parse(text, "p.toml", "p").unwrap_err()
    }

    #[test]
    fn builtins_parse() {
        for (name, _) in super::super::BUILTIN {
            let p = Policy::builtin(name).unwrap();
            assert!(!p.rules.is_empty(), "{name}");
            assert_eq!(p.name, *name);
        }
    }

    #[test]
    fn errors_point_at_the_rule() {
        let e = err("[[rules]]\npath = \"Patient.name\"\nmethod = \"smudge\"\n");
        assert_eq!((e.line, e.column), (3, 10), "{e}");
        assert!(e.message.contains("unknown method `smudge`"), "{e}");

        let e = err("[[rules]]\npath = \"Patient..name\"\nmethod = \"redact\"\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("bad path"), "{e}");

        let e = err("[[rules]]\npath = \"Patient.name\"\nmethod = \"substitute\"\n");
        assert!(e.message.contains("replace_with"), "{e}");

        let e = err(
            "[[rules]]\npath = \"Patient.name\"\nmethod = \"perturb\"\nparams = { span = -1 }\n",
        );
        assert_eq!(e.line, 4, "{e}");

        let e = err("[[rules]]\npath = \"Patient.name\"\nmethod = \"redact\"\ncolour = 1\n");
        assert!(e.message.contains("colour"), "{e}");

        let e = err("[defaults]\nfree_text = \"maybe\"\n");
        assert_eq!((e.line, e.column), (2, 13), "{e}");
    }
}
