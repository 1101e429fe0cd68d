//! Which device a run uses, parsed once where a name comes in (a flag, a sweep spec).
//!
//! In: a device name (`cpu`, `cuda` = GPU 0, `cuda:N`) or a `--devices` list (`0,1`,
//! `all`). Out: `DeviceSpec` (serialized as the name it was given, so result files keep
//! their bytes), the candle device it means, and the one-thread-per-device fan-out that
//! `infer`, `gemm-energy` and `sweep --devices` share with its rule for gathering results.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The CPU or one CUDA GPU (CUDA's numbering: the GPUs CUDA_VISIBLE_DEVICES leaves,
/// fastest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// GPU `ordinal`; `numbered`: named `cuda:N` rather than `cuda` (the name is kept as
    /// written: result files and folder names carry it).
    Cuda { ordinal: usize, numbered: bool },
}

impl DeviceSpec {
    /// GPU `ordinal`, named `cuda:N`.
    pub fn cuda(ordinal: usize) -> DeviceSpec {
        DeviceSpec::Cuda {
            ordinal,
            numbered: true,
        }
    }

    pub fn is_cpu(self) -> bool {
        self == DeviceSpec::Cpu
    }

    /// The GPU's CUDA ordinal; None for the CPU.
    pub fn ordinal(self) -> Option<usize> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda { ordinal, .. } => Some(ordinal),
        }
    }

    /// The candle device; CUDA needs the `cuda` feature.
    pub fn candle(self) -> Result<candle_core::Device> {
        match self.ordinal() {
            None => Ok(candle_core::Device::Cpu),
            Some(_n) => {
                #[cfg(feature = "cuda")]
                {
                    candle_core::Device::new_cuda(_n)
                        .map_err(|e| Error::Model(format!("{self}: {e}")))
                }
                #[cfg(not(feature = "cuda"))]
                {
                    Err(Error::Model(format!("{self}: {NO_CUDA}")))
                }
            }
        }
    }
}

/// Why a CPU-only build cannot open a GPU.
pub const NO_CUDA: &str =
    "this perfwatt was built without CUDA: rebuild with `cargo build --release --features cuda`";

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda {
                numbered: false, ..
            } => f.write_str("cuda"),
            DeviceSpec::Cuda { ordinal, .. } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(name: &str) -> Result<DeviceSpec> {
        match name {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda {
                ordinal: 0,
                numbered: false,
            }),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::cuda)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "unknown device '{other}': cpu, cuda (GPU 0) or cuda:N (GPU N)"
                    ))
                }),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `--devices`: GPU ordinals as `0,1,...` or `all` (every GPU CUDA sees). Duplicates are
/// refused: two workers on one GPU would share its energy counter.
pub fn parse_devices(list: &str) -> Result<Vec<DeviceSpec>> {
    let ordinals: Vec<usize> = if list.trim() == "all" {
        (0..gpu_count()?).collect()
    } else {
        list.split(',')
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "--devices '{list}': GPU numbers separated by commas (0,1) or `all`"
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    if ordinals.is_empty() {
        return Err(Error::Config(format!("--devices '{list}': no GPU named")));
    }
    if let Some(d) = ordinals
        .iter()
        .enumerate()
        .find(|(i, d)| ordinals[..*i].contains(d))
    {
        return Err(Error::Config(format!(
            "--devices '{list}': GPU {} named twice (one worker per GPU: they would share its energy counter)",
            d.1
        )));
    }
    Ok(ordinals.into_iter().map(DeviceSpec::cuda).collect())
}

/// A `--devices` list must name at least two GPUs (one is `--device cuda:N`).
pub fn require_several(devices: &[DeviceSpec]) -> Result<()> {
    if devices.len() < 2 {
        return Err(Error::Config(
            "--devices: name at least two GPUs (for one, use --device cuda:N)".into(),
        ));
    }
    Ok(())
}

/// Device `i` of a `--devices` list as a file name: cuda:1 -> cuda1; a name that repeats
/// (two CPU workers in tests) gets its position too (cpu-1).
pub fn device_file_name(devices: &[DeviceSpec], i: usize) -> String {
    let name = devices[i].to_string().replace(':', "");
    if devices[..i].contains(&devices[i]) {
        format!("{name}-{i}")
    } else {
        name
    }
}

/// Run `work(i, device)` on a thread of its own for every device while `meanwhile` runs on
/// this one; the workers' results in device order, and what `meanwhile` returned.
pub fn on_each<T: Send, M>(
    devices: &[DeviceSpec],
    work: impl Fn(usize, DeviceSpec) -> Result<T> + Sync,
    meanwhile: impl FnOnce() -> M,
) -> (Vec<Result<T>>, M) {
    std::thread::scope(|s| {
        let work = &work;
        let workers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, &d)| s.spawn(move || work(i, d)))
            .collect();
        let m = meanwhile();
        let results = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::Model("a device thread panicked".into())))
            })
            .collect();
        (results, m)
    })
}

/// Every device's result in order, or why not: an interruption (what the user did) before
/// any failure, else the first failure, named by its device.
pub fn every_device<T>(devices: &[DeviceSpec], results: Vec<Result<T>>) -> Result<Vec<T>> {
    if results.iter().any(|r| matches!(r, Err(Error::Interrupted))) {
        return Err(Error::Interrupted);
    }
    devices
        .iter()
        .zip(results)
        .map(|(d, r)| r.map_err(|e| Error::Model(format!("device {d}: {e}"))))
        .collect()
}

/// How many GPUs CUDA sees.
pub fn gpu_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        cudarc::driver::CudaContext::device_count()
            .map(|n| n as usize)
            .map_err(|e| Error::Model(format!("cuda: cannot count GPUs: {e:?}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Model(format!("--devices all: {NO_CUDA}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_written() {
        for name in ["cpu", "cuda", "cuda:0", "cuda:3"] {
            let d: DeviceSpec = name.parse().unwrap();
            assert_eq!(d.to_string(), name);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), d);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap().ordinal(), Some(0));
        assert_eq!(DeviceSpec::Cpu.ordinal(), None);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(
                e.contains("unknown device") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn device_lists() {
        let d = parse_devices("0, 1").unwrap();
        assert_eq!(d, vec![DeviceSpec::cuda(0), DeviceSpec::cuda(1)]);
        assert_eq!(device_file_name(&d, 1), "cuda1");
        assert!(parse_devices("0,0")
            .unwrap_err()
            .to_string()
            .contains("named twice"));
        assert!(parse_devices("a").is_err());
        let cpus = [DeviceSpec::Cpu, DeviceSpec::Cpu];
        assert_eq!(device_file_name(&cpus, 1), "cpu-1");
        let (r, m) = on_each(&cpus, |i, d| Ok((i, d)), || 7);
        assert_eq!(m, 7);
        assert_eq!(every_device(&cpus, r).unwrap()[1], (1, DeviceSpec::Cpu));
        let failed: Vec<Result<()>> = vec![Ok(()), Err(Error::Config("boom".into()))];
        assert_eq!(
            every_device(&cpus, failed).unwrap_err().to_string(),
            "device cpu: boom"
        );
    }
}
