//! Toggle counting over a parsed VCD.
//!
//! In: the parser's header and value changes. Out: `ToggleReport`, per signal and per bit:
//! toggles (0<->1 changes), x_transitions (changes into or out of x/z), and time spent at
//! 0, 1, x and z (for SAIF). Rule: the first value a bit takes is not a toggle; a vector
//! value shorter than the var is left-extended (0/1 -> 0, x -> x, z -> z).

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::parse::{parse_vcd, Header, Value, VarKind, VcdVisitor};
use crate::error::{IoContext, Result};

const B0: u8 = 0;
const B1: u8 = 1;
const BX: u8 = 2;
const BZ: u8 = 3;
/// No value yet. Counted as x time in SAIF (an uninitialised net is unknown).
const UNSET: u8 = 4;

const fn bit_table() -> [u8; 256] {
    let mut t = [BX; 256];
    t[b'0' as usize] = B0;
    t[b'1' as usize] = B1;
    t[b'z' as usize] = BZ;
    t[b'Z' as usize] = BZ;
    t
}
static BIT: [u8; 256] = bit_table();

/// Activity of one bit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BitActivity {
    pub toggles: u64,
    pub x_transitions: u64,
    /// Time at 0, 1, x (including before the first value), z; in timescale units.
    pub t0: u64,
    pub t1: u64,
    pub tx: u64,
    pub tz: u64,
}

/// Activity of one var (one path; aliases each get their own entry with the same counts).
#[derive(Debug, Clone, Serialize)]
pub struct SignalToggles {
    pub path: String,
    pub width: u32,
    pub toggles: u64,
    pub x_transitions: u64,
    pub kind: VarKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Scope path, dotted (`tb.dut`).
    pub scope: String,
    /// Per bit, index 0 = LSB.
    #[serde(skip)]
    pub bits: Vec<BitActivity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToggleReport {
    pub file: String,
    pub timescale: Option<String>,
    pub end_time: u64,
    pub total_toggles: u64,
    pub total_x_transitions: u64,
    pub value_changes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    pub signals: Vec<SignalToggles>,
}

impl ToggleReport {
    /// Keep only signals whose path is `prefix` or lies under it (`tb.dut` keeps `tb.dut.x`,
    /// not `tb.dut2.x`); totals are recomputed.
    pub fn retain_scope(&mut self, prefix: &str) {
        let p = prefix.trim_end_matches('.');
        self.signals.retain(|s| {
            s.path == p || (s.path.starts_with(p) && s.path.as_bytes().get(p.len()) == Some(&b'.'))
        });
        self.total_toggles = self.signals.iter().map(|s| s.toggles).sum();
        self.total_x_transitions = self.signals.iter().map(|s| s.x_transitions).sum();
    }

    pub fn signal(&self, path: &str) -> Option<&SignalToggles> {
        self.signals.iter().find(|s| s.path == path)
    }

    /// Toggle sums per scope (every ancestor scope gets its descendants' toggles).
    pub fn scope_sums(&self) -> Vec<(String, u64)> {
        let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
        for s in &self.signals {
            let mut acc = String::new();
            for part in s.scope.split('.').filter(|p| !p.is_empty()) {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(part);
                *sums.entry(acc.clone()).or_default() += s.toggles;
            }
        }
        sums.into_iter().collect()
    }
}

/// The visitor: flat per-bit arrays indexed by `base[code] + bit`.
#[derive(Default)]
pub struct ToggleCounter {
    header: Header,
    base: Vec<usize>,
    state: Vec<u8>,
    since: Vec<u64>,
    bits: Vec<BitActivity>,
    now: u64,
    changes: u64,
}

impl ToggleCounter {
    pub fn finish(mut self, file: &str) -> ToggleReport {
        let end = self.now;
        for i in 0..self.state.len() {
            self.close_interval(i, end);
        }
        let mut signals = Vec::new();
        for v in &self.header.vars {
            if v.kind.is_real() {
                continue;
            }
            let b = self.base[v.code as usize];
            let bits = self.bits[b..b + v.width as usize].to_vec();
            signals.push(SignalToggles {
                path: v.path(),
                width: v.width,
                toggles: bits.iter().map(|b| b.toggles).sum(),
                x_transitions: bits.iter().map(|b| b.x_transitions).sum(),
                kind: v.kind.clone(),
                range: v.range.clone(),
                scope: v.scope.join("."),
                bits,
            });
        }
        ToggleReport {
            file: file.to_string(),
            timescale: self.header.timescale.clone(),
            end_time: end,
            total_toggles: signals.iter().map(|s| s.toggles).sum(),
            total_x_transitions: signals.iter().map(|s| s.x_transitions).sum(),
            value_changes: self.changes,
            version: self.header.version.clone(),
            date: self.header.date.clone(),
            signals,
        }
    }

    #[inline]
    fn close_interval(&mut self, i: usize, now: u64) {
        let d = now - self.since[i];
        let b = &mut self.bits[i];
        match self.state[i] {
            B0 => b.t0 += d,
            B1 => b.t1 += d,
            BZ => b.tz += d,
            _ => b.tx += d,
        }
        self.since[i] = now;
    }
}

impl VcdVisitor for ToggleCounter {
    fn header(&mut self, header: &Header) -> Result<()> {
        let mut n = 0usize;
        self.base = header
            .code_widths
            .iter()
            .map(|&w| {
                let b = n;
                n += w as usize;
                b
            })
            .collect();
        self.state = vec![UNSET; n];
        self.since = vec![0; n];
        self.bits = vec![BitActivity::default(); n];
        self.header = header.clone();
        Ok(())
    }

    #[inline]
    fn time(&mut self, t: u64) {
        self.now = t;
    }

    #[inline]
    fn change(&mut self, code: u32, value: Value<'_>) -> std::result::Result<(), String> {
        let Value::Bits(v) = value else { return Ok(()) };
        self.changes += 1;
        let code = code as usize;
        let width = self.header.code_widths[code] as usize;
        if v.len() > width {
            return Err(format!("bad width: value has {} bits, var is {width} wide", v.len()));
        }
        let base = self.base[code];
        let pad = match BIT[v[0] as usize] {
            B1 => B0,
            p => p,
        };
        let now = self.now;
        let l = v.len();
        for i in 0..width {
            let nb = if i < l { BIT[v[l - 1 - i] as usize] } else { pad };
            let idx = base + i;
            let ob = self.state[idx];
            if ob == nb {
                continue;
            }
            self.close_interval(idx, now);
            self.state[idx] = nb;
            if ob == UNSET {
                continue;
            }
            if ob | nb <= 1 {
                self.bits[idx].toggles += 1;
            } else {
                self.bits[idx].x_transitions += 1;
            }
        }
        Ok(())
    }
}

/// Count toggles in a VCD stream. `name` names it in errors and the report.
pub fn count_toggles<R: Read>(src: R, name: &str) -> Result<ToggleReport> {
    let mut c = ToggleCounter::default();
    parse_vcd(src, name, &mut c)?;
    Ok(c.finish(name))
}

/// Count toggles of a file; `-` reads stdin.
pub fn count_toggles_path(path: &Path) -> Result<ToggleReport> {
    if path.as_os_str() == "-" {
        return count_toggles(std::io::stdin().lock(), "<stdin>");
    }
    let f = std::fs::File::open(path).at(path)?;
    count_toggles(f, &path.display().to_string())
}

/// Quote a CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl ToggleReport {
    /// One row per signal; header `path,width,toggles,x_transitions,kind,range`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("path,width,toggles,x_transitions,kind,range\n");
        for s in &self.signals {
            let kind = serde_json::to_value(&s.kind).ok().and_then(|v| v.as_str().map(String::from));
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                csv_field(&s.path),
                s.width,
                s.toggles,
                s.x_transitions,
                csv_field(&kind.unwrap_or_else(|| "other".into())),
                csv_field(s.range.as_deref().unwrap_or(""))
            ));
        }
        out
    }

    /// For people: totals, the `top` most active signals, per-scope sums.
    pub fn to_table(&self, top: usize) -> String {
        let mut out = format!(
            "file        {}\ntimescale   {}\nend time    {}\nsignals     {}\nchanges     {}\ntoggles     {}\nx/z trans.  {}\n\n",
            self.file,
            self.timescale.as_deref().unwrap_or("n/a"),
            self.end_time,
            self.signals.len(),
            self.value_changes,
            self.total_toggles,
            self.total_x_transitions
        );
        let mut order: Vec<&SignalToggles> = self.signals.iter().collect();
        order.sort_by(|a, b| b.toggles.cmp(&a.toggles).then_with(|| a.path.cmp(&b.path)));
        let w = order.iter().take(top).map(|s| s.path.len()).max().unwrap_or(4).max(4);
        out.push_str(&format!("{:<w$}  {:>5}  {:>14}  {:>7}  {:>10}\n", "path", "width", "toggles", "share", "x/z trans."));
        for s in order.iter().take(top) {
            let share = if self.total_toggles > 0 { 100.0 * s.toggles as f64 / self.total_toggles as f64 } else { 0.0 };
            out.push_str(&format!("{:<w$}  {:>5}  {:>14}  {:>6.2}%  {:>10}\n", s.path, s.width, s.toggles, share, s.x_transitions));
        }
        if order.len() > top {
            out.push_str(&format!("... {} more signals (--top N, or --format csv for all)\n", order.len() - top));
        }
        let sums = self.scope_sums();
        if !sums.is_empty() {
            let w = sums.iter().map(|(s, _)| s.len()).max().unwrap_or(5).max(5);
            out.push_str(&format!("\n{:<w$}  {:>14}\n", "scope", "toggles"));
            for (s, t) in sums {
                out.push_str(&format!("{s:<w$}  {t:>14}\n"));
            }
        }
        out
    }
}
