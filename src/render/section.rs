//! Section builders that more than one report needs: markdown tables, and a correlation
//! between a switching measure and a cost (scatter with its least-squares fit, Pearson r
//! and Spearman rho with bootstrap CIs, in words). In: numbers. Out: markdown and plots.

use std::path::Path;

use crate::error::Result;
use crate::render::plot::{both, render, scatter};
use crate::stats::{bootstrap_ci, linear_fit, pearson, spearman};

/// Column alignment in a markdown table.
#[derive(Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A markdown table: header, alignment line, one line per row (cells already formatted).
pub(crate) fn table(
    columns: &[(&str, Align)],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let line = |cells: &[&str]| format!("| {} |\n", cells.join(" | "));
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let mut s = line(&names);
    let aligns: Vec<&str> = columns
        .iter()
        .map(|c| match c.1 {
            Align::Left => "---",
            Align::Right => "---:",
        })
        .collect();
    s.push_str(&format!("|{}|\n", aligns.join("|")));
    for r in rows {
        // A row with a cell too many or too few shifts every column after it.
        assert_eq!(
            r.len(),
            columns.len(),
            "table row {r:?} for columns {names:?}"
        );
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        s.push_str(&line(&cells));
    }
    s
}

/// Distinct values of the switching measure below which a design cannot identify a
/// correlation (two values make any two points a perfect line).
pub(crate) const MIN_DISTINCT: usize = 5;

/// What a correlation section compares: `y` (a cost) against `x` (switching), over
/// `items` (e.g. "configurations", "patterns").
pub(crate) struct Correlation<'a> {
    pub x: &'a [f64],
    pub y: &'a [f64],
    /// x in words ("baseline toggles per MAC") and its unit in a formula ("toggles/MAC").
    pub x_name: &'a str,
    pub x_unit: &'a str,
    /// y in words ("GPU J/token").
    pub y_name: &'a str,
    pub items: &'a str,
}

impl Correlation<'_> {
    /// Scatter of (x, y) with its least-squares fit, as `plots/NAME.{png,svg}`.
    pub(crate) fn plot(
        &self,
        plots: &Path,
        name: &str,
        title: &str,
        xl: &str,
        yl: &str,
    ) -> Result<()> {
        let fit = linear_fit(self.x, self.y);
        let pts: Vec<(f64, f64)> = self.x.iter().copied().zip(self.y.iter().copied()).collect();
        render(
            plots,
            name,
            (900, 600),
            both!(|root| { scatter(&root, title, xl, yl, &pts, self.items, fit, None) }),
        )?;
        Ok(())
    }

    /// The finding in words, every number from the data: r and rho with 95% bootstrap CIs,
    /// strength and direction only when the CI of r excludes zero, the fit, and a warning
    /// when it does not. "Not identifiable" when x takes fewer than `MIN_DISTINCT` values.
    /// None when the correlation is undefined (fewer than 2 items, or y does not vary).
    pub(crate) fn text(&self) -> Option<String> {
        let (x, y) = (self.x, self.y);
        let mut values: Vec<f64> = x.to_vec();
        values.sort_by(f64::total_cmp);
        values.dedup();
        if x.len() >= 2 && values.len() < MIN_DISTINCT {
            return Some(format!(
                "Not identifiable from this design: {} takes {} distinct value(s) across the {} {} ({} to {}); a correlation needs at least {MIN_DISTINCT}, so none is reported.\n",
                self.x_name,
                values.len(),
                x.len(),
                self.items,
                sig4(values[0]),
                sig4(values[values.len() - 1]),
            ));
        }
        let (r, rho) = (pearson(x, y)?, spearman(x, y)?);
        let r_ci = bootstrap_ci(x, y, pearson, 2000);
        let rho_ci = bootstrap_ci(x, y, spearman, 2000);
        let ci = |c: Option<(f64, f64)>| {
            c.map(|(a, b)| format!("95% bootstrap CI [{a:.2}, {b:.2}]"))
                .unwrap_or_else(|| format!("CI needs at least 3 {}", self.items))
        };
        let strength = match r.abs() {
            a if a >= 0.7 => "strong",
            a if a >= 0.4 => "moderate",
            a if a >= 0.2 => "weak",
            _ => "no meaningful",
        };
        let dir = if r >= 0.0 { "positive" } else { "negative" };
        let established = r_ci.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0);
        let finding = if established {
            format!("a {strength} {dir} linear association")
        } else {
            "no linear association established".into()
        };
        let mut md = format!(
            "Pearson r = {r:.3} ({}), Spearman rho = {rho:.3} ({}), n = {}: {finding} between {} and {}.",
            ci(r_ci),
            ci(rho_ci),
            x.len(),
            self.x_name,
            self.y_name
        );
        if let Some((a, b)) = linear_fit(x, y) {
            let sign = if b < 0.0 { "-" } else { "+" };
            md.push_str(&format!(
                " Fit: {} = {a:.4} {sign} {} x {}.\n",
                self.y_name,
                sig4(b.abs()),
                self.x_unit
            ));
        }
        if !established {
            md.push_str(&format!("\nThe interval includes zero (or cannot be computed): with this many {} the data do not establish a correlation either way.\n", self.items));
        }
        Some(md)
    }
}

/// Four significant digits, in plain or scientific notation (a slope per fJ is tiny).
fn sig4(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 7) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_rows() {
        let t = table(
            &[("a", Align::Left), ("b", Align::Right)],
            [vec!["1".into(), "2".into()]],
        );
        assert_eq!(t, "| a | b |\n|---|---:|\n| 1 | 2 |\n");
    }

    #[test]
    fn correlation_words_follow_the_numbers() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        let c = Correlation {
            x: &x,
            y: &y,
            x_name: "t",
            x_unit: "t",
            y_name: "J",
            items: "patterns",
        };
        let t = c.text().unwrap();
        assert!(
            t.contains("Pearson r = 1.000") && t.contains("strong positive"),
            "{t}"
        );
        assert!(t.contains("J = 1.0000 + 2.000 x t."), "{t}");
        // A slope per fJ keeps its digits.
        assert_eq!(
            (sig4(5.526e-6), sig4(0.0123456), sig4(0.0)),
            ("5.526e-6".into(), "0.01235".into(), "0".into())
        );
        assert!(!t.contains("includes zero"), "{t}");
        let flat = vec![1.0; 20];
        let c2 = Correlation { y: &flat, ..c };
        assert!(c2.text().is_none());
        // Two toggle values: not identifiable, whatever y does.
        let two: Vec<f64> = (0..20).map(|i| 45.0 + (i % 2) as f64).collect();
        let t = Correlation { x: &two, ..c }.text().unwrap();
        assert!(
            t.starts_with("Not identifiable") && t.contains("2 distinct"),
            "{t}"
        );
        assert!(!t.contains("strong") && !t.contains("Pearson"), "{t}");
        // Noise: the CI crosses zero, so no strength word.
        let noise: Vec<f64> = (0..20).map(|i| ((i * 7919) % 13) as f64).collect();
        let t = Correlation { y: &noise, ..c }.text().unwrap();
        assert!(t.contains("no linear association established"), "{t}");
        for w in ["strong", "moderate", "weak"] {
            assert!(!t.contains(w), "{w}: {t}");
        }
    }
}

/// Markdown image links to the PNG files of `plots` (in the report's `plots/` folder).
pub(crate) fn image_links(plots: &[std::path::PathBuf]) -> String {
    let mut md = String::new();
    for p in plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
    {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        md += &format!("![{name}](plots/{name})\n\n");
    }
    md
}
