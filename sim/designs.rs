// The design catalogue: every hardware design of rtl/ in one entry that says all the rest of
// the code asks about it (RTL top and parameters, operand formats, lanes, pipeline latency,
// sampled signals and their groups, its name on the command line and in reports).
//
// Shared by build.rs (which builds one Verilator model per entry and parameter set and
// generates the C++ snapshot code and the Rust table of entry points) and src/sim (which
// names, sizes and groups the counts): one source of truth for both sides of the FFI.
// Plain Rust with no crate imports, so build.rs can `include!` it.
//
// Adding a design: its Verilog file in rtl/ and one entry in `DESIGNS` (+ its tests).

/// How a design computes, which fixes how operands are driven onto its ports and what its
/// accumulator must read at the end (src/sim/design.rs holds the references).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    /// Two's complement integers, exact 32-bit accumulation.
    Int,
    /// Integers driven as a sign and a W-bit magnitude (so -2^(W-1) has a code).
    SignMag,
    /// bf16 x bf16 -> fp32, one rounding per addition (src/sim/fp.rs `mac_bf16`).
    Bf16,
    /// bf16 K-slices fused into the fp32 accumulator, one rounding per slice
    /// (src/sim/fp.rs `dot_bf16`).
    Bf16Fused,
}

/// Operand format of a built model: (a_w, b_w, a_signed, b_signed).
pub type Format = (u32, u32, bool, bool);

/// One design.
pub struct DesignEntry {
    /// Its name on the command line, in result files and in reports (`dot-isolated`).
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The RTL top (rtl/<module>.v).
    pub module: &'static str,
    pub arith: Arith,
    /// Lane counts built; `&[1]` for a serial MAC (one pair per cycle). A design with more
    /// takes a K-slice of LANES pairs per cycle (lane j sees pairs j, j + LANES, ...).
    pub lanes: &'static [u32],
    /// Operand formats built (serial integer MACs: one width for both operands).
    pub formats: &'static [Format],
    /// Cycles from a pair's (or slice's) clock edge to its effect on acc_o.
    pub drain: usize,
    /// Sampled signals, in snapshot order; `u_tree.g_level[*].s` stands for the adder
    /// tree's levels 1..=log2(LANES).
    pub signals: &'static [&'static str],
    /// Signal widths that differ from `default_width` (None: the default).
    pub width: fn(&str, Params) -> Option<u32>,
    /// Verilator `-G` overrides for a model.
    pub verilog_params: fn(Params) -> Vec<String>,
    /// Signal groups of this design's own signals, before `default_group`.
    pub groups: &'static [(&'static str, &'static str)],
    /// An encoding experiment rather than a datapath to compare: no gate-level runs in
    /// sweeps or gemm-energy.
    pub experiment: bool,
    /// A tile-level unit (TILE_ROWS x TILE_COLS cells sharing operand fragments, an
    /// accumulator file addressed by sel_i): it replays whole output blocks of a GEMM
    /// (src/sim/tile.rs), not a dot-product stream.
    pub tile: bool,
}

/// Top-level ports: read as `model->name`; everything else as an internal signal.
pub const PORTS: &[&str] = &["clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o"];

/// Accumulator width of every built model (the RTL default).
pub const ACC_W: u32 = 32;

/// Operand widths the serial MACs are built for.
pub const WIDTHS: &[u32] = &[8, 16];

/// Lane counts the dot-product units are built for.
pub const LANES: &[u32] = &[4, 16, 64];

/// Lane counts the fused bf16 dot unit is built for (a 64-lane one would double the build
/// time for a shape no tensor core has).
pub const BF16_LANES: &[u32] = &[4, 16];

/// The tile-level MMA unit (rtl/mma_tile.v): cell rows (A fragments), cell columns (B
/// fragments) and accumulator entries per cell, fixed at build time. 4 x 4 cells of 16
/// lanes are 256 MACs per cycle; 8 entries hold one 16 x 8 output block (PTX
/// mma.m16n8k32's tile) as 4 x 2 sub-blocks of 4 x 4 outputs.
pub const TILE_ROWS: u32 = 4;
pub const TILE_COLS: u32 = 4;
pub const TILE_DEPTH: u32 = 8;

/// Bits below fp32's 24-bit significand the fused bf16 dot unit keeps when it aligns its
/// terms (rtl/dot_bf16.v's EXTRA; src/sim/fp.rs uses the same).
pub const BF16_DOT_EXTRA: u32 = 3;

/// Bits of one product record of the fused bf16 dot unit ({nan, inf, sign, esum, man}).
const BF16_PRODUCT_BITS: u32 = 28;

const SERIAL_INT: &[Format] = &[(8, 8, true, true), (16, 16, true, true)];
const BF16: &[Format] = &[(16, 16, true, true)];
/// int8 x int8 (q8_0, int8 GEMMs); int8 activations x uint4 weights (q4_1: the nibbles,
/// scale and minimum applied outside the integer dot product, as llama.cpp's kernels do).
const DOT_INT: &[Format] = &[(8, 8, true, true), (8, 4, true, false)];

fn no_override(_: &str, _: Params) -> Option<u32> {
    None
}

fn width_param(p: Params) -> Vec<String> {
    vec![format!("-GW={}", p.a_w)]
}

fn no_params(_: Params) -> Vec<String> {
    Vec::new()
}

fn dot_int_params(p: Params) -> Vec<String> {
    vec![
        format!("-GLANES={}", p.lanes),
        format!("-GA_W={}", p.a_w),
        format!("-GB_W={}", p.b_w),
        format!("-GA_SIGNED={}", p.a_signed as u32),
        format!("-GB_SIGNED={}", p.b_signed as u32),
    ]
}

fn signmag_width(name: &str, p: Params) -> Option<u32> {
    match name {
        "a_i" | "b_i" | "a_q" | "b_q" => Some(p.a_w + 1),
        "mult" | "prod_q" => Some(2 * p.a_w + 1),
        "mag_prod" => Some(2 * p.a_w),
        _ => None,
    }
}

fn dot_bf16_params(p: Params) -> Vec<String> {
    vec![format!("-GLANES={}", p.lanes), format!("-GEXTRA={BF16_DOT_EXTRA}")]
}

fn dot_bf16_width(name: &str, p: Params) -> Option<u32> {
    let f = 24 + BF16_DOT_EXTRA;
    let terms = p.lanes + 1;
    match name {
        "mult" | "prod_q" => Some(p.lanes * BF16_PRODUCT_BITS),
        "emax" => Some(10),
        "aligned" => Some(terms * (f + 1)),
        "tree_sum" => Some(f + 1 + (32 - (terms - 1).leading_zeros())),
        _ => None,
    }
}

fn tile_params(p: Params) -> Vec<String> {
    let mut v = dot_int_params(p);
    v.extend([
        format!("-GROWS={TILE_ROWS}"),
        format!("-GCOLS={TILE_COLS}"),
        format!("-GDEPTH={TILE_DEPTH}"),
    ]);
    v
}

/// The tile unit's signals: its operand ports and fragments hold TILE_ROWS (A) or
/// TILE_COLS (B) lane groups, its products, tree levels and sums one per cell.
fn tile_width(name: &str, p: Params) -> Option<u32> {
    let cells = TILE_ROWS * TILE_COLS;
    let sel = log2(cells * TILE_DEPTH);
    if name.contains("g_level[") {
        return Some(cells * default_width(p, name));
    }
    Some(match name {
        "a_i" | "a_frag_q" => TILE_ROWS * p.lanes * p.a_w,
        "b_i" | "b_frag_q" => TILE_COLS * p.lanes * p.b_w,
        "mult" | "prod_q" | "sum_q" => cells * default_width(p, name),
        "acc_q" => cells * TILE_DEPTH * ACC_W,
        "sel_i" => sel,
        "sel_q" | "sel2_q" | "sel3_q" => log2(TILE_DEPTH),
        _ => return None,
    })
}

/// Every design, in the order tables and `--design all` list them.
pub const DESIGNS: &[DesignEntry] = &[
    DesignEntry {
        name: "baseline",
        about: "Serial MAC: one pair per cycle, every register loads every cycle.",
        module: "mac_baseline",
        arith: Arith::Int,
        lanes: &[1],
        formats: SERIAL_INT,
        drain: 2,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "addend", "acc_q",
        ],
        width: no_override,
        verilog_params: width_param,
        groups: &[],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "isolated",
        about: "Serial MAC with operand isolation.",
        module: "mac_isolated",
        arith: Arith::Int,
        lanes: &[1],
        formats: SERIAL_INT,
        drain: 2,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "nz", "a_q", "b_q", "nz_q", "clear_q",
            "mult", "prod_q", "nz2_q", "clear2_q", "addend", "acc_q",
        ],
        width: no_override,
        verilog_params: width_param,
        groups: &[],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "signmag",
        about: "The baseline with sign-magnitude operands (an operand-encoding experiment).",
        module: "mac_signmag",
        arith: Arith::SignMag,
        lanes: &[1],
        formats: SERIAL_INT,
        drain: 2,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mag_prod", "mult", "prod_q", "valid2_q", "clear2_q", "mag", "addend", "acc_q",
        ],
        width: signmag_width,
        verilog_params: width_param,
        groups: &[],
        experiment: true,
        tile: false,
    },
    DesignEntry {
        name: "dot",
        about: "W-lane dot-product unit: a K-slice of W pairs per cycle, adder tree, accumulator.",
        module: "dot_unit",
        arith: Arith::Int,
        lanes: LANES,
        formats: DOT_INT,
        drain: 3,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "u_tree.g_level[*].s", "sum_q", "valid3_q", "clear3_q", "addend",
            "acc_q",
        ],
        width: no_override,
        verilog_params: dot_int_params,
        groups: &[],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "dot-isolated",
        about: "The dot unit with per-lane operand isolation.",
        module: "dot_unit_isolated",
        arith: Arith::Int,
        lanes: LANES,
        formats: DOT_INT,
        drain: 3,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "nz", "a_q", "b_q", "nz_q", "clear_q",
            "mult", "prod_q", "any2_q", "clear2_q", "u_tree.g_level[*].s", "sum_q", "any3_q", "clear3_q", "addend",
            "acc_q",
        ],
        width: no_override,
        verilog_params: dot_int_params,
        groups: &[],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "bf16",
        about: "Serial bf16 x bf16 MAC into an fp32 accumulator (exact product, one rounding per add).",
        module: "mac_bf16",
        arith: Arith::Bf16,
        lanes: &[1],
        formats: BF16,
        drain: 2,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "sum", "acc_q",
        ],
        width: no_override,
        verilog_params: no_params,
        groups: &[],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "bf16-dot",
        about: "W-lane fused bf16 dot unit, tensor-core style: a K-slice of W products and the fp32 \
                accumulator aligned to the largest exponent, summed, rounded once.",
        module: "dot_bf16",
        arith: Arith::Bf16Fused,
        lanes: BF16_LANES,
        formats: BF16,
        drain: 2,
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "emax", "aligned", "tree_sum", "sum", "acc_q",
        ],
        width: dot_bf16_width,
        verilog_params: dot_bf16_params,
        groups: &[("emax", "adder tree"), ("aligned", "adder tree"), ("tree_sum", "adder tree")],
        experiment: false,
        tile: false,
    },
    DesignEntry {
        name: "mma-tile",
        about: "Tile-level int8 MMA unit, tensor-core style: 4 x 4 cells of W-lane dot products \
                sharing A fragments along rows and B fragments along columns, an accumulator \
                file per cell; replays whole output blocks in a chosen order (gemm-energy).",
        module: "mma_tile",
        arith: Arith::Int,
        lanes: &[16],
        formats: &[(8, 8, true, true)],
        drain: 3,
        // acc_o is a read-out mux over the file, not a datapath register: not sampled.
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "sel_i", "a_i", "b_i", "a_frag_q", "b_frag_q", "valid_q",
            "clear_q", "sel_q", "mult", "prod_q", "valid2_q", "clear2_q", "sel2_q", "g_level[*].s", "sum_q",
            "valid3_q", "clear3_q", "sel3_q", "acc_q",
        ],
        width: tile_width,
        verilog_params: tile_params,
        groups: &[("a_frag_q", "A delivery"), ("b_frag_q", "B delivery"), ("sel_i", "operand ports")],
        experiment: false,
        tile: true,
    },
];

/// Parameters of one built model. Serial MACs: one lane, W-bit operands (`a_w == b_w`).
/// Dot-product units: LANES lanes of a_w x b_w, each operand signed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub lanes: u32,
    pub a_w: u32,
    pub b_w: u32,
    pub a_signed: bool,
    pub b_signed: bool,
}

impl DesignEntry {
    /// Takes a K-slice of several pairs per cycle (a dot-product unit).
    pub fn is_dot(&self) -> bool {
        self.lanes != [1]
    }

    /// Every model of this design build.rs builds.
    pub fn models(&self) -> Vec<Params> {
        let mut v = Vec::new();
        for &lanes in self.lanes {
            for &(a_w, b_w, a_signed, b_signed) in self.formats {
                v.push(Params { lanes, a_w, b_w, a_signed, b_signed });
            }
        }
        v
    }

    /// The model's name (its C symbols and VCD file): `V<module>_w<W>` for a serial MAC,
    /// `V<module>_l<LANES>` for a dot unit, with `_<a><b>` when it is built in several
    /// formats (`Vdot_unit_l16_i8u4`).
    pub fn model_name(&self, p: Params) -> String {
        let fmt = |bits: u32, signed: bool| format!("{}{bits}", if signed { "i" } else { "u" });
        if !self.is_dot() {
            format!("V{}_w{}", self.module, p.a_w)
        } else if self.formats.len() > 1 {
            format!(
                "V{}_l{}_{}{}",
                self.module,
                p.lanes,
                fmt(p.a_w, p.a_signed),
                fmt(p.b_w, p.b_signed)
            )
        } else {
            format!("V{}_l{}", self.module, p.lanes)
        }
    }

    /// The same design built without tracing or public signals (simulation-only runs).
    pub fn lean_model_name(&self, p: Params) -> String {
        format!("{}_lean", self.model_name(p))
    }

    /// The sampled signals of a model, `u_tree.g_level[*].s` expanded to its tree levels.
    pub fn signals(&self, p: Params) -> Vec<String> {
        let mut v = Vec::new();
        for s in self.signals {
            if let Some(scope) = s.strip_suffix("g_level[*].s") {
                v.extend((1..=log2(p.lanes)).map(|l| format!("{scope}g_level[{l}].s")));
            } else {
                v.push(s.to_string());
            }
        }
        v
    }

    /// Bit width of a sampled signal.
    pub fn signal_width(&self, p: Params, name: &str) -> u32 {
        (self.width)(name, p).unwrap_or_else(|| default_width(p, name))
    }

    /// 32-bit words of one operand port in a cycle record (`PwCycle<NW>` in sim/shim.h):
    /// the wider of a_i and b_i.
    pub fn cycle_words(&self, p: Params) -> usize {
        let w = self.signal_width(p, "a_i").max(self.signal_width(p, "b_i"));
        w.div_ceil(32) as usize
    }

    /// The C++ member of a signal in the model's root (Verilator's name mangling for
    /// --public-flat-rw: `.` -> `__DOT__`, `[` -> `__BRA__`, `]` -> `__KET__`).
    pub fn cpp_member(&self, name: &str) -> String {
        if PORTS.contains(&name) {
            return name.to_string();
        }
        let m = name.replace('.', "__DOT__").replace('[', "__BRA__").replace(']', "__KET__");
        format!("{}__DOT__{m}", self.module)
    }

    /// Where a signal's switching belongs, for "where do the savings come from".
    pub fn signal_group(&self, name: &str) -> &'static str {
        self.groups
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| default_group(name), |g| g.1)
    }
}

/// log2 of a power of two.
fn log2(n: u32) -> u32 {
    31 - n.leading_zeros()
}

/// Width of a dot unit's lane product: exact for the operand formats.
pub fn product_width(p: Params) -> u32 {
    p.a_w + p.b_w + u32::from(!p.a_signed && !p.b_signed)
}

/// The width of a signal every integer datapath shares (ports, lane registers, products,
/// adder-tree levels, accumulator).
fn default_width(p: Params, name: &str) -> u32 {
    let pw = product_width(p);
    if let Some(level) = name
        .split_once("g_level[")
        .and_then(|(_, r)| r.strip_suffix("].s"))
    {
        let l: u32 = level.parse().expect("tree level");
        return (p.lanes >> l) * (pw + l);
    }
    match name {
        "a_i" | "a_q" => p.lanes * p.a_w,
        "b_i" | "b_q" => p.lanes * p.b_w,
        "mult" | "prod_q" => p.lanes * pw,
        "nz" | "nz_q" | "nz2_q" => p.lanes,
        "sum_q" => pw + log2(p.lanes),
        "addend" | "acc_q" | "acc_o" | "mag" | "sum" => ACC_W,
        _ => 1,
    }
}

/// The group of a signal name every design shares.
fn default_group(name: &str) -> &'static str {
    match name {
        "a_i" | "b_i" => "operand ports",
        "a_q" | "b_q" | "a_x" | "b_x" => "multiplier inputs",
        "mult" | "prod_q" | "mag_prod" => "product",
        "sum_q" => "adder tree",
        n if n.contains("g_level[") => "adder tree",
        "addend" | "acc_q" | "acc_o" | "mag" | "sum" => "accumulator",
        "clk_i" => "clock",
        _ => "control",
    }
}

/// 64-bit words a signal takes in the snapshot array.
pub fn snapshot_slots(width: u32) -> usize {
    width.div_ceil(64) as usize
}
