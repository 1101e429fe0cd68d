//! Rendering shared by every report (sweep, roofline, gemm-energy): a leaf over `stats`.
//!
//! In: numbers and labels. Out: figures as PNG + SVG (`plot`) and the markdown sections
//! more than one report prints (`section`: tables, correlations in words with their plot).

pub(crate) mod plot;
pub(crate) mod section;
