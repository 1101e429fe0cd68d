//! The continuous-batching engine: one thread owns the model and steps every active
//! sequence at once.
//!
//! In: `Job`s (prompt token ids, sampling, max tokens, stop strings, a channel for the
//! answer) from the HTTP side. Out: per job, `Event`s: each new piece of text, then `Done`
//! with the finish reason and token counts (or `Failed`).
//!
//! The model's KV cache is reserved for `max_batch` rows (`Llama::reserve_kv`); a job takes
//! a free row at a step boundary and leaves it when it finishes. Between decode steps each
//! joining job runs its prompt into its row in chunks of up to `PREFILL_CHUNK` tokens, one
//! chunk per step boundary (`Llama::forward_prefill_row`, causal within the chunk), and its
//! first token comes from the last chunk; every decode step is then one
//! `Llama::forward_rows` over all rows, each at its own position. Rows with nothing to
//! decode (free, or still in their prompt) run a placeholder at the row's last position,
//! which every real position masks until the row's own sequence writes it. A job whose
//! receiver is gone (the client disconnected) is retired at the next step boundary.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::error::Result;
use crate::model::{Llama, Tokenizer};
use crate::stats::Rng;

/// How a job picks its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Softmax at this temperature, from a generator seeded by the job.
    Temperature {
        t: f32,
        seed: u64,
    },
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    /// Also stop at the tokenizer's end of sequence (and, for chat, the end of a turn: `ChatFormat::end_token`).
    pub stop_ids: Vec<u32>,
    pub events: UnboundedSender<Event>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

/// What /metrics reports, updated by the engine.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub tokens: AtomicU64,
    pub active: AtomicUsize,
    pub waiting: AtomicUsize,
    pub steps: AtomicU64,
}

/// Prompt tokens a joining request runs into its row per step boundary.
pub const PREFILL_CHUNK: usize = 128;

/// One row's sequence.
struct Seq {
    job: Job,
    /// The prompt, then every generated token.
    ids: Vec<u32>,
    /// Tokens of `ids` whose keys and values are in the row (its next position).
    fed: usize,
    generated: Vec<u32>,
    /// Text already sent, so each event carries only what is new.
    sent: String,
    rng: Rng,
}

impl Seq {
    /// Past its prompt, with a generated token not yet fed.
    fn decoding(&self) -> bool {
        self.fed >= self.job.prompt.len() && self.fed + 1 == self.ids.len()
    }
}

pub struct Engine {
    model: Llama,
    tok: Arc<Tokenizer>,
    rows: Vec<Option<Seq>>,
    capacity: usize,
    counters: Arc<Counters>,
}

impl Engine {
    pub fn new(
        mut model: Llama,
        tok: Arc<Tokenizer>,
        max_batch: usize,
        capacity: usize,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        model.reserve_kv(max_batch, capacity)?;
        Ok(Engine {
            model,
            tok,
            rows: (0..max_batch).map(|_| None).collect(),
            capacity,
            counters,
        })
    }

    /// Serve jobs from `jobs` until it closes and every row is done (a drain).
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut queue: std::collections::VecDeque<Job> = Default::default();
        let mut open = true;
        loop {
            // Idle: block for the next job; busy: take what has arrived, without waiting.
            if self.rows.iter().all(Option::is_none) && queue.is_empty() {
                if !open {
                    return;
                }
                match jobs.recv_timeout(Duration::from_millis(100)) {
                    Ok(j) => queue.push_back(j),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(j) => queue.push_back(j),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.admit(&mut queue);
            if let Err(e) = self.step() {
                for row in self.rows.iter_mut() {
                    if let Some(s) = row.take() {
                        let _ = s.job.events.send(Event::Failed(e.to_string()));
                    }
                }
            }
        }
    }

    /// Give free rows to waiting jobs, oldest first.
    fn admit(&mut self, queue: &mut std::collections::VecDeque<Job>) {
        for row in self.rows.iter_mut().filter(|r| r.is_none()) {
            let Some(job) = queue.pop_front() else { break };
            if job.events.is_closed() {
                continue;
            }
            let seed = match job.sampling {
                Sampling::Temperature { seed, .. } => seed,
                Sampling::Greedy => 0,
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            *row = Some(Seq {
                ids: job.prompt.clone(),
                fed: 0,
                generated: Vec::new(),
                sent: String::new(),
                rng: Rng::new(seed),
                job,
            });
        }
        self.counters.waiting.store(queue.len(), Ordering::Relaxed);
        self.counters.active.store(
            self.rows.iter().filter(|r| r.is_some()).count(),
            Ordering::Relaxed,
        );
    }

    /// One prompt chunk for each row still in its prompt, then one decode step over every
    /// row; each row that got logits takes its next token, and finished rows are retired.
    fn step(&mut self) -> Result<()> {
        let mut done = vec![None; self.rows.len()];
        for slot in 0..self.rows.len() {
            let Some(s) = self.rows[slot]
                .as_mut()
                .filter(|s| s.fed < s.job.prompt.len())
            else {
                continue;
            };
            let end = (s.fed + PREFILL_CHUNK).min(s.job.prompt.len());
            let logits = self
                .model
                .forward_prefill_row(slot, &s.ids[s.fed..end], s.fed)?;
            s.fed = end;
            if end == s.job.prompt.len() {
                done[slot] = self.advance(slot, &first_row(&logits)?);
            }
        }
        if self.rows.iter().flatten().any(Seq::decoding) {
            let last = self.capacity - 1;
            let (tokens, positions): (Vec<u32>, Vec<usize>) = self
                .rows
                .iter()
                .map(|r| match r.as_ref().filter(|s| s.decoding()) {
                    Some(s) => (s.ids[s.fed], s.fed),
                    None => (0, last),
                })
                .unzip();
            let decoding: Vec<bool> = self
                .rows
                .iter()
                .map(|r| r.as_ref().is_some_and(Seq::decoding))
                .collect();
            let logits = self.model.forward_rows(&tokens, &positions)?;
            self.counters.steps.fetch_add(1, Ordering::Relaxed);
            let logits = logits
                .to_dtype(candle_core::DType::F32)
                .and_then(|l| l.to_vec2::<f32>())
                .map_err(crate::model::llama::me)?;
            let stepped: Vec<usize> = (0..self.rows.len())
                .filter(|&r| decoding[r] && done[r].is_none())
                .collect();
            for slot in stepped {
                if let Some(s) = self.rows[slot].as_mut() {
                    s.fed += 1;
                }
                done[slot] = self.advance(slot, &logits[slot]);
            }
        }
        // Free the finished rows and count them before answering: a client that has its
        // answer sees /metrics without its row.
        let finished: Vec<(Seq, Option<&'static str>)> = done
            .into_iter()
            .enumerate()
            .filter_map(|(slot, reason)| {
                let reason = reason?; // rows still going are left in place
                Some((self.rows[slot].take()?, reason))
            })
            .collect();
        self.counters.active.store(
            self.rows.iter().filter(|r| r.is_some()).count(),
            Ordering::SeqCst,
        );
        for (s, reason) in finished {
            if let Some(r) = reason {
                let _ = s.job.events.send(Event::Done {
                    finish_reason: r,
                    prompt_tokens: s.job.prompt.len(),
                    completion_tokens: s.generated.len(),
                });
            }
        }
        Ok(())
    }

    /// Row `slot` takes its next token from `logits` and sends its text. Some(reason) when
    /// it is finished (Some(None): its client has gone), None while it goes on.
    #[allow(clippy::option_option)]
    fn advance(&mut self, slot: usize, logits: &[f32]) -> Option<Option<&'static str>> {
        let s = self.rows[slot].as_mut()?;
        let next = pick(logits, s.job.sampling, &mut s.rng);
        s.ids.push(next);
        s.generated.push(next);
        self.counters.tokens.fetch_add(1, Ordering::Relaxed);
        match finish_reason(s, next, &self.tok, self.capacity) {
            Some(r) => Some(Some(r)),
            None if s.job.events.is_closed() => Some(None),
            None => None,
        }
    }
}

/// The one row of a [1, vocab] tensor, as f32.
fn first_row(logits: &candle_core::Tensor) -> Result<Vec<f32>> {
    let mut v = logits
        .to_dtype(candle_core::DType::F32)
        .and_then(|l| l.to_vec2::<f32>())
        .map_err(crate::model::llama::me)?;
    Ok(v.swap_remove(0))
}

/// Send the text the new token completes; the reason to stop, if any (an end-of-sequence
/// token, a stop string, max tokens, or the reserved context), after sending what precedes
/// a stop string.
fn finish_reason(s: &mut Seq, next: u32, tok: &Tokenizer, capacity: usize) -> Option<&'static str> {
    let eos = s.job.stop_ids.contains(&next);
    let text_ids = if eos {
        &s.generated[..s.generated.len() - 1]
    } else {
        &s.generated[..]
    };
    let text = tok.decode(text_ids);
    // A stop string ends the text where it starts; nothing of it is sent.
    let stop_at = s
        .job
        .stop
        .iter()
        .filter_map(|st| text.find(st.as_str()))
        .min();
    let upto = stop_at.unwrap_or(text.len());
    // Hold back an incomplete UTF-8 sequence (decode gives U+FFFD for it) until it completes.
    let visible = &text[..upto];
    let visible = visible
        .strip_suffix('\u{FFFD}')
        .filter(|_| !eos && stop_at.is_none())
        .unwrap_or(visible);
    if visible.len() > s.sent.len() && visible.starts_with(s.sent.as_str()) {
        let _ = s
            .job
            .events
            .send(Event::Text(visible[s.sent.len()..].to_string()));
        s.sent = visible.to_string();
    }
    if eos || stop_at.is_some() {
        Some("stop")
    } else if s.generated.len() >= s.job.max_tokens || s.ids.len() >= capacity {
        Some("length")
    } else {
        None
    }
}

/// The next token from one row's logits.
fn pick(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Temperature { t, .. } => {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> = logits
                .iter()
                .map(|&l| (((l - m) / t) as f64).exp())
                .collect();
            let mut u = rng.unit() * w.iter().sum::<f64>();
            for (i, x) in w.iter().enumerate() {
                u -= x;
                if u <= 0.0 {
                    return i as u32;
                }
            }
            argmax(logits)
        }
    }
}

/// The first index of the largest value (candle's argmax picks the same among equals).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_the_first_maximum_and_sampling_follows_the_weights() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        let mut rng = Rng::new(7);
        let logits = [0.0f32, (3f32).ln(), f32::NEG_INFINITY];
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| pick(&logits, Sampling::Temperature { t: 1.0, seed: 0 }, &mut rng) == 1)
            .count();
        // P(1) = 3/4; 20,000 draws: sd 0.003.
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.015, "{ones}");
        assert_eq!(pick(&logits, Sampling::Greedy, &mut rng), 1);
    }
}
