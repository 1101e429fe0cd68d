//! Phase markers of a measured command, and the windows they make.
//!
//! In: the lines a child prints (or writes to the FIFO in `PERFWATT_PHASE_FIFO`), each
//! stamped with the time perfwatt read it. Out: `PhaseWindow`s (name, start, end) and the
//! problems found in the markers, stated, never dropped in silence.
//!
//! The grammar, one marker per line (leading blanks and carriage returns ignored):
//! - `PERFWATT_PHASE NAME`: phase NAME starts and the previous phase started this way
//!   ends (sequential phases: load, warm-up, run);
//! - `PERFWATT_PHASE begin NAME` / `PERFWATT_PHASE end NAME`: a window that may nest in or
//!   overlap any other (`end NAME` also ends a sequential phase of that name).
//!
//! Windows still open when the command exits end there, marked `closed_by_exit`.

/// The marker word every marker line starts with.
pub const MARKER: &str = "PERFWATT_PHASE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Next(String),
    Begin(String),
    End(String),
}

/// The marker a line holds: None for an ordinary line, an error for a marker without a
/// name.
pub fn parse_marker(line: &[u8]) -> Option<Result<Marker, String>> {
    let text = String::from_utf8_lossy(line);
    let text = text
        .trim_start_matches(|c: char| c.is_whitespace())
        .trim_end();
    let rest = text.strip_prefix(MARKER)?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None; // PERFWATT_PHASES..., another word
    }
    let rest = rest.trim();
    let (word, name) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let name = name.trim();
    Some(match (word, name) {
        ("", _) => Err(format!("`{text}`: a marker needs a phase name")),
        ("begin", "") | ("end", "") => Err(format!("`{text}`: `{word}` needs a phase name")),
        ("begin", n) => Ok(Marker::Begin(n.to_string())),
        ("end", n) => Ok(Marker::End(n.to_string())),
        _ => Ok(Marker::Next(rest.to_string())),
    })
}

/// One phase: seconds since the command started.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseWindow {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Still open when the command exited (or was stopped).
    pub closed_by_exit: bool,
}

impl PhaseWindow {
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }
}

/// The windows of `markers` (time-ordered (seconds, marker) pairs) for a command that ran
/// until `end_s`, sorted by start, and a line for every marker that made no sense.
pub fn windows(markers: &[(f64, Marker)], end_s: f64) -> (Vec<PhaseWindow>, Vec<String>) {
    let mut done = Vec::new();
    let mut problems = Vec::new();
    let mut sequential: Option<(String, f64)> = None;
    let mut open: Vec<(String, f64)> = Vec::new();
    let close = |name: String, start_s: f64, end_s: f64, by_exit: bool| PhaseWindow {
        name,
        start_s,
        end_s,
        closed_by_exit: by_exit,
    };
    for (t, m) in markers {
        match m {
            Marker::Next(name) => {
                if let Some((n, a)) = sequential.take() {
                    done.push(close(n, a, *t, false));
                }
                sequential = Some((name.clone(), *t));
            }
            Marker::Begin(name) => match open.iter().find(|(n, _)| n == name) {
                Some((_, a)) => problems.push(format!(
                    "at {t:.3} s: `begin {name}` while `{name}` is open since {a:.3} s; ignored"
                )),
                None => open.push((name.clone(), *t)),
            },
            Marker::End(name) => {
                if let Some(i) = open.iter().position(|(n, _)| n == name) {
                    let (n, a) = open.remove(i);
                    done.push(close(n, a, *t, false));
                } else if sequential.as_ref().is_some_and(|(n, _)| n == name) {
                    let (n, a) = sequential.take().expect("checked");
                    done.push(close(n, a, *t, false));
                } else {
                    problems.push(format!(
                        "at {t:.3} s: `end {name}` but no `{name}` is open; ignored"
                    ));
                }
            }
        }
    }
    for (n, a) in sequential.into_iter().chain(open) {
        done.push(close(n, a, end_s, true));
    }
    done.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    (done, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(line: &str) -> Option<Result<Marker, String>> {
        parse_marker(line.as_bytes())
    }

    #[test]
    fn marker_lines_and_ordinary_lines() {
        assert_eq!(
            m("PERFWATT_PHASE load\n"),
            Some(Ok(Marker::Next("load".into())))
        );
        assert_eq!(
            m("\r  PERFWATT_PHASE  warm up  \r\n"),
            Some(Ok(Marker::Next("warm up".into())))
        );
        assert_eq!(
            m("PERFWATT_PHASE begin a b"),
            Some(Ok(Marker::Begin("a b".into())))
        );
        assert_eq!(m("PERFWATT_PHASE end x"), Some(Ok(Marker::End("x".into()))));
        assert!(matches!(m("PERFWATT_PHASE"), Some(Err(_))));
        assert!(matches!(m("PERFWATT_PHASE end "), Some(Err(_))));
        assert_eq!(m("PERFWATT_PHASES x"), None);
        assert_eq!(m("step 3 PERFWATT_PHASE x"), None);
        assert_eq!(m(""), None);
    }

    #[test]
    fn sequential_nested_overlapping_and_unclosed() {
        use Marker::*;
        let s = |x: &str| x.to_string();
        let (w, problems) = windows(
            &[
                (0.0, Next(s("load"))),
                (1.0, Next(s("run"))),
                (1.5, Begin(s("outer"))),
                (2.0, Begin(s("inner"))),
                (2.5, Begin(s("overlap"))),
                (3.0, End(s("inner"))),
                (3.5, End(s("outer"))),
                (3.6, Begin(s("overlap"))),
                (4.0, End(s("nothing"))),
                (4.5, End(s("run"))),
            ],
            9.0,
        );
        let got: Vec<(&str, f64, f64, bool)> = w
            .iter()
            .map(|p| (p.name.as_str(), p.start_s, p.end_s, p.closed_by_exit))
            .collect();
        assert_eq!(
            got,
            [
                ("load", 0.0, 1.0, false),
                ("run", 1.0, 4.5, false),
                ("outer", 1.5, 3.5, false),
                ("inner", 2.0, 3.0, false),
                ("overlap", 2.5, 9.0, true),
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("`begin overlap` while"),
            "{problems:?}"
        );
        assert!(problems[1].contains("`end nothing`"), "{problems:?}");
    }
}
