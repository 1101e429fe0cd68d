// Which signals of each MAC design the no-VCD fast path samples. Shared by build.rs (which
// generates the C++ snapshot code) and src/sim (which names and groups the counts).
// Order matters: it is the layout of the snapshot array.

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
];

/// Operand widths a model is built for.
pub const WIDTHS: &[u32] = &[8, 16];

/// Accumulator width of every built model (the RTL default).
pub const ACC_W: u32 = 32;

pub fn model_name(module: &str, width: u32) -> String {
    format!("V{module}_w{width}")
}

/// The same design built without tracing or public signals (simulation-only runs).
pub fn lean_model_name(module: &str, width: u32) -> String {
    format!("V{module}_w{width}_lean")
}
