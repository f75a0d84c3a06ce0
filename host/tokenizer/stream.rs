//! Incremental detokenization for streaming: tokens arrive one at a time and a multi-byte char can be
//! split across them (byte-fallback tokens, byte-level BPE), so text is released only as whole chars.

/// Buffers token bytes and hands out complete UTF-8 text. The concatenation of every `push` and the final
/// `finish` equals `String::from_utf8_lossy` of all bytes pushed: nothing is lost, and U+FFFD appears only
/// for bytes that are invalid whatever follows them, or for an incomplete char left at the end.
#[derive(Default, Debug)]
pub struct StreamDecoder {
    pending: Vec<u8>, // an incomplete char (at most 3 bytes) waiting for its continuation
}

impl StreamDecoder {
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds the bytes of one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` was just checked by from_utf8
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // invalid whatever comes next: replace it now, as from_utf8_lossy would
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // an incomplete char at the end: wait for more bytes
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }

    /// Bytes held back, waiting to complete a char.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Flushes what is left: an incomplete char becomes U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_inside_chars_are_held_back() {
        let mut d = StreamDecoder::new();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push(b"a"), "a");
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&[euro[2], b'b']), "€b");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&[0xFF, b'x']), "\u{FFFD}x"); // 0xFF can never start a char
        assert_eq!(d.push(&[0xE2, 0x82]), "");
        assert_eq!(d.finish(), "\u{FFFD}"); // the truncated € at the end
    }

    #[test]
    fn any_chunking_equals_lossy_decoding() {
        // seeded xorshift over byte strings mixing ASCII, multi-byte chars and stray bytes
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let atoms: [&[u8]; 7] = [b"a", "é".as_bytes(), "€".as_bytes(), "😀".as_bytes(), &[0xF0, 0x9F], &[0x80], &[0xC3]];
        for _ in 0..500 {
            let mut bytes = Vec::new();
            for _ in 0..(next() % 12) {
                bytes.extend_from_slice(atoms[(next() % atoms.len() as u64) as usize]);
            }
            let mut d = StreamDecoder::new();
            let mut text = String::new();
            let mut i = 0;
            while i < bytes.len() {
                let n = 1 + (next() % 4) as usize;
                let end = (i + n).min(bytes.len());
                text += &d.push(&bytes[i..end]);
                i = end;
            }
            text += &d.finish();
            assert_eq!(text, String::from_utf8_lossy(&bytes), "{bytes:x?}");
        }
    }
}
