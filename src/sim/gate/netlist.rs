//! RTL in, generic-gate netlist out: yosys synthesizes one design of rtl/ (with the
//! parameters of one built model) to AND/NAND/OR/NOR/XOR/XNOR/MUX/NOT gates and positive-edge
//! D flip-flops, and writes it as JSON; `Netlist::parse` reads that into dense nets and
//! cells, names each net by the RTL signal it is (where yosys kept the name) or feeds, and
//! `Netlist::verilog` writes it back as plain Verilog with one 1-bit wire per net (`n<id>`),
//! zero-delay for Verilator or unit-delay for iverilog's glitch counting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// The rtl/ sources, built into the binary so `--level gate` needs no checkout.
pub const RTL_SOURCES: &[(&str, &str)] = &[
    (
        "mac_baseline.v",
        include_str!("../../../rtl/mac_baseline.v"),
    ),
    (
        "mac_isolated.v",
        include_str!("../../../rtl/mac_isolated.v"),
    ),
    ("mac_signmag.v", include_str!("../../../rtl/mac_signmag.v")),
    ("mac_bf16.v", include_str!("../../../rtl/mac_bf16.v")),
    ("dot_unit.v", include_str!("../../../rtl/dot_unit.v")),
    (
        "dot_unit_isolated.v",
        include_str!("../../../rtl/dot_unit_isolated.v"),
    ),
    ("dot_tree.v", include_str!("../../../rtl/dot_tree.v")),
    ("dot_bf16.v", include_str!("../../../rtl/dot_bf16.v")),
];

/// The yosys script: flatten, synthesize, turn every flip-flop (synchronous reset, enable)
/// into a plain positive-edge DFF plus gates, map to two-input gates and muxes. `{top}` and
/// `{chparams}` are filled in.
pub const YOSYS_SCRIPT: &str = "read_verilog -sv {files}; {chparams} synth -flatten -top {top}; \
     dfflegalize -cell $_DFF_P_ 01; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX; opt_clean; \
     write_json {json}";

/// A generic cell: what yosys's `abc -g` and `dfflegalize` leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum CellKind {
    Not,
    Buf,
    And,
    Nand,
    Or,
    Nor,
    Xor,
    Xnor,
    Mux,
    Dff,
}

impl CellKind {
    pub const ALL: [CellKind; 10] = [
        CellKind::Not,
        CellKind::Buf,
        CellKind::And,
        CellKind::Nand,
        CellKind::Or,
        CellKind::Nor,
        CellKind::Xor,
        CellKind::Xnor,
        CellKind::Mux,
        CellKind::Dff,
    ];

    /// The name in cell tables (`[cells.NAND]`).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Not => "NOT",
            CellKind::Buf => "BUF",
            CellKind::And => "AND",
            CellKind::Nand => "NAND",
            CellKind::Or => "OR",
            CellKind::Nor => "NOR",
            CellKind::Xor => "XOR",
            CellKind::Xnor => "XNOR",
            CellKind::Mux => "MUX",
            CellKind::Dff => "DFF",
        }
    }

    fn from_yosys(t: &str) -> Option<Self> {
        Some(match t {
            "$_NOT_" => CellKind::Not,
            "$_BUF_" => CellKind::Buf,
            "$_AND_" => CellKind::And,
            "$_NAND_" => CellKind::Nand,
            "$_OR_" => CellKind::Or,
            "$_NOR_" => CellKind::Nor,
            "$_XOR_" => CellKind::Xor,
            "$_XNOR_" => CellKind::Xnor,
            "$_MUX_" => CellKind::Mux,
            "$_DFF_P_" => CellKind::Dff,
            _ => return None,
        })
    }

    /// Input pins in yosys's names (a DFF's clock is `C`); the output is `Y` (`Q`).
    pub fn inputs(self) -> &'static [&'static str] {
        match self {
            CellKind::Not | CellKind::Buf => &["A"],
            CellKind::Mux => &["A", "B", "S"],
            CellKind::Dff => &["C", "D"],
            _ => &["A", "B"],
        }
    }

    fn output(self) -> &'static str {
        if self == CellKind::Dff {
            "Q"
        } else {
            "Y"
        }
    }
}

/// A cell input: a net or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bit {
    Net(usize),
    Const(bool),
}

#[derive(Debug, Clone)]
pub struct Cell {
    pub kind: CellKind,
    /// In `kind.inputs()` order.
    pub inputs: Vec<Bit>,
    pub output: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Bit `bit` of input port `port`.
    Port {
        port: usize,
        bit: usize,
    },
    Cell(usize),
    /// Nothing drives it (an unused output bit yosys left): constant 0.
    None,
}

#[derive(Debug, Clone)]
pub struct Net {
    /// The RTL name yosys kept (`acc_q[3]`), if any.
    pub name: Option<String>,
    /// The RTL signal this net is (its name without the bit) or, for a net yosys made, the
    /// nearest named signal its logic feeds: `mult`'s array counts as `prod_q`.
    pub signal: String,
    pub driver: Driver,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub input: bool,
    pub bits: Vec<Bit>,
}

/// A synthesized design: nets 0.. (dense), cells, ports.
#[derive(Debug, Clone)]
pub struct Netlist {
    pub nets: Vec<Net>,
    pub cells: Vec<Cell>,
    pub ports: Vec<Port>,
}

/// Run yosys on `module` of rtl/ with Verilog parameter overrides `params` (`-GNAME=V`, as
/// build.rs passes them to Verilator) and write the netlist JSON to `json`. `dir` gets the
/// sources and yosys's log.
/// Returns the script as run, with the file names shortened (for reports).
pub fn synthesize(module: &str, params: &[String], dir: &Path, json: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut files = Vec::new();
    for (name, text) in RTL_SOURCES {
        let p = dir.join(name);
        std::fs::write(&p, text).at(&p)?;
        files.push(p.display().to_string());
    }
    let chparams: String = params
        .iter()
        .filter_map(|g| g.strip_prefix("-G")?.split_once('='))
        .map(|(k, v)| format!("chparam -set {k} {v} {module}; "))
        .collect();
    let script_for = |files: &str, json: &str| {
        YOSYS_SCRIPT
            .replace("{files}", files)
            .replace("{chparams}", &chparams)
            .replace("{top}", module)
            .replace("{json}", json)
    };
    let script = script_for(&files.join(" "), &json.display().to_string());
    let log = dir.join("yosys.log");
    let out = Command::new("yosys")
        .args(["-q", "-l"])
        .arg(&log)
        .args(["-p", &script])
        .output()
        .map_err(|e| {
            Error::Sim(format!(
                "cannot run yosys ({e}): gate-level simulation synthesizes rtl/ with it; install it \
                 with `make deps` (Debian: apt-get install yosys)"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Sim(format!(
            "yosys failed on rtl/{module}.v ({}), log in {}:\n{}",
            out.status,
            log.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(script_for("rtl/*.v", "netlist.json"))
}

/// The yosys version, for reports and the cache key.
pub fn yosys_version() -> Result<String> {
    let o = Command::new("yosys")
        .arg("-V")
        .output()
        .map_err(|e| Error::Sim(format!("cannot run yosys: {e} (run `make deps`)")))?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One module of yosys's JSON being read: its bits numbered densely as they are met.
struct Reader<'a> {
    file: &'a str,
    module: &'a str,
    m: &'a Value,
    /// yosys numbers bits from 2 (0 and 1 are spelled "0"/"1"); ours are dense from 0.
    ids: HashMap<u64, usize>,
    nets: Vec<Net>,
}

impl Reader<'_> {
    fn bad(&self, msg: String) -> Error {
        Error::Sim(format!("{}: {msg}", self.file))
    }

    fn bit(&mut self, v: &Value) -> Result<Bit> {
        match v {
            Value::Number(n) => {
                let n = n.as_u64().ok_or_else(|| self.bad(format!("bad bit {v}")))?;
                let next = self.nets.len();
                let id = *self.ids.entry(n).or_insert(next);
                if id == next {
                    self.nets.push(Net {
                        name: None,
                        signal: String::new(),
                        driver: Driver::None,
                    });
                }
                Ok(Bit::Net(id))
            }
            Value::String(s) if s == "0" || s == "1" => Ok(Bit::Const(s == "1")),
            _ => Err(self.bad(format!(
                "bit {v} is neither a net nor 0/1 (x and z are not simulated)"
            ))),
        }
    }

    fn obj(&self, what: &str) -> Result<serde_json::Map<String, Value>> {
        self.m
            .get(what)
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| self.bad(format!("no {what} in module {}", self.module)))
    }

    fn ports(&mut self) -> Result<Vec<Port>> {
        let mut ports = Vec::new();
        for (name, p) in self.obj("ports")? {
            let input = p.get("direction").and_then(Value::as_str) == Some("input");
            let bits = p["bits"].as_array().cloned().unwrap_or_default();
            let bits = bits
                .iter()
                .map(|b| self.bit(b))
                .collect::<Result<Vec<_>>>()?;
            ports.push(Port { name, input, bits });
        }
        Ok(ports)
    }

    fn cells(&mut self) -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        for (name, c) in self.obj("cells")? {
            let t = c["type"].as_str().unwrap_or("?");
            let kind = CellKind::from_yosys(t).ok_or_else(|| {
                self.bad(format!(
                    "cell {name} has type {t}, not a generic gate or $_DFF_P_"
                ))
            })?;
            let pin = |p: &str| -> Result<Value> {
                c.pointer(&format!("/connections/{p}"))
                    .and_then(|v| v.get(0))
                    .cloned()
                    .ok_or_else(|| self.bad(format!("cell {name}: pin {p} unconnected")))
            };
            let pins: Vec<Value> = kind
                .inputs()
                .iter()
                .map(|p| pin(p))
                .collect::<Result<_>>()?;
            let out = pin(kind.output())?;
            let inputs = pins
                .iter()
                .map(|v| self.bit(v))
                .collect::<Result<Vec<_>>>()?;
            let output = match self.bit(&out)? {
                Bit::Net(n) => n,
                Bit::Const(_) => return Err(self.bad(format!("cell {name} drives a constant"))),
            };
            cells.push(Cell {
                kind,
                inputs,
                output,
            });
        }
        Ok(cells)
    }

    /// Names: every named bit; a net with several takes a top-level one over a
    /// submodule's alias, a register over a wire, then the shortest.
    fn names(&mut self, ports: &[Port]) -> Result<BTreeMap<usize, String>> {
        let mut names: BTreeMap<usize, String> = BTreeMap::new();
        // Ports name their bits too (yosys lists them among the netnames as well).
        let port_names = self.obj("ports")?.into_iter().map(|(k, p)| (k, p, false));
        let net_names = self.obj("netnames")?.into_iter().map(|(k, n)| {
            let hidden = n.get("hide_name").and_then(Value::as_u64) == Some(1);
            (k, n, hidden)
        });
        // Registers (`_q`) anchor the RTL's structure; a port or a submodule's alias of
        // the same bit only names it when nothing else does.
        let rank = |s: &str| {
            let reg = s.split('[').next().is_some_and(|b| b.ends_with("_q"));
            (s.contains('.'), is_port(ports, s), !reg, s.len())
        };
        for (name, n, hidden) in port_names.chain(net_names) {
            if hidden {
                continue;
            }
            let bits = n["bits"].as_array().cloned().unwrap_or_default();
            let width = bits.len();
            for (i, b) in bits.iter().enumerate() {
                if let Ok(Bit::Net(id)) = self.bit(b) {
                    let full = if width == 1 {
                        name.clone()
                    } else {
                        format!("{name}[{i}]")
                    };
                    match names.get(&id) {
                        Some(old) if rank(old) <= rank(&full) => {}
                        _ => {
                            names.insert(id, full);
                        }
                    }
                }
            }
        }
        Ok(names)
    }
}

impl Netlist {
    /// Read yosys's JSON for `module` (the file name only for errors).
    pub fn parse(text: &str, module: &str, file: &str) -> Result<Netlist> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| Error::Sim(format!("{file}: not yosys JSON: {e}")))?;
        let m = doc
            .pointer(&format!("/modules/{module}"))
            .ok_or_else(|| Error::Sim(format!("{file}: no module {module}")))?;
        let mut rd = Reader {
            file,
            module,
            m,
            ids: HashMap::new(),
            nets: Vec::new(),
        };
        let ports = rd.ports()?;
        let cells = rd.cells()?;
        for (id, name) in rd.names(&ports)? {
            rd.nets[id].name = Some(name);
        }
        let mut nl = Netlist {
            nets: rd.nets,
            cells,
            ports,
        };
        nl.set_drivers(file)?;
        nl.drop_dangling();
        nl.set_signals();
        Ok(nl)
    }

    /// Drop the nets nothing drives and nothing reads (names yosys keeps for logic it
    /// optimized away: its `unused_bits`), renumbering the rest.
    fn drop_dangling(&mut self) {
        let fanout = self.fanout();
        let mut in_port = vec![false; self.nets.len()];
        for p in &self.ports {
            for b in &p.bits {
                if let Bit::Net(n) = *b {
                    in_port[n] = true;
                }
            }
        }
        let keep: Vec<bool> = (0..self.nets.len())
            .map(|n| self.nets[n].driver != Driver::None || !fanout[n].is_empty() || in_port[n])
            .collect();
        let mut new_id = vec![usize::MAX; self.nets.len()];
        let mut next = 0;
        for (n, &k) in keep.iter().enumerate() {
            if k {
                new_id[n] = next;
                next += 1;
            }
        }
        let map = |b: &mut Bit| {
            if let Bit::Net(n) = b {
                *n = new_id[*n];
            }
        };
        for c in &mut self.cells {
            c.inputs.iter_mut().for_each(map);
            c.output = new_id[c.output];
        }
        for p in &mut self.ports {
            p.bits.iter_mut().for_each(map);
        }
        let mut k = keep.iter();
        self.nets.retain(|_| *k.next().unwrap());
    }

    fn set_drivers(&mut self, file: &str) -> Result<()> {
        for (pi, p) in self.ports.iter().enumerate().filter(|(_, p)| p.input) {
            for (bi, b) in p.bits.iter().enumerate() {
                if let Bit::Net(n) = *b {
                    self.nets[n].driver = Driver::Port { port: pi, bit: bi };
                }
            }
        }
        for (ci, c) in self.cells.iter().enumerate() {
            let net = &mut self.nets[c.output];
            if net.driver != Driver::None {
                return Err(Error::Sim(format!(
                    "{file}: net {} has two drivers",
                    net.name.as_deref().unwrap_or("(unnamed)")
                )));
            }
            net.driver = Driver::Cell(ci);
        }
        Ok(())
    }

    /// Each net's signal: its own name without the bit index, else the nearest named net
    /// its fanout reaches (breadth first, through flip-flops too), else "(unnamed)".
    fn set_signals(&mut self) {
        let fanout = self.fanout();
        let base = |s: &str| match s.rfind('[') {
            Some(i) if s.ends_with(']') && s[i + 1..s.len() - 1].parse::<u32>().is_ok() => {
                s[..i].to_string()
            }
            _ => s.to_string(),
        };
        for id in 0..self.nets.len() {
            let signal = match &self.nets[id].name {
                Some(n) => base(n),
                None => {
                    let mut seen = vec![false; self.nets.len()];
                    let mut queue = VecDeque::from([id]);
                    seen[id] = true;
                    let mut found = None;
                    while let Some(n) = queue.pop_front() {
                        if let Some(name) = &self.nets[n].name {
                            found = Some(base(name));
                            break;
                        }
                        for &(c, _) in &fanout[n] {
                            let o = self.cells[c].output;
                            if !seen[o] {
                                seen[o] = true;
                                queue.push_back(o);
                            }
                        }
                    }
                    found.map_or_else(|| "(unnamed)".to_string(), |s| format!("{s} (logic)"))
                }
            };
            self.nets[id].signal = signal;
        }
    }

    /// For each net, the (cell, input pin index) pairs it drives.
    pub fn fanout(&self) -> Vec<Vec<(usize, usize)>> {
        let mut f = vec![Vec::new(); self.nets.len()];
        for (ci, c) in self.cells.iter().enumerate() {
            for (k, b) in c.inputs.iter().enumerate() {
                if let Bit::Net(n) = *b {
                    f[n].push((ci, k));
                }
            }
        }
        f
    }

    pub fn cell_counts(&self) -> BTreeMap<CellKind, usize> {
        let mut m = BTreeMap::new();
        for c in &self.cells {
            *m.entry(c.kind).or_insert(0) += 1;
        }
        m
    }

    /// Longest path in gates from a port or flip-flop to any net (the settling time of a
    /// unit-delay simulation).
    pub fn depth(&self) -> usize {
        let mut depth = vec![usize::MAX; self.nets.len()];
        fn walk(nl: &Netlist, n: usize, depth: &mut [usize]) -> usize {
            if depth[n] != usize::MAX {
                return depth[n];
            }
            let d = match nl.nets[n].driver {
                Driver::Cell(c) if nl.cells[c].kind != CellKind::Dff => {
                    depth[n] = 0; // a combinational loop would stop here, not recurse forever
                    1 + nl.cells[c]
                        .inputs
                        .iter()
                        .map(|b| match *b {
                            Bit::Net(i) => walk(nl, i, depth),
                            Bit::Const(_) => 0,
                        })
                        .max()
                        .unwrap_or(0)
                }
                _ => 0,
            };
            depth[n] = d;
            d
        }
        (0..self.nets.len())
            .map(|n| walk(self, n, &mut depth))
            .max()
            .unwrap_or(0)
    }

    /// The netlist as Verilog: module `gate` with the design's ports, one wire per net
    /// (`n<id>`), each gate a continuous assignment (`#1` each with `unit_delay`), each
    /// flip-flop a reg starting at 0 (as Verilator's --x-initial 0 starts the RTL).
    pub fn verilog(&self, unit_delay: bool) -> String {
        let d = if unit_delay { "#1 " } else { "" };
        let mut v =
            String::from("// Generated by perfwatt from yosys's netlist: one wire per net.\n");
        let names: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        v.push_str(&format!("module gate({});\n", names.join(", ")));
        for p in &self.ports {
            let dir = if p.input { "input" } else { "output" };
            match p.bits.len() {
                1 => v.push_str(&format!("  {dir} {};\n", p.name)),
                w => v.push_str(&format!("  {dir} [{}:0] {};\n", w - 1, p.name)),
            }
        }
        let lit = |b: &Bit| match *b {
            Bit::Net(n) => format!("n{n}"),
            Bit::Const(c) => format!("1'b{}", c as u8),
        };
        for (id, n) in self.nets.iter().enumerate() {
            let is_reg = matches!(n.driver, Driver::Cell(c) if self.cells[c].kind == CellKind::Dff);
            if is_reg {
                v.push_str(&format!("  reg n{id} = 1'b0;\n"));
            } else {
                v.push_str(&format!("  wire n{id};\n"));
            }
        }
        for (id, n) in self.nets.iter().enumerate() {
            match n.driver {
                Driver::Port { port, bit } => {
                    let p = &self.ports[port];
                    let sel = if p.bits.len() == 1 {
                        String::new()
                    } else {
                        format!("[{bit}]")
                    };
                    v.push_str(&format!("  assign n{id} = {}{sel};\n", p.name));
                }
                Driver::None => v.push_str(&format!("  assign n{id} = 1'b0;\n")),
                Driver::Cell(_) => {}
            }
        }
        for c in &self.cells {
            let i: Vec<String> = c.inputs.iter().map(lit).collect();
            let o = c.output;
            let e = match c.kind {
                CellKind::Not => format!("~{}", i[0]),
                CellKind::Buf => i[0].clone(),
                CellKind::And => format!("{} & {}", i[0], i[1]),
                CellKind::Nand => format!("~({} & {})", i[0], i[1]),
                CellKind::Or => format!("{} | {}", i[0], i[1]),
                CellKind::Nor => format!("~({} | {})", i[0], i[1]),
                CellKind::Xor => format!("{} ^ {}", i[0], i[1]),
                CellKind::Xnor => format!("~({} ^ {})", i[0], i[1]),
                CellKind::Mux => format!("{} ? {} : {}", i[2], i[1], i[0]),
                CellKind::Dff => {
                    v.push_str(&format!(
                        "  always @(posedge {}) n{o} <= {d}{};\n",
                        i[0], i[1]
                    ));
                    continue;
                }
            };
            v.push_str(&format!("  assign {d}n{o} = {e};\n"));
        }
        for p in self.ports.iter().filter(|p| !p.input) {
            for (k, b) in p.bits.iter().enumerate() {
                let sel = if p.bits.len() == 1 {
                    String::new()
                } else {
                    format!("[{k}]")
                };
                v.push_str(&format!("  assign {}{sel} = {};\n", p.name, lit(b)));
            }
        }
        v.push_str("endmodule\n");
        v
    }
}

fn is_port(ports: &[Port], name: &str) -> bool {
    let base = name.split('[').next().unwrap_or(name);
    ports.iter().any(|p| p.name == base)
}
