//! `gemm-energy --devices 0,1`: the same measurement on several GPUs at once.
//!
//! In: a `GemmConfig` and device names. Each device runs the whole measurement in its own
//! thread into its own folder (DIR/cuda0, DIR/cuda1, ...: every file a one-device run
//! writes, resumable alike). Out: DIR/devices.{csv,json,md}: per pattern, energy per GEMM
//! on every GPU and its ratio to the first GPU's, and per GPU the rank agreement of the
//! patterns' energies with the first GPU (Spearman): does the same operand data cost the
//! same on two GPUs of one host, and in the same order?

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{run_gemm_energy, GemmConfig, GemmReport, Hooks};
use crate::device::{self, DeviceSpec};
use crate::error::Result;
use crate::files::write_atomic;
use crate::stats::spearman;

/// One pattern on every device.
#[derive(Debug, Clone, Serialize)]
pub struct PatternAcross {
    pub dtype: String,
    pub pattern: String,
    /// Mean J per GEMM on each device (devices' order); None without NVML.
    pub j_per_gemm: Vec<Option<f64>>,
    pub j_per_gemm_above_idle: Vec<Option<f64>>,
    /// Mean seconds per GEMM on each device.
    pub s_per_gemm: Vec<f64>,
    /// Each device's J per GEMM over the first device's.
    pub ratio_to_first: Vec<Option<f64>>,
}

/// One device against the first.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    pub device: DeviceSpec,
    pub gpu: String,
    pub folder: String,
    pub idle_w: Option<f64>,
    /// Median over patterns of J per GEMM / the first device's.
    pub median_ratio_to_first: Option<f64>,
    /// Spearman of J per GEMM above idle against the first device, per dtype.
    pub spearman_to_first: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicesComparison {
    pub schema: &'static str,
    pub devices: Vec<DeviceSummary>,
    pub patterns: Vec<PatternAcross>,
}

impl DevicesComparison {
    /// What `gemm-energy --devices` prints: each device against the first, and the files.
    pub fn to_text(&self, out: &Path) -> String {
        let mut s = String::new();
        let first = self
            .devices
            .first()
            .map(|d| d.device.to_string())
            .unwrap_or_default();
        for d in &self.devices {
            s.push_str(&format!(
                "{} ({}): median J/GEMM ratio to {first} {}, Spearman {:?}\n",
                d.device,
                d.gpu,
                d.median_ratio_to_first
                    .map_or_else(|| "n/a".into(), |r| format!("{r:.4}")),
                d.spearman_to_first
            ));
        }
        s + &format!(
            "{} patterns on {} devices; wrote {}/devices.md, devices.csv, devices.json and a run folder per device\n",
            self.patterns.len(),
            self.devices.len(),
            out.display()
        )
    }
}

pub struct DevicesHooks<'a> {
    /// (device index, points done, points in all, what)
    pub on_point: &'a (dyn Fn(usize, usize, usize, &str) + Sync),
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// Device `i`'s folder under `out`: cuda:1 -> out/cuda1.
pub fn device_dir(out: &Path, devices: &[DeviceSpec], i: usize) -> PathBuf {
    out.join(device::device_file_name(devices, i))
}

/// Measure on every device at once, then compare; see the module header.
pub fn run_gemm_energy_devices(
    cfg: &GemmConfig,
    devices: &[DeviceSpec],
    out: &Path,
    hooks: DevicesHooks<'_>,
) -> Result<DevicesComparison> {
    device::require_several(devices)?;
    let run_one = |i: usize, device: DeviceSpec| {
        let cfg = GemmConfig {
            device,
            ..cfg.clone()
        };
        run_gemm_energy(
            &cfg,
            &device_dir(out, devices, i),
            Hooks {
                on_point: &mut |k, n, what| (hooks.on_point)(i, k, n, what),
                interrupted: hooks.interrupted,
            },
        )
    };
    let (results, ()) = device::on_each(devices, run_one, || ());
    let reports = device::every_device(devices, results)?;
    let cmp = compare(devices, &reports);
    write_atomic(
        &out.join("devices.json"),
        (serde_json::to_string_pretty(&cmp).expect("json") + "\n").as_bytes(),
    )?;
    write_atomic(&out.join("devices.csv"), to_csv(&cmp).as_bytes())?;
    write_atomic(&out.join("devices.md"), to_markdown(&cmp).as_bytes())?;
    Ok(cmp)
}

/// Every device's report against the first's, pattern by pattern.
pub fn compare(devices: &[DeviceSpec], reports: &[GemmReport]) -> DevicesComparison {
    let first = &reports[0];
    let mean = |r: &GemmReport, i: usize, above: bool| {
        let p = &r.points[i];
        if above {
            p.j_per_gemm_above_idle.map(|e| e.mean)
        } else {
            p.j_per_gemm.map(|e| e.mean)
        }
    };
    let patterns: Vec<PatternAcross> = (0..first.points.len())
        .map(|i| {
            let info = &first.points[i].info;
            let j: Vec<Option<f64>> = reports.iter().map(|r| mean(r, i, false)).collect();
            PatternAcross {
                dtype: info.dtype.name().into(),
                pattern: info.pattern.clone(),
                ratio_to_first: j.iter().map(|x| Some(x.as_ref()? / j[0]?)).collect(),
                j_per_gemm_above_idle: reports.iter().map(|r| mean(r, i, true)).collect(),
                s_per_gemm: reports
                    .iter()
                    .map(|r| r.points[i].s_per_gemm.mean)
                    .collect(),
                j_per_gemm: j,
            }
        })
        .collect();
    let mut dtypes: Vec<String> = patterns.iter().map(|p| p.dtype.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let devices = devices
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(d, (name, r))| {
            let mut ratios: Vec<f64> = patterns
                .iter()
                .filter_map(|p| p.ratio_to_first[d])
                .collect();
            ratios.sort_by(f64::total_cmp);
            let spearman_to_first = dtypes
                .iter()
                .map(|dt| {
                    let (x, y): (Vec<f64>, Vec<f64>) = patterns
                        .iter()
                        .filter(|p| &p.dtype == dt)
                        .filter_map(|p| {
                            Some((p.j_per_gemm_above_idle[0]?, p.j_per_gemm_above_idle[d]?))
                        })
                        .unzip();
                    (dt.clone(), spearman(&x, &y))
                })
                .collect();
            DeviceSummary {
                device: *name,
                gpu: r.device.clone(),
                folder: device::device_file_name(devices, d),
                idle_w: match (r.idle_w_before, r.idle_w_after) {
                    (Some(a), Some(b)) => Some((a + b) / 2.0),
                    (a, b) => a.or(b),
                },
                median_ratio_to_first: crate::stats::percentile(&ratios, 50.0),
                spearman_to_first,
            }
        })
        .collect();
    DevicesComparison {
        schema: "perfwatt.gemm-energy-devices/1",
        devices,
        patterns,
    }
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(String::new, |x| format!("{x:.digits$}"))
}

/// One row per pattern and device: what pandas reads.
pub fn to_csv(c: &DevicesComparison) -> String {
    let mut out = String::from(
        "dtype,pattern,device,gpu,s_per_gemm,j_per_gemm,j_per_gemm_above_idle,ratio_to_first\n",
    );
    for p in &c.patterns {
        for (d, dev) in c.devices.iter().enumerate() {
            out.push_str(&format!(
                "{},{},{},{},{:.6e},{},{},{}\n",
                p.dtype,
                p.pattern,
                dev.device,
                dev.gpu,
                p.s_per_gemm[d],
                cell(p.j_per_gemm[d], 6),
                cell(p.j_per_gemm_above_idle[d], 6),
                cell(p.ratio_to_first[d], 4),
            ));
        }
    }
    out
}

pub fn to_markdown(c: &DevicesComparison) -> String {
    let mut out = String::from("# GEMM energy on several GPUs of one host\n\n");
    out.push_str(
        "Every GPU measured every pattern at the same time (one thread each); each GPU's own \
         run folder has its full report. Ratio: J per GEMM over the first GPU's. Spearman: \
         rank agreement of the patterns' J per GEMM above idle with the first GPU.\n\n\
         | device | GPU | idle W | median ratio | Spearman |\n|---|---|---|---|---|\n",
    );
    for d in &c.devices {
        let rho: Vec<String> = d
            .spearman_to_first
            .iter()
            .map(|(dt, r)| format!("{dt} {}", cell(*r, 3)))
            .collect();
        out.push_str(&format!(
            "| {} ([{}]({}/report.md)) | {} | {} | {} | {} |\n",
            d.device,
            d.folder,
            d.folder,
            d.gpu,
            cell(d.idle_w, 1),
            cell(d.median_ratio_to_first, 4),
            rho.join(", ")
        ));
    }
    out.push_str("\n| dtype | pattern |");
    for d in &c.devices {
        out.push_str(&format!(" {} J/GEMM | ratio |", d.device));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|---|".repeat(c.devices.len()));
    out.push('\n');
    for p in &c.patterns {
        out.push_str(&format!("| {} | {} |", p.dtype, p.pattern));
        for d in 0..c.devices.len() {
            out.push_str(&format!(
                " {} | {} |",
                cell(p.j_per_gemm[d], 4),
                cell(p.ratio_to_first[d], 3)
            ));
        }
        out.push('\n');
    }
    out
}
