//! Streaming VCD parser: nom (streaming combinators) over a fixed-size chunk buffer.
//!
//! In: any `Read` (file, stdin). Out: one `Header` (scopes, vars, identifier codes), then
//! time stamps and value changes pushed into a `VcdVisitor`. Memory is the chunk buffer
//! plus the header: constant in the file's size. A nom parser that runs off the end of the
//! buffer answers `Incomplete`; the driver then slides the unread tail to the front, reads
//! more, and parses the same item again. At end of input one newline is appended so the
//! last token is terminated; anything still incomplete after that is a truncated file.

use std::collections::HashMap;
use std::io::Read;

use nom::bytes::streaming::{tag, take_until, take_while, take_while1};
use nom::sequence::{preceded, terminated};
use nom::IResult;

use crate::error::{Error, Result};

/// Kind of a `$var`. Unknown kinds are kept by name so nothing is rejected for novelty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarKind {
    Wire,
    Reg,
    Integer,
    Real,
    Realtime,
    Parameter,
    Event,
    Logic,
    Bit,
    Other(String),
}

impl VarKind {
    fn from_bytes(b: &[u8]) -> VarKind {
        match b {
            b"wire" => VarKind::Wire,
            b"reg" => VarKind::Reg,
            b"integer" => VarKind::Integer,
            b"real" => VarKind::Real,
            b"realtime" => VarKind::Realtime,
            b"parameter" => VarKind::Parameter,
            b"event" => VarKind::Event,
            b"logic" => VarKind::Logic,
            b"bit" => VarKind::Bit,
            other => VarKind::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }
    /// Real-valued vars carry `r` changes and are never counted as toggles.
    pub fn is_real(&self) -> bool {
        matches!(self, VarKind::Real | VarKind::Realtime)
            || matches!(self, VarKind::Other(s) if s == "real_parameter" || s == "shortreal")
    }
}

/// One `$var` declaration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Var {
    /// Scope names from the root, e.g. `["tb", "dut"]`.
    pub scope: Vec<String>,
    /// Reference name without its bit range, e.g. `acc`.
    pub name: String,
    /// Bit range as written, e.g. `[31:0]`, if any.
    pub range: Option<String>,
    pub kind: VarKind,
    pub width: u32,
    /// Dense index of this var's identifier code; aliases share one.
    pub code: u32,
}

impl Var {
    /// Dotted scope path plus reference name: `tb.dut.acc`.
    pub fn path(&self) -> String {
        let mut p = self.scope.join(".");
        if !p.is_empty() {
            p.push('.');
        }
        p.push_str(&self.name);
        p
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Header {
    pub date: Option<String>,
    pub version: Option<String>,
    pub timescale: Option<String>,
    pub vars: Vec<Var>,
    /// Width of each identifier code (index = `Var::code`).
    pub code_widths: Vec<u32>,
    /// Whether each identifier code is real-valued.
    pub code_is_real: Vec<bool>,
}

/// A value as it appears in the file: bytes of `0 1 x X z Z` (MSB first), or a real's text.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Bits(&'a [u8]),
    Real(&'a [u8]),
}

/// Receives the parse. `change` gets the identifier's dense code (see `Header`).
pub trait VcdVisitor {
    fn header(&mut self, header: &Header) -> Result<()>;
    fn time(&mut self, t: u64);
    /// Returns an error message (the parser adds the position) when the value is invalid for
    /// the var, e.g. wider than it.
    fn change(&mut self, code: u32, value: Value<'_>) -> std::result::Result<(), String>;
    fn dump_off(&mut self, _off: bool) {}
}

// ---------------------------------------------------------------- nom token parsers

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}
fn is_tok(c: u8) -> bool {
    (0x21..0x7f).contains(&c)
}

fn ws(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(is_ws)(i)
}

/// One whitespace-delimited token: `preceded(ws, take_while1(is_tok))`, with the token's
/// end found eight bytes at a time (the body's hot path: value bits and identifiers).
fn token(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (i, _) = ws(i)?;
    let n = token_len(i);
    if n == i.len() {
        // Streaming: the token may go on in the next chunk.
        return Err(nom::Err::Incomplete(nom::Needed::new(1)));
    }
    if n == 0 {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::TakeWhile1,
        )));
    }
    Ok((&i[n..], &i[..n]))
}

/// Length of the run of token bytes (0x21..=0x7e) at the start of `i`.
#[inline]
fn token_len(i: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    while let Some(c) = i.get(n..n + 8) {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        // High bit of each byte < 0x21 (whitespace, control) and of each byte >= 0x7f. Borrows
        // and carries only run on from a byte already flagged, so the lowest flag is exact.
        let below = w.wrapping_sub(0x21 * ONES) & !w & HIGH;
        let above = (w.wrapping_add(ONES) | w) & HIGH;
        let stop = below | above;
        if stop != 0 {
            return n + (stop.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + i[n..].iter().take_while(|&&c| is_tok(c)).count()
}

/// Text up to the next `$end`, and the `$end`.
fn until_end(i: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_until("$end"), tag("$end"))(i)
}

/// The body item after leading whitespace.
#[derive(Debug)]
enum Item<'a> {
    Time(&'a [u8]),
    Scalar(u8, &'a [u8]),
    Vector(&'a [u8], &'a [u8]),
    Real(&'a [u8], &'a [u8]),
    Command(&'a [u8]),
    Comment,
}

fn body_item(i: &[u8]) -> IResult<&[u8], Item<'_>> {
    let (rest, tok) = token(i)?;
    let item = match tok[0] {
        b'#' => Item::Time(&tok[1..]),
        b'0' | b'1' | b'x' | b'X' | b'z' | b'Z' => Item::Scalar(tok[0], &tok[1..]),
        b'b' | b'B' => {
            let (rest, id) = token(rest)?;
            return Ok((rest, Item::Vector(&tok[1..], id)));
        }
        b'r' | b'R' => {
            let (rest, id) = token(rest)?;
            return Ok((rest, Item::Real(&tok[1..], id)));
        }
        b'$' if tok == b"$comment" => {
            let (rest, _) = until_end(rest)?;
            return Ok((rest, Item::Comment));
        }
        b'$' => Item::Command(&tok[1..]),
        _ => Item::Vector(tok, b""), // reported by the driver as a bad value
    };
    Ok((rest, item))
}

/// `$var kind width id ref [range] $end`: returns the tokens between `$var` and `$end`.
fn var_body(i: &[u8]) -> IResult<&[u8], Vec<&[u8]>> {
    let (mut rest, _) = ws(i)?;
    let mut toks = Vec::with_capacity(5);
    loop {
        let (r, t) = token(rest)?;
        rest = r;
        if t == b"$end" {
            return Ok((rest, toks));
        }
        toks.push(t);
    }
}

fn header_keyword(i: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(ws, preceded(tag("$"), take_while1(is_tok)))(i)
}

// ---------------------------------------------------------------- identifier codes

/// Maps identifier strings to dense codes. Short ids (the norm: Verilator and iverilog
/// use 1-4 characters) go through a direct table; longer ones through a hash map.
struct IdTable {
    direct: Vec<u32>,
    long: HashMap<Box<[u8]>, u32>,
}

const NONE: u32 = u32::MAX;
const DIRECT_LEN: usize = 3;

impl IdTable {
    fn new() -> Self {
        IdTable {
            direct: Vec::new(),
            long: HashMap::new(),
        }
    }
    /// 1..=3 printable chars -> a unique index in 0..95^3 (base 95, digit 0 = absent).
    #[inline]
    fn direct_index(id: &[u8]) -> Option<usize> {
        if id.is_empty() || id.len() > DIRECT_LEN {
            return None;
        }
        let mut k = 0usize;
        for &c in id {
            k = k * 95 + (c - 0x20) as usize;
        }
        Some(k)
    }
    #[inline]
    fn get(&self, id: &[u8]) -> Option<u32> {
        match Self::direct_index(id) {
            Some(k) => self.direct.get(k).copied().filter(|&c| c != NONE),
            None => self.long.get(id).copied(),
        }
    }
    fn insert(&mut self, id: &[u8], code: u32) {
        match Self::direct_index(id) {
            Some(k) => {
                if self.direct.len() <= k {
                    self.direct.resize(k + 1, NONE);
                }
                self.direct[k] = code;
            }
            None => {
                self.long.insert(id.into(), code);
            }
        }
    }
}

// ---------------------------------------------------------------- the driver

const CHUNK: usize = 256 * 1024;

/// A window on the input: `buf[start..end]` is unread. Tracks the byte offset and line of
/// `buf[0]` so errors can name their position.
struct Chunks<R: Read> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    offset0: u64,
    line0: u64,
    name: String,
}

impl<R: Read> Chunks<R> {
    fn new(src: R, name: &str) -> Self {
        Chunks {
            src,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            offset0: 0,
            line0: 1,
            name: name.to_string(),
        }
    }

    /// Read more input. Returns false when the input is exhausted (after the final newline).
    fn refill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // Slide the unread tail to the front, counting the lines we drop.
        if self.start > 0 {
            self.line0 += memchr::memchr_iter(b'\n', &self.buf[..self.start]).count() as u64;
            self.offset0 += self.start as u64;
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // One item larger than half the buffer (a long $comment): grow.
        if self.end * 2 > self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    self.buf[self.end] = b'\n';
                    self.end += 1;
                    return Ok(true);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.name, e)),
            }
        }
    }

    fn error_at(&self, pos: usize, msg: impl Into<String>) -> Error {
        let pos = pos.min(self.end);
        let line = self.line0 + memchr::memchr_iter(b'\n', &self.buf[..pos]).count() as u64;
        Error::Parse {
            file: self.name.clone(),
            line,
            offset: self.offset0 + pos as u64,
            msg: msg.into(),
        }
    }

    /// Position in `buf` of the first non-whitespace byte at or after `from`.
    fn skip_ws(&self, from: usize) -> usize {
        from + self.buf[from..self.end]
            .iter()
            .take_while(|&&c| is_ws(c))
            .count()
    }

    /// Parse one item with `p` (refilling on `Incomplete`) and hand it to `f`. Returns
    /// false at a clean end of input. An error message from `f` is reported at the item.
    fn next_with(
        &mut self,
        what: &str,
        mut p: impl FnMut(&[u8]) -> IResult<&[u8], std::result::Result<(), String>>,
    ) -> Result<bool> {
        loop {
            let input = &self.buf[self.start..self.end];
            match p(input) {
                Ok((rest, r)) => {
                    let consumed = input.len() - rest.len();
                    let at = self.start;
                    self.start += consumed;
                    return match r {
                        Ok(()) => Ok(true),
                        Err(msg) => {
                            let pos = self.skip_ws(at);
                            Err(self.error_at(pos, msg))
                        }
                    };
                }
                Err(nom::Err::Incomplete(_)) => {
                    if self.eof {
                        let pos = self.skip_ws(self.start);
                        if pos == self.end {
                            return Ok(false);
                        }
                        return Err(
                            self.error_at(pos, format!("truncated file: unfinished {what}"))
                        );
                    }
                    self.refill()?;
                }
                Err(_) => {
                    let pos = self.skip_ws(self.start);
                    let c = self.buf.get(pos).copied().unwrap_or(b' ');
                    return Err(self.error_at(pos, format!("unexpected byte 0x{c:02x} in {what}")));
                }
            }
        }
    }

    /// The body's hot loop: parse items back to back within the buffer (no per-item
    /// bookkeeping) until the handler returns `Ok(false)` (returns true) or the input ends
    /// cleanly (returns false). Refills on `Incomplete` like `next_with`.
    fn for_each(
        &mut self,
        what: &str,
        mut p: impl FnMut(&[u8]) -> IResult<&[u8], std::result::Result<bool, String>>,
    ) -> Result<bool> {
        loop {
            let input = &self.buf[self.start..self.end];
            let mut pos = 0;
            let outcome = loop {
                match p(&input[pos..]) {
                    Ok((rest, Ok(go_on))) => {
                        pos = input.len() - rest.len();
                        if !go_on {
                            break Some(Ok(()));
                        }
                    }
                    Ok((_, Err(msg))) => break Some(Err(msg)),
                    Err(nom::Err::Incomplete(_)) => break None,
                    Err(_) => break Some(Err(String::new())),
                }
            };
            let item = self.start + pos;
            match outcome {
                Some(Ok(())) => {
                    self.start = item;
                    return Ok(true);
                }
                Some(Err(msg)) => {
                    let at = self.skip_ws(item);
                    if msg.is_empty() {
                        let c = self.buf.get(at).copied().unwrap_or(b' ');
                        return Err(
                            self.error_at(at, format!("unexpected byte 0x{c:02x} in {what}"))
                        );
                    }
                    return Err(self.error_at(at, msg));
                }
                None => {
                    self.start = item;
                    if self.eof {
                        let at = self.skip_ws(self.start);
                        if at == self.end {
                            return Ok(false);
                        }
                        return Err(self.error_at(at, format!("truncated file: unfinished {what}")));
                    }
                    self.refill()?;
                }
            }
        }
    }

    /// Like `next_with`, but end of input is a truncation error.
    fn require(
        &mut self,
        what: &str,
        p: impl FnMut(&[u8]) -> IResult<&[u8], std::result::Result<(), String>>,
    ) -> Result<()> {
        if self.next_with(what, p)? {
            Ok(())
        } else {
            Err(self.error_at(self.end, format!("truncated file: unfinished {what}")))
        }
    }
}

/// `then` for `for_each`: the handler's success means "keep going", except when it has set
/// a flag the caller checks (see `After`).
fn then_continue<'x, T>(
    i: &'x [u8],
    p: impl Fn(&'x [u8]) -> IResult<&'x [u8], T>,
    f: impl FnOnce(T) -> std::result::Result<bool, String>,
) -> IResult<&'x [u8], std::result::Result<bool, String>> {
    let (rest, v) = p(i)?;
    Ok((rest, f(v)))
}

/// Adapts "parse with `p`, then handle the output with `f`" to `next_with`'s closure.
fn then<'x, T>(
    i: &'x [u8],
    p: impl Fn(&'x [u8]) -> IResult<&'x [u8], T>,
    f: impl FnOnce(T) -> std::result::Result<(), String>,
) -> IResult<&'x [u8], std::result::Result<(), String>> {
    let (rest, v) = p(i)?;
    Ok((rest, f(v)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Non-empty and only `0 1 x X z Z`; eight bytes at a time for the usual all-binary case.
#[inline]
fn valid_bits(bits: &[u8]) -> bool {
    let ok = |c: &u8| matches!(c, b'0' | b'1' | b'x' | b'X' | b'z' | b'Z');
    let mut chunks = bits.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        if w & 0xFEFE_FEFE_FEFE_FEFE != 0x3030_3030_3030_3030 && !c.iter().all(ok) {
            return false;
        }
    }
    !bits.is_empty() && chunks.remainder().iter().all(ok)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |a, &c| a * 10 + (c - b'0') as u64))
}

/// Split `data[7:0]` into (`data`, `[7:0]`).
fn split_range(reference: &str) -> (String, Option<String>) {
    match reference.find('[') {
        Some(i) if i > 0 && reference.ends_with(']') => {
            (reference[..i].to_string(), Some(reference[i..].to_string()))
        }
        _ => (reference.to_string(), None),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parse a whole VCD stream into `visitor`. `name` is used in error messages.
pub fn parse_vcd<R: Read>(src: R, name: &str, visitor: &mut impl VcdVisitor) -> Result<()> {
    let mut ch = Chunks::new(src, name);
    let mut ids = IdTable::new();
    let header = parse_header(&mut ch, &mut ids)?;
    visitor.header(&header)?;
    parse_body(&mut ch, &ids, &header, visitor)
}

/// A parsed header, its identifier table, and the byte offset where the body starts: what
/// parsers of body segments need (see `toggles::count_toggles_segmented`).
pub(crate) struct Prelude {
    pub header: Header,
    ids: IdTable,
    pub body_offset: u64,
}

pub(crate) fn parse_prelude<R: Read>(src: R, name: &str) -> Result<Prelude> {
    let mut ch = Chunks::new(src, name);
    let mut ids = IdTable::new();
    let header = parse_header(&mut ch, &mut ids)?;
    Ok(Prelude {
        header,
        ids,
        body_offset: ch.offset0 + ch.start as u64,
    })
}

/// Parse a piece of the body that starts at a line boundary (`offset`: where, for error
/// positions; line numbers count from the piece's start) into a visitor whose `header`
/// has been called.
pub(crate) fn parse_body_segment<R: Read>(
    src: R,
    name: &str,
    prelude: &Prelude,
    offset: u64,
    visitor: &mut impl VcdVisitor,
) -> Result<()> {
    let mut ch = Chunks::new(src, name);
    ch.offset0 = offset;
    parse_body(&mut ch, &prelude.ids, &prelude.header, visitor)
}

fn parse_header<R: Read>(ch: &mut Chunks<R>, ids: &mut IdTable) -> Result<Header> {
    let mut h = Header::default();
    let mut scope: Vec<String> = Vec::new();
    loop {
        let mut kw = Vec::new();
        let found = ch.next_with("header command", |i| {
            then(i, header_keyword, |k| {
                kw = k.to_vec();
                Ok(())
            })
        })?;
        if !found {
            return Err(ch.error_at(
                ch.end,
                "truncated file: header ended before $enddefinitions",
            ));
        }
        match kw.as_slice() {
            b"date" | b"version" | b"timescale" | b"comment" => {
                let mut t = String::new();
                ch.require("header command", |i| {
                    then(i, until_end, |b| {
                        t = text(b);
                        Ok(())
                    })
                })?;
                match kw.as_slice() {
                    b"date" => h.date = Some(t),
                    b"version" => h.version = Some(t),
                    b"timescale" => h.timescale = Some(t.replace(' ', "")),
                    _ => {}
                }
            }
            b"scope" => ch.require("$scope", |i| {
                then(i, var_body, |toks| {
                    // `$scope module name $end`; a missing name gets a placeholder.
                    scope.push(toks.get(1).map(|t| lossy(t)).unwrap_or_else(|| "_".into()));
                    Ok(())
                })
            })?,
            b"upscope" => ch.require("$upscope", |i| {
                then(i, until_end, |_| {
                    scope
                        .pop()
                        .map(|_| ())
                        .ok_or_else(|| "$upscope without a matching $scope".to_string())
                })
            })?,
            b"var" => ch.require("$var", |i| {
                then(i, var_body, |toks| {
                    if toks.len() < 4 {
                        return Err("$var needs: kind width identifier reference".into());
                    }
                    let kind = VarKind::from_bytes(toks[0]);
                    let width = match parse_u64(toks[1]) {
                        Some(w) if (1..=1 << 20).contains(&w) => w as u32,
                        _ => return Err(format!("bad width '{}' in $var", lossy(toks[1]))),
                    };
                    let reference: String = toks[3..].iter().map(|t| lossy(t)).collect();
                    let (name, range) = split_range(&reference);
                    let code = match ids.get(toks[2]) {
                        Some(c) if h.code_widths[c as usize] != width => {
                            return Err(format!(
                                "bad width: identifier {} declared with widths {} and {width}",
                                lossy(toks[2]),
                                h.code_widths[c as usize]
                            ))
                        }
                        Some(c) => c,
                        None => {
                            let c = h.code_widths.len() as u32;
                            ids.insert(toks[2], c);
                            h.code_widths.push(width);
                            h.code_is_real.push(kind.is_real());
                            c
                        }
                    };
                    h.vars.push(Var {
                        scope: scope.clone(),
                        name,
                        range,
                        kind,
                        width,
                        code,
                    });
                    Ok(())
                })
            })?,
            b"enddefinitions" => {
                ch.require("$enddefinitions", |i| then(i, until_end, |_| Ok(())))?;
                return Ok(h);
            }
            _ => {
                // Unknown header command ($attrbegin and friends): skip to its $end.
                ch.require("header command", |i| then(i, until_end, |_| Ok(())))?;
            }
        }
    }
}

/// What the body loop has to do after an item that needs more input.
enum After {
    Nothing,
    SkipCommand,
}

fn parse_body<R: Read>(
    ch: &mut Chunks<R>,
    ids: &IdTable,
    header: &Header,
    visitor: &mut impl VcdVisitor,
) -> Result<()> {
    let mut open_block: Option<&'static str> = None;
    let mut last_time: Option<u64> = None;
    loop {
        let mut after = After::Nothing;
        let stopped = ch.for_each("value change", |i| {
            then_continue(i, body_item, |item| {
                let (value, id) = match item {
                    Item::Time(t) => {
                        let t = parse_u64(t).ok_or("bad time stamp")?;
                        if let Some(l) = last_time.filter(|&l| t < l) {
                            return Err(format!("time goes backwards: #{t} after #{l}"));
                        }
                        last_time = Some(t);
                        visitor.time(t);
                        return Ok(true);
                    }
                    Item::Comment => return Ok(true),
                    Item::Command(cmd) => {
                        let block = match cmd {
                            b"dumpvars" => "$dumpvars",
                            b"dumpall" => "$dumpall",
                            b"dumpon" => "$dumpon",
                            b"dumpoff" => "$dumpoff",
                            b"end" => {
                                return open_block
                                    .take()
                                    .map(|_| true)
                                    .ok_or_else(|| "$end without an open block".into())
                            }
                            _ => {
                                after = After::SkipCommand;
                                return Ok(false);
                            }
                        };
                        if open_block.is_some() {
                            return Err("nested $dump block (missing $end)".into());
                        }
                        match cmd {
                            b"dumpoff" => visitor.dump_off(true),
                            b"dumpon" => visitor.dump_off(false),
                            _ => {}
                        }
                        open_block = Some(block);
                        return Ok(true);
                    }
                    Item::Scalar(v, id) => {
                        let v: &'static [u8] = match v {
                            b'0' => b"0",
                            b'1' => b"1",
                            b'x' | b'X' => b"x",
                            _ => b"z",
                        };
                        (Value::Bits(v), id)
                    }
                    Item::Vector(bits, id) => {
                        if !valid_bits(bits) {
                            return Err(format!(
                                "bad value '{}'",
                                lossy(&bits[..bits.len().min(20)])
                            ));
                        }
                        (Value::Bits(bits), id)
                    }
                    Item::Real(r, id) => {
                        if std::str::from_utf8(r)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .is_none()
                        {
                            return Err(format!("bad real value '{}'", lossy(r)));
                        }
                        (Value::Real(r), id)
                    }
                };
                if id.is_empty() {
                    return Err("value change without an identifier".into());
                }
                let code = ids
                    .get(id)
                    .ok_or_else(|| format!("unknown identifier '{}'", lossy(id)))?;
                let real_var = header.code_is_real[code as usize];
                if real_var != matches!(value, Value::Real(_)) {
                    return Err(if real_var {
                        "bit value for a real var"
                    } else {
                        "real value for a bit var"
                    }
                    .into());
                }
                visitor.change(code, value).map(|()| true)
            })
        })?;
        if !stopped {
            break;
        }
        if let After::SkipCommand = after {
            ch.require("command", |i| then(i, until_end, |_| Ok(())))?;
        }
    }
    if let Some(name) = open_block {
        return Err(ch.error_at(ch.end, format!("truncated file: {name} block without $end")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_table_direct_and_long() {
        let mut t = IdTable::new();
        t.insert(b"!", 0);
        t.insert(b"~~~", 1);
        t.insert(b"abcd", 2);
        assert_eq!(t.get(b"!"), Some(0));
        assert_eq!(t.get(b"~~~"), Some(1));
        assert_eq!(t.get(b"abcd"), Some(2));
        assert_eq!(t.get(b"\""), None);
        assert_eq!(t.get(b"abce"), None);
        // "!" and " !" style prefixes must not collide: digit 0 is reserved for "absent".
        assert_ne!(IdTable::direct_index(b"!"), IdTable::direct_index(b"!!"));
    }

    #[test]
    fn split_range_cases() {
        assert_eq!(
            split_range("data[7:0]"),
            ("data".into(), Some("[7:0]".into()))
        );
        assert_eq!(split_range("clk"), ("clk".into(), None));
    }
}
