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

/// Current value of a var of width <= 64, packed: bit i of `val` is bit i's 0/1, `xz`
/// marks bits at x or z, `z` those at z; `set` is false until the first value.
#[derive(Clone, Copy, Default)]
struct Packed {
    val: u64,
    xz: u64,
    z: u64,
    set: bool,
}

/// The visitor: flat per-bit arrays indexed by `base[code] + bit`. Vars up to 64 bits wide
/// (nearly all) also keep a packed value, so a change costs work only for the bits that
/// changed; wider vars take the per-bit path.
#[derive(Default)]
pub struct ToggleCounter {
    header: Header,
    base: Vec<usize>,
    packed: Vec<Packed>,
    state: Vec<u8>,
    toggles: Vec<u64>,
    x_transitions: Vec<u64>,
    /// Time-in-state tracking (for SAIF) costs a memory write per changed bit: opt-in.
    durations: bool,
    since: Vec<u64>,
    /// Per bit: time at 0, 1, x, z.
    times: Vec<[u64; 4]>,
    now: u64,
    changes: u64,
    /// For joining counters of consecutive body segments: the first time stamp, each
    /// packed var's first value, each wide-var bit's first value.
    first_time: Option<u64>,
    first: Vec<Packed>,
    first_state: Vec<u8>,
}

impl ToggleCounter {
    /// `durations`: also track time at 0/1/x/z per bit (needed for SAIF; slower).
    pub fn new(durations: bool) -> Self {
        ToggleCounter {
            durations,
            ..Default::default()
        }
    }

    pub fn finish(mut self, file: &str) -> ToggleReport {
        let end = self.now;
        for i in 0..self.state.len() {
            self.close_interval(i, end);
        }
        let times = std::mem::take(&mut self.times);
        let mut signals = Vec::new();
        for v in &self.header.vars {
            if v.kind.is_real() {
                continue;
            }
            let b = self.base[v.code as usize];
            let bits: Vec<BitActivity> = (b..b + v.width as usize)
                .map(|i| {
                    let t = times.get(i).copied().unwrap_or_default();
                    BitActivity {
                        toggles: self.toggles[i],
                        x_transitions: self.x_transitions[i],
                        t0: t[0],
                        t1: t[1],
                        tx: t[2],
                        tz: t[3],
                    }
                })
                .collect();
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
        if !self.durations {
            return;
        }
        let d = now - self.since[i];
        let slot = match self.state[i] {
            B0 => 0,
            B1 => 1,
            BZ => 3,
            _ => 2,
        };
        self.times[i][slot] += d;
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
        self.packed = vec![Packed::default(); header.code_widths.len()];
        self.first = vec![Packed::default(); header.code_widths.len()];
        self.state = vec![UNSET; n];
        self.first_state = vec![UNSET; n];
        self.toggles = vec![0; n];
        self.x_transitions = vec![0; n];
        if self.durations {
            self.since = vec![0; n];
            self.times = vec![[0; 4]; n];
        }
        self.header = header.clone();
        Ok(())
    }

    #[inline]
    fn time(&mut self, t: u64) {
        self.first_time.get_or_insert(t);
        self.now = t;
    }

    // Inlined into the parser's loop: one body for the hot path, no call per change.
    #[inline(always)]
    fn change(&mut self, code: u32, value: Value<'_>) -> std::result::Result<(), String> {
        let Value::Bits(v) = value else { return Ok(()) };
        self.changes += 1;
        let code = code as usize;
        let width = self.header.code_widths[code] as usize;
        if v.len() > width {
            return Err(format!(
                "bad width: value has {} bits, var is {width} wide",
                v.len()
            ));
        }
        let base = self.base[code];
        let pad = match BIT[v[0] as usize] {
            B1 => B0,
            p => p,
        };
        if width <= 64 {
            return self.change_packed(code, base, width, v, pad);
        }
        let now = self.now;
        let l = v.len();
        for i in 0..width {
            let nb = if i < l {
                BIT[v[l - 1 - i] as usize]
            } else {
                pad
            };
            let idx = base + i;
            let ob = self.state[idx];
            if ob == nb {
                continue;
            }
            self.close_interval(idx, now);
            self.state[idx] = nb;
            if ob == UNSET {
                self.first_state[idx] = nb;
                continue;
            }
            if ob | nb <= 1 {
                self.toggles[idx] += 1;
            } else {
                self.x_transitions[idx] += 1;
            }
        }
        Ok(())
    }
}

impl ToggleCounter {
    /// Toggles (0<->1) and x/z transitions between two packed values of the var at `base`.
    #[inline]
    fn count_changes(&mut self, base: usize, old: &Packed, new: &Packed) {
        let mut changed = (old.val ^ new.val) | (old.xz ^ new.xz) | (old.z ^ new.z);
        let x = old.xz | new.xz;
        while changed != 0 {
            let i = changed.trailing_zeros() as usize;
            changed &= changed - 1;
            if x >> i & 1 == 0 {
                self.toggles[base + i] += 1;
            } else {
                self.x_transitions[base + i] += 1;
            }
        }
    }

    /// Append `later`, a counter (without durations) that ran over the body segment right
    /// after this one's, starting from nothing: its first value of each bit is compared with
    /// this one's last value. False when time goes backwards across the boundary.
    fn absorb(&mut self, later: ToggleCounter) -> bool {
        if let (Some(_), Some(t)) = (self.first_time, later.first_time) {
            if t < self.now {
                return false;
            }
        }
        for (a, b) in self.toggles.iter_mut().zip(&later.toggles) {
            *a += b;
        }
        for (a, b) in self.x_transitions.iter_mut().zip(&later.x_transitions) {
            *a += b;
        }
        for code in 0..self.packed.len() {
            let (base, width) = (self.base[code], self.header.code_widths[code] as usize);
            if width <= 64 {
                let (old, first) = (self.packed[code], later.first[code]);
                if first.set {
                    if old.set {
                        self.count_changes(base, &old, &first);
                    } else {
                        self.first[code] = first;
                    }
                    self.packed[code] = later.packed[code];
                }
                continue;
            }
            for i in base..base + width {
                let (ob, nb) = (self.state[i], later.first_state[i]);
                if nb == UNSET {
                    continue;
                }
                if ob == UNSET {
                    self.first_state[i] = nb;
                } else if ob != nb {
                    if ob | nb <= 1 {
                        self.toggles[i] += 1;
                    } else {
                        self.x_transitions[i] += 1;
                    }
                }
                self.state[i] = later.state[i];
            }
        }
        self.changes += later.changes;
        if let Some(t) = later.first_time {
            self.first_time.get_or_insert(t);
            self.now = later.now;
        }
        true
    }

    #[inline(always)]
    fn change_packed(
        &mut self,
        code: usize,
        base: usize,
        width: usize,
        v: &[u8],
        pad: u8,
    ) -> std::result::Result<(), String> {
        let (mut val, mut xz, mut z) = (0u64, 0u64, 0u64);
        let mut chunks = v.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            if w & 0xFEFE_FEFE_FEFE_FEFE == 0x3030_3030_3030_3030 {
                // Eight '0'/'1' characters at once: gather the low bits, first char as MSB.
                val = (val << 8)
                    | ((w & 0x0101_0101_0101_0101).wrapping_mul(0x8040_2010_0804_0201) >> 56);
                xz <<= 8;
                z <<= 8;
            } else {
                for &ch in c {
                    push_bit(&mut val, &mut xz, &mut z, ch);
                }
            }
        }
        for &ch in chunks.remainder() {
            push_bit(&mut val, &mut xz, &mut z, ch);
        }
        let wmask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        if pad >= BX && v.len() < width {
            let upper = wmask & !((1u64 << v.len()) - 1);
            xz |= upper;
            if pad == BZ {
                z |= upper;
            }
        }
        let old = self.packed[code];
        let new = Packed {
            val,
            xz,
            z,
            set: true,
        };
        self.packed[code] = new;
        if !old.set {
            self.first[code] = new;
        }
        if !self.durations {
            // Counting only: `packed` is the state, no per-bit bookkeeping.
            if old.set {
                self.count_changes(base, &old, &new);
            }
            return Ok(());
        }
        let now = self.now;
        if !old.set {
            for i in 0..width {
                // Time before the first value counts as x.
                self.close_interval(base + i, now);
                self.state[base + i] = bit_of(&new, i);
            }
            return Ok(());
        }
        let mut changed = (old.val ^ val) | (old.xz ^ xz) | (old.z ^ z);
        while changed != 0 {
            let i = changed.trailing_zeros() as usize;
            changed &= changed - 1;
            let idx = base + i;
            self.close_interval(idx, now);
            self.state[idx] = bit_of(&new, i);
            let m = 1u64 << i;
            if (old.xz | xz) & m == 0 {
                self.toggles[idx] += 1;
            } else {
                self.x_transitions[idx] += 1;
            }
        }
        Ok(())
    }
}

#[inline]
fn push_bit(val: &mut u64, xz: &mut u64, z: &mut u64, c: u8) {
    let b = BIT[c as usize];
    *val = (*val << 1) | (b == B1) as u64;
    *xz = (*xz << 1) | (b >= BX) as u64;
    *z = (*z << 1) | (b == BZ) as u64;
}

#[inline]
fn bit_of(p: &Packed, i: usize) -> u8 {
    let m = 1u64 << i;
    if p.z & m != 0 {
        BZ
    } else if p.xz & m != 0 {
        BX
    } else {
        (p.val & m != 0) as u8
    }
}

/// Count toggles in a VCD stream, with time-in-state per bit (for SAIF). `name` names
/// the stream in errors and the report.
pub fn count_toggles<R: Read>(src: R, name: &str) -> Result<ToggleReport> {
    count_toggles_with(src, name, true)
}

/// `durations: false` skips time-in-state tracking (t0/t1/tx/tz stay 0): faster.
pub fn count_toggles_with<R: Read>(src: R, name: &str, durations: bool) -> Result<ToggleReport> {
    let mut c = ToggleCounter::new(durations);
    parse_vcd(src, name, &mut c)?;
    Ok(c.finish(name))
}

/// Count toggles of a file (`-` reads stdin); see `count_toggles_with`. Without durations,
/// a file of 16 MiB or more is counted in segments on all cores (`count_toggles_segmented`).
pub fn count_toggles_path_with(path: &Path, durations: bool) -> Result<ToggleReport> {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    count_toggles_path_threads(path, durations, cores)
}

/// `count_toggles_path_with` on at most `threads` threads.
pub fn count_toggles_path_threads(
    path: &Path,
    durations: bool,
    threads: usize,
) -> Result<ToggleReport> {
    if path.as_os_str() == "-" {
        return count_toggles_with(std::io::stdin().lock(), "<stdin>", durations);
    }
    let size = std::fs::metadata(path).at(path)?.len();
    if !durations && threads > 1 && size >= 16 << 20 {
        return count_toggles_segmented(path, threads);
    }
    let f = std::fs::File::open(path).at(path)?;
    count_toggles_with(f, &path.display().to_string(), durations)
}

/// Count toggles (no durations) of a file in `segments` pieces of its body on as many
/// threads, then join them in order. Pieces start at a time stamp (`#` at a line start);
/// a piece that fails to parse (a split inside a `$comment`, or a real error) or a join
/// that finds time going backwards sends the whole file through the sequential parser,
/// which reports the first error with its exact line. Same counts as sequential (tests).
pub fn count_toggles_segmented(path: &Path, segments: usize) -> Result<ToggleReport> {
    use std::io::{Seek, SeekFrom};
    let name = path.display().to_string();
    let sequential = || count_toggles_with(std::fs::File::open(path).at(path)?, &name, false);
    let prelude = crate::vcd::parse::parse_prelude(std::fs::File::open(path).at(path)?, &name)?;
    let size = std::fs::metadata(path).at(path)?.len();
    let mut starts = vec![prelude.body_offset];
    let mut f = std::fs::File::open(path).at(path)?;
    let mut window = vec![0u8; 1 << 16];
    for k in 1..segments.max(1) {
        let at = prelude.body_offset + (size - prelude.body_offset) * k as u64 / segments as u64;
        if at <= *starts.last().unwrap_or(&0) {
            continue;
        }
        f.seek(SeekFrom::Start(at)).at(path)?;
        let n = read_full(&mut f, &mut window).at(path)?;
        if let Some(i) = memchr::memmem::find(&window[..n], b"\n#") {
            starts.push(at + i as u64 + 1);
        }
    }
    starts.push(size);
    let results: Vec<Result<ToggleCounter>> = std::thread::scope(|s| {
        let handles: Vec<_> = starts
            .windows(2)
            .map(|w| {
                let (start, end, prelude, name) = (w[0], w[1], &prelude, &name);
                s.spawn(move || -> Result<ToggleCounter> {
                    let mut f = std::fs::File::open(path).at(path)?;
                    f.seek(SeekFrom::Start(start)).at(path)?;
                    let mut c = ToggleCounter::new(false);
                    c.header(&prelude.header)?;
                    crate::vcd::parse::parse_body_segment(
                        f.take(end - start),
                        name,
                        prelude,
                        start,
                        &mut c,
                    )?;
                    Ok(c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::error::Error::Config("VCD worker panicked".into()))
                })
            })
            .collect()
    });
    let mut counters = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(c) => counters.push(c),
            Err(_) => return sequential(),
        }
    }
    let mut it = counters.into_iter();
    let Some(mut total) = it.next() else {
        return sequential();
    };
    for c in it {
        if !total.absorb(c) {
            return sequential();
        }
    }
    Ok(total.finish(&name))
}

/// Read until `buf` is full or the input ends; the count read.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Count toggles of a file with time-in-state; `-` reads stdin.
pub fn count_toggles_path(path: &Path) -> Result<ToggleReport> {
    count_toggles_path_with(path, true)
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
            let kind = serde_json::to_value(&s.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from));
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
        let w = order
            .iter()
            .take(top)
            .map(|s| s.path.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.push_str(&format!(
            "{:<w$}  {:>5}  {:>14}  {:>7}  {:>10}\n",
            "path", "width", "toggles", "share", "x/z trans."
        ));
        for s in order.iter().take(top) {
            let share = if self.total_toggles > 0 {
                100.0 * s.toggles as f64 / self.total_toggles as f64
            } else {
                0.0
            };
            out.push_str(&format!(
                "{:<w$}  {:>5}  {:>14}  {:>6.2}%  {:>10}\n",
                s.path, s.width, s.toggles, share, s.x_transitions
            ));
        }
        if order.len() > top {
            out.push_str(&format!(
                "... {} more signals (--top N, or --format csv for all)\n",
                order.len() - top
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_gather_matches_per_char() {
        let mut r = 0x1234_5678_9abc_def1u64;
        for _ in 0..2000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let n = (r % 64) as usize + 1;
            let s: Vec<u8> = (0..n)
                .map(|i| if (r >> (i % 64)) & 1 == 1 { b'1' } else { b'0' })
                .collect();
            let text = format!(
                "$var wire {n} ! v $end\n$enddefinitions $end\n#0\nb{} !\n",
                String::from_utf8_lossy(&s)
            );
            let rep = count_toggles(text.as_bytes(), "t").unwrap();
            // Flip to all-x: every bit becomes an x transition; then compare packed state
            // through the per-bit durations: each bit was at its value for 0 time units.
            assert_eq!(rep.signals[0].width as usize, n);
            let mut c = ToggleCounter::new(false);
            crate::vcd::parse_vcd(text.as_bytes(), "t", &mut c).unwrap();
            let expect = s.iter().fold(0u64, |a, &ch| (a << 1) | (ch == b'1') as u64);
            assert_eq!(c.packed[0].val, expect, "{}", String::from_utf8_lossy(&s));
        }
    }
}
