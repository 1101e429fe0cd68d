//! SAIF 2.0 export of a `ToggleReport`, and a small reader for it.
//!
//! In: a report with per-bit activity. Out: backward SAIF text with the instance hierarchy
//! (one INSTANCE per VCD scope), DURATION, and per net (per bit for vectors, escaped as
//! `name\[3\]`) T0, T1, TX, TZ, TC, IG. IG (glitches) is 0: a VCD records values at time
//! stamps, not glitch pulses. The reader parses the s-expression back into per-net
//! (T0, T1, TX, TC) so tests can check the round trip.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::toggles::{BitActivity, ToggleReport};
use crate::error::{Error, Result};

#[derive(Default)]
struct Inst<'a> {
    nets: Vec<(String, &'a BitActivity)>,
    children: BTreeMap<String, Inst<'a>>,
}

fn escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// `1ns` -> `1 ns` as SAIF wants it.
fn saif_timescale(ts: Option<&str>) -> String {
    let ts = ts.unwrap_or("1ns");
    let split = ts.find(|c: char| !c.is_ascii_digit()).unwrap_or(ts.len());
    format!("{} {}", &ts[..split], &ts[split..])
}

pub fn to_saif(report: &ToggleReport) -> String {
    let mut root = Inst::default();
    for s in &report.signals {
        let mut inst = &mut root;
        for part in s.scope.split('.').filter(|p| !p.is_empty()) {
            inst = inst.children.entry(part.to_string()).or_default();
        }
        // Bit index in the net name: from the declared range's low end when there is one.
        let lsb = s.range.as_deref().and_then(|r| {
            let r = r.trim_start_matches('[').trim_end_matches(']');
            let (hi, lo) = r.split_once(':').unwrap_or((r, r));
            Some((
                hi.trim().parse::<i64>().ok()?,
                lo.trim().parse::<i64>().ok()?,
            ))
        });
        let name = escape(s.path.rsplit('.').next().unwrap_or(&s.path));
        if s.width == 1 && s.range.is_none() {
            inst.nets.push((name, &s.bits[0]));
        } else {
            for (i, b) in s.bits.iter().enumerate() {
                let idx = match lsb {
                    Some((hi, lo)) if hi >= lo => lo + i as i64,
                    Some((_, lo)) => lo - i as i64,
                    None => i as i64,
                };
                inst.nets.push((format!("{name}\\[{idx}\\]"), b));
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "(SAIFILE\n(SAIFVERSION \"2.0\")\n(DIRECTION \"backward\")"
    );
    let _ = writeln!(
        out,
        "(DESIGN )\n(DATE \"{}\")",
        report.date.as_deref().unwrap_or("")
    );
    let _ = writeln!(out, "(VENDOR \"perfwatt\")\n(PROGRAM_NAME \"perfwatt\")");
    let _ = writeln!(
        out,
        "(VERSION \"{}\")\n(DIVIDER / )",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "(TIMESCALE {})",
        saif_timescale(report.timescale.as_deref())
    );
    let _ = writeln!(out, "(DURATION {})", report.end_time);
    for (name, inst) in &root.children {
        write_inst(&mut out, name, inst, 0);
    }
    out.push_str(")\n");
    out
}

fn write_inst(out: &mut String, name: &str, inst: &Inst<'_>, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}(INSTANCE {}", escape(name));
    if !inst.nets.is_empty() {
        let _ = writeln!(out, "{pad}  (NET");
        for (n, b) in &inst.nets {
            let _ = writeln!(
                out,
                "{pad}    ({n}\n{pad}      (T0 {}) (T1 {}) (TX {}) (TZ {})\n{pad}      (TC {}) (IG 0)\n{pad}    )",
                b.t0, b.t1, b.tx, b.tz, b.toggles
            );
        }
        let _ = writeln!(out, "{pad}  )");
    }
    for (n, c) in &inst.children {
        write_inst(out, n, c, depth + 1);
    }
    let _ = writeln!(out, "{pad})");
}

/// Per-net activity read back from SAIF: path `inst/inst/net` (escapes removed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaifNet {
    pub t0: u64,
    pub t1: u64,
    pub tx: u64,
    pub tc: u64,
}

#[derive(Debug)]
enum Sx {
    Atom(String),
    List(Vec<Sx>),
}

fn tokenize(text: &str) -> Result<Vec<String>> {
    let mut toks = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => in_str = !in_str,
            '\\' if !in_str => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '(' | ')' if !in_str => {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
                toks.push(c.to_string());
            }
            c if c.is_whitespace() && !in_str => {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if in_str {
        return Err(Error::Trace("SAIF: unterminated string".into()));
    }
    Ok(toks)
}

fn build(toks: &[String], i: &mut usize) -> Result<Sx> {
    if toks[*i] != "(" {
        let a = Sx::Atom(toks[*i].clone());
        *i += 1;
        return Ok(a);
    }
    *i += 1;
    let mut items = Vec::new();
    while *i < toks.len() && toks[*i] != ")" {
        items.push(build(toks, i)?);
    }
    if *i >= toks.len() {
        return Err(Error::Trace("SAIF: unbalanced parentheses".into()));
    }
    *i += 1;
    Ok(Sx::List(items))
}

/// Read a SAIF file's nets and DURATION.
pub fn read_saif(text: &str) -> Result<(u64, BTreeMap<String, SaifNet>)> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(Error::Trace("SAIF: empty".into()));
    }
    let mut i = 0;
    let top = build(&toks, &mut i)?;
    let Sx::List(items) = top else {
        return Err(Error::Trace("SAIF: not a list".into()));
    };
    let mut nets = BTreeMap::new();
    let mut duration = 0;
    for it in &items {
        if let Sx::List(l) = it {
            match l.first() {
                Some(Sx::Atom(a)) if a == "DURATION" => {
                    if let Some(Sx::Atom(d)) = l.get(1) {
                        duration = d
                            .parse()
                            .map_err(|_| Error::Trace("SAIF: bad DURATION".into()))?;
                    }
                }
                Some(Sx::Atom(a)) if a == "INSTANCE" => walk(l, "", &mut nets)?,
                _ => {}
            }
        }
    }
    Ok((duration, nets))
}

fn walk(inst: &[Sx], prefix: &str, nets: &mut BTreeMap<String, SaifNet>) -> Result<()> {
    let Some(Sx::Atom(name)) = inst.get(1) else {
        return Err(Error::Trace("SAIF: INSTANCE without name".into()));
    };
    let path = if prefix.is_empty() {
        name.clone()
    } else {
        format!("{prefix}/{name}")
    };
    for it in &inst[2..] {
        let Sx::List(l) = it else { continue };
        match l.first() {
            Some(Sx::Atom(a)) if a == "INSTANCE" => walk(l, &path, nets)?,
            Some(Sx::Atom(a)) if a == "NET" => {
                for net in &l[1..] {
                    let Sx::List(n) = net else { continue };
                    let Some(Sx::Atom(nn)) = n.first() else {
                        continue;
                    };
                    let mut v = SaifNet::default();
                    for kv in &n[1..] {
                        if let Sx::List(kv) = kv {
                            if let (Some(Sx::Atom(k)), Some(Sx::Atom(x))) = (kv.first(), kv.get(1))
                            {
                                let x: u64 = x
                                    .parse()
                                    .map_err(|_| Error::Trace(format!("SAIF: bad {k} of {nn}")))?;
                                match k.as_str() {
                                    "T0" => v.t0 = x,
                                    "T1" => v.t1 = x,
                                    "TX" => v.tx = x,
                                    "TC" => v.tc = x,
                                    _ => {}
                                }
                            }
                        }
                    }
                    nets.insert(format!("{path}/{nn}"), v);
                }
            }
            _ => {}
        }
    }
    Ok(())
}
