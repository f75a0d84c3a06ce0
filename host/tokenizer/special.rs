//! Special-token partition: cut the text at the special tokens it contains before any BPE runs.
//!
//! llama.cpp (`tokenizer_st_partition`) takes the special tokens longest first and, for each, splits every
//! remaining text fragment at all its leftmost non-overlapping occurrences. We find every occurrence with
//! one trie walk, then replay that order: an occurrence is taken when none of its bytes was taken before.

/// Per-token attributes (llama.cpp's `llama_token_attr`).
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// A piece of the text after the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A byte trie over the special tokens' texts.
struct Node {
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

pub struct SpecialMatcher {
    nodes: Vec<Node>,
    root: Box<[u32; 256]>, // first byte -> node (0 = none)
    rank: Vec<u32>,        // rank in llama.cpp's order (longest first), per token id; u32::MAX if not special
}

impl SpecialMatcher {
    /// `specials`: ids of the control, user-defined and unknown tokens; `text(id)` their texts.
    pub fn new<'t>(n_vocab: usize, specials: &[u32], text: impl Fn(u32) -> &'t [u8]) -> SpecialMatcher {
        let mut order: Vec<u32> = specials.iter().copied().filter(|&id| !text(id).is_empty()).collect();
        order.sort_by_key(|&id| std::cmp::Reverse(text(id).len())); // stable: equal lengths by id
        let mut rank = vec![u32::MAX; n_vocab];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        let mut m = SpecialMatcher {
            nodes: vec![Node { children: Vec::new(), token: None }],
            root: Box::new([0; 256]),
            rank,
        };
        for &id in &order {
            let t = text(id);
            let mut node = m.root[t[0] as usize];
            if node == 0 {
                node = m.new_node();
                m.root[t[0] as usize] = node;
            }
            for &b in &t[1..] {
                node = match m.nodes[node as usize].children.iter().find(|c| c.0 == b) {
                    Some(&(_, n)) => n,
                    None => {
                        let n = m.new_node();
                        m.nodes[node as usize].children.push((b, n));
                        n
                    }
                };
            }
            m.nodes[node as usize].token = Some(id);
        }
        m
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node { children: Vec::new(), token: None });
        self.nodes.len() as u32 - 1
    }

    /// Splits `text` into text fragments and special tokens. `usable(id)` says whether a special token is
    /// matched at all (control and unknown tokens only when parsing specials); `attrs` supplies LSTRIP and
    /// RSTRIP (whitespace around the token dropped).
    pub fn partition<'a>(
        &self,
        text: &'a str,
        usable: impl Fn(u32) -> bool,
        attrs: &[u16],
        out: &mut Vec<Fragment<'a>>,
    ) {
        let bytes = text.as_bytes();
        // every occurrence: (rank, start, end, id)
        let mut found: Vec<(u32, usize, usize, u32)> = Vec::new();
        for start in 0..bytes.len() {
            let mut node = self.root[bytes[start] as usize];
            let mut i = start + 1;
            while node != 0 {
                let n = &self.nodes[node as usize];
                if let Some(id) = n.token {
                    if usable(id) {
                        found.push((self.rank[id as usize], start, i, id));
                    }
                }
                if i == bytes.len() {
                    break;
                }
                node = n.children.iter().find(|c| c.0 == bytes[i]).map_or(0, |c| c.1);
                i += 1;
            }
        }
        if found.is_empty() {
            if !text.is_empty() {
                out.push(Fragment::Text(text));
            }
            return;
        }
        found.sort_unstable();

        // replay llama.cpp's order: 0 = free text, 1 = taken by a token, 2 = dropped whitespace
        let mut state = vec![0u8; bytes.len()];
        let mut taken: Vec<(usize, usize, u32)> = Vec::new();
        for &(_, start, end, id) in &found {
            if state[start..end].iter().any(|&s| s != 0) {
                continue;
            }
            state[start..end].fill(1);
            let a = attrs.get(id as usize).copied().unwrap_or(0);
            if a & attr::LSTRIP != 0 {
                let mut i = start;
                while i > 0 && state[i - 1] == 0 && bytes[i - 1].is_ascii_whitespace_c() {
                    i -= 1;
                    state[i] = 2;
                }
            }
            if a & attr::RSTRIP != 0 {
                let mut i = end;
                while i < bytes.len() && state[i] == 0 && bytes[i].is_ascii_whitespace_c() {
                    state[i] = 2;
                    i += 1;
                }
            }
            taken.push((start, end, id));
        }
        taken.sort_unstable();

        let push_text = |out: &mut Vec<Fragment<'a>>, from: usize, to: usize| {
            // free bytes between tokens, minus stripped whitespace (which only borders tokens)
            let (mut a, mut b) = (from, to);
            while a < b && state[a] == 2 {
                a += 1;
            }
            while b > a && state[b - 1] == 2 {
                b -= 1;
            }
            if a < b {
                out.push(Fragment::Text(&text[a..b]));
            }
        };
        let mut pos = 0;
        for &(start, end, id) in &taken {
            push_text(out, pos, start);
            out.push(Fragment::Token(id));
            pos = end;
        }
        push_text(out, pos, bytes.len());
    }
}

trait CSpace {
    fn is_ascii_whitespace_c(&self) -> bool;
}
impl CSpace for u8 {
    /// C's isspace: also '\v', which Rust's is_ascii_whitespace leaves out
    fn is_ascii_whitespace_c(&self) -> bool {
        matches!(self, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tokens: &[&str], text: &str) -> Vec<String> {
        let ids: Vec<u32> = (0..tokens.len() as u32).collect();
        let m = SpecialMatcher::new(tokens.len(), &ids, |id| tokens[id as usize].as_bytes());
        let mut out = Vec::new();
        m.partition(text, |_| true, &vec![0; tokens.len()], &mut out);
        out.iter()
            .map(|f| match f {
                Fragment::Text(t) => format!("'{t}'"),
                Fragment::Token(id) => format!("<{id}>"),
            })
            .collect()
    }

    #[test]
    fn longest_token_first_not_leftmost_first() {
        // "bcd" (longer) is cut out before "ab" is looked for, so "ab" no longer occurs
        assert_eq!(run(&["ab", "bcd"], "abcd"), ["'a'", "<1>"]);
        assert_eq!(run(&["<s>", "</s>"], "x<s>y</s><s>"), ["'x'", "<0>", "'y'", "<1>", "<0>"]);
        assert_eq!(run(&["aa"], "aaa"), ["<0>", "'a'"]);
        assert_eq!(run(&["<s>"], "plain"), ["'plain'"]);
    }
}
