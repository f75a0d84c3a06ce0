//! Token text -> (id, score) lookup tuned for the merge loops, which probe a large vocab (262k tokens
//! for Gemma-3) once per candidate pair. A general hash map costs several cache misses per probe (control
//! bytes, bucket, the key's own allocation, the score); here one 16-byte slot holds a key of up to 8 bytes
//! inline, the id and the score, so a probe usually touches one cache line.

/// Open addressing with linear probing; capacity a power of two, at most half full.
pub struct VocabMap {
    slots: Vec<Slot>, // (capacity,)
    mask: usize,
    arena: Vec<u8>,        // texts of keys longer than 8 bytes, back to back
    long: Vec<(u32, u32)>, // (start, end) in `arena` per id, for keys longer than 8 bytes
}

#[derive(Clone, Copy)]
struct Slot {
    key: u64,    // the key's bytes (little-endian, zero-padded) if len <= 8, else its hash
    len_id: u32, // 0 = empty; else the length (capped at LEN_CAP) in the top 6 bits, id + 1 below
    score: f32,
}

const EMPTY: u32 = 0;
const ID_BITS: u32 = 26; // ids below 2^26 - 1
const LEN_CAP: u32 = 63; // lengths at or above this share one code (compared through the arena)

#[inline]
fn pack(len: usize, id: u32) -> u32 {
    ((len as u32).min(LEN_CAP) << ID_BITS) | (id + 1)
}

#[inline]
fn small_key(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

#[inline]
fn hash(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        h = (h.rotate_left(5) ^ small_key(chunk)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
}

impl VocabMap {
    /// The largest vocab this map holds.
    pub const MAX_IDS: usize = (1 << ID_BITS) - 2;

    /// `entries`: (text, id, score); the first of equal texts wins.
    pub fn new<'a>(n: usize, entries: impl Iterator<Item = (&'a [u8], u32, f32)>) -> VocabMap {
        let cap = (n.max(1) * 2).next_power_of_two();
        let mut m = VocabMap {
            slots: vec![Slot { key: 0, len_id: EMPTY, score: 0.0 }; cap],
            mask: cap - 1,
            arena: Vec::new(),
            long: Vec::new(),
        };
        for (text, id, score) in entries {
            if m.get(text).is_some() {
                continue;
            }
            let (key, h) = if text.len() <= 8 {
                let k = small_key(text);
                (k, hash(text))
            } else {
                let h = hash(text);
                let start = m.arena.len() as u32;
                m.arena.extend_from_slice(text);
                if m.long.len() <= id as usize {
                    m.long.resize(id as usize + 1, (0, 0));
                }
                m.long[id as usize] = (start, m.arena.len() as u32);
                (h, h)
            };
            let mut i = h as usize & m.mask;
            while m.slots[i].len_id != EMPTY {
                i = (i + 1) & m.mask;
            }
            m.slots[i] = Slot { key, len_id: pack(text.len(), id), score };
        }
        m
    }

    /// (id, score) of the token spelled `text`.
    #[inline]
    pub fn get(&self, text: &[u8]) -> Option<(u32, f32)> {
        let h = hash(text);
        let (key, want) = if text.len() <= 8 { (small_key(text), 0) } else { (h, 1) };
        let code = (text.len() as u32).min(LEN_CAP);
        let mut i = h as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s.len_id == EMPTY {
                return None;
            }
            if s.len_id >> ID_BITS == code && s.key == key {
                let id = (s.len_id & ((1 << ID_BITS) - 1)) - 1;
                if want == 0 {
                    return Some((id, s.score));
                }
                let (a, b) = self.long[id as usize];
                if &self.arena[a as usize..b as usize] == text {
                    return Some((id, s.score));
                }
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_short_and_long_keys() {
        let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| format!("tok{i}{}", "x".repeat((i % 13) as usize)).into_bytes()).collect();
        let m = VocabMap::new(keys.len(), keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i as u32, i as f32 * 0.5)));
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k), Some((i as u32, i as f32 * 0.5)), "{:?}", String::from_utf8_lossy(k));
        }
        assert_eq!(m.get(b"tok"), None);
        assert_eq!(m.get(b"tok1xx"), None);
        assert_eq!(m.get(b""), None);
        assert_eq!(m.get(&[0u8; 3]), None); // zero bytes are not confused with padding: lengths differ
    }
}
