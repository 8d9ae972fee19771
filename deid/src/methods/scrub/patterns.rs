//! The scrubber's pattern table: every detector (a regex, the kinds its capture groups are
//! replaced as, the text features it needs, its post-check) in the order the scrubber runs them,
//! and the word lists the patterns and the post-checks are built from (months, states, street
//! suffixes, care-setting words, code-system labels, generic titles). Each pattern's comment says
//! what it finds and which way it leans between a leak and a damaged note.

use regex::Regex;

use super::Kind::*;
use super::feat::*;
use super::{Check, Detector, Kind};

/// The detectors of everything but names, in the order of the scrubber's `RegexSet`, and the
/// detectors of names without a list (which run on their own; see `Scrubber`).
pub(super) fn detectors() -> (Vec<Detector>, Vec<Detector>) {
    let mut t = Table::default();
    network(&mut t);
    ssns_and_phones(&mut t);
    dates(&mut t);
    ages(&mut t);
    places(&mut t);
    identifiers(&mut t);
    (t.0, names())
}

/// Detectors in the order they are added.
#[derive(Default)]
struct Table(Vec<Detector>);

impl Table {
    fn add(&mut self, pattern: &str, groups: &'static [(usize, Kind)], needs: u8, check: Check) {
        self.0.push(Detector {
            re: compile(pattern),
            groups,
            needs,
            check,
            learn: false,
        });
    }

    /// A name detector whose names are also searched for elsewhere in the same text.
    fn learn(&mut self, pattern: &str, groups: &'static [(usize, Kind)], check: Check) {
        self.0.push(Detector {
            re: compile(pattern),
            groups,
            needs: UPPER,
            check,
            learn: true,
        });
    }
}

/// URLs, emails, IP addresses.
fn network(t: &mut Table) {
    // URLs: scheme or `www.` up to white space or a bracket; trailing punctuation trimmed.
    t.add(
        r#"(?i)(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>"'()\[\]{}]+"#,
        &[(0, Url)],
        HINT,
        Check::TrimUrl,
    );
    // Emails (ASCII addresses; internationalised local parts are not recognised).
    t.add(
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        &[(0, Email)],
        AT,
        Check::None,
    );
    // IPv4, each octet 0-255.
    t.add(
        r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
        &[(0, Ip)],
        DIGIT,
        Check::None,
    );
    // IPv6: the full eight groups, or a compressed form with `::` and at least two groups.
    // (Times like `10:30:00` have neither; the bare `::` and `::1` forms are not matched.)
    let h = "[0-9A-Fa-f]{1,4}";
    t.add(
        &format!(
            r"\b(?:(?:{h}:){{7}}{h}\b|(?:{h}:){{1,6}}:(?:{h}:){{0,5}}{h}\b|(?:{h}:){{2,7}}:)(?:%[0-9A-Za-z]+)?"
        ),
        &[(0, Ip)],
        COLON,
        Check::None,
    );
}

/// Social security, phone and fax numbers.
fn ssns_and_phones(t: &mut Table) {
    // SSN: 123-45-6789 anywhere; spaced or run together only after an SSN label.
    t.add(r"\b\d{3}-\d{2}-\d{4}\b", &[(0, Ssn)], DIGIT, Check::None);
    t.add(
        r"(?i)\b(?:ssn|ss#|social[ \t]+security(?:[ \t]+(?:number|no\.?|#))?)[ \t]*[:#]?[ \t]*(\d{3}[ -]?\d{2}[ -]?\d{4})\b",
        &[(1, Ssn)],
        DIGIT,
        Check::None,
    );
    // Phone and fax: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, +1 ...,
    // 1-555-..., with an optional extension. Bare ten-digit runs are left to the ID rule.
    // Seven-digit local numbers (123-4567) only after a phone label: unlabelled they are
    // too often dose ranges (`250-1000 mg`).
    let ext = r"(?:[ \t]*,?[ \t]*(?i:ext\.?|extension|x)[ \t]*\d{1,6}\b)?";
    t.add(
        &format!(
            r"(?:(?:\+|\b)1[ .-]?)?(?:\(\d{{3}}\)[ .-]?|\b\d{{3}}[ .-])\d{{3}}[ .-]\d{{4}}\b{ext}"
        ),
        &[(0, Phone)],
        DIGIT,
        Check::None,
    );
    t.add(
        &format!(r"\+\d{{1,3}}[ .-]?\(?\d{{1,4}}\)?(?:[ .-]?\d){{6,11}}\b{ext}"),
        &[(0, Phone)],
        DIGIT,
        Check::None,
    );
    t.add(
        &format!(
            r"(?i)\b(?:phone|ph|tel|telephone|fax|cell|mobile|pager|beeper|call)\b[ \t]*(?:no\.?|number|#)?[ \t]*[:#]?[ \t]*(\d{{3}}[.-]\d{{4}}\b{ext})"
        ),
        &[(1, Phone)],
        DIGIT,
        Check::None,
    );
}

/// Dates, all elements but a bare year (Safe Harbor keeps years).
fn dates(t: &mut Table) {
    let months = month_alternation(false);
    let full_months = month_alternation(true);
    let day = r"(?:0?[1-9]|[12]\d|3[01])";
    let ordinal = r"(?:st|nd|rd|th)?";
    let year = r"(?:1[89]\d\d|20\d\d)";
    // ISO, with an optional time and zone; also 2020/01/05.
    t.add(
        r"\b(?:1[89]|20)\d\d([-/.])(?:0[1-9]|1[0-2])[-/.](?:0[1-9]|[12]\d|3[01])(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?)?\b",
        &[(0, Date)],
        DIGIT,
        Check::None,
    );
    // ISO year-month (2020-01): the month is a date element.
    t.add(
        r"\b(?:1[89]|20)\d\d-(?:0[1-9]|1[0-2])\b",
        &[(0, Date)],
        DIGIT,
        Check::None,
    );
    // US month/day/year with / or -, two- or four-digit year; day.month.year with a
    // four-digit year. Month/day without a year is not matched (`1/2 tablet`, `3/4`).
    t.add(
        r"\b(?:0?[1-9]|1[0-2])([/-])(?:0?[1-9]|[12]\d|3[01])[/-](?:\d{4}|\d{2})\b|\b(?:0?[1-9]|[12]\d|3[01])\.(?:0?[1-9]|1[0-2])\.(?:1[89]|20)\d\d\b",
        &[(0, Date)],
        DIGIT,
        Check::None,
    );
    // Month/year with a two-digit month (01/2020); `1/2000` stays (a dilution).
    t.add(
        r"\b(?:0[1-9]|1[0-2])/(?:1[89]|20)\d\d\b",
        &[(0, Date)],
        DIGIT,
        Check::None,
    );
    // Written: January 5, 2020 / Jan. 5th 2020 / 5 Jan 2020 / 5th of January, 2020 /
    // 05-JAN-2020 / January 2020 / Jan 5 / 5 January (the last only with a full name).
    t.add(
        &format!(
            r"\b(?:{months}[ \t]+{day}{ordinal},?[ \t]+{year}|{day}{ordinal}[ \t]+(?:of[ \t]+)?{months},?[ \t]+{year}|{day}-{months}-(?:{year}|\d\d)|{months},?[ \t]+{year}|{months}[ \t]+{day}{ordinal}|{day}{ordinal}[ \t]+(?:of[ \t]+)?{full_months})\b"
        ),
        &[(0, Date)],
        DIGIT | UPPER,
        Check::None,
    );
}

/// Ages over 89.
fn ages(t: &mut Table) {
    // Ages over 89: only the number is replaced (`a [AGE]-year-old`, `age [AGE]`).
    t.add(
        r"(?i)\b(9\d|1\d\d)[ \t]*-?[ \t]*(?:(?:years?|yrs?|y/o|yo|year-old|yr-old)\b|y\.o\.)",
        &[(1, Age)],
        DIGIT,
        Check::None,
    );
    t.add(
        r"(?i)\b(?:age[ds]?|aged[ \t]+about)[ \t]*(?:of[ \t]+|:[ \t]*|=[ \t]*|is[ \t]+)?(9\d|1\d\d)\b",
        &[(1, Age)],
        DIGIT,
        Check::None,
    );
    t.add(
        r"(?i)\b(?:in|into)[ \t]+(?:his|her|their|the)[ \t]+(?:(?:early|mid|late)[ \t-]*)?(90s|90's|nineties)\b",
        &[(1, Age)],
        0,
        Check::None,
    );
    t.add(
        r"(?i)\b((?:ninety|(?:one|a)[ \t-]+hundred)(?:[ \t-]+(?:and[ \t-]+)?(?:one|two|three|four|five|six|seven|eight|nine|ten))?)[ \t-]*(?:years?|yrs?)\b|\b((?:super)?centenarian|nonagenarian)s?\b",
        &[(1, Age), (2, Age)],
        HINT,
        Check::None,
    );
}

/// ZIP codes, cities before a state, street addresses, PO boxes.
fn places(t: &mut Table) {
    let states = state_alternation();
    // ZIP codes, conservatively: after a state (code or name), optionally with the city
    // before it (`Boston, MA 02139`: the city, a geographic subdivision, is an [ADDRESS]);
    // after a ZIP label; or ZIP+4. A bare five-digit number (`12345 units`) is left alone.
    t.add(
        &format!(
            r"(?:(\p{{Lu}}[\p{{L}}\p{{M}}.'’-]*(?:[ \t]+\p{{Lu}}[\p{{L}}\p{{M}}.'’-]*){{0,2}}),[ \t]*)?\b{states}\.?,?[ \t]+(\d{{5}}(?:-\d{{4}})?)\b"
        ),
        &[(1, Address), (2, Zip)],
        DIGIT | UPPER,
        Check::None,
    );
    t.add(
        r"(?i)\b(?:zip|zip[ \t]*code|zipcode|postal[ \t]*code|postcode)\b[ \t]*[:#]?[ \t]*(\d{5}(?:-\d{4})?)\b",
        &[(1, Zip)],
        DIGIT,
        Check::None,
    );
    t.add(r"\b\d{5}-\d{4}\b", &[(0, Zip)], DIGIT, Check::None);
    // Street addresses: house number, optional direction, one to four capitalised words,
    // a street suffix, optional direction and unit (`45 Oak Avenue Apt 4`). Words and
    // suffix must be capitalised (or upper case) so that `take 2 tablets` or `walked 2
    // blocks this way` never become an address; `123 main st` in lower case is missed.
    let direction = r"(?:[NSEW]|N[EW]|S[EW]|North|South|East|West|NORTH|SOUTH|EAST|WEST)\.?";
    let street_word = r"(?:\p{Lu}[\p{L}\p{M}'’.-]*|\d{1,3}(?:st|nd|rd|th|ST|ND|RD|TH))";
    let unit = r"(?:,?[ \t]+(?i:apt|apartment|suite|ste|unit|room|rm|floor|fl|bldg|building|#)\.?[ \t]*#?[ \t]*[0-9A-Za-z-]{1,6}\b)?";
    t.add(
        &format!(
            r"\b\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?[ \t]+(?:{direction}[ \t]+)?(?:{street_word}[ \t]+){{1,4}}(?:{STREET_SUFFIXES}|{})\b\.?(?:[ \t]+{direction}\b)?{unit}",
            STREET_SUFFIXES.to_uppercase()
        ),
        &[(0, Address)],
        DIGIT | UPPER,
        Check::None,
    );
    t.add(
        &format!(
            r"\b[1-9]\d{{1,5}}[A-Za-z]?[ \t]+(?:{direction}[ \t]+)?(?:{street_word}[ \t]+){{1,4}}(?:{RISKY_STREET_SUFFIXES}|{})\b\.?(?:[ \t]+{direction}\b)?{unit}",
            RISKY_STREET_SUFFIXES.to_uppercase()
        ),
        &[(0, Address)],
        DIGIT | UPPER,
        Check::None,
    );
    t.add(
        r"(?i)\b(?:p\.?[ \t]?o\.?[ \t]*box|post[ \t]+office[ \t]+box)[ \t]*#?[ \t]*\d+\b",
        &[(0, Address)],
        DIGIT,
        Check::None,
    );
}

/// Identifiers: after a label, long digit runs, letter-digit codes, dashed groups, UUIDs.
fn identifiers(t: &mut Table) {
    // Identifiers after a label: MRN, account, record, chart, member, policy, licence, DEA,
    // NPI, ... The label stays (`MRN: [ID]`); the value must have three digits in a row.
    t.add(
        r"(?i)\b(?:mrn|medical[ \t]+record|acct|account|npi|dea|vin|fin|csn|upin|licen[cs]e|lic|passport|(?:record|chart|member|policy|subscriber|insurance|group|serial|device|patient|pt|case|accession|encounter|visit|claim|certificate|cert|badge|employee|plan|beneficiary)[ \t]*(?:id|identifier|number|num|no\.?|nr|#)|id)\b\.?(?:[ \t]*(?:number|num|no\.?|nr|#))?[ \t]*[:#=]?[ \t]*#?[ \t]*((?:[A-Za-z]{1,4}-?)?\d{3,}(?:[-/]?[0-9A-Za-z]+)*)\b",
        &[(1, Id)],
        DIGIT,
        Check::None,
    );
    // Long digit runs (7+): record numbers, phone numbers without separators, NPIs, seeds.
    // Not the digits of a decimal number.
    t.add(r"\b\d{7,}\b", &[(0, Id)], DIGIT, Check::NotDecimalOrCode);
    // A few capital letters then six or more digits (A1234567), and three or more dashed
    // digit groups with eight or more digits in all (1234-5678-9012); two groups are left
    // alone unlabelled (`250-1000 mg` is a dose range).
    t.add(
        r"\b[A-Z]{1,3}\d{6,}\b",
        &[(0, Id)],
        DIGIT | UPPER,
        Check::NotDrugApplication,
    );
    t.add(
        r"\b\d{2,}(?:-\d{2,}){2,5}\b",
        &[(0, Id)],
        DIGIT,
        Check::MinDigits(8),
    );
    // UUIDs (resource ids carried into text link back to the record).
    t.add(
        r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b",
        &[(0, Id)],
        DIGIT,
        Check::None,
    );
}

/// Names without a list (titles, labels, relations, Synthea-style names), and the city before a
/// full state name, which needs only capitals too. These teach their words to the name matcher.
fn names() -> Vec<Detector> {
    let names = name_words(0);
    let names2 = name_words(1);
    let mut t = Table::default();
    // A city before a full state name (`in Boston, Massachusetts since 2019`): the city is a
    // geographic subdivision smaller than a state; the state itself may stay. Runs with the
    // name detectors, since it needs only capitals.
    t.0.push(Detector {
        re: compile(&format!(
            r"(\p{{Lu}}[\p{{L}}\p{{M}}.'’-]*(?:[ \t]+\p{{Lu}}[\p{{L}}\p{{M}}.'’-]*){{0,2}}),[ \t]*{}\b",
            state_name_alternation()
        )),
        groups: &[(1, Address)],
        needs: UPPER,
        check: Check::None,
        learn: false,
    });
    // Title + name: Dr. Jane Smith, Mr. Smith, Mrs. O'Brien, Mr. Jose871 Harvey63. Titles
    // in Title case only (`MR` is mitral regurgitation, `DR` diabetic retinopathy, `MS`
    // multiple sclerosis); upper-case titles need a period and an upper-case name
    // (`DR. SMITH`, but not `moderate MR. Echo shows`).
    t.learn(
        &format!(
            r"\b(?:Dr|Mrs|Mr|Ms|Mx|Miss|Prof|Rev)\b\.?[ \t]+{names}|\b(?:DR|MRS|MR|MS|PROF)\.[ \t]+\p{{Lu}}[\p{{Lu}}'’-]*\p{{Lu}}\d{{0,4}}(?:[ \t]+\p{{Lu}}[\p{{Lu}}'’-]*\p{{Lu}}\d{{0,4}}){{0,2}}\b"
        ),
        &[(0, Name)],
        Check::Possessive,
    );
    // A name after a label with a colon. Labels that always introduce a name take one word
    // (`Name: Smith`); labels that may introduce something else (`Patient: Stable`,
    // `Provider: Internal Medicine`) need two words, none of them a care-setting word.
    // Family members are not labels here: `Mother: Breast Cancer` is a family history.
    t.learn(
        &format!(
            r"\b(?:(?:Name|NAME|Patient Name|PATIENT NAME|Full Name|Legal Name|Preferred Name|Maiden Name|Emergency Contact|Next of Kin|Signed|Electronically Signed)[ \t]*:|(?i:signed|dictated|transcribed|authored|cosigned)[ \t]+(?i:by)[ \t]*:?)[ \t]*({names})"
        ),
        &[(1, Name)],
        Check::Possessive,
    );
    t.learn(
        &format!(
            r"\b(?:Patient|PATIENT|Pt|PT|Attending|ATTENDING|Physician|Provider|PCP|Surgeon|Author|Guardian|Caregiver|Resident|Nurse|RN|Referring)[ \t]*:[ \t]*({names2})"
        ),
        &[(1, Name)],
        Check::NotCareWords,
    );
    // A name after a relation and a comma or `named` (`her daughter, Lucia Garcia`); a bare
    // relation is not enough (`mother Diabetes` in a family history is not a name). After
    // `seen by` and the like, two words (`seen by Cardiology` stays), not care-setting words
    // (`seen by Physical Therapy` stays).
    t.learn(
        &format!(
            r"\b(?i:daughter|son|wife|husband|spouse|partner|mother|father|sister|brother|niece|nephew|aunt|uncle|cousin|grandson|granddaughter|grandmother|grandfather|friend|neighbor|neighbour|caregiver|guardian)(?:[ \t]*,|[ \t]+(?i:named|called))[ \t]+({names})"
        ),
        &[(1, Name)],
        Check::NotCareWords,
    );
    t.learn(
        &format!(
            r"\b(?i:seen|examined|evaluated|referred|discussed|spoke|accompanied|reviewed)[ \t]+(?i:by|with)[ \t]+({NAME_WORD}[ \t]+(?:{INITIAL}[ \t]+|{PARTICLE}[ \t]+){{0,2}}{NAME_WORD})"
        ),
        &[(1, Name)],
        Check::NotCareWords,
    );
    // Synthea-style names: two or more capitalised words ending in digits (`Sumiko254
    // Larue605`). A single such word alone (`Covid19`) is left alone.
    let synthea_word = r"\p{Lu}[\p{L}\p{M}'’]*\p{Ll}\d{1,4}";
    t.learn(
        &format!(r"\b{synthea_word}(?:[ \t]+{synthea_word})+\b"),
        &[(0, Name)],
        Check::Possessive,
    );
    t.0
}

/// Compiles a constant pattern. `\b` becomes an ASCII word boundary and `\d` an ASCII digit:
/// Unicode boundaries would make the lazy DFA give up on non-ASCII text, and Unicode digits are
/// not what any identifier here is written in. Letters stay Unicode (`\p{Lu}`).
pub(super) fn compile(pattern: &str) -> Regex {
    let pattern = pattern.replace(r"\b", r"(?-u:\b)").replace(r"\d", "[0-9]");
    Regex::new(&pattern).expect("scrub: constant pattern compiles")
}

/// Month names as written in dates: Title case and UPPER case only, because `may` and `march`
/// in lower case are mostly verbs.
fn month_alternation(full_only: bool) -> String {
    const MONTHS: [(&str, &[&str]); 12] = [
        ("January", &["Jan"]),
        ("February", &["Feb"]),
        ("March", &["Mar"]),
        ("April", &["Apr"]),
        ("May", &[]),
        ("June", &["Jun"]),
        ("July", &["Jul"]),
        ("August", &["Aug"]),
        ("September", &["Sept", "Sep"]),
        ("October", &["Oct"]),
        ("November", &["Nov"]),
        ("December", &["Dec"]),
    ];
    let mut alts: Vec<String> = Vec::new();
    for (full, abbrevs) in MONTHS {
        alts.push(full.to_string());
        alts.push(full.to_uppercase());
        for a in abbrevs {
            // An abbreviation may carry a period; a full name never does. Where only full names
            // are wanted (`5 January` without a year), `Sept` still counts: `5 Mar` or `2 Dec`
            // alone are too easily something else.
            if full_only {
                if *a == "Sept" {
                    alts.push(format!(r"{a}\.?"));
                }
                continue;
            }
            alts.push(format!(r"{a}\.?"));
            alts.push(format!(r"{}\.?", a.to_uppercase()));
        }
    }
    format!("(?:{})", alts.join("|"))
}

/// US states, DC and territories: two-letter codes (upper case only) and full names.
fn state_alternation() -> String {
    const CODES: &str = "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|\
        MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|VI|GU|AS|MP";
    const NAMES: &str = "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|\
        District of Columbia|Florida|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|\
        Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|\
        Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|\
        Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|\
        Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming|Puerto Rico";
    format!("(?:{CODES}|{NAMES})")
}

/// Full US state names only (a city before them is a city; two-letter codes alone are too
/// ambiguous in clinical text: `IN`, `OR`, `ME`, `OK`).
fn state_name_alternation() -> String {
    let all = state_alternation();
    let names = all
        .trim_start_matches("(?:")
        .trim_end_matches(')')
        .split('|')
        .filter(|s| s.len() > 2)
        .collect::<Vec<_>>()
        .join("|");
    format!("(?:{names})")
}

/// A capitalised name word, Unicode aware, with an inner apostrophe (`O'Brien`, `D'Amore`), one
/// hyphenated part (`Smith-Jones`) and Synthea's trailing digits (`Harvey63`).
const NAME_WORD: &str =
    r"\p{Lu}[\p{L}\p{M}]*(?:['’][\p{L}\p{M}]+)?(?:-\p{Lu}[\p{L}\p{M}]*)?\d{0,4}";
/// An initial: `J.`
const INITIAL: &str = r"\p{Lu}\.";
/// Lower-case particles inside a name (`Alfredo de Anda`, `Ludwig van Beethoven`).
const PARTICLE: &str =
    r"(?:de|del|della|der|den|di|da|do|dos|das|du|la|le|van|von|ten|ter|bin|ibn|al|el|y)";

/// One to three name words (two to three with `min_more` 1), with initials, particles and an
/// optional `, First` after `Last` (which also counts as a second word).
fn name_words(min_more: usize) -> String {
    let first = format!(r"(?:{INITIAL}[ \t]*){{0,3}}{NAME_WORD}");
    let more = format!(r"[ \t]+(?:{INITIAL}[ \t]+|{PARTICLE}[ \t]+){{0,2}}{NAME_WORD}");
    let comma = format!(r",[ \t]*{NAME_WORD}");
    if min_more == 0 {
        format!(r"{first}(?:{more}){{0,2}}(?:{comma})?")
    } else {
        format!(r"{first}(?:(?:{more}){{1,2}}(?:{comma})?|{comma})")
    }
}

/// Street suffixes that are not also clinical words: any house number may precede them.
const STREET_SUFFIXES: &str = "Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|\
    Court|Ct|Place|Pl|Terrace|Ter|Terr|Parkway|Pkwy|Highway|Hwy|Freeway|Fwy|Expressway|Expy|\
    Turnpike|Tpke|Pike|Circle|Cir|Plaza|Plz|Trail|Trl|Way|Alley|Aly|Annex|Bay|Brook|\
    Burg|Byway|Cove|Crescent|Crossing|Xing|Crossroad|Dale|Esplanade|Estate|Estates|Ferry|\
    Gardens|Gateway|Glen|Grove|Harbor|Heights|Hts|Highlands|Hill|Hills|Hollow|Island|Isle|Knoll|\
    Lake|Landing|Lodge|Manor|Meadow|Meadows|Mews|Mill|Mills|Orchard|Overpass|Parade|Park|\
    Promenade|Quay|Ramp|Ranch|Row|Rue|Shore|Shores|Skyway|Springs|Stravenue|Summit|\
    Throughway|Trafficway|Trailer|Underpass|Valley|Viaduct|Village|Ville|Vista|Wynd|Broadway";
/// Street suffixes that are also clinical words (`Level 1 Trauma Center`, `2 Heel Spur`,
/// `6 Minute Walk`, `Chest Wall`): only after a house number of two or more digits.
const RISKY_STREET_SUFFIXES: &str = "Center|Centre|Spur|Neck|Lock|Bridge|Wall|Junction|Port|\
    Tunnel|Bypass|Branch|Route|Loop|Point|Crest|Pass|Passage|Path|Pathway|Approach|Extension|\
    Station|Union|Club|Key|Run|Rest|Light|Well|Green|Trace|Track|Course|Common|Divide|Flat|\
    Flats|Fork|Forge|Dam|Mall|Gate|View|Rapid|Rapids|Canyon|Creek|Field|Fields|Forest|Fort|\
    Garden|Harbour|Haven|Mount|Mountain|Oval|Pine|Pines|Plain|Plains|Prairie|River|Square|\
    Sq|Walk|Ridge";

/// Words that, in a span found by a label or `seen by`, say it is a care setting or a clinical
/// finding rather than a person (`Seen by Physical Therapy`, `Provider: Internal Medicine`).
#[rustfmt::skip]
pub(super) const CARE_WORDS: &[&str] = &[
    "therapy", "medicine", "surgery", "service", "services", "team", "clinic", "department", "dept",
    "unit", "nursing", "pharmacy", "work", "care", "health", "hospital", "center", "centre",
    "physical", "occupational", "speech", "social", "internal", "family", "emergency", "infectious",
    "disease", "diseases", "cardiology", "oncology", "neurology", "radiology", "psychiatry",
    "psychology", "pediatrics", "urology", "nephrology", "gastroenterology", "gi", "pulmonology",
    "pulmonary", "dermatology", "orthopedics", "endocrinology", "hematology", "rheumatology",
    "anesthesia", "icu", "ed", "er", "staff", "resident", "attending", "nurse", "provider",
    "doctor", "physician", "cancer", "diabetes", "type", "stable", "alert", "oriented", "male",
    "female", "unknown", "none", "not", "no", "yes", "other", "general", "primary", "urgent",
    "critical", "intensive", "palliative", "hospice", "home", "rehab", "rehabilitation", "dietary",
    "nutrition", "wound", "respiratory", "case", "management", "medical", "surgical", "obstetrics",
    "gynecology", "ob", "gyn",
];

/// Code-system labels after which a long number is a code, not an identifier.
#[rustfmt::skip]
pub(super) const CODE_LABELS: &[&str] = &[
    "snomed", "snomed ct", "snomed-ct", "sct", "sctid", "rxnorm", "rxcui", "loinc", "icd", "icd-9",
    "icd-10", "icd-10-cm", "icd-10-pcs", "cpt", "hcpcs", "ndc", "cvx", "code", "codes",
];

/// Generic titles and credentials: not identifying, and replacing every `MD` or `Mr` in a note
/// with `[NAME]` would only damage it. Skipped in the name list ([`Scrubber::scrub`]); the
/// title detector handles `Dr. Smith` as a whole.
const GENERIC_NAME_WORDS: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "rev", "sir", "dame", "jr", "sr", "ii", "iii",
    "iv", "md", "do", "phd", "rn", "np", "pa", "dds", "dmd", "esq", "mba", "msn", "bsn", "lpn",
    "dnp", "pharmd", "facp", "frcp",
];

pub(super) fn is_generic_name_word(word: &str) -> bool {
    let word = word.trim_end_matches('.');
    GENERIC_NAME_WORDS
        .iter()
        .any(|g| g.eq_ignore_ascii_case(word))
}
