//! Sweeps: the cartesian product of software optimizations, each point run end to end.
//!
//! In: a TOML spec (`experiments/*.toml`: `[base]` infer settings, `[capture]`, `[axes]`).
//! Out: a run folder with `results.jsonl` and `results.csv` (one row per finished point,
//! rewritten atomically after each point), and per point its infer JSON, power series,
//! operand stream and sim JSON under `points/<key>/`. A rerun skips finished points, so a
//! crash or kill loses at most the point in progress.

//!
//! Files: `spec` (the TOML spec, its points and their run order), `row` (a point's
//! replicates pooled into one flat row; the CSV), `queue` (the run folder, workers taking
//! replicates in order, each replicate a child process), `slurm` (the same points as a
//! job array).

mod queue;
mod row;
pub mod slurm;
mod spec;

pub use queue::{
    collect, prepare_dir, rescore, run_point, run_replicate, run_sweep, OnPoint, SweepHooks,
};
pub use row::{device_use, read_rows, rows_csv, DeviceUse, Replicate, Row};
pub use spec::{default_run_dir, run_order, Axes, Point, SweepSpec};
