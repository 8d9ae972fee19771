//! A validating JSON scanner that copies nothing: the one-pass plan ([`super::OnePassPlan`])
//! reads the members it wants through it and skips the rest.
//!
//! Written here rather than taken from a library because the libraries either build a tree of
//! every node first (simd-json's tape: about two thirds of the time of the whole observation view
//! on its own, see benchmarks/README.md) or skip without validating (sonic-rs' lazy readers, also
//! measured slower). The scanner checks the whole document against the JSON grammar, so a text it
//! accepts is one the tape parser accepts; whatever it does not handle exactly (a `\u` escape, an
//! exponent, a key or wanted string with escapes, a nesting deeper than [`MAX_DEPTH`]) makes it
//! [`Bail`], and the resource goes through the general path, which decides.

/// The document leaves the one-pass path; the general path (tape + evaluator) takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

/// A scanner result.
pub(crate) type Scan<T> = Result<T, Bail>;

/// Nesting the scanner follows before it bails (the general path has its own limits).
pub(crate) const MAX_DEPTH: u32 = 128;

/// A scalar value's place in the text (byte offsets) and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub kind: ScalarKind,
    pub start: u32,
    pub end: u32,
}

/// What a scalar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    /// A string without escapes; `start..end` is its content, quotes excluded.
    Str,
    /// A string with escapes (its text is not its value).
    EscapedStr,
    /// A number; `int` when it has no fraction.
    Num { int: bool },
    /// `true`
    True,
    /// `false`
    False,
    /// `null`
    Null,
}

/// Bytes that end the plain run of a string: `"`, `\` and the control characters JSON forbids.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The [`STRING_STOP`] bytes among the eight bytes of `word` (little-endian), as the high bit of
/// each such byte (SWAR: zero-byte tests for `"` and `\`, a less-than test for control
/// characters). A borrow can flag a byte above a true stop byte, never one below it, so the lowest
/// flagged byte is exactly the first stop byte.
#[inline]
fn string_stops(word: u64) -> u64 {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// The eight bytes at `at` as a little-endian word, when the text has them.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    <[u8; 8]>::try_from(chunk).ok().map(u64::from_le_bytes)
}

/// The first up-to-eight bytes of a key of `len` bytes starting at `at`, zero-padded: with the
/// length, what a trie node compares keys by before comparing the rest.
#[inline]
pub(crate) fn key_word(bytes: &[u8], at: usize, len: usize) -> u64 {
    let word = match word_at(bytes, at) {
        Some(word) => word,
        None => {
            let mut padded = [0u8; 8];
            let tail = bytes.get(at..).unwrap_or_default();
            let n = tail.len().min(8);
            padded[..n].copy_from_slice(&tail[..n]);
            u64::from_le_bytes(padded)
        }
    };
    if len >= 8 {
        word
    } else {
        word & ((1u64 << (8 * len)) - 1)
    }
}

/// Where an object key is in the text (its content, quotes excluded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub start: usize,
    pub len: usize,
}

/// A member name as a trie node compares keys with it: zero-padded little-endian words of its
/// bytes, compared with words loaded straight from the text (no `memcmp` call per key: keys are
/// short, and the call cost more than the comparison on this project's machines).
#[derive(Debug, Clone)]
pub(crate) struct Name {
    len: usize,
    words: Box<[u64]>,
}

impl Name {
    pub(crate) fn new(name: &str) -> Self {
        let bytes = name.as_bytes();
        let words = (0..bytes.len().div_ceil(8))
            .map(|k| key_word(bytes, 8 * k, bytes.len() - 8 * k))
            .collect();
        Self {
            len: bytes.len(),
            words,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Is the key exactly this name?
    #[inline]
    pub(crate) fn is(&self, text: &[u8], key: Key) -> bool {
        key.len == self.len && self.starts(text, key)
    }

    /// Does the key start with this name?
    #[inline]
    pub(crate) fn starts(&self, text: &[u8], key: Key) -> bool {
        key.len >= self.len
            && self
                .words
                .iter()
                .enumerate()
                .all(|(k, word)| key_word(text, key.start + 8 * k, self.len - 8 * k) == *word)
    }
}

/// A position in one JSON text.
pub(crate) struct Scanner<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
}

impl<'t> Scanner<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    /// The whole text.
    pub(crate) fn text(&self) -> &'t str {
        self.text
    }

    /// Skips JSON whitespace.
    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Scan<u8> {
        self.bytes.get(self.pos).copied().ok_or(Bail)
    }

    /// True at the end of the text.
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Consumes `byte` or bails.
    #[inline]
    pub(crate) fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Consumes `byte` if it is next.
    #[inline]
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&byte);
        self.pos += usize::from(found);
        found
    }

    /// After an object member or array item: `,` (true, more follow) or `close` (false).
    #[inline]
    pub(crate) fn next_or_close(&mut self, close: u8) -> Scan<bool> {
        self.ws();
        match self.bytes.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                self.ws();
                Ok(true)
            }
            Some(&b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// Opens an object or array (`open` next); false when it is empty (and already closed).
    #[inline]
    pub(crate) fn open(&mut self, open: u8, close: u8) -> Scan<bool> {
        self.expect(open)?;
        self.ws();
        Ok(!self.eat(close))
    }

    /// An object key without escapes, then the `:` and whitespace.
    #[inline(always)]
    pub(crate) fn key(&mut self) -> Scan<Key> {
        let (start, end, escaped) = self.string()?;
        if escaped {
            return Err(Bail);
        }
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(Key {
            start,
            len: end - start,
        })
    }

    /// The text's bytes.
    pub(crate) fn bytes(&self) -> &'t [u8] {
        self.bytes
    }

    /// A string (at its opening quote): content offsets and whether it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Scan<(usize, usize, bool)> {
        self.expect(b'"')?;
        let bytes = self.bytes;
        let start = self.pos;
        let mut i = start;
        let mut escaped = false;
        loop {
            // The next stop byte: eight bytes at a time, then byte by byte near the end.
            loop {
                match word_at(bytes, i) {
                    Some(word) => {
                        let stops = string_stops(word);
                        if stops != 0 {
                            i += (stops.trailing_zeros() / 8) as usize;
                            break;
                        }
                        i += 8;
                    }
                    None => {
                        while let Some(&b) = bytes.get(i) {
                            if STRING_STOP[b as usize] {
                                break;
                            }
                            i += 1;
                        }
                        break;
                    }
                }
            }
            match bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok((start, i, escaped));
                }
                Some(b'\\') => match bytes.get(i + 1) {
                    // `\u` escapes (surrogate pairs) are left to the general parser.
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        escaped = true;
                        i += 2;
                    }
                    _ => return Err(Bail),
                },
                _ => return Err(Bail), // a control character, or the text ends
            }
        }
    }

    /// A number (at its first byte): offsets and whether it is an integer. Exponents are left to
    /// the general parser (its range rules for them are its own).
    #[inline]
    fn number(&mut self) -> Scan<(usize, usize, bool)> {
        let start = self.pos;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while let Some(b'0'..=b'9') = self.bytes.get(*i) {
                *i += 1;
            }
            *i - from
        };
        if self.bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match self.bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(Bail),
        }
        let mut int = true;
        if self.bytes.get(i) == Some(&b'.') {
            i += 1;
            int = false;
            if digits(&mut i) == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(i) {
            return Err(Bail);
        }
        self.pos = i;
        Ok((start, i, int))
    }

    /// `word` (`true`, `false`, `null`).
    #[inline]
    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        // Byte by byte: a slice comparison would call `memcmp` for four bytes.
        for (k, b) in word.iter().enumerate() {
            if self.bytes.get(self.pos + k) != Some(b) {
                return Err(Bail);
            }
        }
        self.pos += word.len();
        Ok(())
    }

    /// A scalar value (bails on an object or array).
    #[inline(always)]
    pub(crate) fn scalar(&mut self) -> Scan<Scalar> {
        let (kind, start, end) = match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                let kind = if escaped {
                    ScalarKind::EscapedStr
                } else {
                    ScalarKind::Str
                };
                (kind, start, end)
            }
            b'-' | b'0'..=b'9' => {
                let (start, end, int) = self.number()?;
                (ScalarKind::Num { int }, start, end)
            }
            b't' => {
                self.literal(b"true")?;
                (ScalarKind::True, 0, 0)
            }
            b'f' => {
                self.literal(b"false")?;
                (ScalarKind::False, 0, 0)
            }
            b'n' => {
                self.literal(b"null")?;
                (ScalarKind::Null, 0, 0)
            }
            _ => return Err(Bail),
        };
        let offset = |at: usize| u32::try_from(at).map_err(|_| Bail);
        Ok(Scalar {
            kind,
            start: offset(start)?,
            end: offset(end)?,
        })
    }

    /// Skips one value, validating it.
    pub(crate) fn skip_value(&mut self, depth: u32) -> Scan<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                let depth = depth.checked_sub(1).ok_or(Bail)?;
                if self.open(b'{', b'}')? {
                    loop {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                        self.skip_value(depth)?;
                        if !self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            b'[' => {
                let depth = depth.checked_sub(1).ok_or(Bail)?;
                if self.open(b'[', b']')? {
                    loop {
                        self.skip_value(depth)?;
                        if !self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            _ => self.scalar().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        let mut scanner = Scanner::new(text);
        scanner.ws();
        scanner.skip_value(MAX_DEPTH).is_ok() && {
            scanner.ws();
            scanner.at_end()
        }
    }

    #[test]
    fn accepts_only_valid_json() {
        for valid in [
            r#"{"a":[1,-2.5,0,true,false,null,"x\"\\\/\b\f\n\r\t"],"b":{}}"#,
            " [ ] ",
            r#""long string with no escapes at all, more than eight bytes""#,
            "-0.125",
        ] {
            assert!(accepts(valid), "{valid}");
            assert!(serde_json::from_str::<serde_json::Value>(valid).is_ok());
        }
        for invalid in [
            "{",
            "[1,]",
            "{\"a\":}",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "tru",
            "nul",
            "\"a\tb\"",
            "\"\\x\"",
            "{\"a\":1,}",
            "[1 2]",
            "\"unterminated",
        ] {
            assert!(!accepts(invalid), "{invalid}");
        }
    }

    #[test]
    fn leaves_hard_cases_to_the_general_parser() {
        // Valid JSON the scanner does not handle: it bails, it never accepts wrongly.
        for text in ["\"\\u00e9\"", "1e5", "2E-3"] {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
            assert!(!accepts(text), "{text}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(!accepts(&deep));
    }

    #[test]
    fn swar_finds_the_first_stop_byte() {
        let first =
            |word: [u8; 8]| (string_stops(u64::from_le_bytes(word)).trailing_zeros() / 8) as usize;
        for stop in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = stop;
                assert_eq!(first(word), at, "{stop} at {at}");
                // Stops (or borrow-prone bytes) after it do not move it.
                for later in at + 1..8 {
                    let mut word = word;
                    word[later] = [0u8, 1, b'"', b'\\', 0x1f, 0x20, 0x21][later % 7];
                    assert_eq!(first(word), at, "{stop} at {at}, then {later}");
                }
            }
        }
        for plain in 0x20u8..=0xff {
            if plain != b'"' && plain != b'\\' {
                assert_eq!(string_stops(u64::from_le_bytes([plain; 8])), 0, "{plain}");
            }
        }
    }

    #[test]
    fn names_compare_keys_by_words() {
        let text = br#"{"id":1,"resourceType":"x","valueCodeableConcept":{},"valueQ":2}"#;
        let key = |start, len| Key { start, len };
        let (id, rt, vcc, vq) = (key(2, 2), key(9, 12), key(28, 20), key(54, 6));
        assert!(Name::new("id").is(text, id));
        assert!(!Name::new("i").is(text, id) && Name::new("i").starts(text, id));
        assert!(Name::new("resourceType").is(text, rt));
        assert!(!Name::new("resourceTypf").is(text, rt));
        assert!(Name::new("valueCodeableConcept").is(text, vcc));
        assert!(!Name::new("valueCodeableConcepT").is(text, vcc));
        assert!(Name::new("value").starts(text, vcc) && Name::new("valueQ").is(text, vq));
        assert!(!Name::new("valueQuantity").starts(text, vq));
    }

    #[test]
    fn key_words_pad_short_keys() {
        let text = br#"{"id":1,"resourceType":"x"}"#;
        assert_eq!(key_word(text, 2, 2), u64::from_le_bytes(*b"id\0\0\0\0\0\0"));
        assert_eq!(key_word(text, 9, 12), u64::from_le_bytes(*b"resource"));
        assert_eq!(
            key_word(b"ab", 0, 2),
            u64::from_le_bytes(*b"ab\0\0\0\0\0\0")
        );
    }
}
