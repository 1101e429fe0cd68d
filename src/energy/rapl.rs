//! CPU energy through Linux's RAPL powercap interface (a leaf beside NVML).
//!
//! In: a powercap sysfs tree (`/sys/class/powercap` or a fixture with its layout): zones
//! `intel-rapl:N` (a CPU package) and subzones `intel-rapl:N:M` (core, uncore, dram), each
//! with `name`, `energy_uj` (a counter that wraps at `max_energy_range_uj`) and the range.
//! Out: `RaplMeter`, which polls every domain and accumulates energy across wrap-arounds
//! (poll at least once per wrap period; a package wraps after minutes at full power), and
//! `RaplReport`: joules per domain and the CPU total (the package domains; dram beside
//! them). Where the host exposes nothing (most VMs) or only root may read the counters,
//! `RaplMeter::open` says why in one line, and reports carry that reason, never a zero.

use std::path::{Path, PathBuf};

/// Where Linux puts powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// The powercap tree to read: $PERFWATT_POWERCAP_ROOT (a fixture, or a copy a privileged
/// helper keeps readable), else `POWERCAP_ROOT`.
pub fn powercap_root() -> PathBuf {
    std::env::var_os("PERFWATT_POWERCAP_ROOT").map_or_else(|| POWERCAP_ROOT.into(), PathBuf::from)
}

/// One RAPL domain: its zone folder and what it has counted since the meter opened.
#[derive(Debug, Clone)]
struct Domain {
    zone: String,
    name: String,
    path: PathBuf,
    max_uj: u64,
    last_uj: u64,
    total_uj: u64,
    wraps: u32,
}

/// Energy counted per RAPL domain since `RaplMeter::open`.
#[derive(Debug)]
pub struct RaplMeter {
    domains: Vec<Domain>,
}

/// What a RAPL measurement found: per domain and the CPU total.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RaplReport {
    /// Sum of the package domains (J): the CPUs' energy, DRAM not included. None with
    /// `reason` where RAPL cannot be read.
    pub cpu_j: Option<f64>,
    /// The DRAM domains' sum (J), where the host has them.
    pub dram_j: Option<f64>,
    pub domains: Vec<RaplDomain>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RaplDomain {
    /// The zone folder (`intel-rapl:0:1`).
    pub zone: String,
    /// The domain's own name (`package-0`, `core`, `dram`).
    pub name: String,
    pub joules: f64,
    /// Times the counter wrapped at its range during the measurement.
    pub wraps: u32,
}

impl RaplReport {
    /// The report of a host without readable RAPL: every figure null, with the reason.
    pub fn unavailable(reason: String) -> Self {
        RaplReport {
            reason: Some(reason),
            ..Default::default()
        }
    }
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied (Linux lets only root read RAPL counters since the fix for CVE-2020-8694; run as root or `chmod a+r` them); CPU energy is null",
            path.display()
        ),
        _ => format!("{}: {e}; CPU energy is null", path.display()),
    })?;
    text.trim().parse().map_err(|_| {
        format!(
            "{}: not a counter ({:?}); CPU energy is null",
            path.display(),
            text.trim()
        )
    })
}

impl RaplMeter {
    /// Open every RAPL domain under `root` and read its counter now. The error says in one
    /// line why CPU energy cannot be measured.
    pub fn open(root: &Path) -> Result<Self, String> {
        let entries = std::fs::read_dir(root).map_err(|e| {
            format!(
                "no powercap tree at {} ({e}): the host does not expose RAPL (usual in VMs); CPU energy is null",
                root.display()
            )
        })?;
        let mut zones: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                // intel-rapl-mmio duplicates the package domain through MMIO: skipped so
                // no energy is counted twice.
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("intel-rapl:") || n.starts_with("amd-rapl:"))
            })
            .collect();
        zones.sort();
        if zones.is_empty() {
            return Err(format!(
                "no RAPL zones under {}: the host does not expose RAPL (usual in VMs); CPU energy is null",
                root.display()
            ));
        }
        let domains = zones
            .into_iter()
            .map(|path| {
                let zone = path.file_name().unwrap().to_string_lossy().into_owned();
                let name = std::fs::read_to_string(path.join("name"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| zone.clone());
                let last_uj = read_u64(&path.join("energy_uj"))?;
                let max_uj = read_u64(&path.join("max_energy_range_uj"))?;
                Ok(Domain {
                    zone,
                    name,
                    path,
                    max_uj,
                    last_uj,
                    total_uj: 0,
                    wraps: 0,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RaplMeter { domains })
    }

    /// Read every counter and add what it moved since the last poll; a reading below the
    /// last one is a wrap at the domain's range. A domain that cannot be read this time
    /// keeps its last reading (the next poll catches up).
    pub fn poll(&mut self) {
        for d in &mut self.domains {
            let Ok(now) = read_u64(&d.path.join("energy_uj")) else {
                continue;
            };
            let delta = if now >= d.last_uj {
                now - d.last_uj
            } else {
                d.wraps += 1;
                (d.max_uj - d.last_uj) + now
            };
            d.total_uj += delta;
            d.last_uj = now;
        }
    }

    /// Poll once more and report the energy since `open`.
    pub fn report(&mut self) -> RaplReport {
        self.poll();
        let j = |d: &Domain| d.total_uj as f64 / 1e6;
        let sum = |pred: &dyn Fn(&Domain) -> bool| {
            let v: Vec<f64> = self.domains.iter().filter(|d| pred(d)).map(j).collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        RaplReport {
            cpu_j: sum(&|d| d.name.starts_with("package")),
            dram_j: sum(&|d| d.name == "dram"),
            domains: self
                .domains
                .iter()
                .map(|d| RaplDomain {
                    zone: d.zone.clone(),
                    name: d.name.clone(),
                    joules: j(d),
                    wraps: d.wraps,
                })
                .collect(),
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, zone: &str, name: &str, uj: u64, max: u64) {
        let d = root.join(zone);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    fn set(root: &Path, zone: &str, uj: u64) {
        std::fs::write(root.join(zone).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    #[test]
    fn packages_sum_dram_apart_and_wraps_are_counted() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        // Two packages, a DRAM subzone, and the MMIO twin that must not be counted.
        zone(r, "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850);
        zone(r, "intel-rapl:0:0", "dram", 500, 65_712_999_613);
        zone(
            r,
            "intel-rapl:1",
            "package-1",
            262_143_000_000,
            262_143_328_850,
        );
        zone(r, "intel-rapl-mmio:0", "package-0", 7, 262_143_328_850);
        let mut m = RaplMeter::open(r).unwrap();
        set(r, "intel-rapl:0", 3_500_000); // +2.5 J
        set(r, "intel-rapl:1", 262_143_328_000); // +0.328 J
        m.poll();
        set(r, "intel-rapl:1", 671_150); // wraps: +850 uJ to the range, then 0.67115 J
        set(r, "intel-rapl:0:0", 2_000_500); // +2 J
        let rep = m.report();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(rep.domains.len(), 3, "{rep:?}");
        assert!(close(rep.domains[0].joules, 2.5), "{rep:?}");
        let p1 = &rep.domains[2];
        assert_eq!((p1.name.as_str(), p1.wraps), ("package-1", 1));
        assert!(close(p1.joules, 0.328 + 0.000_850 + 0.671_150), "{p1:?}");
        assert!(close(rep.cpu_j.unwrap(), 2.5 + 1.0), "{rep:?}");
        assert!(close(rep.dram_j.unwrap(), 2.0), "{rep:?}");
    }

    #[test]
    fn no_tree_or_unreadable_counter_is_a_reason_not_a_zero() {
        let t = tempfile::tempdir().unwrap();
        let e = RaplMeter::open(&t.path().join("absent")).unwrap_err();
        assert!(e.contains("does not expose RAPL"), "{e}");
        let e = RaplMeter::open(t.path()).unwrap_err();
        assert!(e.contains("no RAPL zones"), "{e}");
        zone(t.path(), "intel-rapl:0", "package-0", 1, 10);
        std::fs::write(t.path().join("intel-rapl:0/energy_uj"), "garbage").unwrap();
        let e = RaplMeter::open(t.path()).unwrap_err();
        assert!(
            e.contains("intel-rapl:0/energy_uj") && e.contains("not a counter"),
            "{e}"
        );
        let rep = RaplReport::unavailable(e);
        assert!(rep.cpu_j.is_none() && rep.reason.is_some());
    }
}
