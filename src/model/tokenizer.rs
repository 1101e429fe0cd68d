//! Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`, model `gpt2`).
//!
//! In: the token list, merges and token types of the GGUF. Out: `encode(text) -> ids`,
//! `decode(ids) -> text`. Pre-tokenization follows SmolLM2 (`pre = smollm`): digits split
//! one by one, then the GPT-2 regex; control tokens (`<|im_start|>`...) are matched whole.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use fancy_regex::Regex;

use crate::error::{Error, Result};

pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    specials: Vec<(String, u32)>,
    pre: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    pub bos: u32,
    pub eos: u32,
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    out
}

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value> {
    ct.metadata
        .get(key)
        .ok_or_else(|| Error::Model(format!("GGUF metadata lacks {key}")))
}

fn strings(v: &gguf_file::Value, key: &str) -> Result<Vec<String>> {
    let err = |_| Error::Model(format!("GGUF {key}: not an array of strings"));
    v.to_vec()
        .map_err(err)?
        .iter()
        .map(|s| s.to_string().cloned().map_err(err))
        .collect()
}

impl Tokenizer {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let model = md(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| Error::Model(e.to_string()))?;
        if model != "gpt2" {
            return Err(Error::Model(format!(
                "tokenizer model '{model}' unsupported (gpt2 byte-level BPE only)"
            )));
        }
        let tokens = strings(md(ct, "tokenizer.ggml.tokens")?, "tokens")?;
        let merges = strings(md(ct, "tokenizer.ggml.merges")?, "merges")?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| Error::Model(e.to_string()))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let get_u32 = |k: &str, d: u32| {
            ct.metadata
                .get(k)
                .and_then(|v| v.to_u32().ok())
                .unwrap_or(d)
        };
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (r, m) in merges.iter().enumerate() {
            if let Some((a, b)) = m.split_once(' ') {
                ranks.insert((a.to_string(), b.to_string()), r as u32);
            }
        }
        // Control (3) and user-defined (4) tokens are matched literally, longest first.
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        specials.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        let pre =
            Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
                .expect("regex");
        let byte_to_char = byte_chars();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Ok(Tokenizer {
            tokens,
            ids,
            ranks,
            specials,
            pre,
            byte_to_char,
            char_to_byte,
            bos: get_u32("tokenizer.ggml.bos_token_id", 1),
            eos: get_u32("tokenizer.ggml.eos_token_id", 2),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // Next special token, if any.
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|p| (p, s.len(), *id)))
                .min_by_key(|&(p, l, _)| (p, std::cmp::Reverse(l)));
            let (plain, special) = match next {
                Some((p, l, id)) => (&rest[..p], Some((l, id, p))),
                None => (rest, None),
            };
            self.encode_plain(plain, &mut out)?;
            match special {
                Some((l, id, p)) => {
                    out.push(id);
                    rest = &rest[p + l..];
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for m in self.pre.find_iter(text) {
            let piece = m
                .map_err(|e| Error::Model(format!("tokenizer regex: {e}")))?
                .as_str();
            let mut syms: Vec<String> = piece
                .bytes()
                .map(|b| self.byte_to_char[b as usize].to_string())
                .collect();
            // Merge the lowest-ranked adjacent pair until none is in the merge list.
            loop {
                let best = (0..syms.len().saturating_sub(1))
                    .filter_map(|i| {
                        self.ranks
                            .get(&(syms[i].clone(), syms[i + 1].clone()))
                            .map(|&r| (r, i))
                    })
                    .min();
                let Some((_, i)) = best else { break };
                let merged = format!("{}{}", syms[i], syms[i + 1]);
                syms[i] = merged;
                syms.remove(i + 1);
            }
            for s in syms {
                let id = self
                    .ids
                    .get(&s)
                    .ok_or_else(|| Error::Model(format!("tokenizer: no token for '{s}'")))?;
                out.push(*id);
            }
        }
        Ok(())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(t) = self.tokens.get(id as usize) else {
                continue;
            };
            if self.specials.iter().any(|(_, s)| *s == id) {
                bytes.extend_from_slice(t.as_bytes());
                continue;
            }
            for c in t.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
