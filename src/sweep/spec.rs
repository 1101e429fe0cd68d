//! A sweep spec: `[base]` infer settings, `[capture]`, `[axes]` of values to cross, and
//! replicates; its points in a stable order and the randomized order replicates run in.
//!
//! In: TOML text. Out: `SweepSpec`, `Point`s (an `InferConfig` each, with a key that names
//! its folder).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::{CaptureSpec, InferConfig};
use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::model::{Opts, Precision};
use crate::stats::Rng;

/// Values to sweep; an empty list keeps `[base]`'s value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Axes {
    /// Models (`smollm2`, `gemma3` or GGUF paths); `models` in a spec reads the same.
    #[serde(alias = "models")]
    pub model: Vec<PathBuf>,
    pub device: Vec<DeviceSpec>,
    pub precision: Vec<Precision>,
    pub batch: Vec<usize>,
    pub prompt_len: Vec<String>,
    pub max_new_tokens: Vec<usize>,
    pub sparsity_tau: Vec<f32>,
    pub kv_cache: Vec<bool>,
    /// Optimization sets (`perfwatt infer --opt`): "all", "none", "all,-tiles", ...
    pub opts: Vec<Opts>,
    /// Captured operand width (MAC operand width): 8 or 16.
    pub width: Vec<u8>,
    /// CPU threads of the kernels (`infer --threads`).
    pub threads: Vec<usize>,
    /// Layers on the GPU under partial offload (`infer --gpu-layers`).
    pub gpu_layers: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub base: InferConfig,
    #[serde(default)]
    pub capture: CaptureSpec,
    #[serde(default)]
    pub axes: Axes,
    /// Times every point runs, each in a process of its own. Points run in randomized
    /// blocks: every point once in a seeded random order, then again in another, so drift
    /// (idle power, clocks, temperature) does not line up with an axis.
    #[serde(default = "one")]
    pub replicates: usize,
    #[serde(default)]
    pub order_seed: u64,
    /// Also replay each point's operands into the gate-level netlists of its serial MACs
    /// (yosys, cached) and price them with the shipped cell table: `gate_*` columns.
    #[serde(default)]
    pub gate_level: bool,
    /// The spec's own text, copied into its run folder (a rerun with another spec there
    /// is refused).
    #[serde(skip)]
    pub text: String,
}

fn one() -> usize {
    1
}

impl SweepSpec {
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        let spec: SweepSpec = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{name}: {}", e.to_string().trim())))?;
        Ok(SweepSpec {
            text: text.to_string(),
            ..spec
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut s = Self::from_toml(&text, &path.display().to_string())?;
        // Model names and relative model/prompt paths name shipped files (`model_path`).
        for p in std::iter::once(&mut s.base.model).chain(&mut s.axes.model) {
            if p.is_relative() {
                *p = crate::model::model_path(&p.to_string_lossy());
            }
        }
        if s.base.prompts.is_relative() {
            s.base.prompts = crate::asset_path(&s.base.prompts.to_string_lossy());
        }
        Ok(s)
    }

    /// Every point, in a stable order.
    pub fn points(&self) -> Vec<Point> {
        /// Every config of `cfgs` once per value of an axis (in the axis's order, fastest
        /// varying so far); an empty axis keeps the config's value.
        fn cross<T: Clone>(
            cfgs: Vec<InferConfig>,
            values: &[T],
            set: impl Fn(&mut InferConfig, T),
        ) -> Vec<InferConfig> {
            if values.is_empty() {
                return cfgs;
            }
            let set = &set;
            cfgs.into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        set(&mut c, v.clone());
                        c
                    })
                })
                .collect()
        }
        let a = &self.axes;
        let mut base = self.base.clone();
        base.capture = Some(self.capture.clone());
        // Outermost axis first: the stable order run folders and their keys rely on.
        let c = vec![base];
        let c = cross(c, &a.threads, |c, t| c.threads = Some(t));
        let c = cross(c, &a.model, |c, m| c.model = m);
        let c = cross(c, &a.device, |c, d| c.device = d);
        let c = cross(c, &a.precision, |c, p| c.precision = p);
        let c = cross(c, &a.batch, |c, b| c.batch = b);
        let c = cross(c, &a.prompt_len, |c, l| c.prompt_len = l);
        let c = cross(c, &a.max_new_tokens, |c, t| c.max_new_tokens = t);
        let c = cross(c, &a.kv_cache, |c, kv| c.kv_cache = kv);
        let c = cross(c, &a.sparsity_tau, |c, tau| c.sparsity_tau = tau);
        let c = cross(c, &a.width, |c, w| {
            if let Some(spec) = c.capture.as_mut() {
                spec.width = w;
            }
        });
        let c = cross(c, &a.opts, |c, o| c.opts = o);
        let c = cross(c, &a.gpu_layers, |c, l| c.gpu_layers = Some(l));
        c.into_iter().map(|cfg| Point { cfg }).collect()
    }
}

pub struct Point {
    pub cfg: InferConfig,
}

impl Point {
    /// A file-name-safe key naming the point's settings (the optimization set only when
    /// it is not all of them, so folders of sweeps from before the knobs keep their keys).
    pub fn key(&self) -> String {
        let c = &self.cfg;
        let w = c.capture.as_ref().map(|s| s.width).unwrap_or(8);
        let opts = if c.opts == Opts::all() {
            String::new()
        } else {
            format!("-o{}", c.opts.to_string().replace(',', "+"))
        };
        // Keys of the shipped model stay as they were before the model axis.
        let model = match crate::model::model_label(&c.model) {
            m if m
                == crate::model::model_label(std::path::Path::new(crate::model::DEFAULT_MODEL)) =>
            {
                String::new()
            }
            m => format!("{m}-"),
        };
        let threads = c.threads.map_or(String::new(), |t| format!("-th{t}"));
        let offload = c.gpu_layers.map_or(String::new(), |l| format!("-gl{l}"));
        format!(
            "{model}{}-{}-b{}-p{}-t{}-kv{}-tau{}-w{w}{opts}{threads}{offload}",
            c.device,
            c.precision.name(),
            c.batch,
            c.prompt_len,
            c.max_new_tokens,
            c.kv_cache as u8,
            c.sparsity_tau
        )
    }
}

/// (point, replicate) in randomized blocks: block r runs every point once, in an order
/// drawn from `seed + r`.
pub fn run_order(points: usize, replicates: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(points * replicates);
    for r in 0..replicates {
        let mut idx: Vec<usize> = (0..points).collect();
        let mut rng = Rng::new(seed.wrapping_add(r as u64).wrapping_mul(0x9e37_79b9) ^ 0x5eed);
        for k in (1..idx.len()).rev() {
            idx.swap(k, (rng.next_u64() % (k as u64 + 1)) as usize);
        }
        out.extend(idx.into_iter().map(|i| (i, r)));
    }
    out
}

/// Default run folder of a spec: experiments/runs/<name>.
pub fn default_run_dir(spec: &SweepSpec) -> PathBuf {
    Path::new("experiments/runs").join(&spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `models` and `threads` are axes like the others: names resolve to the shipped
    /// files, keys name a non-default model and a thread count, the shipped model's keys
    /// stay as they were.
    #[test]
    fn models_and_threads_are_axes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "name = \"m\"\n[axes]\nmodels = [\"smollm2\", \"gemma3\"]\nthreads = [1, 2]\n",
        )
        .unwrap();
        let spec = SweepSpec::read(&path).unwrap();
        let pts = spec.points();
        assert_eq!(pts.len(), 4);
        let keys: Vec<String> = pts.iter().map(|p| p.key()).collect();
        assert_eq!(keys[0], "cpu-q4_1-b1-pshort-t16-kv1-tau0-w8-th1");
        assert!(keys[1].starts_with("gemma-3-270m-q4_k_m-cpu-"), "{keys:?}");
        assert!(pts[1].cfg.model.ends_with(crate::model::GEMMA_MODEL));
        assert_eq!(pts[3].cfg.threads, Some(2));
    }

    #[test]
    fn run_order_is_a_permutation_per_block_and_differs_between_blocks() {
        let o = run_order(10, 3, 7);
        assert_eq!(o.len(), 30);
        for r in 0..3 {
            let mut b: Vec<usize> = o[r * 10..(r + 1) * 10].iter().map(|x| x.0).collect();
            assert!(o[r * 10..(r + 1) * 10].iter().all(|x| x.1 == r));
            let shuffled = b.clone();
            b.sort();
            assert_eq!(b, (0..10).collect::<Vec<_>>());
            assert_ne!(shuffled, b, "block {r} left in spec order");
        }
        assert_ne!(
            o[..10].iter().map(|x| x.0).collect::<Vec<_>>(),
            o[10..20].iter().map(|x| x.0).collect::<Vec<_>>()
        );
        assert_eq!(run_order(10, 3, 7), o, "seeded");
    }
}
