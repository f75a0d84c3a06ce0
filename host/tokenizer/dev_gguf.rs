//! TEMPORARY: a minimal GGUF metadata reader for tokenizer development, until the gguf module's API
//! lands; then `Tokenizer::from_gguf` replaces it and this file goes.

use std::io::Read;

use super::TokenizerData;
use crate::{Error, Result};

enum V {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(Vec<u8>),
    A(Vec<V>),
}

fn rd<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).map_err(|e| Error::Tokenizer(format!("dev gguf: {e}")))?;
    Ok(b)
}

fn string(r: &mut impl Read) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(rd(r)?) as usize;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v).map_err(|e| Error::Tokenizer(format!("dev gguf: {e}")))?;
    Ok(v)
}

fn value(r: &mut impl Read, ty: u32) -> Result<V> {
    Ok(match ty {
        0 => V::U(rd::<1>(r)?[0] as u64),
        1 => V::I(rd::<1>(r)?[0] as i8 as i64),
        2 => V::U(u16::from_le_bytes(rd(r)?) as u64),
        3 => V::I(i16::from_le_bytes(rd(r)?) as i64),
        4 => V::U(u32::from_le_bytes(rd(r)?) as u64),
        5 => V::I(i32::from_le_bytes(rd(r)?) as i64),
        6 => V::F(f32::from_le_bytes(rd(r)?) as f64),
        7 => V::B(rd::<1>(r)?[0] != 0),
        8 => V::S(string(r)?),
        9 => {
            let et = u32::from_le_bytes(rd(r)?);
            let n = u64::from_le_bytes(rd(r)?);
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(value(r, et)?);
            }
            V::A(v)
        }
        10 => V::U(u64::from_le_bytes(rd(r)?)),
        11 => V::I(i64::from_le_bytes(rd(r)?)),
        12 => V::F(f64::from_le_bytes(rd(r)?)),
        t => return Err(Error::Tokenizer(format!("dev gguf: bad type {t}"))),
    })
}

/// Reads the tokenizer metadata of a GGUF file.
pub fn data_from_path(path: &std::path::Path) -> Result<TokenizerData> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = std::io::BufReader::new(f);
    let magic: [u8; 4] = rd(&mut r)?;
    if &magic != b"GGUF" {
        return Err(Error::Tokenizer("dev gguf: bad magic".into()));
    }
    let _version = u32::from_le_bytes(rd(&mut r)?);
    let _n_tensors = u64::from_le_bytes(rd(&mut r)?);
    let n_kv = u64::from_le_bytes(rd(&mut r)?);
    let mut d = TokenizerData::default();
    for _ in 0..n_kv {
        let key = String::from_utf8_lossy(&string(&mut r)?).into_owned();
        let ty = u32::from_le_bytes(rd(&mut r)?);
        let v = value(&mut r, ty)?;
        let s = |v: V| match v {
            V::S(s) => String::from_utf8_lossy(&s).into_owned(),
            _ => String::new(),
        };
        let id = |v: V| match v {
            V::U(u) => Some(u as u32),
            V::I(i) => Some(i as u32),
            _ => None,
        };
        let b = |v: V| match v {
            V::B(b) => Some(b),
            _ => None,
        };
        match key.as_str() {
            "tokenizer.ggml.model" => d.model = s(v),
            "tokenizer.ggml.pre" => d.pre = Some(s(v)),
            "general.name" => d.model_name = Some(s(v)),
            "tokenizer.chat_template" => d.chat_template = Some(s(v)),
            "tokenizer.ggml.tokens" | "tokenizer.ggml.merges" => {
                let V::A(a) = v else { continue };
                let list = a.into_iter().map(|x| if let V::S(s) = x { s } else { Vec::new() }).collect();
                if key.ends_with("tokens") {
                    d.tokens = list;
                } else {
                    d.merges = Some(list);
                }
            }
            "tokenizer.ggml.scores" => {
                let V::A(a) = v else { continue };
                d.scores = Some(a.into_iter().map(|x| if let V::F(f) = x { f as f32 } else { 0.0 }).collect());
            }
            "tokenizer.ggml.token_type" => {
                let V::A(a) = v else { continue };
                d.token_types = Some(a.into_iter().map(|x| if let V::I(i) = x { i as i32 } else { 0 }).collect());
            }
            "tokenizer.ggml.bos_token_id" => d.bos_id = id(v),
            "tokenizer.ggml.eos_token_id" => d.eos_id = id(v),
            "tokenizer.ggml.eot_token_id" => d.eot_id = id(v),
            "tokenizer.ggml.unknown_token_id" => d.unk_id = id(v),
            "tokenizer.ggml.padding_token_id" => d.pad_id = id(v),
            "tokenizer.ggml.add_bos_token" => d.add_bos = b(v),
            "tokenizer.ggml.add_eos_token" => d.add_eos = b(v),
            "tokenizer.ggml.add_space_prefix" => d.add_space_prefix = b(v),
            _ => {}
        }
    }
    Ok(d)
}
