//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): every UTF-8 byte of a pre-tokenized word starts as
//! its own symbol, then adjacent pairs merge by rank (lowest first, leftmost on ties) until no ranked pair
//! is left, as llama.cpp's `llm_tokenizer_bpe_session` does.
//!
//! GPT-2 vocabularies spell bytes with a printable alphabet (byte 0x20 is `Ġ`, 0x0A is `Ċ`, ...). We undo
//! that once at load, so merges and lookups work on raw bytes and decoding is a table lookup.
//!
//! Gemma-4 style vocabularies (`Spelling::Utf8`) spell tokens in plain UTF-8 (spaces as `▁`) instead: there
//! every UTF-8 char of the word starts as a symbol, and a symbol left over that is not a token falls back to
//! the `<0xHH>` tokens of its bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::FxBuild;
use crate::{Error, Result};

// ----------------------------------------------------------------------------
// GPT-2's byte <-> unicode alphabet
// ----------------------------------------------------------------------------

/// The char that stands for each byte: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// take U+0100.. in byte order.
pub fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    map
}

/// The byte a char of the alphabet stands for, or None for chars outside it.
pub fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    match c {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(c as u8),
        0x100..=0x143 => {
            // the n-th non-printable byte, counting 0x00..=0x20, 0x7F..=0xA0, 0xAD
            let n = (c - 0x100) as u8;
            Some(match n {
                0..=32 => n,
                33..=66 => 0x7F + (n - 33),
                _ => 0xAD,
            })
        }
        _ => None,
    }
}

/// Raw bytes of a token spelled in the alphabet, or None if it uses a char outside it.
pub fn decode_alphabet(text: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(text).ok()?;
    s.chars().map(char_to_byte).collect()
}

// ----------------------------------------------------------------------------
// Merge table
// ----------------------------------------------------------------------------

/// A merge rule: (left, right) symbols -> (rank, merged symbol).
type MergeMap = HashMap<(u32, u32), (u32, u32), FxBuild>;

/// How the vocabulary spells its tokens and merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// GPT-2's byte alphabet; words start as one symbol per byte
    ByteAlphabet,
    /// plain UTF-8; words start as one symbol per UTF-8 char
    Utf8,
}

/// Byte-level BPE over symbol ids. Ids below `n_vocab` are tokens; higher ids are byte strings that
/// appear in merges without being tokens themselves (they fall back to byte tokens when left over).
/// With `Spelling::Utf8`, a char that is neither gets the id `UNKNOWN_CHAR + code point`.
pub struct Bpe {
    n_vocab: u32,
    spelling: Spelling,
    byte_sym: [u32; 256],           // symbol of each single byte (ByteAlphabet)
    char_sym: HashMap<Vec<u8>, u32, FxBuild>, // symbol of each char that is a token or in a merge (Utf8)
    byte_token: [Option<u32>; 256], // token each byte of a left-over symbol falls back to
    merges: MergeMap,
    extra: Vec<Vec<u8>>, // bytes of symbol n_vocab + i
}

/// Symbol ids from here on stand for a char that is no token and in no merge (`Spelling::Utf8`).
const UNKNOWN_CHAR: u32 = 0x8000_0000;

/// Bytes of the UTF-8 char that starts with `b` (llama.cpp's `unicode_len_utf8`).
fn utf8_len(b: u8) -> usize {
    const LEN: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LEN[(b >> 4) as usize]
}

impl Bpe {
    /// `lookup` maps raw bytes to token ids (`ByteAlphabet`: tokens spelled in the alphabet; `Utf8`: every
    /// token's text); `merges` are the `tokenizer.ggml.merges` strings, "left right" spelled as the tokens
    /// are, rank = index; `byte_fallback` the token of each byte for left-over symbols that are no token.
    pub fn new(
        n_vocab: usize,
        lookup: &HashMap<Vec<u8>, u32, FxBuild>,
        merges: &[Vec<u8>],
        spelling: Spelling,
        byte_fallback: [Option<u32>; 256],
    ) -> Result<Bpe> {
        let mut extra_ids: HashMap<Vec<u8>, u32, FxBuild> = HashMap::default();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let n_vocab = n_vocab as u32;
        let mut intern = |bytes: Vec<u8>| -> u32 {
            if let Some(&id) = lookup.get(&bytes) {
                return id;
            }
            *extra_ids.entry(bytes.clone()).or_insert_with(|| {
                extra.push(bytes);
                n_vocab + extra.len() as u32 - 1
            })
        };

        let mut byte_sym = [0u32; 256];
        if spelling == Spelling::ByteAlphabet {
            for (b, sym) in byte_sym.iter_mut().enumerate() {
                *sym = intern(vec![b as u8]);
            }
        }
        let decode = |t: &[u8]| match spelling {
            Spelling::ByteAlphabet => decode_alphabet(t),
            Spelling::Utf8 => Some(t.to_vec()),
        };

        let mut table: MergeMap = HashMap::with_capacity_and_hasher(merges.len(), FxBuild::default());
        for (rank, m) in merges.iter().enumerate() {
            let (left, right) = split_merge(m).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "tokenizer.ggml.merges[{rank}] = {:?} is not two pieces separated by one space",
                    String::from_utf8_lossy(m)
                ))
            })?;
            // a merge spelled outside the byte alphabet can never apply to byte-encoded text
            let (Some(l), Some(r)) = (decode(left), decode(right)) else {
                continue;
            };
            let merged: Vec<u8> = [l.as_slice(), r.as_slice()].concat();
            let (l, r, merged) = (intern(l), intern(r), intern(merged));
            table.entry((l, r)).or_insert((rank as u32, merged)); // first rank wins, as in llama.cpp
        }
        let mut char_sym: HashMap<Vec<u8>, u32, FxBuild> = HashMap::default();
        if spelling == Spelling::Utf8 {
            let one_char = |t: &[u8]| !t.is_empty() && utf8_len(t[0]) == t.len();
            for (t, &id) in lookup.iter().filter(|(t, _)| one_char(t)) {
                char_sym.insert(t.clone(), id);
            }
            for (i, t) in extra.iter().enumerate().filter(|(_, t)| one_char(t)) {
                char_sym.entry(t.clone()).or_insert(n_vocab + i as u32);
            }
        }
        Ok(Bpe { n_vocab, spelling, byte_sym, char_sym, byte_token: byte_fallback, merges: table, extra })
    }

    /// The starting symbols of `word`, with their lengths in bytes.
    fn start_symbols(&self, word: &[u8], mut push: impl FnMut(u32, u32)) {
        match self.spelling {
            Spelling::ByteAlphabet => word.iter().for_each(|&b| push(self.byte_sym[b as usize], 1)),
            Spelling::Utf8 => {
                let mut i = 0;
                while i < word.len() {
                    let n = utf8_len(word[i]).min(word.len() - i);
                    let c = &word[i..i + n];
                    let id = self.char_sym.get(c).copied().unwrap_or_else(|| {
                        let cp = std::str::from_utf8(c).ok().and_then(|s| s.chars().next()).map_or(0xFFFD, u32::from);
                        UNKNOWN_CHAR + cp
                    });
                    push(id, n as u32);
                    i += n;
                }
            }
        }
    }

    /// Appends the tokens of one word (raw bytes) to `out`.
    pub fn encode_word(&self, word: &[u8], out: &mut Vec<u32>, work: &mut BpeWork) {
        if word.len() <= SHORT_WORD {
            self.encode_short(word, out, work);
        } else {
            self.encode_long(word, out, work);
        }
    }

    /// Short words: pairs in a small array, the best found by a scan (the lowest rank, leftmost first:
    /// the same pick as the heap's, without its upkeep).
    fn encode_short(&self, word: &[u8], out: &mut Vec<u32>, work: &mut BpeWork) {
        let syms = &mut work.ids;
        let pairs = &mut work.pairs; // pairs[i]: (rank, merged) of syms[i], syms[i + 1]
        syms.clear();
        pairs.clear();
        self.start_symbols(word, |id, _| syms.push(id));
        let rule = |l: u32, r: u32| self.merges.get(&(l, r)).copied().unwrap_or((u32::MAX, 0));
        for i in 1..syms.len() {
            pairs.push(rule(syms[i - 1], syms[i]));
        }
        loop {
            let mut best = 0;
            for i in 1..pairs.len() {
                if pairs[i].0 < pairs[best].0 {
                    best = i;
                }
            }
            match pairs.get(best) {
                Some(&(rank, merged)) if rank != u32::MAX => {
                    syms[best] = merged;
                    syms.remove(best + 1);
                    pairs.remove(best);
                    if best > 0 {
                        pairs[best - 1] = rule(syms[best - 1], syms[best]);
                    }
                    if best < pairs.len() {
                        pairs[best] = rule(syms[best], syms[best + 1]);
                    }
                }
                _ => break,
            }
        }
        for &id in syms.iter() {
            self.emit(id, out);
        }
    }

    fn emit(&self, id: u32, out: &mut Vec<u32>) {
        let mut buf = [0u8; 4];
        let bytes: &[u8] = if id < self.n_vocab {
            out.push(id);
            return;
        } else if id >= UNKNOWN_CHAR {
            char::from_u32(id - UNKNOWN_CHAR).unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes()
        } else {
            &self.extra[(id - self.n_vocab) as usize]
        };
        // not a token: its bytes one by one (bytes without a token are dropped, as in llama.cpp)
        out.extend(bytes.iter().filter_map(|&b| self.byte_token[b as usize]));
    }

    /// Long words: a linked list of symbols and a heap of candidate pairs (llama.cpp's algorithm).
    fn encode_long(&self, word: &[u8], out: &mut Vec<u32>, work: &mut BpeWork) {
        let syms = &mut work.syms;
        syms.clear();
        self.start_symbols(word, |id, len| {
            let i = syms.len() as i32;
            syms.push(Sym { id, prev: i - 1, next: i + 1, len });
        });
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }
        let heap = &mut work.heap;
        heap.clear();
        for i in 1..syms.len() {
            self.push_pair(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_, left, size, merged))) = heap.pop() {
            let (l, r) = (left as usize, syms[left as usize].next);
            // skip pairs made stale by an earlier merge (a side was absorbed or has grown)
            if r < 0 || syms[l].len == 0 || syms[r as usize].len == 0 || syms[l].len + syms[r as usize].len != size {
                continue;
            }
            let r = r as usize;
            syms[l].id = merged;
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            let after = syms[r].next;
            if after >= 0 {
                syms[after as usize].prev = l as i32;
            }
            if syms[l].prev >= 0 {
                self.push_pair(syms, heap, syms[l].prev as usize, l);
            }
            if syms[l].next >= 0 {
                self.push_pair(syms, heap, l, syms[l].next as usize);
            }
        }
        let mut i = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            let s = &syms[i as usize];
            self.emit(s.id, out);
            i = s.next;
        }
    }

    #[inline]
    fn push_pair(&self, syms: &[Sym], heap: &mut BinaryHeap<Reverse<(u32, u32, u32, u32)>>, l: usize, r: usize) {
        if let Some(&(rank, merged)) = self.merges.get(&(syms[l].id, syms[r].id)) {
            heap.push(Reverse((rank, l as u32, syms[l].len + syms[r].len, merged)));
        }
    }
}

/// "left right" -> (left, right): llama.cpp splits at the first space after the first byte.
fn split_merge(m: &[u8]) -> Option<(&[u8], &[u8])> {
    let pos = m.iter().skip(1).position(|&b| b == b' ')? + 1;
    let (left, right) = (&m[..pos], &m[pos + 1..]);
    (!right.is_empty() && !right.contains(&b' ')).then_some((left, right))
}

#[derive(Clone, Copy)]
pub struct Sym {
    id: u32,
    prev: i32,
    next: i32,
    len: u32, // bytes; 0 once merged into its left neighbour
}

/// Words up to this many bytes merge by scanning an array; longer ones use the heap.
const SHORT_WORD: usize = 48;

/// Scratch space for `encode_word`, reused across words.
#[derive(Default)]
pub struct BpeWork {
    ids: Vec<u32>,
    pairs: Vec<(u32, u32)>,
    syms: Vec<Sym>,
    // (rank, left symbol, bytes of the pair, merged symbol); the min-heap pops the lowest rank, then leftmost
    heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_round_trip() {
        let map = byte_to_char();
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
        assert_eq!(map[b'a' as usize], 'a');
        assert_eq!(map[0xAD], 'Ń');
        for (b, &c) in map.iter().enumerate() {
            assert_eq!(char_to_byte(c), Some(b as u8), "byte {b:#x}");
        }
        assert_eq!(char_to_byte('▁'), None);
    }

    #[test]
    fn merges_apply_by_rank_then_leftmost() {
        // vocab: single bytes a, b, c and the merged pieces; ranks: "b c" before "a b"
        let toks: Vec<&[u8]> = vec![b"a", b"b", b"c", b"bc", b"ab", b"abc"];
        let lookup: HashMap<Vec<u8>, u32, FxBuild> =
            toks.iter().enumerate().map(|(i, t)| (t.to_vec(), i as u32)).collect();
        let merges = vec![b"b c".to_vec(), b"a b".to_vec(), b"a bc".to_vec()];
        let bpe = Bpe::new(toks.len(), &lookup, &merges, Spelling::ByteAlphabet, [None; 256]).unwrap();
        let mut out = Vec::new();
        let mut work = BpeWork::default();
        bpe.encode_word(b"abc", &mut out, &mut work); // b+c first (rank 0), then a+bc (rank 2)
        assert_eq!(out, [5]);
        out.clear();
        bpe.encode_word(b"abab", &mut out, &mut work); // two "ab", no rule joins them
        assert_eq!(out, [4, 4]);
        out.clear();
        bpe.encode_word(b"cab", &mut out, &mut work);
        assert_eq!(out, [2, 4]);
    }

    #[test]
    fn short_and_long_paths_agree() {
        // all pairs of a..e are tokens with pseudo-random ranks; words long enough for both paths
        let letters = b"abcde";
        let mut toks: Vec<Vec<u8>> = letters.iter().map(|&c| vec![c]).collect();
        let mut merges = Vec::new();
        let mut x = 12345u32;
        for &l in letters {
            for &r in letters {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if !x.is_multiple_of(3) {
                    toks.push(vec![l, r]);
                    merges.push((x % 1000, vec![l, b' ', r]));
                }
            }
        }
        merges.sort();
        let merges: Vec<Vec<u8>> = merges.into_iter().map(|m| m.1).collect();
        let lookup: HashMap<Vec<u8>, u32, FxBuild> =
            toks.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = Bpe::new(toks.len(), &lookup, &merges, Spelling::ByteAlphabet, [None; 256]).unwrap();
        let mut work = BpeWork::default();
        for n in [1usize, 2, 5, 17, 40] {
            for seed in 0..50u32 {
                let word: Vec<u8> =
                    (0..n).map(|i| letters[((seed * 7 + i as u32 * 13) ^ (i as u32 * seed)) as usize % 5]).collect();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                bpe.encode_short(&word, &mut a, &mut work);
                bpe.encode_long(&word, &mut b, &mut work);
                assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&word));
            }
        }
    }

    #[test]
    fn malformed_merge_is_rejected() {
        let lookup: HashMap<Vec<u8>, u32, FxBuild> = HashMap::default();
        for bad in [&b"ab"[..], b"a ", b" a", b"a b c"] {
            let err = Bpe::new(0, &lookup, &[bad.to_vec()], Spelling::ByteAlphabet, [None; 256])
                .map(|_| ())
                .expect_err("must fail");
            assert!(err.to_string().contains("tokenizer.ggml.merges[0]"), "{err}");
        }
    }

    #[test]
    fn utf8_spelling_starts_from_chars_and_falls_back_to_bytes() {
        // "▁" and "é" are multi-byte chars: merges apply to whole chars; "ü" is no token: its <0xHH> bytes
        let toks: Vec<&str> = vec!["▁", "é", "t", "▁é", "▁ét", "<0xC3>", "<0xBC>"];
        let lookup: HashMap<Vec<u8>, u32, FxBuild> =
            toks.iter().enumerate().map(|(i, t)| (t.as_bytes().to_vec(), i as u32)).collect();
        let merges = vec!["▁ é".as_bytes().to_vec(), "▁é t".as_bytes().to_vec()];
        let mut fallback = [None; 256];
        fallback[0xC3] = Some(5);
        fallback[0xBC] = Some(6);
        let bpe = Bpe::new(toks.len(), &lookup, &merges, Spelling::Utf8, fallback).unwrap();
        let mut work = BpeWork::default();
        for word in ["▁ét", "▁étü▁é", &"▁ét".repeat(20)] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            bpe.encode_short(word.as_bytes(), &mut a, &mut work);
            bpe.encode_long(word.as_bytes(), &mut b, &mut work);
            assert_eq!(a, b, "{word}");
        }
        let mut out = Vec::new();
        bpe.encode_word("▁étü▁é".as_bytes(), &mut out, &mut work);
        assert_eq!(out, [4, 5, 6, 3]);
    }
}
