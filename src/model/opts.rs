//! Software optimizations of the forward pass as knobs: each can be switched off so that
//! what it does to latency and energy is measured rather than assumed (`perfwatt infer
//! --opt`, a `[axes] opts` list in a sweep). Every set gives the same greedy tokens
//! (tests/opts.rs): none of them but `graphs` changes an arithmetic result, only how it is
//! reached, and `graphs` only the order of some sums.
//!
//! In: a list such as `all`, `none`, `tiles,merged-proj` or `all,-inplace-kv`. Out: `Opts`,
//! written back in that canonical form (`none`, or the names in declaration order).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// CPU: Q4_1 weights repacked into 16-row tiles multiplied by AVX512-VNNI (or AVX2)
    /// with each tile reused by up to 4 activation rows (vendored candle, repack_q4_1.rs).
    Tiles,
    /// One matmul for q, k and v and one for gate and up (weights concatenated at load):
    /// one activation quantization and one thread-pool dispatch (CPU) or two kernels
    /// (CUDA) instead of 3+2. On CUDA only for quantized weights at up to 8 activation
    /// rows, where candle's mat-vec kernel computes each output row on its own: its tiled
    /// kernel and cuBLAS pick tiles by shape, and merged shapes there changed greedy
    /// tokens (H100, prefill and batch 16).
    MergedProj,
    /// A KV cache written in place into preallocated capacity instead of concatenated into
    /// a new tensor every step (which copies the whole cache per layer per token).
    InplaceKv,
    /// CUDA: decode steps with static shapes (the KV cache reserved for prompt + new
    /// tokens, each KV head stored once per query head; tokens, position, RoPE rows and
    /// attention mask read from device tensors), so that a step is the same kernels on the
    /// same buffers at every position: captured once as a CUDA graph and replayed per
    /// token, one launch instead of hundreds. Its attention spans the whole reserved
    /// cache, masked, so sums may associate differently than over the cached positions
    /// only: greedy tokens are checked on the GPU runs, and the static step on the CPU
    /// against the plain one within a tolerance (tests/opts.rs). Ignored on the CPU, which
    /// has no graphs and for which the static step is only more work.
    Graphs,
    /// CUDA: a residual add and the RMSNorm after it, the attention mask and softmax, and
    /// SiLU x up each as one kernel of perfwatt's (src/model/fused.cu) that repeats
    /// candle's two kernels' float operations in their order; in the static step the KV
    /// write (repeat + scatter, four kernels) as one, and greedy argmax without candle's
    /// per-element index arithmetic (same picks). Everywhere: the attention's
    /// 1/sqrt(head_dim) folded into the query's RoPE tables where it is a power of two
    /// (exact: scaling by a power of two commutes with rounding), one kernel less.
    Fused,
}

impl Opt {
    // Tried and left out: grouped-query attention without the per-head K/V copy (each KV
    // head's query heads as rows of one matmul). Faster, but the f32 gemm then sums in
    // another order and one greedy token of tests/opts.rs changed.
    pub const ALL: [Opt; 5] = [
        Opt::Tiles,
        Opt::MergedProj,
        Opt::InplaceKv,
        Opt::Graphs,
        Opt::Fused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Opt::Tiles => "tiles",
            Opt::MergedProj => "merged-proj",
            Opt::InplaceKv => "inplace-kv",
            Opt::Graphs => "graphs",
            Opt::Fused => "fused",
        }
    }

    fn bit(self) -> u8 {
        1 << Opt::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

/// A set of optimizations; `Opts::default()` is all of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opts(u8);

impl Opts {
    pub const NONE: Opts = Opts(0);

    pub fn all() -> Opts {
        Opts(Opt::ALL.iter().fold(0, |b, o| b | o.bit()))
    }

    pub fn has(self, o: Opt) -> bool {
        self.0 & o.bit() != 0
    }

    pub fn with(self, o: Opt, on: bool) -> Opts {
        if on {
            Opts(self.0 | o.bit())
        } else {
            Opts(self.0 & !o.bit())
        }
    }

    /// Each set with exactly one optimization off: what a sweep compares with `all`.
    pub fn all_but_one() -> Vec<Opts> {
        Opt::ALL
            .iter()
            .map(|&o| Opts::all().with(o, false))
            .collect()
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts::all()
    }
}

impl fmt::Display for Opts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Opt::ALL
            .iter()
            .filter(|&&o| self.has(o))
            .map(|o| o.name())
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl fmt::Debug for Opts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Opts {
    type Err = Error;

    /// `all`, `none`, names (`tiles,graphs`), and `-name` to take one away (`all,-tiles`).
    fn from_str(s: &str) -> Result<Opts> {
        let mut set = Opts::NONE;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (on, name) = match word.strip_prefix('-') {
                Some(n) => (false, n),
                None => (true, word),
            };
            set = match name {
                "all" if on => Opts::all(),
                "none" if on => Opts::NONE,
                _ => {
                    let o = Opt::ALL.iter().find(|o| o.name() == name).ok_or_else(|| {
                        let known: Vec<&str> = Opt::ALL.iter().map(|o| o.name()).collect();
                        Error::Config(format!(
                            "unknown optimization '{name}' in '{s}': all, none, or a list of {} (a leading - takes one away: all,-tiles)",
                            known.join(", ")
                        ))
                    })?;
                    set.with(*o, on)
                }
            };
        }
        Ok(set)
    }
}

impl serde::Serialize for Opts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Opts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Opts, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_in_canonical_form() {
        let all: Opts = "all".parse().unwrap();
        assert_eq!(all, Opts::all());
        assert_eq!(all.to_string(), "tiles,merged-proj,inplace-kv,graphs,fused");
        assert_eq!("none".parse::<Opts>().unwrap(), Opts::NONE);
        assert_eq!(Opts::NONE.to_string(), "none");
        let two: Opts = "inplace-kv, tiles".parse().unwrap();
        assert_eq!(two.to_string(), "tiles,inplace-kv");
        let minus: Opts = "all,-tiles".parse().unwrap();
        assert!(!minus.has(Opt::Tiles) && minus.has(Opt::InplaceKv));
        assert_eq!(minus.to_string().parse::<Opts>().unwrap(), minus);
        let e = "tiles,gqa-view".parse::<Opts>().unwrap_err().to_string();
        assert!(
            e.contains("unknown optimization 'gqa-view'") && e.contains("merged-proj"),
            "{e}"
        );
        assert_eq!(Opts::all_but_one().len(), Opt::ALL.len());
    }
}
