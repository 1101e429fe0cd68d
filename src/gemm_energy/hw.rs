//! Hardware models a GEMM's operands are replayed into, and the K order that minimizes a
//! model's switching.
//!
//! In: `Operands` and a sample of output elements. Out: toggles per MAC operation for each
//! hardware model: the RTL designs of rtl/ through `sim` (serial MACs that see consecutive K
//! elements; W-lane dot-product units whose lanes each see every W-th element), and two
//! operand-bit-flip counts that need no RTL (bits that change between the operands one
//! multiplier input sees in a row: serial, and per lane). bf16 has a serial RTL MAC (fp32
//! accumulation, rounded per add) and the fused W-lane dot unit (rounded once per slice);
//! f16 has only the bit-flip models. int8 also replays whole output blocks into the
//! tile-level MMA unit (`sim::tile`) in each traversal order asked for, with toggles per MAC
//! by signal group (A delivery, B delivery, products, adder tree, accumulator).
//!
//! Baselines with no RTL, declared here before anything is fitted (`HwModel::is_baseline`):
//! bit flips along K (serial and per lane), bit flips across neighbouring rows of A and of
//! B, operand popcount, zero fraction.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::gemm_energy::patterns::{Dtype, Operands};
use crate::sim::gate::GateOptions;
use crate::sim::tile::{simulate_tiles, TileOperands, TileOrder};
use crate::sim::{simulate_gate, simulate_lanes, Counting, Design, DEFAULT_LANES};
use crate::trace::{ElemFormat, OperandStream};

/// One hardware model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwModel {
    /// An RTL design (lanes: 1 for a serial MAC).
    Rtl(Design, u32),
    /// Operand bits that flip between consecutive operands of one multiplier input, with
    /// `lanes` multipliers (1 = serial).
    BitFlips(u32),
    /// A design's yosys netlist (lanes: 1 for a serial MAC): datapath toggles of every net
    /// per MAC.
    Gate(Design, u32),
    /// The same netlist's energy estimate per MAC (fJ, the shipped cell table).
    GateEnergy(Design, u32),
    /// The tile-level MMA unit (rtl/mma_tile.v, 16 lanes per cell) walking sampled output
    /// blocks in this order: datapath toggles per MAC (and per signal group).
    Tile(TileOrder),
    /// Baseline: operand bits that differ between neighbouring rows of A (and of B) at the
    /// same k, per element: what a unit that steps across rows would see, with no RTL.
    RowFlips,
    /// Baseline: set bits per operand element (A and B).
    Popcount,
    /// Baseline: the fraction of zero elements (mean of A's and B's).
    ZeroFraction,
}

impl HwModel {
    pub fn name(self) -> String {
        match self {
            HwModel::Rtl(d, l) if d.is_dot() => format!("{} x{l} (RTL)", d.name()),
            HwModel::Rtl(d, _) => format!("{} MAC (RTL)", d.name()),
            HwModel::BitFlips(1) => "operand bit flips serial".into(),
            HwModel::BitFlips(l) => format!("operand bit flips x{l}"),
            HwModel::Gate(d, l) if d.is_dot() => format!("{} x{l} (gate)", d.name()),
            HwModel::GateEnergy(d, l) if d.is_dot() => format!("{} x{l} (gate, fJ)", d.name()),
            HwModel::Gate(d, _) => format!("{} MAC (gate)", d.name()),
            HwModel::GateEnergy(d, _) => format!("{} MAC (gate, fJ)", d.name()),
            HwModel::Tile(o) => format!("mma-tile {o} (RTL)"),
            HwModel::RowFlips => "operand bit flips across rows".into(),
            HwModel::Popcount => "operand popcount".into(),
            HwModel::ZeroFraction => "zero fraction".into(),
        }
    }

    /// A model declared as a baseline: no RTL behind it.
    pub fn is_baseline(self) -> bool {
        matches!(
            self,
            HwModel::BitFlips(_) | HwModel::RowFlips | HwModel::Popcount | HwModel::ZeroFraction
        )
    }

    /// Every model that applies to `dtype`, with dot units of `lanes` lanes, with `gate`
    /// the netlists of its RTL designs (but the sign-magnitude experiment), and (int8) the
    /// tile unit in each of `orders`; then the baselines.
    pub fn for_dtype(dtype: Dtype, lanes: u32, gate: bool, orders: &[TileOrder]) -> Vec<HwModel> {
        let mut v = Vec::new();
        // Every design of the catalogue that multiplies this dtype's operands: serial MACs
        // at one lane, dot units at `lanes` (f16 has no RTL design).
        let format = match dtype {
            Dtype::Int8 => Some(ElemFormat::I8),
            Dtype::Bf16 => Some(ElemFormat::Bf16),
            Dtype::F16 => None,
        };
        if let Some(f) = format {
            v.extend(
                Design::all()
                    .filter(|d| d.takes(f, lanes))
                    .map(|d| HwModel::Rtl(d, if d.is_dot() { lanes } else { 1 })),
            );
        }
        if dtype == Dtype::Int8 {
            v.extend(orders.iter().map(|&o| HwModel::Tile(o)));
        }
        v.extend([
            HwModel::BitFlips(1),
            HwModel::BitFlips(lanes),
            HwModel::RowFlips,
            HwModel::Popcount,
            HwModel::ZeroFraction,
        ]);
        if gate {
            // The RTL designs above as netlists (a first gate-level run synthesizes each:
            // minutes for 16 lanes, see BENCHMARKS.md).
            let designs: Vec<(Design, u32)> = v
                .iter()
                .filter_map(|m| match *m {
                    HwModel::Rtl(d, l) if !d.experiment => Some((d, l)),
                    _ => None,
                })
                .collect();
            v.extend(
                designs
                    .into_iter()
                    .flat_map(|(d, l)| [HwModel::Gate(d, l), HwModel::GateEnergy(d, l)]),
            );
        }
        v
    }
}

/// Output elements (m, n) whose dot products the hardware models replay: `count` of them,
/// spread over the rows of A and of B.
pub fn sample_outputs(ops: &Operands, count: usize) -> Vec<(usize, usize)> {
    let (m, n) = (ops.shape.m, ops.shape.n);
    (0..count)
        .map(|i| {
            (
                (i * m / count.max(1)) % m,
                ((i * 7 + 3) * n / count.max(1)) % n,
            )
        })
        .collect()
}

/// The pairs (A[m][k], B[n][k]) of the sampled dot products, in K order: what a serial MAC
/// consumes; a dot unit takes them in K-slices.
pub fn dot_stream(ops: &Operands, outputs: &[(usize, usize)]) -> Result<OperandStream> {
    let k = ops.shape.k;
    let mut pairs = Vec::with_capacity(outputs.len() * k);
    for &(m, n) in outputs {
        let (a, b) = (&ops.a[m * k..(m + 1) * k], &ops.b[n * k..(n + 1) * k]);
        pairs.extend(a.iter().copied().zip(b.iter().copied()));
    }
    let fmt = ops.dtype.format();
    OperandStream::with_formats(
        fmt,
        fmt,
        &format!("{} GEMM", ops.dtype.name()),
        pairs,
        serde_json::json!({"source": "gemm-energy", "dot_len": k}),
    )
}

/// Bits that change between consecutive operands of each multiplier input, per MAC:
/// lane j of a `lanes`-wide unit sees elements j, j+lanes, ... of each dot product.
pub fn bit_flips_per_mac(s: &OperandStream, dtype: Dtype, lanes: usize) -> f64 {
    let k = s.dot_len().unwrap_or(s.pairs.len()).max(1);
    let mask = mask(dtype);
    let mut flips = 0u64;
    for dot in s.pairs.chunks(k) {
        for (i, p) in dot.iter().enumerate().skip(lanes) {
            let q = dot[i - lanes];
            flips += ((p.0 ^ q.0) as u16 as u32 & mask).count_ones() as u64
                + ((p.1 ^ q.1) as u16 as u32 & mask).count_ones() as u64;
        }
    }
    flips as f64 / s.pairs.len().max(1) as f64
}

/// What the hardware models counted on one pattern.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Toggles per MAC (or the baseline's value) per model name.
    pub toggles: BTreeMap<String, f64>,
    /// Per model with signal groups (the tile unit): toggles per MAC per group.
    pub groups: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Every model in `models` on `ops`: the dot-product designs on the sampled dot products
/// `outputs`, the tile unit on the sampled output blocks `blocks`.
pub fn toggles_per_mac(
    ops: &Operands,
    outputs: &[(usize, usize)],
    blocks: &[(usize, usize)],
    models: &[HwModel],
) -> Result<Counts> {
    let stream = dot_stream(ops, outputs)?;
    let mut out = Counts::default();
    for &m in models {
        let v = match m {
            HwModel::Rtl(d, lanes) => {
                simulate_lanes(d, lanes, &stream, &Counting::Fast, &mut |_| {})
                    .map_err(|e| {
                        Error::Sim(format!(
                            "{e} (K = {} must be a multiple of the lane count {lanes})",
                            ops.shape.k
                        ))
                    })?
                    .toggles_per_pair
            }
            HwModel::BitFlips(lanes) => bit_flips_per_mac(&stream, ops.dtype, lanes as usize),
            HwModel::Gate(d, lanes) | HwModel::GateEnergy(d, lanes) => {
                let r = simulate_gate(d, lanes, &stream, &GateOptions::default(), &mut |_| {})?;
                match (m, r.gate) {
                    (HwModel::GateEnergy(..), Some(g)) => g.energy_fj_per_pair,
                    _ => r.toggles_per_pair,
                }
            }
            HwModel::Tile(order) => {
                let t = TileOperands {
                    a: &ops.a,
                    b: &ops.b,
                    m: ops.shape.m,
                    n: ops.shape.n,
                    k: ops.shape.k,
                };
                let run = simulate_tiles(&t, blocks, order, DEFAULT_LANES)?;
                out.groups.insert(
                    m.name(),
                    run.per_mac
                        .iter()
                        .filter(|(g, _)| **g != "operand ports")
                        .map(|(g, v)| (g.to_string(), *v))
                        .collect(),
                );
                run.datapath_per_mac
            }
            HwModel::RowFlips => row_flips(ops),
            HwModel::Popcount => popcount(ops),
            HwModel::ZeroFraction => {
                let z = |x: &[i16]| {
                    x.iter().filter(|&&v| ops.dtype.format().is_zero(v)).count() as f64
                        / x.len().max(1) as f64
                };
                (z(&ops.a) + z(&ops.b)) / 2.0
            }
        };
        out.toggles.insert(m.name(), v);
    }
    Ok(out)
}

/// The bits of one element that can flip (8 for int8, 16 for the 16-bit floats).
fn mask(dtype: Dtype) -> u32 {
    if dtype.bits() == 8 {
        0xff
    } else {
        0xffff
    }
}

/// Rows of a matrix the row baselines look at: the first 256 (all of them if fewer).
const ROW_SAMPLE: usize = 256;

/// Bits that differ between neighbouring rows at the same k, per element, A's plus B's.
pub fn row_flips(ops: &Operands) -> f64 {
    let (k, mask) = (ops.shape.k, mask(ops.dtype));
    let per = |x: &[i16], rows: usize| -> f64 {
        let rows = rows.min(ROW_SAMPLE);
        if rows < 2 {
            return 0.0;
        }
        let flips: u64 = (0..rows - 1)
            .map(|r| {
                x[r * k..(r + 1) * k]
                    .iter()
                    .zip(&x[(r + 1) * k..(r + 2) * k])
                    .map(|(&p, &q)| ((p ^ q) as u16 as u32 & mask).count_ones() as u64)
                    .sum::<u64>()
            })
            .sum();
        flips as f64 / ((rows - 1) * k) as f64
    };
    per(&ops.a, ops.shape.m) + per(&ops.b, ops.shape.n)
}

/// Set bits per element over the first rows of A and of B, A's plus B's.
pub fn popcount(ops: &Operands) -> f64 {
    let (k, mask) = (ops.shape.k, mask(ops.dtype));
    let per = |x: &[i16], rows: usize| -> f64 {
        let e = &x[..rows.min(ROW_SAMPLE) * k];
        e.iter()
            .map(|&v| (v as u16 as u32 & mask).count_ones() as u64)
            .sum::<u64>() as f64
            / e.len().max(1) as f64
    };
    per(&ops.a, ops.shape.m) + per(&ops.b, ops.shape.n)
}

/// A K order chosen to minimize operand switching for a unit of `lanes` multipliers: each
/// position takes the unused K-column nearest (Hamming distance over a sample of rows of A
/// and B) to the column its lane saw last, greedily. Column 0 first.
pub fn greedy_k_order(ops: &Operands, lanes: usize, sample_rows: usize) -> Vec<usize> {
    let k = ops.shape.k;
    let per_word = (64 / ops.dtype.bits()) as usize;
    let mask = if ops.dtype.bits() == 8 {
        0xffu64
    } else {
        0xffff
    };
    let rows = |n: usize| -> Vec<usize> {
        let s = sample_rows.min(n);
        (0..s).map(|i| i * n / s).collect()
    };
    let (ra, rb) = (rows(ops.shape.m), rows(ops.shape.n));
    // Signature of column j: its elements in the sampled rows, packed into u64 words.
    let values = |j: usize| {
        ra.iter()
            .map(move |&r| ops.a[r * k + j])
            .chain(rb.iter().map(move |&r| ops.b[r * k + j]))
    };
    let words = (ra.len() + rb.len()).div_ceil(per_word);
    let mut sig = vec![0u64; k * words];
    for j in 0..k {
        for (i, v) in values(j).enumerate() {
            sig[j * words + i / per_word] |=
                (v as u64 & mask) << ((i % per_word) as u64 * ops.dtype.bits() as u64);
        }
    }
    let dist = |x: usize, y: usize| -> u32 {
        sig[x * words..(x + 1) * words]
            .iter()
            .zip(&sig[y * words..(y + 1) * words])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    };
    let mut used = vec![false; k];
    let mut order = Vec::with_capacity(k);
    for p in 0..k {
        let next = if p == 0 {
            0
        } else {
            let prev = order[if p >= lanes { p - lanes } else { p - 1 }];
            (0..k)
                .filter(|&j| !used[j])
                .min_by_key(|&j| dist(prev, j))
                .expect("a column is left")
        };
        used[next] = true;
        order.push(next);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_energy::patterns::{find, Shape};

    #[test]
    fn bit_flips_count_what_changes_per_lane() {
        let pairs = vec![(0, 0), (1, 0), (3, 0), (3, -1)];
        let s = OperandStream::new(8, pairs, serde_json::json!({"dot_len": 4})).unwrap();
        // serial: 0->1 (1 bit), 1->3 (1), 3->3 + 0->-1 (8): 10 flips over 4 MACs.
        assert_eq!(bit_flips_per_mac(&s, Dtype::Int8, 1), 2.5);
        // two lanes: 0->3 (2), 1->3 (1) + 0->0xff (8): 11 / 4.
        assert_eq!(bit_flips_per_mac(&s, Dtype::Int8, 2), 2.75);
    }

    #[test]
    fn greedy_order_is_a_permutation_that_lowers_flips() {
        let s = Shape {
            m: 16,
            k: 256,
            n: 16,
        };
        let ops = find("normal").unwrap().operands(Dtype::Int8, s, 3);
        let order = greedy_k_order(&ops, 4, 16);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..256).collect::<Vec<_>>());
        let outs = sample_outputs(&ops, 16);
        let before = bit_flips_per_mac(&dot_stream(&ops, &outs).unwrap(), Dtype::Int8, 4);
        let after = bit_flips_per_mac(
            &dot_stream(&ops.permute_k(&order), &outs).unwrap(),
            Dtype::Int8,
            4,
        );
        assert!(after < before * 0.9, "{after} vs {before}");
    }
}
