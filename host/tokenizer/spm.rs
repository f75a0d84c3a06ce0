//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`): every UTF-8 char of the text (spaces already
//! written as `▁`) starts as its own symbol, then the adjacent pair whose concatenation is the token with
//! the highest score merges (leftmost on ties) until no pair forms a token, as llama.cpp's
//! `llm_tokenizer_spm_session` does. A symbol left over that is not a token falls back to `<0xHH>` byte
//! tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

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
    pub lookup: &'a HashMap<Vec<u8>, u32, FxBuild>, // token text -> id
    pub scores: &'a [f32],
    pub byte_tokens: &'a [Option<u32>; 256], // `<0xHH>` (or the raw byte as a token)
    pub unk: Option<u32>,
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`.
pub fn encode(v: &SpmVocab, text: &str, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        syms.push(Sym { start: start as u32, len: c.len_utf8() as u32, prev: i as i32 - 1, next: i as i32 + 1 });
    }
    if let Some(last) = syms.last_mut() {
        last.next = -1;
    }
    let mut heap = BinaryHeap::with_capacity(syms.len());
    let try_pair = |syms: &[Sym], heap: &mut BinaryHeap<Pair>, l: usize, r: usize| {
        let (start, end) = (syms[l].start as usize, (syms[r].start + syms[r].len) as usize);
        if let Some(&id) = v.lookup.get(&bytes[start..end]) {
            heap.push(Pair { score: v.scores[id as usize], left: l as u32, size: (end - start) as u32 });
        }
    };
    for i in 1..syms.len() {
        try_pair(&syms, &mut heap, i - 1, i);
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
            try_pair(&syms, &mut heap, syms[l].prev as usize, l);
        }
        if syms[l].next >= 0 {
            try_pair(&syms, &mut heap, l, syms[l].next as usize);
        }
    }
    let mut i = if syms.is_empty() { -1 } else { 0 };
    while i >= 0 {
        let s = syms[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match v.lookup.get(piece) {
            Some(&id) => out.push(id),
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
        let lookup: HashMap<Vec<u8>, u32, FxBuild> =
            toks.iter().enumerate().map(|(i, t)| (t.0.as_bytes().to_vec(), i as u32)).collect();
        let scores: Vec<f32> = toks.iter().map(|t| t.1).collect();
        let mut byte_tokens = [None; 256];
        for b in 0..256 {
            byte_tokens[b] = Some(100 + b as u32);
        }
        let v = SpmVocab { lookup: &lookup, scores: &scores, byte_tokens: &byte_tokens, unk: None };
        let mut out = Vec::new();
        encode(&v, "abc", &mut out); // "bc" (-2) beats "ab" (-3), then "a"+"bc" is no token
        assert_eq!(out, [0, 3]);
        out.clear();
        encode(&v, "xab", &mut out); // 'x' is no token: its byte
        assert_eq!(out, [100 + b'x' as u32, 2]);
        out.clear();
        encode(&v, "é", &mut out); // two bytes, two byte tokens
        assert_eq!(out, [100 + 0xC3, 100 + 0xA9]);
    }
}
