//! FHIR R4 instances generated from the type table ([`fhirlake_fhir::types`]).
//!
//! [`generate`] builds a resource of one type whose shape is valid: every element is of its type
//! (arrays for repeating elements, nested datatypes and backbone elements, `contained`
//! resources, `Bundle.entry.resource`, primitive extensions such as `_birthDate` and `_given`
//! aligned with `given`, extensions inside extensions). Every decision (include an element or
//! not, how many items, which `value[x]` type, which resource type, which reference form) is a
//! number asked of a [`Choices`] source, so the same code serves [`EveryElement`] (each element
//! once, every choice type at once: the coverage report) and a random source (a property test
//! feeding numbers from a tape). Nesting is bounded by [`Options::max_depth`].
//!
//! String-like values carry a token unique per occurrence (`zqx0001tok`; in a uri
//! `http://zqx0001tok.example/zqx0001tok`, base64 of the token, a `<div>` holding it), and full
//! dates are unique and at least 367 days apart, so a value found in an output can be traced to
//! the element it came from ([`Token`]).
//!
//! With [`Values::Plausible`] the slots whose fate depends on the value hold values a policy may
//! keep instead: a known code with its own display ([`PLAUSIBLE_CODING`], from
//! [`crate::vocabulary`]) in every `Coding` and as `CodeableConcept.text`, a UCUM unit in every
//! quantity, a standard `Identifier.system`, a resource type in `Reference.type`, a 5-digit ZIP
//! in `Address.postalCode`, and one recent date in every date, dateTime and instant
//! ([`dates_over_89`] moves them more than 89 years back). Other string-like values still carry
//! tokens.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::{Map, Value, json};

use fhirlake_fhir::types::{self as fhir_types, Child};

/// What a [`Choices`] source is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Whether to include an optional element: `0` no, `1` yes (`n` = 2).
    Include {
        /// Nesting depth of the object the element belongs to (the resource is 0).
        depth: usize,
    },
    /// How many items a repeating element gets beyond the first (`0..n`).
    Repeat,
    /// Which type of a choice element (`value[x]`): an index into its types.
    Choice,
    /// Which resource type for `contained`, `Bundle.entry.resource` and the like: an index into
    /// the sorted concrete resource types.
    ResourceType,
    /// Which form a `Reference.reference` takes: `Type/id`, an absolute URL, `urn:uuid:`, a
    /// contained `#id`, a conditional `Type?identifier=system|value` (`n` = 5).
    ReferenceForm,
    /// Whether a primitive gets its `_x` part (id and extensions): `0` no, `1` yes (`n` = 2).
    PrimitiveExtension {
        /// Nesting depth of the object the primitive belongs to.
        depth: usize,
    },
    /// Whether one item of a repeating primitive has a value (`1`) or only its `_x` part (`0`).
    ItemValue,
    /// A boolean (`0` false, `1` true), or which of a few numbers.
    Value,
}

/// The numbers behind a generated instance. Closures `FnMut(Ask, usize) -> usize` are sources.
pub trait Choices {
    /// A number below `n` (`n` is at least 1) for the decision `ask`. Numbers out of range are
    /// taken modulo `n`.
    fn pick(&mut self, ask: Ask, n: usize) -> usize;

    /// Every type of a choice element of an object of type `ty` at `depth` at once (several
    /// `value[x]` keys in one object: not a valid instance, but each key is walked on its own)
    /// instead of one picked type.
    fn every_choice(&self, ty: &str, depth: usize) -> bool {
        let _ = (ty, depth);
        false
    }
}

impl<F: FnMut(Ask, usize) -> usize> Choices for F {
    fn pick(&mut self, ask: Ask, n: usize) -> usize {
        self(ask, n)
    }
}

/// The coverage source: every element once (one item per array); every type of the choice
/// elements of the resource and of its datatypes and backbone elements (and one level deeper,
/// except `Extension.value[x]`), deeper ones in turn; primitive `_x` parts only at the
/// resource's own elements and one level below; nested resources in turn of the resource types.
/// Deeper "every type" would multiply the instance (an `Extension` has 50 value types) for
/// little news.
#[derive(Debug, Default, Clone)]
pub struct EveryElement {
    next_type: usize,
    next_choice: usize,
}

impl Choices for EveryElement {
    fn pick(&mut self, ask: Ask, n: usize) -> usize {
        let wanted = match ask {
            Ask::Include { .. } | Ask::ItemValue | Ask::Value => 1,
            Ask::PrimitiveExtension { depth } => usize::from(depth <= 1),
            Ask::Repeat | Ask::ReferenceForm => 0,
            Ask::Choice => {
                self.next_choice += 1;
                self.next_choice
            }
            Ask::ResourceType => {
                self.next_type += 1;
                self.next_type
            }
        };
        wanted % n.max(1)
    }

    fn every_choice(&self, ty: &str, depth: usize) -> bool {
        depth <= 1 || (depth == 2 && ty != "Extension")
    }
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deepest nesting of complex values: the resource is depth 0, its datatypes and backbone
    /// elements 1, theirs 2, ... Elements of complex type deeper than this are left out; a
    /// nested resource counts as one level.
    pub max_depth: usize,
    /// Most items of a repeating element (`Ask::Repeat` asks for `0..max_items`, plus one).
    pub max_items: usize,
    /// Extensions with real urls to place (those a policy names in `where(url='...')`).
    pub named_extensions: Vec<NamedExtension>,
    /// What goes in the slots whose fate depends on the value.
    pub values: Values,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_depth: 4,
            max_items: 2,
            named_extensions: Vec::new(),
            values: Values::Tokens,
        }
    }
}

/// What [`generate`] writes where a policy's decision depends on the value (`terminology`,
/// `generalize`, `date_shift` and the 90+ rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Values {
    /// Tokens and unique dates everywhere: traceable, and what a policy does to text nobody
    /// vetted (a typed display, a hospital's system URI, an unparseable ZIP).
    #[default]
    Tokens,
    /// Values a policy may keep in those slots (see the module doc); tokens elsewhere.
    Plausible,
}

/// The `(system, code, display)` of every `Coding` under [`Values::Plausible`]: LOINC body
/// height, a code and display the vocabulary knows.
pub const PLAUSIBLE_CODING: (&str, &str, &str) = ("http://loinc.org", "8302-2", "Body Height");

/// The unit (UCUM code and unit text) of every quantity under [`Values::Plausible`]: years, a
/// time unit, so an `Age` reads as one.
pub const PLAUSIBLE_UNIT: &str = "a";

/// UCUM's system URI.
pub const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";

/// `Identifier.system` under [`Values::Plausible`]: a standard identifier system.
pub const PLAUSIBLE_IDENTIFIER_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";

/// `Address.postalCode` under [`Values::Plausible`]: a 5-digit ZIP of a populous ZIP3.
pub const PLAUSIBLE_ZIP: &str = "02139";

/// Every date under [`Values::Plausible`] (not over 89 years back).
pub const PLAUSIBLE_DATE: &str = "2020-03-04";

/// Every date after [`dates_over_89`].
pub const PLAUSIBLE_OVER_89_DATE: &str = "1900-03-04";

/// Moves every date of a [`Values::Plausible`] instance ([`PLAUSIBLE_DATE`]) more than 89 years
/// back ([`PLAUSIBLE_OVER_89_DATE`]), nested resources included: what makes a birth date give way
/// to a 90+ band. Cheaper than generating the instance again: nothing else is a date there.
pub fn dates_over_89(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(rest) = text.strip_prefix(PLAUSIBLE_DATE) {
                *text = format!("{PLAUSIBLE_OVER_89_DATE}{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(dates_over_89),
        Value::Object(map) => map.values_mut().for_each(dates_over_89),
        _ => {}
    }
}

/// An extension url to generate, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedExtension {
    /// The extension url.
    pub url: String,
    /// The resource type it is placed in; `None`: any.
    pub resource_type: Option<String>,
    /// Element names from the resource to the element holding the extension (`[]`: the
    /// resource itself, `["address"]`: `Patient.address`); `None`: every extension array.
    pub at: Option<Vec<String>>,
    /// A `modifierExtension` instead of an `extension`.
    pub modifier: bool,
    /// The value type to generate (`Coding` for `value.ofType(Coding).exists()` in the rule's
    /// condition); `None`: the value types in turn, as for any extension.
    pub value_type: Option<String>,
    /// Only as a sub-extension of the extension with this url (`ombCategory` inside US Core
    /// race); `None`: wherever `at` says.
    pub within: Option<String>,
}

/// One traceable value of a generated instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text that identifies it in any output (the token, the base64 text, the uuid, the
    /// date).
    pub needle: String,
    /// JSON path in the instance, `Patient.name[0].family` (as [`crate::ExplainEntry::path`]).
    pub json_path: String,
    /// FHIR type of the element.
    pub type_code: &'static str,
    /// The type whose element holds the value: a datatype (`Coding`), a backbone element
    /// (`Patient.contact`), a resource type (`Patient`), `Element` for the id of a primitive's
    /// `_x` part.
    pub owner: String,
    /// A contained resource's local id or a `#id` reference to one (kept unchanged by
    /// pseudonymization on purpose).
    pub local: bool,
}

/// A generated instance and its traceable values.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The resource.
    pub resource: Value,
    /// Every token, uuid, oid and full date in it.
    pub tokens: Vec<Token>,
}

/// The string-like primitive types: text a person may have typed or a system may have filled
/// with identifying text. `code` is not one of them: codes come from value sets and are kept on
/// purpose (the views read them); a token generated into a code is expected to survive.
pub const STRING_LIKE_TYPES: [&str; 10] = [
    "string",
    "markdown",
    "uri",
    "url",
    "canonical",
    "uuid",
    "oid",
    "base64Binary",
    "xhtml",
    "id",
];

/// Every needle shape [`generate`] writes but base64: tokens, uuids, oids, full dates.
static NEEDLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"zqx[0-9]+tok|7a9e0000-0000-4000-8000-[0-9]{12}|urn:oid:1\.2\.999\.[0-9]+\.7|[0-9]{4}-[0-9]{2}-[0-9]{2}",
    )
    .expect("a valid pattern")
});

/// The tokens whose needle occurs in `text` (a de-identified instance, serialized). One pass
/// over the text for all tokens but the few base64 ones.
pub fn surviving<'t>(text: &str, tokens: &'t [Token]) -> Vec<&'t Token> {
    let found: HashSet<&str> = NEEDLE.find_iter(text).map(|m| m.as_str()).collect();
    tokens
        .iter()
        .filter(|t| {
            found.contains(t.needle.as_str())
                || (t.type_code == "base64Binary" && text.contains(&t.needle))
        })
        .collect()
}

/// Every concrete resource type, sorted.
pub fn resource_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = fhir_types::all_types()
        .filter(|t| fhir_types::is_resource_type(t))
        .collect();
    types.sort_unstable();
    types
}

/// Generates a resource of `resource_type` (a concrete resource type).
pub fn generate(resource_type: &str, options: &Options, choices: &mut dyn Choices) -> Generated {
    let mut g = Gen {
        options,
        choices,
        resource_types: resource_types(),
        counter: 0,
        dates: 0,
        json_path: vec![resource_type.to_string()],
        elements: Vec::new(),
        tokens: Vec::new(),
        resource_type: resource_type.to_string(),
        owner: resource_type.to_string(),
        extension_value_type: None,
        extension_urls: Vec::new(),
        replaced: HashSet::new(),
    };
    let resource = g.resource(resource_type, 0, false);
    let mut tokens = g.tokens;
    if !g.replaced.is_empty() {
        tokens.retain(|t| !g.replaced.contains(&t.json_path));
    }
    Generated { resource, tokens }
}

struct Gen<'a> {
    options: &'a Options,
    choices: &'a mut dyn Choices,
    resource_types: Vec<&'static str>,
    counter: u32,
    dates: u32,
    /// JSON path segments (`Patient`, `name`, `[0]`, `family`).
    json_path: Vec<String>,
    /// Element names from the current resource (for placing named extensions).
    elements: Vec<String>,
    tokens: Vec<Token>,
    /// Type of the resource being built.
    resource_type: String,
    /// Type of the object being filled (see [`Token::owner`]).
    owner: String,
    /// Urls of the extensions being filled, innermost last (`None`: a generated url).
    extension_urls: Vec<Option<String>>,
    /// JSON paths whose token [`Gen::plausible`] replaced (left out of [`Generated::tokens`]).
    replaced: HashSet<String>,
    /// The value type of the named extension about to be filled (taken by it, so its own
    /// extensions do not see it).
    extension_value_type: Option<String>,
}

impl Gen<'_> {
    fn pick(&mut self, ask: Ask, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        self.choices.pick(ask, n) % n
    }

    fn include(&mut self, depth: usize) -> bool {
        self.pick(Ask::Include { depth }, 2) == 1
    }

    /// `Patient.name[0].family`: segments joined by dots, indices without one.
    fn path(&self) -> String {
        let mut out = String::with_capacity(80);
        for segment in &self.json_path {
            if !out.is_empty() && !segment.starts_with('[') {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    fn token(&mut self) -> String {
        self.counter += 1;
        format!("zqx{:04}tok", self.counter)
    }

    fn record(&mut self, needle: String, type_code: &'static str, local: bool) {
        let json_path = self.path();
        self.tokens.push(Token {
            needle,
            json_path,
            type_code,
            owner: self.owner.clone(),
            local,
        });
    }

    /// A resource of type `rt` at nesting `depth`; `contained`: inside a `contained` array (no
    /// `contained` of its own, a local id).
    fn resource(&mut self, rt: &str, depth: usize, contained: bool) -> Value {
        let outer_type = std::mem::replace(&mut self.resource_type, rt.to_string());
        let outer_elements = std::mem::take(&mut self.elements);
        let mut map = Map::new();
        map.insert("resourceType".into(), Value::String(rt.to_string()));
        self.fill(&mut map, rt, depth, contained);
        self.elements = outer_elements;
        self.resource_type = outer_type;
        Value::Object(map)
    }

    /// The children of an object of type `ty` at `depth`.
    fn fill(&mut self, map: &mut Map<String, Value>, ty: &str, depth: usize, contained: bool) {
        let outer_owner = std::mem::replace(&mut self.owner, ty.to_string());
        self.fill_children(map, ty, depth, contained);
        if self.options.values == Values::Plausible {
            self.plausible(map, ty);
        }
        self.owner = outer_owner;
    }

    /// Under [`Values::Plausible`]: the value-dependent children of an object of type `ty`, as
    /// generated, get values a policy may keep (their tokens are forgotten).
    fn plausible(&mut self, map: &mut Map<String, Value>, ty: &str) {
        let (system, code, display) = PLAUSIBLE_CODING;
        let quantity = matches!(
            ty,
            "Quantity"
                | "Age"
                | "Duration"
                | "Distance"
                | "Count"
                | "SimpleQuantity"
                | "MoneyQuantity"
        );
        let values: &[(&str, &str)] = match ty {
            "Coding" => &[("system", system), ("code", code), ("display", display)],
            "CodeableConcept" => &[("text", display)],
            _ if quantity => &[
                ("unit", PLAUSIBLE_UNIT),
                ("code", PLAUSIBLE_UNIT),
                ("system", UCUM_SYSTEM),
            ],
            "Identifier" => &[("system", PLAUSIBLE_IDENTIFIER_SYSTEM)],
            "Address" => &[("postalCode", PLAUSIBLE_ZIP)],
            "Reference" => &[("type", "Patient")],
            _ => &[],
        };
        for &(key, value) in values {
            if let Some(slot) = map.get_mut(key).filter(|v| v.is_string()) {
                *slot = Value::String(value.to_string());
                let json_path = format!("{}.{key}", self.path());
                self.replaced.insert(json_path);
            }
        }
    }

    fn fill_children(
        &mut self,
        map: &mut Map<String, Value>,
        ty: &str,
        depth: usize,
        contained: bool,
    ) {
        let children: Vec<(&'static str, Child)> = fhir_types::children(ty).collect();
        let is_resource = fhir_types::type_kind(ty) == Some(fhir_types::TypeKind::Resource);
        let value_type = if ty == "Extension" {
            self.extension_value_type.take()
        } else {
            None
        };
        let mut i = 0;
        while i < children.len() {
            let (key, child) = children[i];
            if child.is_choice {
                let end = children[i..]
                    .iter()
                    .position(|(_, c)| !c.is_choice || c.element != child.element)
                    .map_or(children.len(), |n| i + n);
                let group = &children[i..end];
                i = end;
                // A named extension's value of the type its rule asks for.
                if child.element == "value"
                    && let Some(&(key, child)) = value_type
                        .as_deref()
                        .and_then(|t| group.iter().find(|(_, c)| c.type_code == t))
                {
                    self.element(map, key, child, depth, contained);
                    continue;
                }
                if !self.include(depth) {
                    continue;
                }
                if self.choices.every_choice(ty, depth) {
                    for &(key, child) in group {
                        self.element(map, key, child, depth, contained);
                    }
                } else {
                    let at = self.pick(Ask::Choice, group.len());
                    let (key, child) = group[at];
                    self.element(map, key, child, depth, contained);
                }
                continue;
            }
            i += 1;
            if map.contains_key(key) {
                // Set by the caller (a named extension's url).
                continue;
            }
            // A resource always has an id (contained ones need it to be referenced).
            let required = is_resource && key == "id";
            if required || self.include(depth) {
                self.element(map, key, child, depth, contained);
            }
        }
        if ty == "Extension" && !map.contains_key("url") {
            // `url` is required; named extensions set theirs after this.
            let token = self.token();
            self.json_path.push("url".into());
            let url = format!("http://{token}.example/{token}");
            self.record(token, "uri", false);
            self.json_path.pop();
            map.insert("url".into(), Value::String(url));
        }
    }

    /// One element (`key`) of an object at `depth`: its value, and for primitives maybe `_key`.
    fn element(
        &mut self,
        map: &mut Map<String, Value>,
        key: &'static str,
        child: Child,
        depth: usize,
        contained: bool,
    ) {
        let ty = child.type_code;
        let primitive = fhir_types::is_primitive(ty);
        let resource = ty == "Resource";
        if !primitive && depth + 1 > self.options.max_depth {
            return;
        }
        if key == "contained" && contained {
            // Contained resources have no contained resources of their own.
            return;
        }
        self.elements.push(child.element.to_string());
        self.json_path.push(key.to_string());
        if key == "extension" || key == "modifierExtension" {
            let list = self.extensions(key == "modifierExtension", depth + 1);
            if !list.is_empty() {
                map.insert(key.into(), Value::Array(list));
            }
        } else if primitive {
            self.primitive_element(map, key, child, depth);
        } else {
            let count = if child.is_array {
                1 + self.pick(Ask::Repeat, self.options.max_items.max(1))
            } else {
                1
            };
            let mut items = Vec::with_capacity(count);
            for n in 0..count {
                if child.is_array {
                    self.json_path.push(format!("[{n}]"));
                }
                let item = if resource {
                    let at = self.pick(Ask::ResourceType, self.resource_types.len());
                    let rt = self.resource_types[at];
                    self.resource(rt, depth + 1, key == "contained")
                } else {
                    let mut obj = Map::new();
                    self.fill(&mut obj, ty, depth + 1, contained);
                    Value::Object(obj)
                };
                if child.is_array {
                    self.json_path.pop();
                }
                if item.as_object().is_some_and(|o| !o.is_empty()) {
                    items.push(item);
                }
            }
            if child.is_array {
                if !items.is_empty() {
                    map.insert(key.into(), Value::Array(items));
                }
            } else if let Some(item) = items.pop() {
                map.insert(key.into(), item);
            }
        }
        self.json_path.pop();
        self.elements.pop();
    }

    /// A primitive element and maybe its `_key` part, aligned for arrays.
    fn primitive_element(
        &mut self,
        map: &mut Map<String, Value>,
        key: &'static str,
        child: Child,
        depth: usize,
    ) {
        let ty = child.type_code;
        let with_ext =
            depth < self.options.max_depth && self.pick(Ask::PrimitiveExtension { depth }, 2) == 1;
        let ext_key = format!("_{key}");
        if !child.is_array {
            let value = self.primitive(ty, key);
            map.insert(key.into(), value);
            if with_ext {
                self.json_path.pop();
                self.json_path.push(ext_key.clone());
                let part = self.element_part(depth + 1);
                self.json_path.pop();
                self.json_path.push(key.to_string());
                map.insert(ext_key, part);
            }
            return;
        }
        let count = 1 + self.pick(Ask::Repeat, self.options.max_items.max(1));
        let mut values = Vec::with_capacity(count);
        let mut parts = Vec::with_capacity(count);
        for n in 0..count {
            // An item may have only its `_x` part (`null` in the value array).
            let has_value = !with_ext || self.pick(Ask::ItemValue, 2) == 1;
            self.json_path.push(format!("[{n}]"));
            values.push(if has_value {
                self.primitive(ty, key)
            } else {
                Value::Null
            });
            self.json_path.pop();
            if with_ext {
                // Items without a value need the part; others may have none.
                let has_part = !has_value || self.pick(Ask::ItemValue, 2) == 1;
                self.json_path.pop();
                self.json_path.push(ext_key.clone());
                self.json_path.push(format!("[{n}]"));
                parts.push(if has_part {
                    self.element_part(depth + 1)
                } else {
                    Value::Null
                });
                self.json_path.pop();
                self.json_path.pop();
                self.json_path.push(key.to_string());
            }
        }
        map.insert(key.into(), Value::Array(values));
        if with_ext {
            map.insert(ext_key, Value::Array(parts));
        }
    }

    /// The `_x` part of a primitive, an object at `depth`: an id and extensions.
    fn element_part(&mut self, depth: usize) -> Value {
        let mut part = Map::new();
        self.json_path.push("id".into());
        let id = self.token();
        let outer_owner = std::mem::replace(&mut self.owner, "Element".to_string());
        self.record(id.clone(), "string", false);
        self.owner = outer_owner;
        self.json_path.pop();
        part.insert("id".into(), Value::String(id));
        self.json_path.push("extension".into());
        self.elements.push("extension".into());
        let list = self.extensions(false, depth + 1);
        self.elements.pop();
        self.json_path.pop();
        if !list.is_empty() {
            part.insert("extension".into(), Value::Array(list));
        }
        Value::Object(part)
    }

    /// The items of an `extension` / `modifierExtension` array whose extensions are at `depth`:
    /// generated ones and the named ones placed here.
    fn extensions(&mut self, modifier: bool, depth: usize) -> Vec<Value> {
        if depth > self.options.max_depth {
            return Vec::new();
        }
        // The url of the extension this array belongs to, when it is an `Extension.extension`.
        let n = self.elements.len();
        let parent_url = (n >= 2 && self.elements[n - 2..] == ["extension", "extension"])
            .then(|| self.extension_urls.last().cloned().flatten())
            .flatten();
        let named: Vec<(String, Option<String>)> = self
            .options
            .named_extensions
            .iter()
            .filter(|n| n.modifier == modifier)
            .filter(|n| {
                n.resource_type
                    .as_deref()
                    .is_none_or(|t| t == self.resource_type)
            })
            .filter(|n| {
                n.at.as_ref().is_none_or(|at| {
                    // `self.elements` ends with `extension` itself (or, in a `_x` part, is the
                    // primitive's element: never a named place).
                    self.elements.len() == at.len() + 1 && self.elements[..at.len()] == at[..]
                })
            })
            .filter(|n| {
                n.within
                    .as_ref()
                    .is_none_or(|w| parent_url.as_ref() == Some(w))
            })
            .map(|n| (n.url.clone(), n.value_type.clone()))
            .collect();
        let generated = 1 + self.pick(Ask::Repeat, self.options.max_items.max(1));
        let mut list = Vec::new();
        for n in 0..generated + named.len() {
            self.json_path.push(format!("[{n}]"));
            let mut ext = Map::new();
            let mut url_of = None;
            if let Some((url, value_type)) = named.get(n.wrapping_sub(generated)) {
                ext.insert("url".into(), Value::String(url.clone()));
                self.extension_value_type = value_type.clone();
                url_of = Some(url.clone());
            }
            self.extension_urls.push(url_of);
            self.fill(&mut ext, "Extension", depth, false);
            self.extension_urls.pop();
            self.json_path.pop();
            list.push(Value::Object(ext));
        }
        list
    }

    /// A value of primitive type `ty` for element `key`.
    fn primitive(&mut self, ty: &'static str, key: &str) -> Value {
        match ty {
            "boolean" => Value::Bool(self.pick(Ask::Value, 2) == 1),
            "integer" | "unsignedInt" | "positiveInt" => {
                json!(1 + self.pick(Ask::Value, 90))
            }
            "decimal" => json!(1.5 + self.pick(Ask::Value, 90) as f64),
            "date" | "dateTime" | "instant" if self.options.values == Values::Plausible => {
                let date = PLAUSIBLE_DATE;
                Value::String(match ty {
                    "date" => date.to_string(),
                    "dateTime" => format!("{date}T10:20:30+01:00"),
                    _ => format!("{date}T10:20:30.123Z"),
                })
            }
            "date" | "dateTime" | "instant" => {
                // Unique full dates 367 days apart: a date shifted by at most a year never
                // lands on another one: 1901-01-01 + n * 367 days, n below 1850 (year 3760).
                let n = self.dates % 1850;
                self.dates += 1;
                let day = chrono::NaiveDate::from_ymd_opt(1901, 1, 1)
                    .and_then(|d| d.checked_add_days(chrono::Days::new(u64::from(n) * 367)))
                    .unwrap_or_default();
                let date = day.format("%Y-%m-%d").to_string();
                self.record(date.clone(), ty, false);
                Value::String(match ty {
                    "date" => date,
                    "dateTime" => format!("{date}T10:20:30+01:00"),
                    _ => format!("{date}T10:20:30.123Z"),
                })
            }
            "time" => Value::String("10:20:30".into()),
            "uuid" => {
                let uuid = self.uuid();
                Value::String(format!("urn:uuid:{uuid}"))
            }
            "oid" => {
                self.counter += 1;
                let oid = format!("urn:oid:1.2.999.{}.7", self.counter);
                self.record(oid.clone(), ty, false);
                Value::String(oid)
            }
            "base64Binary" => {
                let token = self.token();
                let text = base64::engine::general_purpose::STANDARD.encode(&token);
                self.record(text.clone(), ty, false);
                Value::String(text)
            }
            "xhtml" => {
                let token = self.token();
                self.record(token.clone(), ty, false);
                Value::String(format!(
                    "<div xmlns=\"http://www.w3.org/1999/xhtml\">{token}</div>"
                ))
            }
            "uri" | "url" | "canonical" => {
                let token = self.token();
                self.record(token.clone(), ty, false);
                Value::String(format!("http://{token}.example/{token}"))
            }
            "string" if key == "reference" => self.reference(),
            "id" if key == "id" && self.elements.len() == 1 && self.contained_resource() => {
                let token = self.token();
                self.record(token.clone(), ty, true);
                Value::String(token)
            }
            _ => {
                // string, markdown, code, id
                let token = self.token();
                self.record(token.clone(), ty, false);
                Value::String(token)
            }
        }
    }

    /// True when the resource being built sits in a `contained` array.
    fn contained_resource(&self) -> bool {
        let n = self.json_path.len();
        n >= 4 && self.json_path[n - 3] == "contained"
    }

    fn uuid(&mut self) -> String {
        self.counter += 1;
        let uuid = format!("7a9e0000-0000-4000-8000-{:012}", self.counter);
        self.record(uuid.clone(), "uuid", false);
        uuid
    }

    /// A `Reference.reference` in one of its forms.
    fn reference(&mut self) -> Value {
        let form = self.pick(Ask::ReferenceForm, 5);
        let target = ["Patient", "Practitioner", "Organization", "Encounter"]
            [usize::try_from(self.counter).unwrap_or(0) % 4];
        Value::String(match form {
            1 => {
                let token = self.token();
                self.record(token.clone(), "string", false);
                format!("https://fhir.example/r4/{target}/{token}")
            }
            2 => format!("urn:uuid:{}", self.uuid()),
            3 => {
                let token = self.token();
                self.record(token.clone(), "string", true);
                format!("#{token}")
            }
            4 => {
                let token = self.token();
                self.record(token.clone(), "string", false);
                format!("{target}?identifier=http://ids.example/mrn|{token}")
            }
            _ => {
                let token = self.token();
                self.record(token.clone(), "string", false);
                format!("{target}/{token}")
            }
        })
    }
}
