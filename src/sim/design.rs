//! A design of the catalogue (sim/designs.rs) as the rest of perfwatt uses it.
//!
//! In: a design's name (`dot-isolated`) or the catalogue itself. Out: `Design`, a handle on
//! one catalogue entry that knows which model parameters take a stream, how operands are
//! driven onto its ports, and what its accumulator must read (the Rust references).
//! Nothing here names a particular design: that is the catalogue's job.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::trace::{ElemFormat, OperandStream};

use super::catalogue::{Arith, DesignEntry, Params, ACC_W, DESIGNS};
use super::fp;

/// Lanes of a dot-product unit when none are asked for.
pub const DEFAULT_LANES: u32 = 16;

/// One design of the catalogue. Serialized as its name.
#[derive(Clone, Copy)]
pub struct Design(&'static DesignEntry);

impl std::ops::Deref for Design {
    type Target = DesignEntry;
    fn deref(&self) -> &DesignEntry {
        self.0
    }
}

impl PartialEq for Design {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for Design {}

impl fmt::Debug for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl FromStr for Design {
    type Err = Error;
    fn from_str(s: &str) -> Result<Design> {
        Design::catalogue().find(|d| d.name == s).ok_or_else(|| {
            let names: Vec<&str> = DESIGNS.iter().map(|d| d.name).collect();
            Error::Config(format!("unknown design '{s}': {}", names.join(", ")))
        })
    }
}

impl serde::Serialize for Design {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

impl<'de> serde::Deserialize<'de> for Design {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Design {
    /// Every design of the catalogue, the tile unit included.
    pub fn catalogue() -> impl Iterator<Item = Design> {
        DESIGNS.iter().map(Design)
    }

    /// Every design that replays an operand stream (what `sim --design all` runs), in
    /// catalogue order: all but the tile unit (src/sim/tile.rs replays whole blocks).
    pub fn all() -> impl Iterator<Item = Design> {
        Design::catalogue().filter(|d| !d.tile)
    }

    /// The design of this name (`baseline`, `dot`, ...).
    pub fn named(name: &str) -> Result<Design> {
        name.parse()
    }

    /// The serial integer MACs (one pair per cycle) the sweep and gemm-energy compare.
    pub fn integer_macs() -> impl Iterator<Item = Design> {
        Design::all().filter(|d| !d.is_dot() && !d.is_bf16())
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn module(self) -> &'static str {
        self.0.module
    }

    /// Multiplies bf16 operands into an fp32 accumulator.
    pub fn is_bf16(self) -> bool {
        matches!(self.arith, Arith::Bf16 | Arith::Bf16Fused)
    }

    /// Takes operands of `format` x `format` (an int8 or bf16 GEMM) at `lanes` lanes (1 for a
    /// serial MAC, which takes any lane count asked of the dot units).
    pub fn takes(self, format: ElemFormat, lanes: u32) -> bool {
        let fmt_ok = match format {
            ElemFormat::Bf16 => self.is_bf16(),
            ElemFormat::I8 => !self.is_bf16(),
            _ => false,
        };
        fmt_ok && (!self.is_dot() || self.lanes.contains(&lanes))
    }

    /// The model parameters that take `stream`, or why this design cannot.
    pub fn params_for(self, stream: &OperandStream, lanes: u32) -> Result<Params> {
        let (fa, fb) = (stream.a_format, stream.b_format);
        if self.tile {
            return Err(Error::Sim(format!(
                "{}: replays whole output blocks of a GEMM (perfwatt gemm-energy), not an operand stream",
                self.name()
            )));
        }
        let cannot = |why: String| {
            Err(Error::Sim(format!(
                "{}: cannot take a {} stream: {why}",
                self.name(),
                stream.format_name()
            )))
        };
        let params = |a_w, b_w, b_signed| Params {
            lanes: if self.is_dot() { lanes } else { 1 },
            a_w,
            b_w,
            a_signed: true,
            b_signed,
        };
        let p = if self.is_bf16() {
            if (fa, fb) != (ElemFormat::Bf16, ElemFormat::Bf16) {
                return cannot(format!("{} takes bf16 x bf16 operands", self.name()));
            }
            params(16, 16, true)
        } else if !stream.is_integer() {
            return cannot("an integer datapath needs integer operands".into());
        } else if !self.is_dot() {
            let w = stream.width as u32;
            params(w, w, true)
        } else {
            // int8 x uint4 when the weights are nibbles, else int8 x int8 when both fit.
            let fits8 =
                |f: ElemFormat| matches!(f, ElemFormat::I4 | ElemFormat::U4 | ElemFormat::I8);
            if !fits8(fa) {
                return cannot("activations wider than 8 bits".into());
            }
            match fb {
                ElemFormat::U4 => params(8, 4, false),
                f if fits8(f) => params(8, 8, true),
                _ => return cannot("operands wider than 8 bits (built: i8 x i8, i8 x u4)".into()),
            }
        };
        if !self.is_dot() {
            return Ok(p);
        }
        if !self.lanes.contains(&lanes) {
            return cannot(format!(
                "no model built for {lanes} lanes (built: {:?})",
                self.lanes
            ));
        }
        let l = lanes as usize;
        let misaligned = stream
            .dot_starts()
            .iter()
            .enumerate()
            .find(|&(i, &s)| s && i % l != 0)
            .map(|(i, _)| i)
            .or((!stream.pairs.len().is_multiple_of(l)).then_some(stream.pairs.len()));
        if let Some(i) = misaligned {
            return cannot(format!(
                "the dot product length (K) must be a multiple of the lane count {lanes}: a dot product starts or the stream ends at pair {i}"
            ));
        }
        Ok(p)
    }

    /// Bits per lane of a_i and b_i.
    pub(super) fn lane_widths(self, p: Params) -> (u32, u32) {
        (
            self.signal_width(p, "a_i") / p.lanes,
            self.signal_width(p, "b_i") / p.lanes,
        )
    }

    /// The bits driven onto one lane of a_i (`is_a`) or b_i for `v`: two's complement of
    /// the port's width, or for sign-magnitude designs a sign and a W-bit magnitude.
    pub(super) fn encode(self, v: i16, p: Params, is_a: bool) -> u32 {
        let w = if is_a { p.a_w } else { p.b_w };
        match self.arith {
            Arith::SignMag => ((v < 0) as u32) << w | (v as i32).unsigned_abs(),
            _ => v as u32 & ((1u32 << w) - 1),
        }
    }

    /// What the accumulator must read after `stream`: its last dot product, computed in
    /// Rust with the design's own rounding (bit patterns of the fp32 sum for bf16).
    pub(super) fn expected_acc(self, p: Params, stream: &OperandStream) -> i64 {
        match self.arith {
            Arith::Bf16 => fp::mac_bf16(stream.last_dot()) as i32 as i64,
            Arith::Bf16Fused => fp::dot_bf16(stream.last_dot(), p.lanes as usize) as i32 as i64,
            Arith::Int | Arith::SignMag => stream.expected_acc(ACC_W),
        }
    }

    /// The operand formats of a model, as tables print them ("i8 x u4", "bf16 x bf16").
    pub(super) fn format_name(self, p: Params) -> String {
        let fmt = |w: u32, signed: bool| format!("{}{w}", if signed { "i" } else { "u" });
        if self.is_bf16() {
            "bf16 x bf16".into()
        } else {
            format!("{} x {}", fmt(p.a_w, p.a_signed), fmt(p.b_w, p.b_signed))
        }
    }
}
