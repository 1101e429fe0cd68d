// Which models build.rs builds from rtl/, and which of their signals the no-VCD fast path
// samples. Shared by build.rs (which generates the C++ snapshot code and the Rust table of
// entry points) and src/sim (which names, sizes and groups the counts): one source of
// truth for both sides of the FFI. Signal order is the layout of the snapshot array.

/// A design (one module in rtl/) and the signals it samples, in snapshot order.
/// `u_tree.g_level[*].s` stands for the adder tree's levels 1..=log2(LANES).
pub struct DesignSignals {
    pub module: &'static str,
    pub signals: &'static [&'static str],
}

/// Top-level ports: read as `model->name`; everything else as an internal signal.
pub const PORTS: &[&str] = &["clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o"];

pub const DESIGNS: &[DesignSignals] = &[
    DesignSignals {
        module: "mac_baseline",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "addend", "acc_q",
        ],
    },
    DesignSignals {
        module: "mac_isolated",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "nz", "a_q", "b_q", "nz_q", "clear_q",
            "mult", "prod_q", "nz2_q", "clear2_q", "addend", "acc_q",
        ],
    },
    DesignSignals {
        module: "mac_signmag",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mag_prod", "mult", "prod_q", "valid2_q", "clear2_q", "mag", "addend", "acc_q",
        ],
    },
    DesignSignals {
        module: "dot_unit",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "u_tree.g_level[*].s", "sum_q", "valid3_q", "clear3_q", "addend",
            "acc_q",
        ],
    },
    DesignSignals {
        module: "dot_unit_isolated",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "nz", "a_q", "b_q", "nz_q", "clear_q",
            "mult", "prod_q", "any2_q", "clear2_q", "u_tree.g_level[*].s", "sum_q", "any3_q", "clear3_q", "addend",
            "acc_q",
        ],
    },
    DesignSignals {
        module: "mac_bf16",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "sum", "acc_q",
        ],
    },
    DesignSignals {
        module: "dot_bf16",
        signals: &[
            "clk_i", "rst_ni", "valid_i", "clear_i", "a_i", "b_i", "acc_o", "a_q", "b_q", "valid_q", "clear_q",
            "mult", "prod_q", "valid2_q", "clear2_q", "emax", "aligned", "tree_sum", "sum", "acc_q",
        ],
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

/// Accumulator width of every built model (the RTL default).
pub const ACC_W: u32 = 32;

/// Operand widths the serial MACs are built for.
pub const WIDTHS: &[u32] = &[8, 16];

/// Lane counts the dot-product units are built for.
pub const LANES: &[u32] = &[4, 16, 64];

/// Lane counts the fused bf16 dot unit is built for (a 64-lane one would double the build
/// time for a shape no tensor core has).
pub const BF16_LANES: &[u32] = &[4, 16];

/// Bits below fp32's 24-bit significand the fused bf16 dot unit keeps when it aligns its
/// terms (rtl/dot_bf16.v's EXTRA; src/sim/fp.rs uses the same).
pub const BF16_DOT_EXTRA: u32 = 3;

/// Bits of one product record of the fused bf16 dot unit ({nan, inf, sign, esum, man}).
const BF16_PRODUCT_BITS: u32 = 28;

/// Operand formats the dot-product units are built for: (a_w, b_w, a_signed, b_signed).
/// int8 x int8 (q8_0, int8 GEMMs); int8 activations x uint4 weights (q4_1: the nibbles,
/// scale and minimum applied outside the integer dot product, as llama.cpp's kernels do).
pub const DOT_FORMATS: &[(u32, u32, bool, bool)] = &[(8, 8, true, true), (8, 4, true, false)];

pub fn is_dot(module: &str) -> bool {
    module.starts_with("dot_unit")
}

/// Every model build.rs builds: (module, params).
pub fn models() -> Vec<(&'static str, Params)> {
    let mut v = Vec::new();
    for d in DESIGNS {
        if is_dot(d.module) {
            for &lanes in LANES {
                for &(a_w, b_w, a_signed, b_signed) in DOT_FORMATS {
                    v.push((d.module, Params { lanes, a_w, b_w, a_signed, b_signed }));
                }
            }
        } else if d.module == "dot_bf16" {
            for &lanes in BF16_LANES {
                v.push((d.module, Params { lanes, a_w: 16, b_w: 16, a_signed: true, b_signed: true }));
            }
        } else if d.module == "mac_bf16" {
            v.push((d.module, Params { lanes: 1, a_w: 16, b_w: 16, a_signed: true, b_signed: true }));
        } else {
            for &w in WIDTHS {
                v.push((d.module, Params { lanes: 1, a_w: w, b_w: w, a_signed: true, b_signed: true }));
            }
        }
    }
    v
}

fn fmt_name(bits: u32, signed: bool) -> String {
    format!("{}{bits}", if signed { "i" } else { "u" })
}

pub fn model_name(module: &str, p: Params) -> String {
    if is_dot(module) {
        format!("V{module}_l{}_{}{}", p.lanes, fmt_name(p.a_w, p.a_signed), fmt_name(p.b_w, p.b_signed))
    } else if module == "dot_bf16" {
        format!("V{module}_l{}", p.lanes)
    } else {
        format!("V{module}_w{}", p.a_w)
    }
}

/// The same design built without tracing or public signals (simulation-only runs).
pub fn lean_model_name(module: &str, p: Params) -> String {
    format!("{}_lean", model_name(module, p))
}

/// Verilator `-G` parameter overrides for a model.
pub fn verilog_params(module: &str, p: Params) -> Vec<String> {
    if is_dot(module) {
        vec![
            format!("-GLANES={}", p.lanes),
            format!("-GA_W={}", p.a_w),
            format!("-GB_W={}", p.b_w),
            format!("-GA_SIGNED={}", p.a_signed as u32),
            format!("-GB_SIGNED={}", p.b_signed as u32),
        ]
    } else if module == "dot_bf16" {
        vec![format!("-GLANES={}", p.lanes), format!("-GEXTRA={BF16_DOT_EXTRA}")]
    } else if module == "mac_bf16" {
        Vec::new()
    } else {
        vec![format!("-GW={}", p.a_w)]
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

/// The sampled signals of a model, `u_tree.g_level[*].s` expanded to its tree levels.
pub fn signals(module: &str, p: Params) -> Vec<String> {
    let d = DESIGNS.iter().find(|d| d.module == module).expect("known design");
    let mut v = Vec::new();
    for s in d.signals {
        if let Some(scope) = s.strip_suffix("g_level[*].s") {
            v.extend((1..=log2(p.lanes)).map(|l| format!("{scope}g_level[{l}].s")));
        } else {
            v.push(s.to_string());
        }
    }
    v
}

/// Bit width of a sampled signal.
pub fn signal_width(module: &str, p: Params, name: &str) -> u32 {
    let pw = product_width(p);
    let signmag = module == "mac_signmag";
    if let Some(level) = name
        .split_once("g_level[")
        .and_then(|(_, r)| r.strip_suffix("].s"))
    {
        let l: u32 = level.parse().expect("tree level");
        return (p.lanes >> l) * (pw + l);
    }
    if module == "dot_bf16" {
        let f = 24 + BF16_DOT_EXTRA;
        let terms = p.lanes + 1;
        match name {
            "mult" | "prod_q" => return p.lanes * BF16_PRODUCT_BITS,
            "emax" => return 10,
            "aligned" => return terms * (f + 1),
            "tree_sum" => return f + 1 + (32 - (terms - 1).leading_zeros()),
            _ => {}
        }
    }
    match name {
        // Sign-magnitude operands: a sign and a W-bit magnitude (so -2^(W-1) has a code).
        "a_i" | "b_i" | "a_q" | "b_q" if signmag => p.a_w + 1,
        "a_i" | "a_q" => p.lanes * p.a_w,
        "b_i" | "b_q" => p.lanes * p.b_w,
        "mult" | "prod_q" if signmag => 2 * p.a_w + 1,
        "mag_prod" => 2 * p.a_w,
        "mult" | "prod_q" => p.lanes * pw,
        "nz" | "nz_q" | "nz2_q" => p.lanes,
        "sum_q" => pw + log2(p.lanes),
        "addend" | "acc_q" | "acc_o" | "mag" | "sum" => ACC_W,
        _ => 1,
    }
}

/// 64-bit words a signal takes in the snapshot array.
pub fn snapshot_slots(width: u32) -> usize {
    width.div_ceil(64) as usize
}

/// 32-bit words of one operand port in a cycle record (`PwCycle<NW>` in sim/shim.h): the
/// wider of a_i and b_i.
pub fn cycle_words(module: &str, p: Params) -> usize {
    let w = signal_width(module, p, "a_i").max(signal_width(module, p, "b_i"));
    w.div_ceil(32) as usize
}

/// The C++ member of a signal in the model's root (Verilator's name mangling for
/// --public-flat-rw: `.` -> `__DOT__`, `[` -> `__BRA__`, `]` -> `__KET__`).
pub fn cpp_member(module: &str, name: &str) -> String {
    if PORTS.contains(&name) {
        return name.to_string();
    }
    let m = name.replace('.', "__DOT__").replace('[', "__BRA__").replace(']', "__KET__");
    format!("{module}__DOT__{m}")
}
