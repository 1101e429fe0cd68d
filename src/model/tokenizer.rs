//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), and the chat format of the
//! model family they come with.
//!
//! In: the token list, merges or scores and token types of the GGUF. Out: `encode(text) ->
//! ids`, `decode(ids) -> text`, `ChatFormat`. Two kinds: `gpt2` byte-level BPE with
//! SmolLM2's pre-tokenization (`pre = smollm`: digits split one by one, then the GPT-2
//! regex), and `llama` SentencePiece BPE by scores as llama.cpp runs it (Gemma 3: spaces as
//! U+2581, highest-scoring adjacent pair merged first, bytes of unknown characters as
//! `<0xXX>` tokens). Control and user-defined tokens (`<|im_start|>`, `<start_of_turn>`,
//! Gemma's runs of newlines) are matched whole, longest first.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use fancy_regex::Regex;

use crate::error::{Error, Result};

/// How plain text (between special tokens) becomes tokens.
enum Kind {
    /// Byte-level BPE: pieces of the pre-tokenizer regex, bytes mapped to printable
    /// characters, merged by rank.
    Bpe {
        ranks: HashMap<(String, String), u32>,
        pre: Box<Regex>,
        byte_to_char: [char; 256],
        char_to_byte: HashMap<char, u8>,
    },
    /// SentencePiece BPE: characters merged by the score of the token they make.
    Spm { scores: Vec<f32> },
}

/// The chat markup of a model family: SmolLM2's ChatML (with its default system turn) or
/// Gemma's turns (no system role: a system message is a user turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    ChatMl,
    Gemma,
}

impl ChatFormat {
    /// What a conversation starts with, before its first turn; `system`: whether the
    /// conversation brings its own system message (else SmolLM's default one goes first).
    pub fn begin(self, system: bool) -> &'static str {
        match (self, system) {
            (ChatFormat::ChatMl, false) => "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
            (ChatFormat::ChatMl, true) => "",
            (ChatFormat::Gemma, _) => "<bos>",
        }
    }

    /// The opening of a turn of `role` (system, user or assistant).
    pub fn open(self, role: &str) -> String {
        match self {
            ChatFormat::ChatMl => format!("<|im_start|>{role}\n"),
            ChatFormat::Gemma if role == "assistant" => "<start_of_turn>model\n".into(),
            ChatFormat::Gemma => "<start_of_turn>user\n".into(),
        }
    }

    /// What closes a turn; its first token also ends the model's answer.
    pub fn close(self) -> &'static str {
        match self {
            ChatFormat::ChatMl => "<|im_end|>\n",
            ChatFormat::Gemma => "<end_of_turn>\n",
        }
    }

    /// The token that ends an answer, besides the tokenizer's end of sequence.
    pub fn end_token(self) -> &'static str {
        match self {
            ChatFormat::ChatMl => "<|im_end|>",
            ChatFormat::Gemma => "<end_of_turn>",
        }
    }

    /// Everything before a single user message's text (default system turn included).
    pub fn prompt_head(self) -> String {
        self.begin(false).to_string() + &self.open("user")
    }

    /// Everything after it, up to where the model's answer starts.
    pub fn prompt_tail(self) -> String {
        self.close().to_string() + &self.open("assistant")
    }
}

pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    kind: Kind,
    specials: Vec<(String, u32)>,
    pub bos: u32,
    pub eos: u32,
    pub chat: ChatFormat,
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
            .map_err(|e| Error::Model(e.to_string()))?
            .clone();
        let tokens = strings(md(ct, "tokenizer.ggml.tokens")?, "tokens")?;
        let numbers = |key: &str| -> Result<Option<&Vec<gguf_file::Value>>> {
            match ct.metadata.get(key) {
                Some(v) => Ok(Some(v.to_vec().map_err(|e| Error::Model(e.to_string()))?)),
                None => Ok(None),
            }
        };
        let types: Vec<i32> = match numbers("tokenizer.ggml.token_type")? {
            Some(v) => v.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let kind = match model.as_str() {
            "gpt2" => {
                let merges = strings(md(ct, "tokenizer.ggml.merges")?, "merges")?;
                let mut ranks = HashMap::with_capacity(merges.len());
                for (r, m) in merges.iter().enumerate() {
                    if let Some((a, b)) = m.split_once(' ') {
                        ranks.insert((a.to_string(), b.to_string()), r as u32);
                    }
                }
                let byte_to_char = byte_chars();
                Kind::Bpe {
                    ranks,
                    pre: Box::new(
                        Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
                            .expect("regex"),
                    ),
                    char_to_byte: byte_to_char
                        .iter()
                        .enumerate()
                        .map(|(b, &c)| (c, b as u8))
                        .collect(),
                    byte_to_char,
                }
            }
            "llama" => {
                let scores = numbers("tokenizer.ggml.scores")?
                    .ok_or_else(|| Error::Model("GGUF metadata lacks tokenizer.ggml.scores".into()))?
                    .iter()
                    .map(|v| v.to_f32().unwrap_or(0.0))
                    .collect::<Vec<f32>>();
                if scores.len() != tokens.len() {
                    return Err(Error::Model(format!(
                        "GGUF tokenizer: {} scores for {} tokens",
                        scores.len(),
                        tokens.len()
                    )));
                }
                Kind::Spm { scores }
            }
            _ => {
                return Err(Error::Model(format!(
                    "tokenizer model '{model}' unsupported (gpt2 byte-level BPE or llama SentencePiece)"
                )))
            }
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
        // Control (3) and user-defined (4) tokens are matched literally, longest first.
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        specials.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        let chat = match ids.contains_key("<start_of_turn>") {
            true => ChatFormat::Gemma,
            false => ChatFormat::ChatMl,
        };
        Ok(Tokenizer {
            tokens,
            ids,
            kind,
            specials,
            bos: get_u32("tokenizer.ggml.bos_token_id", 1),
            eos: get_u32("tokenizer.ggml.eos_token_id", 2),
            chat,
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
        let (ranks, pre, byte_to_char) = match &self.kind {
            Kind::Bpe {
                ranks,
                pre,
                byte_to_char,
                ..
            } => (ranks, pre, byte_to_char),
            Kind::Spm { scores } => return self.encode_spm(scores, text, out),
        };
        for m in pre.find_iter(text) {
            let piece = m
                .map_err(|e| Error::Model(format!("tokenizer regex: {e}")))?
                .as_str();
            let mut syms: Vec<String> = piece
                .bytes()
                .map(|b| byte_to_char[b as usize].to_string())
                .collect();
            // Merge the lowest-ranked adjacent pair until none is in the merge list.
            loop {
                let best = (0..syms.len().saturating_sub(1))
                    .filter_map(|i| {
                        ranks
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

    /// SentencePiece BPE as llama.cpp's `llm_tokenizer_spm` runs it: spaces escaped to
    /// U+2581, the text split into characters, then repeatedly the adjacent pair whose
    /// concatenation is the highest-scoring token merged (ties: leftmost first); a
    /// character no token spells becomes its UTF-8 bytes as `<0xXX>` tokens.
    fn encode_spm(&self, scores: &[f32], text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let text = text.replace(' ', "\u{2581}");
        // Symbols are contiguous slices of `text` (a merge widens the left one); pair[i] is
        // the token and score of symbols i and i + 1 together, if a token spells them.
        let mut spans: Vec<(usize, usize)> = text
            .char_indices()
            .map(|(i, c)| (i, i + c.len_utf8()))
            .collect();
        let pair_of = |spans: &[(usize, usize)], i: usize| -> Option<f32> {
            let id = *self.ids.get(&text[spans[i].0..spans[i + 1].1])?;
            Some(scores[id as usize])
        };
        let mut pair: Vec<Option<f32>> = (0..spans.len() - 1).map(|i| pair_of(&spans, i)).collect();
        loop {
            let mut best: Option<(f32, usize)> = None;
            for (i, p) in pair.iter().enumerate() {
                if let Some(sc) = *p {
                    if best.is_none_or(|(b, _)| sc > b) {
                        best = Some((sc, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            spans[i].1 = spans[i + 1].1;
            spans.remove(i + 1);
            pair.remove(i);
            if i < pair.len() {
                pair[i] = pair_of(&spans, i);
            }
            if i > 0 {
                pair[i - 1] = pair_of(&spans, i - 1);
            }
        }
        for (a, b) in spans {
            let piece = &text[a..b];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        let name = format!("<0x{byte:02X}>");
                        let id = self.ids.get(&name).ok_or_else(|| {
                            Error::Model(format!(
                                "tokenizer: no token for '{piece}' nor byte {name}"
                            ))
                        })?;
                        out.push(*id);
                    }
                }
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
            match &self.kind {
                Kind::Bpe { char_to_byte, .. } => {
                    for c in t.chars() {
                        match char_to_byte.get(&c) {
                            Some(&b) => bytes.push(b),
                            None => bytes.extend_from_slice(c.to_string().as_bytes()),
                        }
                    }
                }
                Kind::Spm { .. } => match spm_byte(t) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(t.replace('\u{2581}', " ").as_bytes()),
                },
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The byte a SentencePiece byte-fallback token (`<0x0A>`) stands for.
fn spm_byte(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}
