//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`): every UTF-8 char of the text (spaces already
//! written as `▁`) starts as its own symbol, then the adjacent pair whose concatenation is the token with
//! the highest score merges (leftmost on ties) until no pair forms a token, as llama.cpp's
//! `llm_tokenizer_spm_session` does. A symbol left over that is not a token falls back to `<0xHH>` byte
//! tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::vocab_map::VocabMap;
use super::FxBuild;

/// A candidate merge; the max-heap pops the highest score, then the leftmost pair.
struct Pair {
    score: f32,
    left: u32,
    size: u32, // bytes of the pair, to spot pairs made stale by an earlier merge
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: u32, // byte offset in the text
    len: u32,   // bytes; 0 once merged into its left neighbour
    prev: i32,
    next: i32,
}

/// The vocabulary view the SPM merge loop needs.
pub struct SpmVocab<'a> {
    pub map: &'a VocabMap, // token text -> (id, score)
    pub byte_tokens: &'a [Option<u32>; 256], // `<0xHH>` (or the raw byte as a token)
    pub unk: Option<u32>,
    pub no_cut_after: &'a [char], // chars some token has right before a `▁`
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`, word by word.
///
/// Merging a whole fragment at once costs a hash lookup per pair over a large vocab, so the text is cut
/// before each `▁` that follows another char, and each word is merged alone (and remembered: `cache`).
/// That gives the same ids as one pass as long as no token spans a cut, which `no_cut_after` ensures:
/// it lists every char that some token has right before a `▁` (Gemma-3 has one such token, `>▁</`).
pub fn encode_words<'t>(v: &SpmVocab, text: &'t str, out: &mut Vec<u32>, cache: &mut WordCache<'t>) {
    let mut start = 0;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c == '\u{2581}' && i > start && prev.is_some_and(|p| p != '\u{2581}' && !v.no_cut_after.contains(&p)) {
            cache.encode(v, &text[start..i], out);
            start = i;
        }
        prev = Some(c);
    }
    if start < text.len() {
        cache.encode(v, &text[start..], out);
    }
}

/// Ids of the words seen so far in one `encode` call.
#[derive(Default)]
pub struct WordCache<'t> {
    map: HashMap<&'t str, (u32, u32), FxBuild>, // word -> range in `ids`
    ids: Vec<u32>,
    work: SpmWork,
}

/// Scratch space for `encode`, reused across words.
#[derive(Default)]
pub struct SpmWork {
    syms: Vec<Sym>,
    heap: BinaryHeap<Pair>,
}

impl<'t> WordCache<'t> {
    fn encode(&mut self, v: &SpmVocab, word: &'t str, out: &mut Vec<u32>) {
        let mut work = std::mem::take(&mut self.work);
        self.get_or_insert(word, out, |ids| encode(v, word, ids, &mut work));
        self.work = work;
    }

    /// Appends the ids of `word` to `out`, computing them with `f` (which appends) the first time.
    pub fn get_or_insert(&mut self, word: &'t str, out: &mut Vec<u32>, f: impl FnOnce(&mut Vec<u32>)) {
        if let Some(&(a, b)) = self.map.get(word) {
            out.extend_from_slice(&self.ids[a as usize..b as usize]);
            return;
        }
        let a = self.ids.len();
        f(&mut self.ids);
        out.extend_from_slice(&self.ids[a..]);
        self.map.insert(word, (a as u32, self.ids.len() as u32));
    }
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`.
pub fn encode(v: &SpmVocab, text: &str, out: &mut Vec<u32>, work: &mut SpmWork) {
    let bytes = text.as_bytes();
    let syms = &mut work.syms;
    syms.clear();
    for (i, (start, c)) in text.char_indices().enumerate() {
        syms.push(Sym { start: start as u32, len: c.len_utf8() as u32, prev: i as i32 - 1, next: i as i32 + 1 });
    }
    if let Some(last) = syms.last_mut() {
        last.next = -1;
    }
    let heap = &mut work.heap;
    heap.clear();
    let try_pair = |syms: &[Sym], heap: &mut BinaryHeap<Pair>, l: usize, r: usize| {
        let (start, end) = (syms[l].start as usize, (syms[r].start + syms[r].len) as usize);
        if let Some((_, score)) = v.map.get(&bytes[start..end]) {
            heap.push(Pair { score, left: l as u32, size: (end - start) as u32 });
        }
    };
    for i in 1..syms.len() {
        try_pair(syms, heap, i - 1, i);
    }
    while let Some(p) = heap.pop() {
        let l = p.left as usize;
        let r = syms[l].next;
        if r < 0 || syms[l].len == 0 || syms[l].len + syms[r as usize].len != p.size {
            continue;
        }
        let r = r as usize;
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        let after = syms[r].next;
        if after >= 0 {
            syms[after as usize].prev = l as i32;
        }
        if syms[l].prev >= 0 {
            try_pair(syms, heap, syms[l].prev as usize, l);
        }
        if syms[l].next >= 0 {
            try_pair(syms, heap, l, syms[l].next as usize);
        }
    }
    let mut i = if syms.is_empty() { -1 } else { 0 };
    while i >= 0 {
        let s = syms[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match v.map.get(piece) {
            Some((id, _)) => out.push(id),
            // merged symbols are always tokens, so this is a single char: byte fallback
            None => out.extend(piece.iter().filter_map(|&b| v.byte_tokens[b as usize].or(v.unk))),
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_by_score_with_byte_fallback() {
        let toks: Vec<(&str, f32)> = vec![("a", -1.0), ("b", -1.0), ("ab", -3.0), ("bc", -2.0), ("c", -1.0)];
        let map = VocabMap::new(toks.len(), toks.iter().enumerate().map(|(i, t)| (t.0.as_bytes(), i as u32, t.1)));
        let mut byte_tokens = [None; 256];
        for b in 0..256 {
            byte_tokens[b] = Some(100 + b as u32);
        }
        let v = SpmVocab { map: &map, byte_tokens: &byte_tokens, unk: None, no_cut_after: &[] };
        let mut out = Vec::new();
        let mut work = SpmWork::default();
        encode(&v, "abc", &mut out, &mut work); // "bc" (-2) beats "ab" (-3), then "a"+"bc" is no token
        assert_eq!(out, [0, 3]);
        out.clear();
        encode(&v, "xab", &mut out, &mut work); // 'x' is no token: its byte
        assert_eq!(out, [100 + b'x' as u32, 2]);
        out.clear();
        encode(&v, "é", &mut out, &mut work); // two bytes, two byte tokens
        assert_eq!(out, [100 + 0xC3, 100 + 0xA9]);
    }
}
