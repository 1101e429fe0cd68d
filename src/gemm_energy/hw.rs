//! Hardware models a GEMM's operands are replayed into, and the K order that minimizes a
//! model's switching.
//!
//! In: `Operands` and a sample of output elements. Out: toggles per MAC operation for each
//! hardware model: the RTL designs of rtl/ through `sim` (serial MACs that see consecutive K
//! elements; W-lane dot-product units whose lanes each see every W-th element), and two
//! operand-bit-flip counts that need no RTL (bits that change between the operands one
//! multiplier input sees in a row: serial, and per lane). bf16 has a serial RTL MAC (fp32
//! accumulation, rounded per add) and the fused W-lane dot unit (rounded once per slice);
//! f16 has only the bit-flip models.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::gemm_energy::patterns::{Dtype, Operands};
use crate::sim::gate::GateOptions;
use crate::sim::{simulate_gate, simulate_lanes, Counting, Design};
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
        }
    }

    /// Every model that applies to `dtype`, with dot units of `lanes` lanes, and with
    /// `gate` the netlists of its RTL designs (but the sign-magnitude experiment).
    pub fn for_dtype(dtype: Dtype, lanes: u32, gate: bool) -> Vec<HwModel> {
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
        v.extend([HwModel::BitFlips(1), HwModel::BitFlips(lanes)]);
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
    let mask = if dtype.bits() == 8 { 0xff } else { 0xffff };
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

/// Toggles per MAC of every model in `models` on the sampled dot products of `ops`.
pub fn toggles_per_mac(
    ops: &Operands,
    outputs: &[(usize, usize)],
    models: &[HwModel],
) -> Result<BTreeMap<String, f64>> {
    let stream = dot_stream(ops, outputs)?;
    let mut out = BTreeMap::new();
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
        };
        out.insert(m.name(), v);
    }
    Ok(out)
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
