//! The benchmark loop: the model loaded with its batch, warm-up and measured runs (prefill,
//! then one decode step per new token, plain or as a static CUDA-graph step).
//!
//! In: an `InferConfig` and a `Meter`. Out: `Measured` (per-run times, counter windows,
//! the tokens), then `InferReport` from them.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;

use super::{
    build_batch, prompt_tokens, request_percentiles, AbUnit, EnergyReport, InferConfig,
    InferReport, Meter, OperandCapture, Progress, RunRecord, SamplerAb,
};
use crate::energy::{EnergyWindow, GpuMeter, Phase, PowerSample};
use crate::error::{Error, Result};
use crate::model::llama::me;
use crate::model::{self, argmax, LinearTap, Llama, Opt, StaticStep, Tokenizer};
use crate::stats::Estimate;

/// One repeat's raw measurements.
pub(super) struct RunTimes {
    pub(super) total: f64,
    pub(super) ttft: f64,
    pub(super) steps: Vec<f64>,
    pub(super) sampler_on: bool,
    pub(super) e_prefill: Option<EnergyWindow>,
    pub(super) e_decode: Option<EnergyWindow>,
    /// RAPL package energy over the run (J), where the host lets it be read.
    pub(super) cpu_j: Option<f64>,
    /// Start and end on the meter's clock (the power sampler's where there is one).
    pub(super) t0_s: f64,
    pub(super) t1_s: f64,
}

impl RunTimes {
    pub(super) fn joules(&self) -> Option<f64> {
        Some(self.e_prefill?.joules + self.e_decode?.joules)
    }
}

/// FLOPs of one run: 2 per multiply-add in the projections, plus attention's QK^T and AV.
pub(super) fn flops(m: &Llama, batch: usize, l: usize, t: usize, kv: bool) -> f64 {
    let c = &m.config;
    let lin = 2.0 * m.linear_params() as f64;
    let attn = |q: usize, k: usize| 4.0 * (q * k * c.head_dim * c.n_head * c.n_layer) as f64;
    let mut f = lin * l as f64 + attn(l, l);
    for step in 1..t {
        let ctx = l + step;
        f += if kv {
            lin + attn(1, ctx)
        } else {
            lin * ctx as f64 + attn(ctx, ctx)
        };
    }
    f * batch as f64
}

/// The loaded model and the batch it will run, with the run's fixed sizes.
pub(super) struct Bench<'a> {
    pub(super) cfg: &'a InferConfig,
    pub(super) device: candle_core::Device,
    pub(super) m: Llama,
    pub(super) tok: Tokenizer,
    pub(super) load_s: f64,
    /// CPU threads the kernels ran on (the pool's size, as it is).
    pub(super) threads: usize,
    pub(super) batch_ids: Vec<Vec<u32>>,
    /// Prompt tokens and new tokens per sequence.
    pub(super) l: usize,
    pub(super) t: usize,
    /// `Opt::Graphs`: the static decode step, kept across runs (its CUDA graph with it).
    pub(super) static_step: Option<StaticStep>,
}

/// What the measured runs produced.
pub(super) struct Measured {
    pub(super) runs: Vec<RunTimes>,
    /// The counter over all measured runs back to back (first start to last end).
    pub(super) block: Option<EnergyWindow>,
    /// With `Progress::sync`: the counter over the window every device shares.
    pub(super) shared: Option<EnergyWindow>,
    /// Per-step sampler A/B: (step latency, sampler on) of measured runs.
    pub(super) ab_steps: Vec<(f64, bool)>,
    /// New tokens of the last measured run, per sequence.
    pub(super) generated: Vec<Vec<u32>>,
}

/// One run's output: its times, its sequences (prompt + new tokens) and, under per-step
/// A/B, its (step latency, sampler on) pairs.
pub(super) struct RunOutput {
    pub(super) times: RunTimes,
    pub(super) seqs: Vec<Vec<u32>>,
    pub(super) ab_steps: Vec<(f64, bool)>,
}

impl<'a> Bench<'a> {
    pub(super) fn load(cfg: &'a InferConfig) -> Result<Self> {
        let threads = super::config::set_threads(cfg.threads)?;
        let device = cfg.device.candle()?;
        if let Some(l) = cfg.gpu_layers.filter(|&l| l > 0 && !device.is_cuda()) {
            return Err(Error::Config(format!(
                "--gpu-layers {l}: needs --device cuda (the layers after them run on the CPU)"
            )));
        }
        let t0 = Instant::now();
        let (mut m, tok) =
            model::load_offloaded(&cfg.model, cfg.precision, cfg.opts, &device, cfg.gpu_layers)?;
        let load_s = t0.elapsed().as_secs_f64();
        m.tau = cfg.sparsity_tau;
        let l = prompt_tokens(&cfg.prompt_len)?;
        let batch_ids = build_batch(&tok, &cfg.prompts, cfg.batch, l)?;
        Ok(Bench {
            cfg,
            device,
            m,
            tok,
            load_s,
            threads,
            batch_ids,
            l,
            t: cfg.max_new_tokens,
            static_step: None,
        })
    }

    /// Warm-up runs, then measured runs.
    pub(super) fn measure(&mut self, meter: &Meter, progress: Progress<'_>) -> Result<Measured> {
        let cfg = self.cfg;
        // ABBA: measured runs 0 and 3 of every 4 sample, 1 and 2 run with the sampler paused.
        let ab_runs = cfg.sampler_ab == AbUnit::Runs;
        let sampler_on =
            |run: usize| !ab_runs || run < cfg.warmup || matches!((run - cfg.warmup) % 4, 0 | 3);
        let total_runs = cfg.warmup + cfg.repeats;
        let mut out = Measured {
            runs: Vec::new(),
            block: None,
            shared: None,
            ab_steps: Vec::new(),
            generated: Vec::new(),
        };
        let (mut block_e0, mut block_t0) = (None, Instant::now());
        let mut shared_e0 = (None, Instant::now());
        let synced = |meter: &Meter| {
            progress.sync.map(|sync| {
                sync();
                (meter.energy_mj(), Instant::now())
            })
        };
        for run in 0..total_runs {
            if (progress.interrupted)() {
                return Err(Error::Interrupted);
            }
            let measured = run >= cfg.warmup;
            if run == cfg.warmup {
                shared_e0 = synced(meter).unwrap_or(shared_e0);
                (block_e0, block_t0) = (meter.energy_mj(), Instant::now());
            }
            // Before the run it applies to (until 2026-11-23 this was set after the run, so
            // each run sampled as the one before it was meant to: whole-run A/B arms were
            // mislabelled; per-step A/B was not affected).
            meter.set_paused(!sampler_on(run));
            let mut r = self.run_once(meter, measured, None)?;
            r.times.sampler_on = meter.sampler.is_some() && sampler_on(run);
            // An even count per run, so A/B pairs never straddle two runs.
            r.ab_steps.truncate(r.ab_steps.len() / 2 * 2);
            out.ab_steps.extend(r.ab_steps);
            meter.set_phase(Phase::Idle);
            if measured {
                out.runs.push(r.times);
                out.generated = r.seqs.iter().map(|s| s[self.l..].to_vec()).collect();
            }
            (progress.on_step)(run + 1, total_runs);
        }
        out.block = EnergyWindow::between(
            block_e0,
            meter.energy_mj(),
            block_t0.elapsed().as_secs_f64(),
        );
        if let Some((e1, t1)) = synced(meter) {
            let seconds = t1.duration_since(shared_e0.1).as_secs_f64();
            out.shared = EnergyWindow::between(shared_e0.0, e1, seconds);
        }
        Ok(out)
    }

    /// One run: prefill, then `t - 1` greedy decode steps, timed and metered per phase.
    /// One run: prefill, then a decode step per new token (static steps where `--opt
    /// graphs` applies), timed, with the counter read around prefill and decode.
    pub(super) fn run_once(
        &mut self,
        meter: &Meter,
        measured: bool,
        mut tap: Option<&mut OperandCapture>,
    ) -> Result<RunOutput> {
        let (cfg, l) = (self.cfg, self.l);
        // On CUDA every decode step attends over all the run's positions, masked, so that
        // plain and static steps (and every set of knobs) multiply the same shapes.
        self.m.decode_span = self.device.is_cuda().then_some(l + self.t);
        let mut static_step = self.static_step(tap.is_none())?;
        meter.set_phase(if measured {
            Phase::Prefill
        } else {
            Phase::Warmup
        });
        let e0 = meter.energy_mj();
        let c0 = meter.cpu_j();
        let t0_s = meter.now_s();
        let start = Instant::now();
        let prompt = Tensor::new(self.batch_ids.clone(), &self.device).map_err(me)?;
        let mut next = argmax(&self.m.forward(&prompt, 0, as_tap(&mut tap))?)?;
        let ttft = start.elapsed().as_secs_f64();
        let e1 = meter.energy_mj();
        if measured {
            meter.set_phase(Phase::Decode);
        }
        let mut seqs = self.batch_ids.clone();
        let push = |seqs: &mut Vec<Vec<u32>>, next: &[u32]| {
            for (s, &n) in seqs.iter_mut().zip(next) {
                s.push(n);
            }
        };
        push(&mut seqs, &next);
        let mut ab_steps: Vec<(f64, bool)> = Vec::new();
        let mut steps = Vec::with_capacity(self.t);
        let step_ab = measured && cfg.sampler_ab == AbUnit::Steps && meter.sampler.is_some();
        for step in 1..self.t {
            // ABBA over this run's decode steps.
            let step_on = matches!((step - 1) % 4, 0 | 3);
            if step_ab {
                meter.set_paused(!step_on);
            }
            let step_start = Instant::now();
            next = self.decode_step(static_step.as_mut(), &next, &seqs, step, as_tap(&mut tap))?;
            let step_s = step_start.elapsed().as_secs_f64();
            steps.push(step_s);
            if step_ab {
                ab_steps.push((step_s, step_on));
            }
            push(&mut seqs, &next);
        }
        let total = start.elapsed().as_secs_f64();
        self.static_step = static_step;
        if step_ab {
            meter.set_paused(false);
        }
        let e2 = meter.energy_mj();
        let c2 = meter.cpu_j();
        let t1_s = meter.now_s();
        Ok(RunOutput {
            times: RunTimes {
                total,
                ttft,
                steps,
                sampler_on: false,
                e_prefill: EnergyWindow::between(e0, e1, ttft),
                e_decode: EnergyWindow::between(e1, e2, total - ttft),
                cpu_j: c2.zip(c0).map(|(b, a)| b - a),
                t0_s,
                t1_s,
            },
            seqs,
            ab_steps,
        })
    }

    /// The static decode step where graphs apply (CUDA, no activations read out, a KV
    /// cache to scatter into), kept across runs; else the KV cache cleared for a plain run.
    fn static_step(&mut self, no_tap: bool) -> Result<Option<StaticStep>> {
        let (cfg, span) = (self.cfg, self.l + self.t);
        // A CUDA graph spans one device: not under partial offload.
        let graphs =
            self.m.opts.has(Opt::Graphs) && self.device.is_cuda() && self.m.gpu_layers.is_none();
        if !(graphs && cfg.kv_cache && no_tap) {
            self.m.clear_kv_cache();
            return Ok(None);
        }
        if self.m.reserve_kv(cfg.batch, span)? {
            self.static_step = None;
        }
        Ok(Some(match self.static_step.take() {
            Some(st) => st,
            None => StaticStep::new(&self.m, cfg.batch, span)?,
        }))
    }

    /// Decode step `step` (1-based) after `next`: the static step, a KV-cache step, or
    /// without a cache the whole sequences again.
    fn decode_step(
        &mut self,
        static_step: Option<&mut StaticStep>,
        next: &[u32],
        seqs: &[Vec<u32>],
        step: usize,
        tap: Option<&mut dyn LinearTap>,
    ) -> Result<Vec<u32>> {
        let (m, l) = (&mut self.m, self.l);
        match static_step {
            Some(st) => {
                if step == 1 {
                    st.start(next, l)?;
                }
                st.step(m)
            }
            None if self.cfg.kv_cache => {
                let x = Tensor::new(next, &self.device)
                    .map_err(me)?
                    .unsqueeze(1)
                    .map_err(me)?;
                argmax(&m.forward(&x, l + step - 1, tap)?)
            }
            None => {
                m.clear_kv_cache();
                let all = Tensor::new(seqs.to_vec(), &self.device).map_err(me)?;
                argmax(&m.forward(&all, 0, tap)?)
            }
        }
    }

    pub(super) fn out_tokens(&self) -> f64 {
        (self.cfg.batch * self.t) as f64
    }

    pub(super) fn flops_per_run(&self) -> f64 {
        flops(&self.m, self.cfg.batch, self.l, self.t, self.cfg.kv_cache)
    }

    /// Write the captured operands with their provenance; returns the report's summary.
    pub(super) fn write_capture(
        &self,
        c: OperandCapture,
        path: &Path,
    ) -> Result<serde_json::Value> {
        let cfg = self.cfg;
        let provenance = serde_json::json!({
            "source": format!("perfwatt infer: {} {} on {}", cfg.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), cfg.precision.name(), cfg.device),
            "precision": cfg.precision.name(), "sparsity_tau": cfg.sparsity_tau, "batch": cfg.batch,
            "prompt_tokens": self.l, "kv_cache": cfg.kv_cache,
        });
        let stream = c.into_stream(cfg.precision.name(), provenance)?;
        stream.write_ops(path)?;
        Ok(
            serde_json::json!({"file": path.display().to_string(), "pairs": stream.pairs.len(), "width": stream.width, "format": stream.format_name(), "zero_fraction": stream.zero_fraction()}),
        )
    }

    /// The report: latency percentiles pooled per request, rates and energy per run.
    pub(super) fn summarize(
        self,
        gpu: &Option<GpuMeter>,
        measured: Measured,
        (energy, cpu_energy): (EnergyReport, super::CpuEnergy),
        samples: &[PowerSample],
        capture: Option<serde_json::Value>,
    ) -> Result<InferReport> {
        let (cfg, l, t) = (self.cfg, self.l, self.t);
        let runs = &measured.runs;
        let b = cfg.batch as f64;
        let out_tokens = self.out_tokens();
        let rate = |f: &dyn Fn(&RunTimes) -> f64, what: &str| {
            Estimate::of(&runs.iter().map(f).collect::<Vec<_>>())
                .ok_or_else(|| Error::Model(format!("no valid {what} measurements")))
        };
        // Peak device memory: the highest reading during the run, not the one at its end.
        let peak_mem_mb = if self.device.is_cuda() {
            samples
                .iter()
                .filter_map(|s| s.mem_used_mb)
                .chain(gpu.as_ref().and_then(|g| g.memory_used_mb()))
                .reduce(f64::max)
        } else {
            crate::energy::peak_rss_mb()
        };
        let idle_w = energy.idle_w;
        let records: Vec<RunRecord> = runs
            .iter()
            .map(|r| RunRecord {
                latency_s: r.total,
                ttft_s: r.ttft,
                step_latencies_s: r.steps.clone(),
                energy_j: r.joules(),
                energy_above_idle_j: r.joules().zip(idle_w).map(|(j, i)| j - i * r.total),
                cpu_j: r.cpu_j,
                start_s: r.t0_s,
            })
            .collect();
        let [latency_s, ttft_s, tpot_s] = request_percentiles(&records, cfg.batch, t)?;
        Ok(InferReport {
            schema: "perfwatt.infer/1",
            config: cfg.clone(),
            model: serde_json::json!({"file": cfg.model.display().to_string(), "config": self.m.config, "precision": cfg.precision.name(), "linear_params": self.m.linear_params()}),
            device: gpu
                .as_ref()
                .map_or_else(|| cfg.device.to_string(), |g| g.name.clone()),
            prompt_tokens: l,
            batch: cfg.batch,
            new_tokens: t,
            load_s: self.load_s,
            threads: self.threads,
            latency_s,
            ttft_s,
            tpot_s,
            tokens_per_s_input: rate(&|r| b * l as f64 / r.ttft, "input tokens/s")?,
            tokens_per_s_output: rate(&|r| out_tokens / r.total, "output tokens/s")?,
            tokens_per_s_decode: rate(
                &|r| b * (t as f64 - 1.0).max(1.0) / (r.total - r.ttft).max(1e-9),
                "decode tokens/s",
            )?,
            tokens_per_s_total: rate(&|r| b * (l + t) as f64 / r.total, "total tokens/s")?,
            run_latencies_s: runs.iter().map(|r| r.total).collect(),
            runs: records,
            sampler_ab: match cfg.sampler_ab {
                AbUnit::Off => None,
                AbUnit::Runs => SamplerAb::of(
                    AbUnit::Runs,
                    &runs
                        .iter()
                        .map(|r| (r.total, r.sampler_on))
                        .collect::<Vec<_>>(),
                ),
                AbUnit::Steps => SamplerAb::of(AbUnit::Steps, &measured.ab_steps),
            },
            flops_per_run: self.flops_per_run(),
            peak_mem_mb,
            energy,
            cpu_energy,
            generated: measured
                .generated
                .iter()
                .map(|g| self.tok.decode(g))
                .collect(),
            tokens: measured.generated,
            prompt_ids: self.batch_ids,
            capture,
        })
    }
}

/// The capture as the forward pass's tap, reborrowed for one call.
fn as_tap<'a>(tap: &'a mut Option<&mut OperandCapture>) -> Option<&'a mut dyn LinearTap> {
    tap.as_deref_mut().map(|c| c as &mut dyn LinearTap)
}
