//! Code point classes for the pre-tokenizers: the Unicode general category (the `\p{L}`, `\p{N}`, ...
//! of the split regexes) plus the White_Space property (`\s`), from a table generated for Unicode 15.1,
//! the version llama.cpp's tables use.

use std::sync::OnceLock;

use super::unicode_table::{CATEGORY_RANGES, WHITE_SPACE};

// category index, as written by scripts/gen_unicode_table.py
#[cfg(test)]
const UNDEFINED: u8 = 0;
const NUMBER: u8 = 1;
const LETTER: u8 = 2;
const MARK: u8 = 4;
const PUNCTUATION: u8 = 5;
const WHITESPACE_BIT: u8 = 0x08;

/// A code point's class: category index in the low 3 bits, White_Space in bit 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharClass(u8);

impl CharClass {
    /// `\p{L}`
    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & 7 == LETTER
    }
    /// `\p{N}`
    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & 7 == NUMBER
    }
    /// `\p{M}`
    #[inline]
    pub fn is_mark(self) -> bool {
        self.0 & 7 == MARK
    }
    /// `\p{P}`
    #[inline]
    pub fn is_punctuation(self) -> bool {
        self.0 & 7 == PUNCTUATION
    }
    /// `\s`
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & WHITESPACE_BIT != 0
    }
    /// Not a letter, number or whitespace: what `[^\s\p{L}\p{N}]` matches.
    #[inline]
    pub fn is_other(self) -> bool {
        !self.is_letter() && !self.is_number() && !self.is_whitespace()
    }
    /// Unassigned code point.
    #[cfg(test)]
    pub fn is_undefined(self) -> bool {
        self.0 & 7 == UNDEFINED
    }
}

/// One class byte per code point, U+0000..=U+10FFFF (1.1 MB, built on first use in about a millisecond).
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u8; 0x110000];
        for (i, &(start, cat)) in CATEGORY_RANGES.iter().enumerate() {
            let end = CATEGORY_RANGES.get(i + 1).map_or(0x110000, |r| r.0);
            t[start as usize..end as usize].fill(cat);
        }
        for &cp in WHITE_SPACE {
            t[cp as usize] |= WHITESPACE_BIT;
        }
        t
    })
}

/// The class of `c`.
#[inline]
pub fn class(c: char) -> CharClass {
    CharClass(table()[c as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert!(class('a').is_letter() && class('Z').is_letter());
        assert!(class('7').is_number() && !class('7').is_letter());
        for c in [' ', '\t', '\n', '\r', '\x0b', '\x0c'] {
            assert!(class(c).is_whitespace(), "{c:?}");
        }
        assert!(class('.').is_punctuation() && class('.').is_other());
        assert!(class('$').is_other() && !class('$').is_punctuation()); // Sc, a symbol
        assert!(class('\x1f').is_other()); // control, not White_Space
    }

    #[test]
    fn non_ascii_classes() {
        assert!(class('é').is_letter() && class('中').is_letter() && class('ß').is_letter());
        assert!(class('²').is_number() && class('Ⅷ').is_number() && class('٣').is_number());
        for c in ['\u{85}', '\u{a0}', '\u{2003}', '\u{3000}', '\u{2028}'] {
            assert!(class(c).is_whitespace(), "{c:?}");
        }
        assert!(!class('\u{200b}').is_whitespace()); // zero-width space is Cf, not White_Space
        assert!(class('\u{301}').is_other()); // combining acute accent: a mark
        assert!(class('😀').is_other());
        assert!(class('\u{2fffd}').is_undefined());
    }
}
