//! The methods applied to the primitive values the walk reaches: the policy defaults for values
//! no rule governs, then one function per method (pseudonyms, encryption, date shifting,
//! generalization, perturbation, scrubbing, `terminology`). Each returns what became of the
//! value; the counts and `explain` entries are written in [`Walk::leaf`].

use chrono::Datelike as _;
use fhirlake_fhir::types as fhir_types;
use serde_json::{Map, Value};

use super::walk::{Parent, ResourceCtx, Walk};
use super::{
    DATE_TYPES, FREE_TEXT_TYPES, NUMBER_TYPES, Outcome, SiblingKind, ms_compat, outcome_name,
    set_string,
};
use crate::methods::{self, crypt, dates, pseudonym};
use crate::path::{Expr, Item, eval};
use crate::policy::{Fallback, Generalize, Method, Perturb};
use crate::vocabulary::{self, TextDecision, Vocabulary};

impl Walk<'_> {
    /// Applies the governing rule `gov` (or the defaults) to a primitive value. `direct`: the
    /// rule matched this node itself, not an ancestor.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn leaf(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        gov: Option<usize>,
        direct: bool,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        let Some(i) = gov else {
            return self.leaf_default(value, ty, ctx);
        };
        let method = &engine.policy.rules[i].method;
        if *method == Method::DateShift
            && engine.policy.ms.is_none()
            && engine.policy.defaults.dates_over_89 == Fallback::Redact
            && value.as_str().is_some_and(|text| self.over_89(text))
        {
            // A date that old says the person it is about is over 89 (Safe Harbor): shifting it
            // by at most a year would not hide that.
            self.counts.methods[method.index()] += 1;
            self.record(Some(i), "", "removed");
            return Outcome::Remove;
        }
        if engine.reapply
            && matches!(
                method,
                Method::Pseudonymize | Method::Encrypt | Method::DateShift | Method::Perturb(_)
            )
        {
            self.record(Some(i), "", "kept");
            return Outcome::Keep;
        }
        if matches!(method, Method::Substitute(_)) && !direct {
            // Inside a substituted node: replaced along with it (see `Walk::node`).
            return Outcome::Remove;
        }
        let ms_mode = engine.policy.ms.is_some();
        let outcome = match method {
            Method::Keep => Outcome::Keep,
            Method::Redact => match engine.policy.ms.as_ref() {
                Some(m) => self.ms_redact(value, element, ty, parent, m),
                None => Outcome::Remove,
            },
            Method::Pseudonymize => {
                if !value.is_string() {
                    return Outcome::Remove;
                }
                self.pseudonymize(value, element, ty, parent, ctx)
            }
            Method::Encrypt => match value {
                Value::String(text) => {
                    let c = crypt::encrypt(&engine.key, text);
                    if ms_mode {
                        self.ms_ops |= ms_compat::OP_ENCRYPT;
                    }
                    set_string(value, c)
                }
                _ => Outcome::Remove,
            },
            Method::DateShift => self.date_shift(value, ty, i, ctx),
            Method::Generalize(g) => {
                if ms_mode && !value.is_null() {
                    self.ms_ops |= ms_compat::OP_GENERALIZE;
                }
                self.generalize(value, element, ty, g, parent, ctx)
            }
            Method::Substitute(replacement) => {
                self.ms_ops |= ms_compat::OP_SUBSTITUTE;
                *value = replacement.clone();
                Outcome::Changed
            }
            Method::Perturb(p) => self.perturb(value, ty, p, ctx),
            Method::Scrub => self.scrub(value, ctx),
            Method::Terminology => terminology(value, element, ty, parent),
            // Never governs (see `Walk::node`); here only if a policy names a primitive with it.
            Method::Allow => Outcome::Keep,
        };
        self.counts.methods[method.index()] += 1;
        self.record(Some(i), "", outcome_name(outcome));
        outcome
    }

    /// A value no rule governs: the policy's default for free text or for other elements.
    fn leaf_default(&mut self, value: &mut Value, ty: &str, ctx: &ResourceCtx) -> Outcome {
        let defaults = &self.engine.policy.defaults;
        let free_text = FREE_TEXT_TYPES.contains(&ty);
        let fallback = if free_text {
            defaults.free_text
        } else {
            defaults.elements
        };
        let outcome = match fallback {
            Fallback::Redact => Outcome::Remove,
            Fallback::Scrub => self.scrub(value, ctx),
            _ => Outcome::Keep,
        };
        if outcome != Outcome::Keep && free_text {
            self.counts.free_text_default += 1;
        }
        if outcome != Outcome::Keep || self.explain.is_some() {
            let label = if free_text {
                "default (free_text)"
            } else {
                "default (elements)"
            };
            self.record(None, label, outcome_name(outcome));
        }
        outcome
    }

    /// True when a date says its subject is over 89 years old.
    #[inline]
    fn over_89(&self, text: &str) -> bool {
        let today = self.engine.today;
        // Most dates are recent: their year alone says so, without parsing the date.
        let recent = text
            .get(..4)
            .and_then(|y| y.parse::<i32>().ok())
            .is_some_and(|y| y > today.year() - 89);
        !recent && dates::age_in_years(text, today).is_some_and(|age| age > 89)
    }

    /// `pseudonymize` on a string: a resource id, a reference, an identifier value or any text,
    /// each keyed its own way.
    fn pseudonymize(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        parent: &Parent<'_>,
        ctx: &ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        let Value::String(text) = &*value else {
            return Outcome::Remove;
        };
        let had_value = !text.is_empty();
        let new = match engine.policy.ms.as_ref().filter(|m| m.embedded_keys) {
            Some(m) => ms_compat::pseudonym(m, parent, element, text),
            None => {
                if element == "id" && ty == "id" && fhir_types::is_resource_type(parent.ty) {
                    if ctx.contained {
                        pseudonym::pseudo_local_id(&engine.key, text)
                    } else {
                        pseudonym::pseudo_id(&engine.key, &ctx.resource_type, text)
                    }
                } else if (parent.ty == "Reference" && element == "reference")
                    || is_bundle_reference(parent.ty, element)
                {
                    self.worker
                        .references
                        .get_or_insert_with(text, |r| engine.rewrite_reference(r))
                } else if parent.ty == "Identifier" && element == "value" {
                    pseudonym::pseudo_identifier(&engine.key, parent.system.unwrap_or(""), text)
                } else {
                    pseudonym::pseudo_text(&engine.key, text)
                }
            }
        };
        if engine.policy.ms.is_some() && had_value {
            self.ms_ops |= ms_compat::OP_CRYPTOHASH;
        }
        set_string(value, new)
    }

    /// `date_shift` on a date, by the resource's offset (rule `rule`; the anonymizer's offset
    /// depends on where the rule is).
    fn date_shift(
        &mut self,
        value: &mut Value,
        ty: &str,
        rule: usize,
        ctx: &ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        let (Some(text), true) = (value.as_str(), DATE_TYPES.contains(&ty)) else {
            return Outcome::Keep;
        };
        if let Some(m) = &engine.policy.ms {
            return self.ms_date_shift(value, rule, m, ctx);
        }
        match dates::shift(text, ctx.offset_days) {
            Some(s) => set_string(value, s),
            // Not a date we can read: it must not survive as it is.
            None => Outcome::Remove,
        }
    }

    /// `perturb` on a number, seeded by the resource and the value's path.
    fn perturb(&mut self, value: &mut Value, ty: &str, p: &Perturb, ctx: &ResourceCtx) -> Outcome {
        let engine = self.engine;
        let Some(n) = value
            .as_f64()
            .filter(|_| NUMBER_TYPES.contains(&ty) || ty.is_empty())
        else {
            return Outcome::Keep;
        };
        let seed = format!("{}|{}|{}", ctx.seed, self.path.join("."), n);
        let mut v = methods::perturb(&engine.key, &seed, n, p.span, p.proportional, p.round_to);
        if matches!(ty, "integer" | "positiveInt" | "unsignedInt") {
            v = v.round();
            if ty != "integer" {
                v = v.max(if ty == "positiveInt" { 1.0 } else { 0.0 });
            }
        }
        *value = eval::number_json(v);
        if engine.policy.ms.is_some() {
            self.ms_ops |= ms_compat::OP_PERTURB;
        }
        Outcome::Changed
    }

    /// `scrub` on a text: identifiers in it become kind tokens.
    fn scrub(&mut self, value: &mut Value, ctx: &ResourceCtx) -> Outcome {
        let (Some(scrubber), Value::String(text)) = (&self.engine.scrubber, &*value) else {
            return Outcome::Keep;
        };
        let names: Vec<&str> = ctx.names.iter().map(String::as_str).collect();
        let mut counts = methods::scrub::ScrubCounts::default();
        let new = scrubber.scrub(text, &names, &mut counts);
        if counts.total() == 0 {
            return Outcome::Keep;
        }
        set_string(value, new)
    }

    /// `generalize` to year, month, ZIP3, age or the policy's cases.
    fn generalize(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        g: &Generalize,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        match g {
            Generalize::Year { over_89_band } => {
                let Some(text) = value.as_str().filter(|_| DATE_TYPES.contains(&ty)) else {
                    // Not a date (a date's `_x` part is not governed here): nothing to coarsen,
                    // so nothing that may stay.
                    return if engine.policy.ms.is_some() {
                        Outcome::Keep
                    } else {
                        Outcome::Remove
                    };
                };
                if *over_89_band && dates::age_in_years(text, engine.today).is_some_and(|a| a >= 90)
                {
                    ctx.age_band_90 = true;
                    return Outcome::Remove;
                }
                match dates::to_year(text) {
                    Some(y) => set_string(value, y),
                    None => Outcome::Remove,
                }
            }
            Generalize::Month => match value.as_str().filter(|_| DATE_TYPES.contains(&ty)) {
                Some(text) => match dates::to_month(text) {
                    Some(m) => set_string(value, m),
                    None => Outcome::Remove,
                },
                None if engine.policy.ms.is_some() => Outcome::Keep,
                None => Outcome::Remove,
            },
            Generalize::Zip3 => match value.as_str() {
                Some(text) => match methods::zip3(text, &engine.policy.defaults.restricted_zip3) {
                    Some(z) => set_string(value, z),
                    None => Outcome::Remove,
                },
                None => Outcome::Remove,
            },
            Generalize::Age if engine.policy.ms.is_some() => ms_compat::generalize_age(value),
            Generalize::Age => age(value, element, ty, parent),
            Generalize::Cases { cases, other } => {
                self.generalize_cases(value, ty, cases, *other, ctx)
            }
        }
    }

    /// `generalize` by cases: the result of the first true condition (`other` when none is).
    fn generalize_cases(
        &mut self,
        value: &mut Value,
        ty: &str,
        cases: &[(Expr, Expr)],
        other: Fallback,
        ctx: &ResourceCtx,
    ) -> Outcome {
        let mut result = None;
        {
            let this = Item::Node { value, ty };
            for (cond, expr) in cases {
                match eval::eval(cond, std::slice::from_ref(&this), &this) {
                    Ok(r) if eval::truthy(&r) => {
                        match eval::eval(expr, std::slice::from_ref(&this), &this) {
                            Ok(items) => result = Some(items.first().map(Item::to_json)),
                            Err(e) => return self.eval_failed(ctx, e),
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => return self.eval_failed(ctx, e),
                }
            }
        }
        match result {
            Some(Some(new)) => {
                let new = match (value.is_string(), new) {
                    // Keep the JSON shape of the element: `"20"` stays a number for numbers.
                    (false, Value::String(s)) if value.is_number() => s
                        .parse::<f64>()
                        .map(eval::number_json)
                        .unwrap_or(Value::String(s)),
                    (true, Value::Number(n)) => Value::String(n.to_string()),
                    (_, v) => v,
                };
                if new == *value {
                    Outcome::Keep
                } else {
                    *value = new;
                    Outcome::Changed
                }
            }
            Some(None) => Outcome::Remove,
            None => match other {
                Fallback::Keep => Outcome::Keep,
                _ => Outcome::Remove,
            },
        }
    }
}

/// True for the Bundle elements that hold references: `entry.fullUrl`, `entry.request.url`,
/// `entry.response.location`. They are rewritten like `Reference.reference`, so an entry still
/// matches the references to it.
fn is_bundle_reference(parent_ty: &str, element: &str) -> bool {
    matches!(
        (parent_ty, element),
        ("Bundle.entry", "fullUrl")
            | ("Bundle.entry.request", "url")
            | ("Bundle.entry.response", "location")
    )
}

/// The `terminology` method (see [`Method::Terminology`]).
fn terminology(value: &mut Value, element: &str, ty: &str, parent: &Parent<'_>) -> Outcome {
    // `display` is a Coding's, `text` a CodeableConcept's (neither has the other).
    let display_like = match parent.kind {
        SiblingKind::Coded => matches!(element, "display" | "text"),
        SiblingKind::Quantity => element == "unit",
        SiblingKind::None => false,
    };
    if display_like {
        return match parent.text {
            Some(TextDecision::Keep) => Outcome::Keep,
            Some(TextDecision::Replace(display)) => set_string(value, display.to_string()),
            _ => Outcome::Remove,
        };
    }
    let Some(text) = value.as_str() else {
        return Outcome::Remove;
    };
    let known = if parent.ty == "Reference" && element == "type" {
        fhir_types::is_resource_type(text)
    } else {
        matches!(ty, "uri" | "url" | "canonical" | "oid" | "code")
            && (vocabulary::is_known_system(text)
                || parent.vocabulary.is_some_and(|v| v.has_system(text)))
    };
    if known {
        Outcome::Keep
    } else {
        Outcome::Remove
    }
}

/// `generalize` to `age` (not in anonymizer mode): an age over 89 years becomes 90 years in the
/// quantity's own unit (1080 `mo`, not 90 `mo`); a number whose unit is not a time unit cannot be
/// read as an age, so over 89 it is removed. The quantity's other parts: codes stay, the unit and
/// system as `terminology` decides, anything else is removed.
fn age(value: &mut Value, element: &str, ty: &str, parent: &Parent<'_>) -> Outcome {
    if let Some(n) = value.as_f64() {
        let years_per_unit = parent
            .years_per_unit
            .or((parent.kind != SiblingKind::Quantity).then_some(1.0));
        return match years_per_unit {
            Some(y) if n * y > 89.0 => {
                *value = eval::number_json((90.0 / y).round());
                Outcome::Changed
            }
            Some(_) => Outcome::Keep,
            None if n > 89.0 => Outcome::Remove,
            None => Outcome::Keep,
        };
    }
    match ty {
        "code" => Outcome::Keep,
        _ => terminology(value, element, ty, parent),
    }
}

/// Years per unit of a time unit (UCUM code or a plain word); `None` for other units.
pub(super) fn years_per_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "a" | "year" | "years" | "yr" | "yrs" | "Year" | "Years" => 1.0,
        "mo" | "month" | "months" | "Month" | "Months" => 1.0 / 12.0,
        "wk" | "week" | "weeks" | "Week" | "Weeks" => 7.0 / 365.25,
        "d" | "day" | "days" | "Day" | "Days" => 1.0 / 365.25,
        "h" | "hour" | "hours" => 1.0 / (365.25 * 24.0),
        "min" | "minute" | "minutes" => 1.0 / (365.25 * 24.0 * 60.0),
        "s" | "second" | "seconds" => 1.0 / (365.25 * 24.0 * 3600.0),
        _ => return None,
    })
}

/// `terminology` for the display-like child of a Coding, CodeableConcept or quantity.
pub(super) fn text_decision<'v>(
    vocabulary: Option<&'v Vocabulary>,
    ty: &str,
    map: &Map<String, Value>,
) -> Option<TextDecision<'v>> {
    fn str_of<'m>(m: &'m Map<String, Value>, k: &str) -> Option<&'m str> {
        m.get(k).and_then(Value::as_str)
    }
    fn pair(m: &Map<String, Value>) -> Option<(&str, &str)> {
        Some((m.get("system")?.as_str()?, m.get("code")?.as_str()?))
    }
    match ty {
        "Coding" => {
            let display = str_of(map, "display")?;
            Some(vocabulary::decide_text_with(vocabulary, display, pair(map)))
        }
        "CodeableConcept" => {
            let text = str_of(map, "text")?;
            let codings = map.get("coding").and_then(Value::as_array);
            let pairs = codings
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_object().and_then(pair));
            Some(vocabulary::decide_text_with(vocabulary, text, pairs))
        }
        _ => {
            let unit = str_of(map, "unit")?;
            let known = str_of(map, "code") == Some(unit)
                || vocabulary::is_known_unit(unit)
                || vocabulary.is_some_and(|v| v.has_unit(unit))
                || years_per_unit(unit).is_some();
            Some(if known {
                TextDecision::Keep
            } else {
                TextDecision::Remove
            })
        }
    }
}
