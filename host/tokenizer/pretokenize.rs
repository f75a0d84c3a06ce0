//! Pre-tokenizers for byte-level BPE: split text into words the way llama.cpp does for each
//! `tokenizer.ggml.pre` value, before any merge runs.
//!
//! llama.cpp keeps a list of regexes per pre-tokenizer and applies them in order, each one splitting every
//! piece the previous one left; text between two matches is a piece of its own. The GPT-2 and Llama-3
//! regexes run through hand-written splitters there, the others through `std::regex` on a "collapsed"
//! text in which every non-ASCII code point stands for its category (so `\p{L}` means "a letter" in the
//! Unicode sense, `[a-z]` only ASCII). Each `Pass` below is one of those regexes, written by hand with
//! the same leftmost-first, backtracking semantics.

use super::unicode::{class, CharClass};

// ----------------------------------------------------------------------------
// Names: what each `tokenizer.ggml.pre` value selects
// ----------------------------------------------------------------------------

/// The split recipe of a pre-tokenizer family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreKind {
    /// `[\p{P}\$\+<=>\^~\|]+`, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]` (also used when `pre` is missing)
    Default,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// as Llama3 with single digits: `\p{N}` for `\p{N}{1,3}`
    Qwen2,
    /// as Qwen2 with combining marks in words: `[\p{L}\p{M}]+` for `\p{L}+`, `[^\s\p{L}\p{M}\p{N}]` for
    /// `[^\s\p{L}\p{N}]`
    Qwen35,
    /// `\p{N}`, then GPT-2 (starcoder, smollm, refact, command-r, ...)
    StarCoder,
    /// `[\r\n]`, `\s?[Latin/Greek/Cyrillic/... letters]+`, `\s?[ASCII and full-width punctuation]+`, `\s+$`,
    /// `[一-龥ࠀ-一가-퟿]+`, `\p{N}+`
    DeepseekLlm,
    /// `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, `[一-龥ࠀ-一가-퟿]+`, `\p{N}`
    DeepseekCoder,
    /// `[\p{P}\$\+<=>\^~\|`]+`, GPT-2, `[0-9][0-9][0-9]`
    Falcon,
    /// upper/lower-case aware words with contractions, `\p{N}{1,3}`, punctuation runs with `[\r\n/]*`
    Gpt4o,
    /// as Gpt4o without contractions and with single digits
    Tekken,
    /// ` ?[^(\s|.,!?…。，、।۔،)]+`
    Bloom,
    /// Bloom, then `\p{N}`
    Viking,
    /// `[^\n]+|[\n]+`: lines and runs of line feeds (Gemma-4; the merges run on whole lines)
    Lines,
}

/// What a `tokenizer.ggml.pre` value sets in llama.cpp besides the splitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreConfig {
    pub kind: PreKind,
    /// a word that is itself a token is emitted whole, merges or not (llama3, tekken)
    pub ignore_merges: bool,
    /// detokenize removes the spaces before `?!.,` and some contractions (clean_up_tokenization_spaces)
    pub clean_spaces: bool,
    /// default of `add_bos_token` when the file does not say (llama3, tekken: true)
    pub add_bos: bool,
    /// the model has no BOS token whatever the metadata says (chatglm)
    pub no_bos: bool,
    /// BOS is added even when `add_bos_token` is false (llama.cpp's Gemma-4 workaround)
    pub force_bos: bool,
    /// tokens are plain UTF-8 with `▁` for a space (not GPT-2's byte alphabet): spaces are escaped before
    /// the split, and left-over symbols fall back to `<0xHH>` tokens (gemma4, sarvam-moe)
    pub escaped: bool,
    /// a word of line feeds only that is itself a token is emitted whole (llama.cpp's Gemma-4 fix)
    pub newline_words: bool,
}

/// Every `tokenizer.ggml.pre` value `lookup` accepts, for error messages.
#[rustfmt::skip]
pub const KNOWN_PRE: &[&str] = &[
    "default", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
    "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "trillion", "granite-docling", "llama3",
    "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", "dbrx",
    "smaug-bpe", "glm4", "chatglm-bpe", "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2",
    "megrez", "hunyuan", "solar-open", "grok-2", "starcoder", "smollm", "refact", "command-r", "codeshell",
    "exaone", "minerva-7b", "mellum2", "deepseek-llm", "deepseek-coder", "falcon", "gpt-4o", "llama4",
    "kanana2", "talkie", "minimax-m2", "tekken", "bloom", "gpt3-finnish", "poro-chat", "viking", "glm5",
    "qwen35", "gemma4", "granite-embed-multi-311m", "sarvam-moe",
];

/// The configuration llama.cpp uses for `tokenizer.ggml.pre = name`, or None if we do not know it.
pub fn lookup(name: &str) -> Option<PreConfig> {
    use PreKind::*;
    let cfg = |kind, clean_spaces| PreConfig {
        kind,
        ignore_merges: false,
        clean_spaces,
        add_bos: false,
        no_bos: false,
        force_bos: false,
        escaped: false,
        newline_words: false,
    };
    Some(match name {
        "default" => cfg(Default, true),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum"
        | "modern-bert" | "mpt" | "olmo" | "jais" | "exaone4" => cfg(Gpt2, true),
        "trillion" | "granite-docling" => cfg(Gpt2, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" => PreConfig { ignore_merges: true, add_bos: true, ..cfg(Llama3, true) },
        "dbrx" | "smaug-bpe" => cfg(Llama3, true),
        "chatglm-bpe" => PreConfig { no_bos: true, ..cfg(Llama3, true) },
        "glm4" | "glm5" => PreConfig { no_bos: true, ignore_merges: true, ..cfg(Llama3, true) },
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" | "grok-2" => cfg(Qwen2, false),
        "stablelm2" | "megrez" => cfg(Qwen2, true),
        "qwen35" => cfg(Qwen35, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => cfg(StarCoder, true),
        "smollm" | "command-r" => cfg(StarCoder, false),
        "deepseek-llm" => cfg(DeepseekLlm, false),
        "deepseek-coder" => cfg(DeepseekCoder, false),
        "falcon" => cfg(Falcon, true),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => cfg(Gpt4o, false),
        "tekken" => PreConfig { ignore_merges: true, add_bos: true, ..cfg(Tekken, false) },
        "bloom" | "gpt3-finnish" => cfg(Bloom, true),
        "poro-chat" => cfg(Bloom, false),
        "viking" => cfg(Viking, false),
        "gemma4" | "granite-embed-multi-311m" => {
            PreConfig { force_bos: true, escaped: true, newline_words: true, ..cfg(Lines, true) }
        }
        "sarvam-moe" => PreConfig { escaped: true, ..cfg(Lines, false) },
        _ => return None,
    })
}

// ----------------------------------------------------------------------------
// Passes: one regex of llama.cpp's list each
// ----------------------------------------------------------------------------

/// A set of code points used by the simple passes.
#[derive(Clone, Copy, Debug)]
enum Set {
    /// `\p{N}`
    Number,
    /// `[\r\n]`
    NewLine,
    /// `\n`
    LineFeed,
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punct,
    /// `[\p{P}\$\+<=>\^~\|]`
    DefaultPunct,
    /// `[\p{P}\$\+<=>\^~\|`]`
    FalconPunct,
    /// deepseek-llm's explicit letter ranges
    DeepseekLetter,
    /// `[!-/:-~！-／：-～‘-‟　-。]`
    DeepseekPunct,
    /// `[一-龥ࠀ-一가-퟿]`
    Cjk,
    /// `[^(\s|.,!?…。，、।۔،)]`
    BloomWord,
}

/// deepseek-llm's letter class, as (first, last) code points.
#[rustfmt::skip]
const DEEPSEEK_LETTERS: &[(u32, u32)] = &[
    (0x0041, 0x005A), (0x0061, 0x007A), (0x00B5, 0x00B5), (0x00C0, 0x00D6), (0x00D8, 0x00F6), (0x00F8, 0x01BA),
    (0x01BC, 0x01BF), (0x01C4, 0x0293), (0x0295, 0x02AF), (0x0370, 0x0373), (0x0376, 0x0377), (0x037B, 0x037D),
    (0x037F, 0x037F), (0x0386, 0x0386), (0x0388, 0x038A), (0x038C, 0x038C), (0x038E, 0x03A1), (0x03A3, 0x03F5),
    (0x03F7, 0x0481), (0x048A, 0x052F), (0x0531, 0x0556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15),
    (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC),
    (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124),
    (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F),
    (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E),
    (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F),
    (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
];

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let c = c as u32;
    ranges.iter().any(|&(a, b)| a <= c && c <= b)
}

impl Set {
    fn contains(self, c: char, k: CharClass) -> bool {
        match self {
            Set::Number => k.is_number(),
            Set::NewLine => c == '\r' || c == '\n',
            Set::LineFeed => c == '\n',
            Set::Letter => k.is_letter(),
            Set::Punct => k.is_punctuation(),
            // llama.cpp's collapsed `\p{P}` is Unicode's for ASCII, plus the ASCII symbols named in the class
            Set::DefaultPunct => k.is_punctuation() || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|'),
            Set::FalconPunct => k.is_punctuation() || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|' | '`'),
            Set::DeepseekLetter => (c as u32) < 0x80 && c.is_ascii_alphabetic() || in_ranges(c, DEEPSEEK_LETTERS),
            // these classes are matched on text whose non-ASCII whitespace (U+3000 included) became '\v'
            Set::DeepseekPunct => {
                !k.is_whitespace()
                    && in_ranges(
                        c,
                        &[
                            (0x21, 0x2F),
                            (0x3A, 0x7E),
                            (0xFF01, 0xFF0F),
                            (0xFF1A, 0xFF5E),
                            (0x2018, 0x201F),
                            (0x3000, 0x3002),
                        ],
                    )
            }
            Set::Cjk => !k.is_whitespace() && in_ranges(c, &[(0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF)]),
            Set::BloomWord => {
                !(k.is_whitespace()
                    || matches!(
                        c,
                        '(' | '|' | '.' | ',' | '!' | '?' | '…' | '。' | '，' | '、' | '।' | '۔' | '،' | ')'
                    ))
            }
        }
    }
}

/// One regex of a pre-tokenizer's list.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// GPT-2's regex (llama.cpp's hand-written splitter)
    Gpt2,
    /// Llama-3's regex with `\p{N}{1,max_digits}` (llama.cpp's hand-written splitter); `marks`: Qwen3.5's
    /// variant, in which `\p{M}` joins the letters
    Llama3 { max_digits: usize, marks: bool },
    /// GPT-4o's regex as llama.cpp runs it (cased letter runs; `contractions` adds the `'s|'t|...` suffix)
    Gpt4o { max_digits: usize, contractions: bool },
    /// every code point of the set on its own
    Each(Set),
    /// maximal runs of the set
    Run(Set),
    /// `\s?X+`
    SpaceRun(Set),
    /// ` ?X+` (a literal space)
    LiteralSpaceRun(Set),
    /// `[0-9][0-9][0-9]`
    DigitTriples,
    /// `\s+$`
    TrailingSpace,
}

impl PreKind {
    fn passes(self) -> &'static [Pass] {
        use Pass::*;
        match self {
            PreKind::Default => &[Run(Set::DefaultPunct), Gpt2, Run(Set::Number), DigitTriples],
            PreKind::Gpt2 => &[Gpt2],
            PreKind::Llama3 => &[Llama3 { max_digits: 3, marks: false }],
            PreKind::Qwen2 => &[Llama3 { max_digits: 1, marks: false }],
            PreKind::Qwen35 => &[Llama3 { max_digits: 1, marks: true }],
            PreKind::StarCoder => &[Each(Set::Number), Gpt2],
            PreKind::DeepseekLlm => &[
                Each(Set::NewLine),
                SpaceRun(Set::DeepseekLetter),
                SpaceRun(Set::DeepseekPunct),
                TrailingSpace,
                Run(Set::Cjk),
                Run(Set::Number),
            ],
            PreKind::DeepseekCoder => {
                &[Each(Set::NewLine), SpaceRun(Set::Letter), SpaceRun(Set::Punct), Run(Set::Cjk), Each(Set::Number)]
            }
            PreKind::Falcon => &[Run(Set::FalconPunct), Gpt2, DigitTriples],
            PreKind::Gpt4o => &[Gpt4o { max_digits: 3, contractions: true }],
            PreKind::Tekken => &[Gpt4o { max_digits: 1, contractions: false }],
            PreKind::Bloom => &[LiteralSpaceRun(Set::BloomWord)],
            PreKind::Viking => &[LiteralSpaceRun(Set::BloomWord), Each(Set::Number)],
            PreKind::Lines => &[Run(Set::LineFeed)],
        }
    }
}

// ----------------------------------------------------------------------------
// The splitter
// ----------------------------------------------------------------------------

/// The code points of one piece: char, class, byte offset (`off` has one extra entry, the piece's length).
#[derive(Default)]
struct Cps {
    c: Vec<char>,
    k: Vec<CharClass>,
    off: Vec<usize>,
}

impl Cps {
    fn fill(&mut self, s: &str) {
        self.c.clear();
        self.k.clear();
        self.off.clear();
        for (i, c) in s.char_indices() {
            self.c.push(c);
            self.k.push(class(c));
            self.off.push(i);
        }
        self.off.push(s.len());
    }
    fn len(&self) -> usize {
        self.c.len()
    }
    /// char at `i`, '\0'-free sentinel None past the end
    #[inline]
    fn ch(&self, i: usize) -> Option<char> {
        self.c.get(i).copied()
    }
    #[inline]
    fn is(&self, i: usize, f: impl Fn(CharClass) -> bool) -> bool {
        self.k.get(i).is_some_and(|&k| f(k))
    }
    #[inline]
    fn letter(&self, i: usize) -> bool {
        self.is(i, CharClass::is_letter)
    }
    #[inline]
    fn number(&self, i: usize) -> bool {
        self.is(i, CharClass::is_number)
    }
    #[inline]
    fn other(&self, i: usize) -> bool {
        self.is(i, CharClass::is_other)
    }
    #[inline]
    fn space(&self, i: usize) -> bool {
        self.is(i, CharClass::is_whitespace)
    }
    #[inline]
    fn newline(&self, i: usize) -> bool {
        matches!(self.ch(i), Some('\r' | '\n'))
    }
    #[inline]
    fn in_set(&self, i: usize, set: Set) -> bool {
        i < self.len() && set.contains(self.c[i], self.k[i])
    }

    /// End of a `'s|'t|'re|'ve|'m|'ll|'d` contraction at `i`, ASCII case-insensitive if `icase`.
    fn contraction(&self, i: usize, icase: bool) -> Option<usize> {
        if self.ch(i) != Some('\'') {
            return None;
        }
        let low = |j: usize| self.ch(j).map(|c| if icase { c.to_ascii_lowercase() } else { c });
        match (low(i + 1), low(i + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => Some(i + 2),
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => Some(i + 3),
            _ => None,
        }
    }

    /// `\s*[\r\n]+|\s+(?!\S)|\s+` at `i`: the end of the match, or None if `i` is not whitespace.
    fn whitespace(&self, i: usize, newline_rule: bool) -> Option<usize> {
        let mut end = i;
        let mut last_newline = None;
        while self.space(end) {
            if self.newline(end) {
                last_newline = Some(end + 1);
            }
            end += 1;
        }
        if end == i {
            return None;
        }
        if newline_rule {
            if let Some(e) = last_newline {
                return Some(e); // \s*[\r\n]+
            }
        }
        if end - i > 1 && end < self.len() {
            return Some(end - 1); // \s+(?!\S): leave the last space to the next word
        }
        Some(end) // \s+
    }
}

/// One match of `pass` at code point `pos`: its end, or None (then `pos` belongs to the text between matches).
fn match_at(pass: Pass, s: &Cps, pos: usize, trailing_ws: usize) -> Option<usize> {
    let n = s.len();
    match pass {
        Pass::Gpt2 => {
            if let Some(e) = s.contraction(pos, false) {
                return Some(e);
            }
            let lead = usize::from(s.c[pos] == ' ');
            let first = pos + lead;
            // <space>?\p{L}+ | <space>?\p{N}+ | <space>?[^\s\p{L}\p{N}]+
            for f in [Cps::letter as fn(&Cps, usize) -> bool, Cps::number, Cps::other] {
                if f(s, first) {
                    let mut e = first + 1;
                    while f(s, e) {
                        e += 1;
                    }
                    return Some(e);
                }
            }
            Some(s.whitespace(pos, false).unwrap_or(pos + 1))
        }
        Pass::Llama3 { max_digits, marks } => {
            if let Some(e) = s.contraction(pos, true) {
                return Some(e);
            }
            let (c, k) = (s.c[pos], s.k[pos]);
            // [^\r\n\p{L}\p{N}]?\p{L}+ (qwen35: [\p{L}\p{M}]+)
            let word = |i: usize| s.letter(i) || (marks && s.is(i, CharClass::is_mark));
            if !(c == '\r' || c == '\n' || k.is_number()) && (word(pos) || word(pos + 1)) {
                let mut e = pos + 1;
                while word(e) {
                    e += 1;
                }
                return Some(e);
            }
            // \p{N}{1,max_digits}
            if k.is_number() {
                let mut e = pos + 1;
                while e - pos < max_digits && s.number(e) {
                    e += 1;
                }
                return Some(e);
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (qwen35: `[^\s\p{L}\p{M}\p{N}]`)
            let other = |i: usize| s.other(i) && !(marks && s.is(i, CharClass::is_mark));
            let first = pos + usize::from(c == ' ');
            if other(first) {
                let mut e = first + 1;
                while other(e) {
                    e += 1;
                }
                while s.newline(e) {
                    e += 1;
                }
                return Some(e);
            }
            Some(s.whitespace(pos, true).unwrap_or(pos + 1))
        }
        Pass::Gpt4o { max_digits, contractions } => {
            let (c, k) = (s.c[pos], s.k[pos]);
            // [^\r\n\p{L}\p{N}]? then U*W+ or U+W*, where (collapsed, as llama.cpp runs it)
            // U = a letter that is not a-z, W = a letter that is not A-Z: non-ASCII letters are both
            let start = if !(c == '\r' || c == '\n' || k.is_letter() || k.is_number()) { pos + 1 } else { pos };
            if s.letter(start) {
                let upper = |i: usize| s.letter(i) && !s.c[i].is_ascii_lowercase();
                let lower = |i: usize| s.letter(i) && !s.c[i].is_ascii_uppercase();
                let mut u_end = start;
                while upper(u_end) {
                    u_end += 1;
                }
                // U* backtracks until W+ can start; failing that, U+ with an empty W*
                let mut end = u_end;
                if let Some(w) = (start..=u_end).rev().find(|&i| lower(i)) {
                    end = w + 1;
                    while lower(end) {
                        end += 1;
                    }
                }
                if contractions {
                    if let Some(e) = s.contraction(end, true) {
                        end = e;
                    }
                }
                return Some(end);
            }
            if k.is_number() {
                let mut e = pos + 1;
                while e - pos < max_digits && s.number(e) {
                    e += 1;
                }
                return Some(e);
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
            let first = pos + usize::from(c == ' ');
            if s.other(first) {
                let mut e = first + 1;
                while s.other(e) {
                    e += 1;
                }
                while matches!(s.ch(e), Some('\r' | '\n' | '/')) {
                    e += 1;
                }
                return Some(e);
            }
            Some(s.whitespace(pos, true).unwrap_or(pos + 1))
        }
        Pass::Each(set) => s.in_set(pos, set).then_some(pos + 1),
        Pass::Run(set) => {
            if !s.in_set(pos, set) {
                return None;
            }
            let mut e = pos + 1;
            while s.in_set(e, set) {
                e += 1;
            }
            Some(e)
        }
        Pass::SpaceRun(set) | Pass::LiteralSpaceRun(set) => {
            let lead = match pass {
                Pass::SpaceRun(_) => s.space(pos),
                _ => s.c[pos] == ' ',
            };
            let first = if lead && s.in_set(pos + 1, set) { pos + 1 } else { pos };
            if !s.in_set(first, set) {
                return None;
            }
            let mut e = first + 1;
            while s.in_set(e, set) {
                e += 1;
            }
            Some(e)
        }
        Pass::DigitTriples => (pos + 3 <= n && s.c[pos..pos + 3].iter().all(|c| c.is_ascii_digit())).then_some(pos + 3),
        Pass::TrailingSpace => (pos == trailing_ws && pos < n).then_some(n),
    }
}

/// Splits text into pre-tokenizer words. Holds scratch buffers, so one splitter serves many calls.
#[derive(Default)]
pub struct Splitter {
    cps: Cps,
    a: Vec<(usize, usize)>,
    b: Vec<(usize, usize)>,
}

impl Splitter {
    /// The words of `text` as byte ranges, in order, covering all of it.
    pub fn split(&mut self, kind: PreKind, text: &str) -> &[(usize, usize)] {
        self.a.clear();
        if !text.is_empty() {
            self.a.push((0, text.len()));
        }
        for &pass in kind.passes() {
            self.b.clear();
            for &(start, end) in &self.a {
                let piece = &text[start..end];
                self.cps.fill(piece);
                let s = &self.cps;
                let n = s.len();
                let trailing_ws = match pass {
                    Pass::TrailingSpace => (0..n).rev().take_while(|&i| s.k[i].is_whitespace()).last().unwrap_or(n),
                    _ => n,
                };
                let mut prev = 0; // end of the last piece pushed, in code points
                let mut push = |out: &mut Vec<(usize, usize)>, to: usize| {
                    if to > prev {
                        out.push((start + s.off[prev], start + s.off[to]));
                        prev = to;
                    }
                };
                let mut pos = 0;
                while pos < n {
                    match match_at(pass, s, pos, trailing_ws) {
                        Some(e) => {
                            push(&mut self.b, pos); // text between matches
                            push(&mut self.b, e);
                            pos = e;
                        }
                        None => pos += 1,
                    }
                }
                push(&mut self.b, n);
            }
            std::mem::swap(&mut self.a, &mut self.b);
        }
        &self.a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<String> {
        let mut sp = Splitter::default();
        sp.split(kind, text).iter().map(|&(a, b)| text[a..b].to_string()).collect()
    }

    #[test]
    fn gpt2_words() {
        // expected splits worked out from the regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
        assert_eq!(words(PreKind::Gpt2, "Hello world"), ["Hello", " world"]);
        assert_eq!(words(PreKind::Gpt2, "I'm  here 123!!"), ["I", "'m", " ", " here", " 123", "!!"]);
        assert_eq!(words(PreKind::Gpt2, "a\t\tb  "), ["a", "\t", "\t", "b", "  "]);
        assert_eq!(words(PreKind::Gpt2, "DON'T"), ["DON", "'", "T"]); // case-sensitive contractions
        assert_eq!(words(PreKind::Gpt2, ""), Vec::<String>::new());
    }

    #[test]
    fn starcoder_splits_every_digit() {
        assert_eq!(
            words(PreKind::StarCoder, "3.14 and 2,718"),
            ["3", ".", "1", "4", " and", " ", "2", ",", "7", "1", "8"]
        );
    }

    #[test]
    fn llama3_and_qwen2() {
        assert_eq!(words(PreKind::Llama3, "DON'T stop 1234567"), ["DON", "'T", " stop", " ", "123", "456", "7"]);
        assert_eq!(words(PreKind::Qwen2, "x 123"), ["x", " ", "1", "2", "3"]);
        // [^\r\n\p{L}\p{N}]? takes any one non-letter before a word, `\s*[\r\n]+` keeps trailing newlines
        assert_eq!(words(PreKind::Llama3, "(hi)\n\n  there"), ["(hi", ")\n\n", " ", " there"]);
        assert_eq!(words(PreKind::Llama3, "a \n b"), ["a", " \n", " b"]);
    }

    #[test]
    fn qwen35_marks_join_words() {
        // e + U+0301 (a combining mark): Qwen2's \p{L}+ stops at the mark, which then leads the next word
        assert_eq!(words(PreKind::Qwen2, "e\u{301}x 12"), ["e", "\u{301}x", " ", "1", "2"]);
        assert_eq!(words(PreKind::Qwen35, "e\u{301}x 12"), ["e\u{301}x", " ", "1", "2"]);
        // Qwen2: "!" and the marks are one punctuation run; Qwen3.5: "!" is the optional lead of a mark word
        assert_eq!(words(PreKind::Qwen2, "!\u{301}\u{301}"), ["!\u{301}\u{301}"]);
        assert_eq!(words(PreKind::Qwen35, "!\u{301}\u{301}"), ["!\u{301}\u{301}"]);
        assert_eq!(words(PreKind::Qwen35, "नमस्ते दुनिया"), ["नमस्ते", " दुनिया"]);
        assert_eq!(words(PreKind::Qwen2, "नमस्ते"), ["नमस", "\u{94d}त", "\u{947}"]);
    }

    #[test]
    fn names_added_from_llama_cpp() {
        // llama-vocab.cpp: qwen35 -> QWEN35, clean_spaces off; gemma4 -> GEMMA4 (escaped spaces, raw UTF-8,
        // newline fix, BOS forced), clean_spaces on; glm4/glm5 -> CHATGLM4 with ignore_merges and no BOS
        let q = lookup("qwen35").unwrap();
        assert_eq!((q.kind, q.clean_spaces, q.ignore_merges), (PreKind::Qwen35, false, false));
        let flags = |c: PreConfig| (c.kind, c.escaped, c.newline_words, c.force_bos, c.clean_spaces);
        for name in ["gemma4", "granite-embed-multi-311m"] {
            assert_eq!(flags(lookup(name).unwrap()), (PreKind::Lines, true, true, true, true));
        }
        assert_eq!(flags(lookup("sarvam-moe").unwrap()), (PreKind::Lines, true, false, false, false));
        for name in ["glm4", "glm5"] {
            let g = lookup(name).unwrap();
            assert_eq!((g.kind, g.ignore_merges, g.no_bos), (PreKind::Llama3, true, true));
        }
        assert!(!lookup("chatglm-bpe").unwrap().ignore_merges);
    }

    #[test]
    fn lines_split_at_line_feeds_only() {
        assert_eq!(words(PreKind::Lines, "a b\n\n\r\nc\n"), ["a b", "\n\n", "\r", "\n", "c", "\n"]);
    }

    #[test]
    fn gpt4o_cased_words() {
        assert_eq!(words(PreKind::Gpt4o, "HelloWorld HELLO's"), ["Hello", "World", " HELLO's"]);
        assert_eq!(words(PreKind::Gpt4o, "path/to\n"), ["path", "/to", "\n"]);
        assert_eq!(words(PreKind::Gpt4o, "12345"), ["123", "45"]);
        // non-ASCII letters count as both cases in llama.cpp's collapsed regex
        assert_eq!(words(PreKind::Gpt4o, "ÄB"), ["Ä", "B"]);
    }

    #[test]
    fn default_recipe() {
        // punctuation runs first, then GPT-2, then number runs, then ASCII digit triples
        assert_eq!(words(PreKind::Default, "a+b=12345"), ["a", "+", "b", "=", "123", "45"]);
    }

    #[test]
    fn deepseek_llm() {
        assert_eq!(words(PreKind::DeepseekLlm, "Hello, 世界 123\n"), ["Hello", ",", " ", "世界", " ", "123", "\n"]);
    }
}
