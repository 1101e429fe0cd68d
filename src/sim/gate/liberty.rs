//! Liberty (.lib) in, what the energy model needs out: each cell's input pin capacitances,
//! clock pins, the internal energy of its output transitions and of its input pins, and the
//! library's units and nominal voltage. A small parser of Liberty's grammar (groups
//! `name (args) { ... }`, attributes `name : value ;` and `name (args) ;`, comments,
//! backslash continuations); errors name the file and line.

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// One group: `kind (args) { attrs; groups }`.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub kind: String,
    pub args: Vec<String>,
    /// Simple attributes have one value; complex ones (`values ("..", "..")`) their args.
    pub attrs: Vec<(String, Vec<String>)>,
    pub groups: Vec<Group>,
}

impl Group {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }

    fn children<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups.iter().filter(move |g| g.kind == kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Str(&'a str),
    Punct(u8),
}

struct Lexer<'a> {
    s: &'a str,
    at: usize,
    line: u64,
    file: &'a str,
}

impl<'a> Lexer<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Parse {
            file: self.file.to_string(),
            line: self.line,
            offset: self.at as u64,
            msg: msg.into(),
        }
    }

    fn next(&mut self) -> Result<Option<Tok<'a>>> {
        let b = self.s.as_bytes();
        loop {
            while self.at < b.len() && (b[self.at].is_ascii_whitespace() || b[self.at] == b'\\') {
                if b[self.at] == b'\n' {
                    self.line += 1;
                }
                self.at += 1;
            }
            if self.s[self.at..].starts_with("/*") {
                let end = self.s[self.at + 2..]
                    .find("*/")
                    .ok_or_else(|| self.err("unterminated comment"))?;
                self.line += self.s[self.at..self.at + 2 + end].matches('\n').count() as u64;
                self.at += end + 4;
            } else if self.s[self.at..].starts_with("//") {
                self.at += self.s[self.at..]
                    .find('\n')
                    .unwrap_or(self.s.len() - self.at);
            } else {
                break;
            }
        }
        if self.at >= b.len() {
            return Ok(None);
        }
        let c = b[self.at];
        if b"(){}:;,".contains(&c) {
            self.at += 1;
            return Ok(Some(Tok::Punct(c)));
        }
        if c == b'"' {
            let end = self.s[self.at + 1..]
                .find('"')
                .ok_or_else(|| self.err("unterminated string"))?;
            let t = &self.s[self.at + 1..self.at + 1 + end];
            self.line += t.matches('\n').count() as u64;
            self.at += end + 2;
            return Ok(Some(Tok::Str(t)));
        }
        let start = self.at;
        while self.at < b.len()
            && !b[self.at].is_ascii_whitespace()
            && !b"(){}:;,\"".contains(&b[self.at])
        {
            self.at += 1;
        }
        Ok(Some(Tok::Word(&self.s[start..self.at])))
    }

    fn expect(&mut self, p: u8) -> Result<()> {
        match self.next()? {
            Some(Tok::Punct(c)) if c == p => Ok(()),
            t => Err(self.err(format!("expected '{}', found {}", p as char, desc(t)))),
        }
    }
}

fn desc(t: Option<Tok>) -> String {
    match t {
        None => "the end of file".into(),
        Some(Tok::Word(w)) => format!("'{w}'"),
        Some(Tok::Str(w)) => format!("\"{w}\""),
        Some(Tok::Punct(c)) => format!("'{}'", c as char),
    }
}

/// Parse the statements of a group body up to its `}` (or the end of the file at the top).
fn body(lx: &mut Lexer, g: &mut Group, top: bool) -> Result<()> {
    loop {
        let name = match lx.next()? {
            None if top => return Ok(()),
            None => return Err(lx.err("unexpected end of file (a '}' is missing)")),
            Some(Tok::Punct(b'}')) if !top => return Ok(()),
            Some(Tok::Punct(b';')) => continue,
            Some(Tok::Word(w)) => w.to_string(),
            Some(t) => return Err(lx.err(format!("expected a name, found {}", desc(Some(t))))),
        };
        match lx.next()? {
            Some(Tok::Punct(b':')) => {
                let v = match lx.next()? {
                    Some(Tok::Word(w)) | Some(Tok::Str(w)) => w.to_string(),
                    t => return Err(lx.err(format!("{name}: expected a value, found {}", desc(t)))),
                };
                lx.expect(b';')?;
                g.attrs.push((name, vec![v]));
            }
            Some(Tok::Punct(b'(')) => {
                let mut args = Vec::new();
                loop {
                    match lx.next()? {
                        Some(Tok::Punct(b')')) => break,
                        Some(Tok::Punct(b',')) => {}
                        Some(Tok::Word(w)) | Some(Tok::Str(w)) => args.push(w.to_string()),
                        t => return Err(lx.err(format!("{name}(...): unexpected {}", desc(t)))),
                    }
                }
                let save = (lx.at, lx.line);
                match lx.next()? {
                    Some(Tok::Punct(b'{')) => {
                        let mut child = Group {
                            kind: name,
                            args,
                            ..Default::default()
                        };
                        body(lx, &mut child, false)?;
                        g.groups.push(child);
                    }
                    Some(Tok::Punct(b';')) => g.attrs.push((name, args)),
                    _ => {
                        // `;` is optional after a complex attribute on some libraries.
                        (lx.at, lx.line) = save;
                        g.attrs.push((name, args));
                    }
                }
            }
            t => {
                return Err(lx.err(format!(
                    "after {name}: expected ':' or '(', found {}",
                    desc(t)
                )))
            }
        }
    }
}

/// Parse Liberty text.
pub fn parse(text: &str, file: &str) -> Result<Group> {
    let mut lx = Lexer {
        s: text,
        at: 0,
        line: 1,
        file,
    };
    let mut root = Group::default();
    body(&mut lx, &mut root, true)?;
    Ok(root)
}

/// A library with its units resolved: multiply its capacitances by `cap_scale` for pF and
/// its internal energies (capacitance unit x voltage unit squared) by `energy_scale` for pJ.
#[derive(Debug, Clone)]
pub struct Library {
    pub name: String,
    pub voltage: f64,
    pub cap_scale: f64,
    pub energy_scale: f64,
    root: Group,
}

pub struct InputPin {
    pub name: String,
    pub capacitance: f64,
    pub clock: bool,
    /// Mean of the pin's own internal_power rise/fall energies, if it has any.
    pub energy: Option<f64>,
}

pub struct LibCell<'a>(&'a Group);

impl Library {
    pub fn read(path: &Path) -> Result<Library> {
        let text = std::fs::read_to_string(path).at(path)?;
        let file = path.display().to_string();
        let doc = parse(&text, &file)?;
        let root = doc
            .groups
            .into_iter()
            .find(|g| g.kind == "library")
            .ok_or_else(|| Error::Config(format!("{file}: no library(...) group")))?;
        let bad = |m: String| Error::Config(format!("{file}: {m}"));
        let cap_scale = match root.attrs.iter().find(|(n, _)| n == "capacitive_load_unit") {
            Some((_, a)) if a.len() == 2 => {
                let v: f64 = a[0]
                    .parse()
                    .map_err(|_| bad(format!("capacitive_load_unit {a:?}")))?;
                v * match a[1].to_ascii_lowercase().as_str() {
                    "pf" => 1.0,
                    "ff" => 1e-3,
                    u => {
                        return Err(bad(format!(
                            "capacitive_load_unit in {u} (pf or ff expected)"
                        )))
                    }
                }
            }
            _ => return Err(bad("no capacitive_load_unit".into())),
        };
        let volt_scale = match root.attr("voltage_unit") {
            Some("1V") | None => 1.0,
            Some("1mV") => 1e-3,
            Some(u) => return Err(bad(format!("voltage_unit {u} (1V or 1mV expected)"))),
        };
        let voltage = root
            .attr("nom_voltage")
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| bad("no nom_voltage".into()))?
            * volt_scale;
        Ok(Library {
            name: root.args.first().cloned().unwrap_or_default(),
            voltage,
            cap_scale,
            energy_scale: cap_scale * volt_scale * volt_scale,
            root,
        })
    }

    pub fn cell(&self, name: &str) -> Option<LibCell<'_>> {
        self.root
            .children("cell")
            .find(|c| c.args.first().map(|a| a.trim_matches('"')) == Some(name))
            .map(LibCell)
    }
}

/// Mean of the first value of each rise_power/fall_power table in the internal_power groups.
fn internal_energy(pin: &Group) -> Option<f64> {
    let firsts: Vec<f64> = pin
        .children("internal_power")
        .flat_map(|ip| {
            ip.groups
                .iter()
                .filter(|t| t.kind == "rise_power" || t.kind == "fall_power")
        })
        .filter_map(|t| {
            let (_, v) = t.attrs.iter().find(|(n, _)| n == "values")?;
            v.first()?.split(',').next()?.trim().parse().ok()
        })
        .collect();
    (!firsts.is_empty()).then(|| firsts.iter().sum::<f64>() / firsts.len() as f64)
}

impl LibCell<'_> {
    fn pins(&self, dir: &str) -> impl Iterator<Item = &Group> + '_ {
        let dir = dir.to_string();
        self.0
            .children("pin")
            .filter(move |p| p.attr("direction") == Some(dir.as_str()))
    }

    pub fn inputs(&self) -> Vec<InputPin> {
        self.pins("input")
            .map(|p| InputPin {
                name: p.args.first().cloned().unwrap_or_default(),
                capacitance: p
                    .attr("capacitance")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0.0),
                clock: p.attr("clock") == Some("true"),
                energy: internal_energy(p),
            })
            .collect()
    }

    /// Internal energy per output transition: the first output pin's tables.
    pub fn output_energy(&self) -> f64 {
        self.pins("output")
            .next()
            .and_then(internal_energy)
            .unwrap_or(0.0)
    }
}
