//! The command line's flags: one clap struct per subcommand, each converted once into the
//! library's own config (the way ripgrep turns its flags into search arguments), so `main`
//! only dispatches. Examples in `--help` are kept verbatim, one per line (`after_help`).

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use perfwatt::capture::{CaptureSpec, InferConfig};
use perfwatt::choice::Choice;
use perfwatt::device::DeviceSpec;
use perfwatt::roofline::{Preset, RooflineConfig};
use perfwatt::sim::{Counting, Design};
use perfwatt::trace::OperandStream;
use perfwatt::Result;

#[derive(Parser)]
#[command(
    name = "perfwatt",
    version,
    about = "Tie LLM inference energy on a GPU to switching activity of MAC units",
    long_about = "perfwatt runs real LLM inference (candle), measures latency and NVML energy, \
captures the operands of its matrix multiplies, replays them into Verilator-simulated MAC \
units, and counts switching activity from VCD files.\n\n\
Pipeline: infer --capture -> traces/*.ops -> sim -> toggles -> sweep/report"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Count per-signal toggles (0<->1 changes) in a VCD file from any simulator.
    ///
    /// The first value of a bit is not a toggle; changes into or out of x/z are counted
    /// separately as x_transitions; real vars are tracked but not counted. Memory stays
    /// constant whatever the file size.
    #[command(after_help = "Examples:
  perfwatt toggles sim.vcd
  perfwatt toggles sim.vcd --format csv > toggles.csv
  zcat big.vcd.gz | perfwatt toggles - --scope tb.dut --saif act.saif")]
    Toggles(TogglesArgs),
    /// Replay an operand stream into Verilator-simulated datapaths and count switching.
    ///
    /// Serial MACs, one pair per clock: `baseline` (operands and product latched every
    /// cycle), `isolated` (operand isolation: multiplier inputs held on zero operands,
    /// accumulator enabled only for non-zero products), `signmag` (the baseline with
    /// sign-magnitude operands). Dot-product units, a K-slice of --lanes pairs per clock
    /// (each lane sees every W-th element of K, as in a tensor core): `dot` and
    /// `dot-isolated` (per-lane isolation), int8 x int8 or int8 x uint4 (q4_1 weights) as
    /// the stream's formats say. `all` runs every design that can take the stream and says
    /// which it skipped and why. The accumulator is checked against the exact dot product.
    /// Without --vcd, toggles are counted inside the harness.
    #[command(after_help = "Examples:
  perfwatt sim --operands traces/sample_q4_1.ops
  perfwatt sim --operands pairs.csv --width 16 --design isolated --format json
  perfwatt sim --operands floats.csv --csv-format bf16 --design bf16-dot --lanes 16
  perfwatt sim --synthetic activation-like --pairs 4000000 --dot-len 576 --threads 2
  perfwatt sim --operands traces/sample_q4_1.ops --design dot --lanes 64
  perfwatt sim --synthetic activation-like --pairs 100000 --vcd out/")]
    Sim(SimArgs),
    /// Run LLM inference (candle) like a benchmark, measure latency and energy, and
    /// optionally capture matmul operands for `sim`.
    ///
    /// Metrics: latency, TTFT and TPOT p50/p95/p99 (pooled over every request or token of
    /// every run), tokens/s, and on a GPU the NVML energy counter (above an idle draw
    /// measured before and after, unclamped), power samples (averaged and instantaneous,
    /// checked against the counter), J/token, tokens/J, EDP, FLOP/J, gCO2eq; means with a
    /// 95% t-interval over the --repeats runs (n = runs). On the CPU energy fields are
    /// null. Writes OUT.json and OUT.power.csv.
    #[command(after_help = "Examples:
  perfwatt infer --out results/base.json
  perfwatt infer --dtype f16 --batch 4 --prompt-len medium --max-new-tokens 32
  perfwatt infer --capture traces/q4_1.ops --capture-layers 0,15 --capture-projs q,down
  perfwatt infer --device cuda --repeats 10 --out results/gpu.json")]
    Infer(InferArgs),
    /// Run a sweep of software optimizations: every point runs `infer` with capture, then
    /// `sim` on the baseline and isolated MACs. Results go to DIR/results.{jsonl,csv},
    /// written atomically after each point; rerunning resumes where it stopped.
    #[command(after_help = "Example:
  perfwatt sweep experiments/cpu-demo.toml && perfwatt report experiments/runs/cpu-demo")]
    Sweep(SweepArgs),
    /// Write report.md and plots (PNG + SVG) for a sweep's run folder.
    Report {
        run_dir: PathBuf,
        /// First recompute every row's latency and energy columns from the points'
        /// replicate.json with the current statistics (CIs over replicates), keeping the
        /// switching columns: for run folders written by an older perfwatt.
        #[arg(long)]
        rescore: bool,
    },
    /// Merge a run folder's finished points (results.jsonl and every points/KEY/row.json a
    /// Slurm task wrote) into results.{jsonl,csv}; say which points are still missing.
    #[command(after_help = "Example:
  perfwatt sweep experiments/gpu.toml --slurm --partition gpu --gpus-per-task 1
  perfwatt collect experiments/runs/gpu-sweep --report")]
    Collect {
        run_dir: PathBuf,
        /// Also write the report.
        #[arg(long)]
        report: bool,
    },
    /// One point of a run folder, all its replicates then its row.json (what a Slurm array
    /// task runs).
    #[command(hide = true)]
    SweepTask {
        run_dir: PathBuf,
        #[arg(long)]
        key: String,
    },
    /// One replicate of a sweep point (what `perfwatt sweep` runs in a child process of
    /// its own): the InferConfig JSON in, infer.json and replicate.json out.
    #[command(hide = true)]
    SweepPoint {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        capture: Option<PathBuf>,
    },
    /// Print a cell energy table (TOML, for `sim --level gate --cells`) read from a Liberty
    /// file: per generic gate the named library cell's internal energy per output
    /// transition (internal_power rise/fall at the tables' first index), its input pin
    /// capacitances and pin energies, the library's nominal voltage.
    #[command(after_help = "Examples:
  perfwatt cells --liberty models/cells/osu018_stdcells.lib > my.toml
  perfwatt cells --liberty my_pdk.lib --map NOT=INV_X1,AND=AND2_X1,NAND=NAND2_X1,OR=OR2_X1,NOR=NOR2_X1,XOR=XOR2_X1,XNOR=XNOR2_X1,MUX=MUX2_X1,BUF=BUF_X1,DFF=DFF_X1")]
    Cells {
        #[arg(long, value_name = "FILE")]
        liberty: PathBuf,
        /// Library cell per generic kind, KIND=CELL,... (default: the shipped table's OSU
        /// names; kinds left out keep them).
        #[arg(long, value_name = "MAP")]
        map: Option<String>,
    },
    /// The main job on shipped defaults: the CPU demo sweep (experiments/cpu-demo.toml)
    /// with the shipped model, then its report. Prints the report's path.
    Demo {
        #[arg(long, default_value = "experiments/runs/cpu-demo")]
        out: PathBuf,
    },
    /// Measure the device's roofline and place LLM kernels on it, with energy per kernel.
    ///
    /// Peaks: the best FLOP/s of square matrix products in f32, f16 and bf16, and the
    /// bandwidth of a device-to-device copy (bytes read + written); ridge = peak / bandwidth.
    /// Kernels at the shipped model's shapes (SmolLM2-135M) and a 7B model's (full preset):
    /// linear layers at several (M, K, N), attention softmax(QK^T)V (prefill and one decode
    /// step), RMSNorm, SiLU, RoPE, embedding lookup, Q4_1 quantized matmul. Latency: warmup,
    /// then up to --repeats launches timed with CUDA events (GPU) or the wall clock (CPU):
    /// median/p5/p95/min/max. Energy (GPU): the NVML energy counter over back-to-back
    /// launches lasting --energy-seconds, raw and above the idle draw; null on the CPU.
    /// Writes DIR/roofline.json and roofline.csv (after every kernel) and roofline.png/.svg.
    #[command(after_help = "Examples:
  perfwatt roofline --quick
  perfwatt roofline --device cuda --out experiments/results/h100/roofline")]
    Roofline(RooflineArgs),
    /// Measure any command's GPU (and CPU) energy, phase by phase: perfwatt's energy
    /// method around a workload it does not drive (a PyTorch script, a server, a job).
    ///
    /// Per GPU: the NVML energy counter from spawn to exit, idle before (and after),
    /// above-idle energy, both power fields, SM clock, clock-event reasons, memory,
    /// utilisation; CPU energy through RAPL where the host lets it be read. The command's
    /// output passes through, and its exit code is perfwatt's (128 + N for signal N).
    ///
    /// Phases: the command prints marker lines on stdout or stderr, or writes them to the
    /// FIFO named in $PERFWATT_PHASE_FIFO:
    ///   PERFWATT_PHASE NAME          NAME starts; the previous such phase ends
    ///   PERFWATT_PHASE begin NAME    a window that may nest in or overlap others...
    ///   PERFWATT_PHASE end NAME      ...until this line
    /// Phases open at exit end there. A phase shorter than 5 counter updates is flagged
    /// (unresolved), not reported as measured. Python runs with PYTHONUNBUFFERED=1 so its
    /// markers are not buffered; other programs should flush after a marker.
    ///
    /// Ctrl-C: forwarded to the command (its process group) as SIGINT; a second Ctrl-C
    /// kills it. The report is written either way. Without NVML the command and its phases
    /// are still timed; energy fields are null with the reason.
    #[command(after_help = "Examples:
  perfwatt measure -- python train.py --epochs 1
  perfwatt measure --devices 0,1 --idle-s 10 --idle-after-s 5 --out runs/serve -- ./serve.sh
  perfwatt measure --trace trace.json -- python3 serve.py --port 8000
  (in Python: print('PERFWATT_PHASE load'); ...; print('PERFWATT_PHASE generate'))

Out: OUT/measure.json (schema perfwatt.measure/1), OUT/report.md, OUT/power.csv (long
format: gpu,t_s,power_w,...), OUT/plots/power-gpuN.{png,svg}; --trace: a Chrome
trace-event file for Perfetto (ui.perfetto.dev) or chrome://tracing.")]
    Measure(MeasureArgs),
    /// Drive an OpenAI-compatible server (perfwatt's own, llama.cpp's, vLLM, yours) at
    /// offered loads and measure latency per request and energy per request.
    ///
    /// Open loop: Poisson arrivals at each --rate (seeded; `inf`: all at once); closed loop:
    /// --concurrency N in flight. Every request streams; per load: TTFT, TPOT, inter-token
    /// and end-to-end percentiles (p50/p90/p99; with --replicates >= 2 a 95% CI over
    /// replicates), achieved request and token throughput, goodput under --slo-ttft /
    /// --slo-tpot, errors by kind (connect, http NNN, timeout: a stream silent for
    /// --timeout-s, stream). Energy: the NVML counter of the GPUs on this host over the
    /// measured window (first to last arrival: warm-up and drain excluded), idle measured
    /// before, J/request and J/output token; CPU energy through RAPL where readable.
    /// Exits non-zero when any measured request failed (the report says which and why).
    #[command(after_help = "Examples:
  perfwatt load --url http://127.0.0.1:8000 --rate 1,2,4,8,inf --requests 50 --max-tokens 64
  perfwatt load --url http://127.0.0.1:8080 --concurrency 1,4,16 --replicates 3 --slo-ttft 500
  perfwatt load --url http://127.0.0.1:8000 --rate 4 --duration 60 --prompts my.jsonl --chat

Prompts: --prompts FILE, JSON Lines with a \"text\" field (experiments/prompts.jsonl, the
default) or plain text, one prompt per line. Out: OUT/results.{csv,jsonl} (a row per load
and replicate), OUT/requests.csv (a row per request), OUT/report.md, OUT/plots/.")]
    Load(LoadArgs),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    ///
    /// Endpoints: POST /v1/completions and /v1/chat/completions (stream: true for
    /// server-sent events, one chunk per piece of text; stream_options.include_usage adds
    /// a usage chunk), GET /v1/models, /health, /metrics (Prometheus text: requests,
    /// tokens, batch occupancy, and on CUDA the GPU's energy counter, power, SM clock).
    /// Requests take one of --max-batch rows of a batch that the engine steps together,
    /// each row at its own position; a new request joins between steps, its prompt fed one
    /// token per step beside the others' decoding. temperature 0 is greedy (the tokens
    /// `perfwatt infer` gives for the same prompt ids), else seeded sampling (`seed`).
    /// Ctrl-C stops accepting and lets the requests in flight finish.
    #[command(after_help = "Examples:
  perfwatt serve --port 8000
  perfwatt serve --device cuda --max-batch 32 --max-context 1024 --port 8000
  curl -s localhost:8000/v1/completions -d '{\"prompt\": \"The sky is\", \"max_tokens\": 8, \"temperature\": 0}'
  perfwatt load --url http://127.0.0.1:8000 --rate 1,2,4 --requests 20")]
    Serve(ServeArgs),
    /// Measure how a GEMM's energy depends on its operand data, and how well the switching
    /// of hardware models (RTL MACs, dot-product units, operand bit flips) predicts it.
    ///
    /// For each dtype and operand pattern (value distributions, bit similarity, placement,
    /// sparsity, real SmolLM2 activations and weights, or your own .npy matrices): GEMMs of
    /// one shape back to back for --seconds after a warm-up, energy from the NVML counter,
    /// --rounds rounds in alternating order (mean and 95% CI over rounds), SM clock and
    /// clock-event reasons, idle power before and after. The RTL side replays
    /// --sample-dots dot products of each pattern into the designs of rtl/, and
    /// --sample-blocks output blocks into the tile-level MMA unit in each --tile-orders
    /// order; the report selects among them inside each leave-one-out fold and states
    /// whether they beat the baselines named before fitting. A K-permuted
    /// twin of the --permute patterns (int8: bit-identical output, checked) measures an
    /// exact software optimization. On the CPU: time only, small shapes (what CI runs).
    /// Writes DIR/points.jsonl as it goes (a rerun resumes), results.{json,csv}, report.md
    /// and plots.
    #[command(after_help = "Examples:
  perfwatt gemm-energy
  perfwatt gemm-energy --device cuda --dtype int8,bf16 --out experiments/results/h100/gemm-energy
  perfwatt gemm-energy --device cuda --dtype int8 --patterns zeros,normal,sparse50-a --seconds 3
  perfwatt gemm-energy --device cuda --dtype int8 --operands A.npy B.npy")]
    GemmEnergy(GemmEnergyArgs),
}

#[derive(Subcommand)]
pub enum GemmAction {
    /// Predict energy per GEMM of your operands from a calibration, on a CPU-only machine:
    /// the calibration's hardware model is replayed on A and B, its fitted weights applied,
    /// with a 95% prediction interval from its leave-one-out errors.
    #[command(after_help = "Example:
  perfwatt gemm-energy predict --calibration experiments/results/h200-gemm-energy/duty/calibration.json \\
      --operands A.npy B.npy")]
    Predict(PredictArgs),
    /// Rewrite a finished run's report.md, results.csv and calibration.json from its
    /// results.json alone (no device, no operands): what a new report section or fit
    /// needs to reach data already measured.
    Report {
        /// The run folder (holds results.json).
        dir: PathBuf,
        /// Check this calibration instead of the one the run named.
        #[arg(long, value_name = "FILE")]
        check_calibration: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct PredictArgs {
    /// A calibration written by `perfwatt gemm-energy --calibrate`.
    #[arg(long, value_name = "FILE")]
    pub calibration: PathBuf,
    /// A (M x K) and B (K x N) as .npy, at the calibrated shape.
    #[arg(long, num_args = 2, value_names = ["A.npy", "B.npy"], required = true)]
    pub operands: Vec<PathBuf>,
    /// Which of the calibration's dtypes (default: its first).
    #[arg(long, value_parser = choice::<perfwatt::gemm_energy::patterns::Dtype>())]
    pub dtype: Option<perfwatt::gemm_energy::patterns::Dtype>,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GemmEnergyArgs {
    #[command(subcommand)]
    pub action: Option<GemmAction>,
    /// cpu, cuda (GPU 0) or cuda:N (a build with --features cuda and an NVIDIA GPU).
    #[arg(long, default_value = "cpu", value_parser = device_spec)]
    pub device: DeviceSpec,
    /// Several GPUs at once: `0,1` or `all`. Each measures every pattern into OUT/cudaN
    /// (its full report); OUT/devices.{md,csv,json} compare them pattern by pattern.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    pub devices: Option<String>,
    /// GEMM element types, comma-separated.
    #[arg(long, value_parser = choice::<perfwatt::gemm_energy::patterns::Dtype>(), value_delimiter = ',', default_value = "int8,bf16")]
    pub dtype: Vec<perfwatt::gemm_energy::patterns::Dtype>,
    /// M,K,N (default 8192,8192,8192 on cuda, 64,256,64 on cpu).
    #[arg(long, value_name = "M,K,N")]
    pub shape: Option<String>,
    /// Synthetic patterns, comma-separated, or `all`; `all,-checker,-laplace` leaves the
    /// minus-named out.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub patterns: Vec<String>,
    /// Leave out the real SmolLM2 operand patterns (which need the model).
    #[arg(long)]
    pub no_real: bool,
    /// Your operands instead of the patterns: A (M x K) and B (K x N) as .npy (int8,
    /// float16, float32 or float64); the shape comes from them.
    #[arg(long, num_args = 2, value_names = ["A.npy", "B.npy"])]
    pub operands: Option<Vec<PathBuf>>,
    /// Patterns that get a K-permuted twin (int8 only), comma-separated; `none` for none.
    #[arg(long, value_delimiter = ',', default_value = "normal,llm-down-l15")]
    pub permute: Vec<String>,
    /// Timed seconds per pattern and round (default 2 on cuda, 0.05 on cpu).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Rounds per pattern (interleaved, alternating order).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// back-to-back (GEMMs launched without pause: random-like data runs at the power cap,
    /// where energy per GEMM grows through lower clocks), duty (bursts of --duty-burst-ms of
    /// GEMMs, then --duty-sleep-ms asleep, so the card stays under its limit at its top
    /// clock; idle is then that schedule's floor), or both (OUT/back-to-back, OUT/duty).
    #[arg(long, default_value = "back-to-back", value_parser = ["back-to-back", "duty", "both"])]
    pub regime: String,
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    pub duty_burst_ms: f64,
    #[arg(long, default_value_t = 12.0, value_name = "MS")]
    pub duty_sleep_ms: f64,
    /// Lanes of the dot-product unit models (4, 16 or 64).
    #[arg(long, default_value_t = 16)]
    pub lanes: u32,
    /// Dot products (full K) per pattern replayed into the hardware models.
    #[arg(long, default_value_t = 16)]
    pub sample_dots: usize,
    /// Orders in which the tile-level MMA unit (int8, rtl/mma_tile.v) walks an output
    /// block, comma-separated, or `none`: k-outer-* steps through every sub-block per
    /// K-slice (as an MMA), k-inner-* through all of K per sub-block; -n / -m: which
    /// index runs fastest.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "k-outer-n,k-outer-m,k-inner-n,k-inner-m"
    )]
    pub tile_orders: Vec<String>,
    /// 16 x 8 output blocks (full K, seeded positions) per pattern the tile unit replays.
    #[arg(long, default_value_t = 4)]
    pub sample_blocks: usize,
    /// Seed of the synthetic patterns' values and of the sampled blocks (a new seed: new
    /// data of the same patterns).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// After the run, write OUT/calibration.json: per dtype the model the nested selection
    /// chose most, fitted to every pattern, for `perfwatt gemm-energy predict`.
    #[arg(long)]
    pub calibrate: bool,
    /// A calibration from an earlier run: the report predicts every pattern of this run
    /// with it (patterns it never saw, if they are new) and gives the errors.
    #[arg(long, value_name = "FILE")]
    pub check_calibration: Option<PathBuf>,
    /// Also rank the RTL designs' gate-level netlists (yosys; every net's toggles, and the
    /// energy estimate of the shipped cell table) as hardware models. The first run builds
    /// them: minutes for the 16-lane dot units.
    #[arg(long)]
    pub gate_level: bool,
    /// GGUF model for the real patterns: smollm2 (default, or $PERFWATT_MODEL), gemma3, or
    /// a path.
    #[arg(long, value_name = "NAME|GGUF", value_parser = model_arg)]
    pub model: Option<PathBuf>,
    /// Output folder (default experiments/runs/gemm-energy-DEVICE).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl GemmEnergyArgs {
    pub fn config(&self) -> Result<perfwatt::gemm_energy::GemmConfig> {
        use perfwatt::gemm_energy::patterns::Shape;
        // --devices: the GPU defaults (shape, seconds, idle windows); each device's run
        // gets its own name.
        let device = match self.devices {
            Some(_) => "cuda".parse()?,
            None => self.device,
        };
        let mut c = perfwatt::gemm_energy::GemmConfig::new(device);
        c.dtypes = self.dtype.clone();
        if let Some(s) = &self.shape {
            let v: Vec<usize> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            let [m, k, n] = v[..] else {
                return Err(perfwatt::Error::Config(format!(
                    "--shape '{s}': three positive integers M,K,N"
                )));
            };
            if m == 0 || k == 0 || n == 0 {
                return Err(perfwatt::Error::Config(format!(
                    "--shape '{s}': three positive integers M,K,N"
                )));
            }
            c.shape = Shape { m, k, n };
        }
        // `all,-name,...`: every pattern but those named with a minus.
        let (minus, plus): (Vec<&String>, Vec<&String>) =
            self.patterns.iter().partition(|p| p.starts_with('-'));
        c.patterns = plus.into_iter().filter(|p| *p != "all").cloned().collect();
        if !minus.is_empty() {
            let drop: Vec<&str> = minus.iter().map(|p| &p[1..]).collect();
            if c.patterns.is_empty() {
                c.patterns = perfwatt::gemm_energy::patterns::PATTERNS
                    .iter()
                    .map(|p| p.name.to_string())
                    .collect();
            }
            c.patterns.retain(|p| !drop.contains(&p.as_str()));
        }
        c.real = !self.no_real;
        if let Some(m) = &self.model {
            c.model = m.clone();
        }
        c.operands = self.operands.as_ref().map(|v| (v[0].clone(), v[1].clone()));
        c.permute = self
            .permute
            .iter()
            .filter(|p| *p != "none")
            .cloned()
            .collect();
        c.seconds = self.seconds.unwrap_or(c.seconds);
        c.rounds = self.rounds.max(1);
        if !(self.duty_burst_ms > 0.0 && self.duty_sleep_ms >= 0.0) {
            return Err(perfwatt::Error::Config(
                "--duty-burst-ms must be positive and --duty-sleep-ms not negative".into(),
            ));
        }
        c.duty_burst_ms = self.duty_burst_ms;
        c.duty_sleep_ms = self.duty_sleep_ms;
        c.lanes = self.lanes;
        c.sample_dots = self.sample_dots.max(1);
        c.tile_orders = self
            .tile_orders
            .iter()
            .filter(|o| *o != "none")
            .map(|o| o.parse())
            .collect::<perfwatt::Result<_>>()?;
        c.sample_blocks = self.sample_blocks.max(1);
        c.seed = self.seed;
        c.gate_level = self.gate_level;
        c.check_calibration = self.check_calibration.clone();
        Ok(c)
    }

    /// The regimes --regime names, in the order they run.
    pub fn regimes(&self) -> Result<Vec<perfwatt::gemm_energy::Regime>> {
        use perfwatt::gemm_energy::Regime;
        Ok(match self.regime.as_str() {
            "both" => vec![Regime::BackToBack, Regime::Duty],
            r => vec![r.parse()?],
        })
    }

    pub fn out_dir(&self) -> PathBuf {
        let device = match self.devices {
            Some(_) => "devices".to_string(),
            None => self.device.to_string(),
        };
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("experiments/runs/gemm-energy-{device}")))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
pub struct TogglesArgs {
    /// VCD file, or `-` for stdin.
    pub file: PathBuf,
    /// Output format: a table for people, JSON, or CSV (one row per signal).
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
    /// Also write SAIF 2.0 activity (T0/T1/TX/TC/IG per net bit) to this file.
    #[arg(long, value_name = "OUT.saif")]
    pub saif: Option<PathBuf>,
    /// Only report signals under this dotted scope path (e.g. `tb.dut`).
    #[arg(long, value_name = "PREFIX")]
    pub scope: Option<String>,
    /// Rows in the table's most-active list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Threads: a file of 16 MiB or more (without --saif) is counted in pieces of its
    /// body in parallel, joined in order. Default: all cores. 1 = one sequential pass.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl TogglesArgs {
    /// Count the file as the flags ask (threads, SAIF detail, scope).
    pub fn count(&self) -> Result<perfwatt::vcd::toggles::ToggleReport> {
        let saif = self.saif.is_some();
        let mut report = match self.threads {
            Some(t) => perfwatt::vcd::count_toggles_path_threads(&self.file, saif, t.max(1))?,
            None => perfwatt::vcd::count_toggles_path_with(&self.file, saif)?,
        };
        if let Some(p) = &self.scope {
            report.retain_scope(p);
        }
        Ok(report)
    }
}

/// `--design`: one design of the catalogue, or all of them.
#[derive(Clone, Copy)]
pub enum DesignSet {
    One(Design),
    All,
}

/// `--design`'s parser: the catalogue's names (with their help) and `all`.
fn design_set() -> impl clap::builder::TypedValueParser<Value = DesignSet> {
    let names = Design::all()
        .map(|d| clap::builder::PossibleValue::new(d.name()).help(d.about))
        .chain([
            clap::builder::PossibleValue::new("all").help("every design that can take the stream")
        ]);
    clap::builder::PossibleValuesParser::new(names).map(|s| match s.as_str() {
        "all" => DesignSet::All,
        name => DesignSet::One(Design::named(name).expect("a possible value")),
    })
}

/// clap's parser for a library `Choice`: its names as the possible values, with their help.
fn choice<T: Choice + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    let names = T::ALL.iter().map(|c| {
        let v = clap::builder::PossibleValue::new(c.name());
        if c.about().is_empty() {
            v
        } else {
            v.help(c.about())
        }
    });
    clap::builder::PossibleValuesParser::new(names)
        .map(|s| perfwatt::choice::parse::<T>(&s).expect("a possible value"))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SimFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct SimArgs {
    /// Operand stream: .ops (binary, from `infer --capture`) or .csv with header `a,b`.
    #[arg(long, value_name = "FILE", required_unless_present = "synthetic")]
    pub operands: Option<PathBuf>,
    /// Use a generated stream instead of a file.
    #[arg(long, value_parser = choice::<perfwatt::trace::synth::Kind>(), conflicts_with = "operands")]
    pub synthetic: Option<perfwatt::trace::synth::Kind>,
    /// Pairs in a --synthetic stream.
    #[arg(long, default_value_t = 100_000)]
    pub pairs: usize,
    /// Operand width in bits for CSV and synthetic streams (.ops files carry their own).
    #[arg(long, default_value_t = 8, value_parser = parse_width)]
    pub width: u8,
    /// Pairs per dot product for CSV and synthetic streams (the accumulator restarts every
    /// K pairs; .ops files carry their own). Default: the whole stream is one dot product.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub dot_len: Option<u64>,
    /// Number format of both CSV columns, instead of --width's signed integers: i4, u4,
    /// i8, i16, or bf16/f16 (decimal numbers, rounded to the format).
    #[arg(long, value_name = "FORMAT", value_parser = parse_elem_format)]
    pub csv_format: Option<perfwatt::trace::ElemFormat>,
    /// A design of the catalogue (sim/designs.rs), or `all`: every design that can take
    /// the stream (the others are skipped, saying why).
    #[arg(long, value_parser = design_set(), default_value = "all")]
    pub design: DesignSet,
    /// Lanes of the dot-product units (built: 4, 16, 64; bf16-dot: 4, 16). The stream's dot-product
    /// length must be a multiple of it.
    #[arg(long, default_value_t = perfwatt::sim::DEFAULT_LANES)]
    pub lanes: u32,
    /// Threads for the simulation (default: every core). The stream is cut at dot-product
    /// starts and the pieces' counts joined exactly (checked at every seam). VCD runs use one.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Dump VCD files into this folder and count toggles from them (slower, inspectable).
    #[arg(long, value_name = "DIR")]
    pub vcd: Option<PathBuf>,
    /// Count both ways (VCD and in-harness) and fail unless they agree exactly.
    #[arg(long, requires = "vcd")]
    pub cross_check: bool,
    /// Simulate without counting toggles (raw simulation speed).
    #[arg(long, conflicts_with_all = ["vcd", "cross_check"])]
    pub no_count: bool,
    /// Write the stream as CSV (a,b) or as iverilog stimulus (hex words, see tests/rtl/mac_tb.v) and exit.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: SimFormat,
    /// rtl: count the RTL's registers and named wires. gate: also synthesize each design
    /// with yosys to generic gates (cached under $PERFWATT_CACHE or ~/.cache/perfwatt),
    /// simulate the netlist with Verilator on the same cycles and count every net, with an
    /// energy estimate from a cell table; the table then shows both levels side by side.
    /// The netlist runs on one core (--threads applies to the RTL).
    #[arg(long, value_enum, default_value = "rtl")]
    pub level: Level,
    /// Cell energies for --level gate: a TOML table (see assets/cells/osu018.toml, the
    /// default: OSU 0.18 um) or a Liberty file (.lib) with cells of the same names.
    #[arg(long, value_name = "FILE")]
    pub cells: Option<PathBuf>,
    /// --level gate: also simulate the first N cycles with one time unit per gate
    /// (iverilog) and count glitches apart from functional toggles (slow: keep N small).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub glitch_cycles: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Rtl,
    Gate,
}

impl SimArgs {
    /// What a gate-level run needs, or None for RTL only.
    pub fn gate_options(&self) -> Result<Option<perfwatt::sim::gate::GateOptions>> {
        if self.level == Level::Rtl {
            if self.cells.is_some() || self.glitch_cycles > 0 {
                return Err(perfwatt::Error::Config(
                    "--cells and --glitch-cycles need --level gate".into(),
                ));
            }
            return Ok(None);
        }
        let mut o = perfwatt::sim::gate::GateOptions {
            glitch_cycles: self.glitch_cycles,
            ..Default::default()
        };
        if let Some(p) = &self.cells {
            o.cells = perfwatt::sim::gate::CellTable::load(p)?;
        }
        Ok(Some(o))
    }

    /// The operand stream: the file, or a generated one (seed 1).
    pub fn stream(&self) -> Result<OperandStream> {
        let mut s = self.stream_as_given()?;
        let from_ops = s.meta.get("segments").is_some() || s.meta.get("dot_len").is_some();
        if let (Some(k), false) = (self.dot_len, from_ops) {
            s.meta["dot_len"] = k.into();
        }
        Ok(s)
    }

    fn stream_as_given(&self) -> Result<OperandStream> {
        match (&self.operands, self.synthetic) {
            (Some(p), _) => OperandStream::read_as(
                p,
                self.csv_format
                    .unwrap_or(perfwatt::trace::ElemFormat::int_of_width(self.width)),
            ),
            (None, Some(kind)) => Ok(perfwatt::trace::synth::stream(
                kind, self.pairs, self.width, 1,
            )),
            (None, None) => unreachable!("clap requires --operands or --synthetic"),
        }
    }

    pub fn designs(&self) -> Vec<Design> {
        match self.design {
            DesignSet::One(d) => vec![d],
            DesignSet::All => Design::all().collect(),
        }
    }

    /// What to simulate: `--design all` skips the designs that cannot take the stream; a
    /// design named alone must run.
    pub fn plan<'a>(
        &self,
        gate: Option<&'a perfwatt::sim::gate::GateOptions>,
    ) -> perfwatt::sim::SimPlan<'a> {
        perfwatt::sim::SimPlan {
            designs: self.designs(),
            lanes: self.lanes,
            counting: self.counting(),
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            gate,
            skip_unfit: matches!(self.design, DesignSet::All),
        }
    }

    /// The design whose stimulus `--export` writes: the one named, or the catalogue's first
    /// (the baseline).
    pub fn export_design(&self) -> Design {
        match self.designs().as_slice() {
            [one] => *one,
            _ => Design::all().next().expect("a design"),
        }
    }

    pub fn counting(&self) -> Counting {
        match (&self.vcd, self.cross_check, self.no_count) {
            (Some(d), true, _) => Counting::Both(d.clone()),
            (Some(d), false, _) => Counting::Vcd(d.clone()),
            (None, _, true) => Counting::None,
            (None, _, false) => Counting::Fast,
        }
    }
}

#[derive(Args)]
pub struct InferArgs {
    /// cpu, cuda (GPU 0) or cuda:N (a build with --features cuda and an NVIDIA GPU).
    #[arg(long, default_value = "cpu", value_parser = device_spec)]
    pub device: DeviceSpec,
    /// Several GPUs at once: `0,1` or `all`. Each runs the whole benchmark with its own
    /// model and NVML sampler; the measured runs share one wall-clock window. OUT gets the
    /// host's figures (pooled percentiles, summed energy), OUT.cudaN.json each GPU's.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["device", "capture"])]
    pub devices: Option<String>,
    /// Weight format: gguf (every weight as shipped), q4_1 (SmolLM2 as shipped; others
    /// re-quantized), re-quantized q8_0/q4_0/q4k, or dense f32/f16/bf16.
    #[arg(long, value_parser = choice::<perfwatt::model::Precision>(), default_value = "q4_1")]
    pub dtype: perfwatt::model::Precision,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Prompt tokens incl. chat template: short (40), medium (96), long (192), or a number.
    #[arg(long, default_value = "short")]
    pub prompt_len: String,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Recompute the whole sequence every step instead of using a KV cache.
    #[arg(long)]
    pub no_kv_cache: bool,
    /// Activation sparsity: zero |x| < TAU at every projection input.
    #[arg(long, default_value_t = 0.0, value_name = "TAU")]
    pub sparsity: f32,
    /// Optimizations of the forward pass to use: `all` (default), `none`, a list, or all
    /// but some (`all,-graphs`). Only speed and energy change (greedy tokens too, on CUDA
    /// at batch > 1 with graphs: see BENCHMARKS.md). tiles: repacked Q4_1 weights, 16-row
    /// tiles for AVX512-VNNI/AVX2 (CPU); merged-proj: q,k,v in one matmul and gate,up in
    /// another (CUDA: up to 8 rows); inplace-kv: a preallocated KV cache written in place,
    /// not concatenated each step; graphs: a static decode step captured once as a CUDA
    /// graph and replayed per token (CUDA); fused: perfwatt's kernels for add + RMSNorm,
    /// mask + softmax, SiLU x up, KV write, argmax (CUDA; same bits as candle's).
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub opt: perfwatt::model::Opts,
    /// Write captured operands (.ops) here.
    #[arg(long, value_name = "FILE.ops")]
    pub capture: Option<PathBuf>,
    /// Also write a trace-event timeline (Perfetto, chrome://tracing): each measured run
    /// with its prefill and decode steps as spans, and on a GPU the power, energy, SM clock
    /// and utilisation counters.
    #[arg(long, value_name = "trace.json", conflicts_with = "devices")]
    pub trace: Option<PathBuf>,
    /// Layers to capture, comma-separated.
    #[arg(long, default_value = "0,15,29", value_delimiter = ',')]
    pub capture_layers: Vec<usize>,
    /// Projections to capture: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    pub capture_projs: Vec<String>,
    #[arg(long, default_value_t = 500_000)]
    pub capture_max_pairs: usize,
    /// Weight rows each captured activation vector meets.
    #[arg(long, default_value_t = 4)]
    pub capture_rows: usize,
    /// 8: the quantized kernel's own integers (q4_1: u4 x q8_1 int8, q8_0/q4_0 likewise;
    /// int8 for f32/f16/bf16/q4k); 16: int16, one scale per tensor.
    #[arg(long, default_value_t = 8, value_parser = parse_width)]
    pub capture_width: u8,
    /// NVML sampling rate.
    #[arg(long, default_value_t = 50.0)]
    pub sample_hz: f64,
    /// Idle power: this many energy-counter windows before the runs and as many after
    /// (the median of all is the idle draw; GPU only).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_windows: u64,
    /// Seconds per idle window (one counter update is ~0.1 s: keep windows long).
    #[arg(long, default_value_t = 5.0)]
    pub idle_seconds: f64,
    /// Measure the NVML sampler's own cost: measured runs (`runs`) or the decode steps
    /// within each measured run (`steps`) alternate sampler on and paused (ABBA), and
    /// the report gains `sampler_ab` (paired overhead, 95% CI). GPU only.
    #[arg(long, value_parser = choice::<perfwatt::capture::AbUnit>(), value_name = "UNIT", num_args = 0..=1, default_missing_value = "runs", default_value = "off")]
    pub sampler_ab: perfwatt::capture::AbUnit,
    /// Grid carbon intensity for gCO2eq (g/kWh).
    #[arg(long, default_value_t = 400.0)]
    pub grid_intensity: f64,
    /// CPU threads of the kernels (default: one per core). Set once per process; the
    /// report's `threads` is the size the pool really has.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Partial offload (with --device cuda): layers 0..L on the GPU, the other layers and
    /// the output head on the CPU, the hidden state copied once per forward pass. 0 runs
    /// every layer on the CPU while the GPU's counter is still read; CUDA graphs are not
    /// used when the model spans two devices.
    #[arg(long, value_name = "L")]
    pub gpu_layers: Option<usize>,
    /// Model: smollm2 (SmolLM2-135M-Instruct Q4_1, the default, or $PERFWATT_MODEL),
    /// gemma3 (Gemma 3 270M; `--dtype gguf` runs it as shipped), or a GGUF path.
    #[arg(long, value_name = "NAME|GGUF", value_parser = model_arg)]
    pub model: Option<PathBuf>,
    /// Prompt set, JSON lines with a "text" field.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[arg(long, default_value = "infer.json")]
    pub out: PathBuf,
}

impl InferArgs {
    pub fn config(&self) -> InferConfig {
        let defaults = InferConfig::default();
        InferConfig {
            model: self.model.clone().unwrap_or(defaults.model),
            prompts: self.prompts.clone().unwrap_or(defaults.prompts),
            device: self.device,
            precision: self.dtype,
            batch: self.batch,
            prompt_len: self.prompt_len.clone(),
            max_new_tokens: self.max_new_tokens,
            warmup: self.warmup,
            repeats: self.repeats,
            kv_cache: !self.no_kv_cache,
            opts: self.opt,
            sparsity_tau: self.sparsity,
            sample_hz: self.sample_hz,
            idle_windows: self.idle_windows as usize,
            idle_seconds: self.idle_seconds,
            threads: self.threads,
            gpu_layers: self.gpu_layers,
            sampler_ab: self.sampler_ab,
            grid_g_per_kwh: self.grid_intensity,
            capture: self.capture.is_some().then(|| CaptureSpec {
                layers: self.capture_layers.clone(),
                projs: self.capture_projs.clone(),
                width: self.capture_width,
                max_pairs: self.capture_max_pairs,
                rows: self.capture_rows,
                ..CaptureSpec::default()
            }),
        }
    }
}

#[derive(Args)]
pub struct SweepArgs {
    /// Sweep spec (TOML): name, [base] infer settings, [capture], [axes] lists.
    pub spec: PathBuf,
    /// Run folder (default: experiments/runs/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the report when done.
    #[arg(long)]
    pub report: bool,
    /// Run GPU points on several GPUs of this host at once: `0,1` or `all`. One worker per
    /// GPU takes the next replicate in the run order and runs it there, with its own NVML
    /// energy counter; the row names the GPUs its replicates ran on.
    #[arg(long, value_name = "LIST", conflicts_with = "slurm")]
    pub devices: Option<String>,
    /// Submit the points that have no row yet as a Slurm job array (one task per point,
    /// `sbatch`) instead of running them here; merge with `perfwatt collect DIR`. Rerun to
    /// submit only what is still missing.
    #[arg(long)]
    pub slurm: bool,
    /// --slurm: the partition to submit to.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// --slurm: GPUs per task (one point per GPU).
    #[arg(long, requires = "slurm")]
    pub gpus_per_task: Option<u32>,
    /// --slurm: CPU cores per task.
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<u32>,
    /// --slurm: at most this many tasks at once.
    #[arg(long, requires = "slurm")]
    pub max_parallel: Option<u32>,
    /// --slurm: wall-clock limit per task (e.g. 2:00:00).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// --slurm: write DIR/slurm/array-N.sh but do not submit it.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
}

impl SweepArgs {
    pub fn slurm_options(&self) -> perfwatt::slurm::SlurmOptions {
        perfwatt::slurm::SlurmOptions {
            partition: self.partition.clone(),
            gpus_per_task: self.gpus_per_task,
            cpus_per_task: self.cpus_per_task,
            max_parallel: self.max_parallel,
            time: self.time.clone(),
            dry_run: self.dry_run,
        }
    }
}

/// experiments/runs/KIND-UNIXTIME: the default folder of a run that has no natural name.
fn timestamped_run_dir(kind: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(format!("experiments/runs/{kind}-{now}"))
}

#[derive(Args)]
pub struct ServeArgs {
    /// Model: smollm2 (the shipped SmolLM2-135M-Instruct, default), gemma3, or a GGUF path.
    #[arg(long, value_name = "NAME|GGUF", value_parser = model_arg)]
    pub model: Option<PathBuf>,
    /// cpu, cuda (GPU 0) or cuda:N (a build with --features cuda).
    #[arg(long, default_value = "cpu", value_parser = device_spec)]
    pub device: DeviceSpec,
    #[arg(long, value_parser = choice::<perfwatt::model::Precision>(), default_value = "q4_1")]
    pub dtype: perfwatt::model::Precision,
    /// Optimizations of the forward pass, as for `infer --opt`.
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub opt: perfwatt::model::Opts,
    /// Rows of the batch: requests decoded together (more wait for a free row).
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    /// Positions a request may use, prompt and output together (the KV cache reserved per
    /// row).
    #[arg(long, default_value_t = 512)]
    pub max_context: usize,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

impl ServeArgs {
    pub fn config(&self) -> perfwatt::serve::ServeConfig {
        perfwatt::serve::ServeConfig {
            model: self
                .model
                .clone()
                .unwrap_or_else(perfwatt::model::default_model_path),
            device: self.device,
            precision: self.dtype,
            opts: self.opt,
            max_batch: self.max_batch,
            max_context: self.max_context,
            host: self.host.clone(),
            port: self.port,
        }
    }
}

#[derive(Args)]
pub struct LoadArgs {
    /// The server's base URL (http://HOST:PORT; /v1 is added).
    #[arg(long)]
    pub url: String,
    /// Offered request rates (requests/s), comma-separated; `inf`: all at once.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<String>,
    /// Closed-loop concurrencies, comma-separated.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Measured requests per load.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Send for this many seconds per load instead of a number of requests.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Prompts: JSON Lines with "text", or plain lines (default: experiments/prompts.jsonl).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Seconds of warm-up requests before each load's measured ones.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// TTFT SLO in ms (goodput counts requests within every SLO given).
    #[arg(long)]
    pub slo_ttft: Option<f64>,
    /// TPOT SLO in ms.
    #[arg(long)]
    pub slo_tpot: Option<f64>,
    /// Rounds over every load (in alternating order): CIs need 2 or more.
    #[arg(long, default_value_t = 1)]
    pub replicates: usize,
    /// A request whose stream sends nothing for this long failed (timeout).
    #[arg(long, default_value_t = 60.0)]
    pub timeout_s: f64,
    /// Use /v1/chat/completions (messages) instead of /v1/completions (prompt).
    #[arg(long)]
    pub chat: bool,
    /// The model name to send (default: the first the server lists at /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    /// GPUs of this host whose energy to measure: NVML indices (0,1) or `all`.
    #[arg(long, default_value = "all")]
    pub devices: String,
    /// Seconds of idle measured on the GPUs before the first load.
    #[arg(long, default_value_t = 5.0)]
    pub idle_s: f64,
    /// Output folder (default experiments/runs/load-UNIXTIME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write a trace-event timeline: each request a span (send to end of stream) with
    /// its wait for the first token, a process per load and round.
    #[arg(long, value_name = "trace.json")]
    pub trace: Option<PathBuf>,
}

impl LoadArgs {
    pub fn config(&self) -> Result<perfwatt::load::LoadConfig> {
        use perfwatt::load::Load;
        let loads = match (&self.rate, &self.concurrency) {
            (Some(r), _) => Load::rates(r)?,
            (None, Some(c)) => c
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .map(Load::Concurrency)
                        .ok_or_else(|| {
                            perfwatt::Error::Config(format!(
                                "--concurrency {c:?}: `{x}` is not a count > 0"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?,
            (None, None) => Load::rates("1,2,4,inf")?,
        };
        let prompts_path = self
            .prompts
            .clone()
            .unwrap_or_else(|| perfwatt::asset_path("experiments/prompts.jsonl"));
        Ok(perfwatt::load::LoadConfig {
            url: self.url.clone(),
            model: self.model.clone(),
            endpoint: if self.chat {
                perfwatt::load::Endpoint::Chat
            } else {
                perfwatt::load::Endpoint::Completions
            },
            loads,
            requests: self.requests,
            duration_s: self.duration,
            prompts: perfwatt::load::read_prompts(&prompts_path)?,
            max_tokens: self.max_tokens,
            warmup_s: self.warmup,
            seed: self.seed,
            slo_ttft_s: self.slo_ttft.map(|ms| ms / 1e3),
            slo_tpot_s: self.slo_tpot.map(|ms| ms / 1e3),
            replicates: self.replicates,
            timeout_s: self.timeout_s,
            gpus: self.devices.parse()?,
            idle_s: self.idle_s,
            powercap_root: perfwatt::energy::rapl::powercap_root(),
        })
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| timestamped_run_dir("load"))
    }
}

#[derive(Args)]
pub struct MeasureArgs {
    /// GPUs to measure, by NVML index (0,1) or `all`.
    #[arg(long, default_value = "all")]
    pub devices: String,
    /// Power sampling interval in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub interval_ms: f64,
    /// Seconds of idle measured before the command starts (windows of at most 1 s).
    #[arg(long, default_value_t = 5.0)]
    pub idle_s: f64,
    /// Seconds of idle measured after it ends (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub idle_after_s: f64,
    /// Output folder (default experiments/runs/measure-UNIXTIME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write a trace-event timeline (power, energy, SM clock, utilisation; phases).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl MeasureArgs {
    pub fn config(&self) -> Result<perfwatt::measure::MeasureConfig> {
        if !(self.interval_ms >= 1.0) {
            return Err(perfwatt::Error::Config(format!(
                "--interval-ms {}: at least 1 ms",
                self.interval_ms
            )));
        }
        if !(self.idle_s >= 0.0 && self.idle_after_s >= 0.0) {
            return Err(perfwatt::Error::Config(
                "--idle-s and --idle-after-s: seconds, 0 or more".into(),
            ));
        }
        Ok(perfwatt::measure::MeasureConfig {
            command: self.command.clone(),
            gpus: self.devices.parse()?,
            interval_ms: self.interval_ms,
            idle_s: self.idle_s,
            idle_after_s: self.idle_after_s,
            powercap_root: perfwatt::energy::rapl::powercap_root(),
        })
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| timestamped_run_dir("measure"))
    }
}

#[derive(Args)]
pub struct RooflineArgs {
    /// cpu, cuda (GPU 0) or cuda:N (a build with --features cuda and an NVIDIA GPU).
    #[arg(long, default_value = "cpu", value_parser = device_spec)]
    pub device: DeviceSpec,
    /// Kernel dtype: f32, f16, bf16 (default: bf16 on cuda, f32 on cpu).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Small shapes and few repeats (seconds on a CPU; what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Timed launches per kernel (at most; at least 5 past --seconds-per-kernel).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Stop timing a kernel after this long, once it has 5 launches (default 1 s; 0.2 with --quick).
    #[arg(long)]
    pub seconds_per_kernel: Option<f64>,
    /// GPU only: back-to-back launches per kernel for its energy last at least this long.
    #[arg(long, default_value_t = 1.0)]
    pub energy_seconds: f64,
    /// Output folder (default experiments/runs/roofline-DEVICE).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl RooflineArgs {
    pub fn config(&self) -> Result<RooflineConfig> {
        let mut cfg = RooflineConfig::new(
            self.device,
            if self.quick {
                Preset::Quick
            } else {
                Preset::Full
            },
        );
        if let Some(d) = &self.dtype {
            perfwatt::roofline::parse_dtype(d)?;
            cfg.dtype = d.clone();
        }
        cfg.repeats = self.repeats.unwrap_or(cfg.repeats);
        cfg.seconds_per_kernel = self.seconds_per_kernel.unwrap_or(cfg.seconds_per_kernel);
        cfg.energy_seconds = self.energy_seconds;
        Ok(cfg)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("experiments/runs/roofline-{}", self.device)))
    }
}

/// `--device`: cpu, cuda or cuda:N.
fn model_arg(s: &str) -> std::result::Result<PathBuf, String> {
    Ok(perfwatt::model::model_path(s))
}

fn device_spec(s: &str) -> std::result::Result<DeviceSpec, String> {
    s.parse().map_err(|e: perfwatt::Error| e.to_string())
}

fn parse_width(s: &str) -> std::result::Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err("operand width must be 8 or 16".into()),
    }
}

fn parse_elem_format(s: &str) -> std::result::Result<perfwatt::trace::ElemFormat, String> {
    perfwatt::trace::ElemFormat::parse(s)
        .ok_or_else(|| format!("'{s}': expected one of i4, u4, i8, i16, bf16, f16"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `gemm-energy --devices` measures with the GPU defaults (8192^3, 2 s rounds, idle
    /// windows), not the small CPU test shape the default `--device cpu` would bring.
    #[test]
    fn gemm_energy_devices_takes_the_gpu_defaults() {
        let cfg = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Cmd::GemmEnergy(a) = cli.cmd else {
                panic!("not gemm-energy")
            };
            (a.config().unwrap(), a.out_dir())
        };
        let (c, out) = cfg(&["perfwatt", "gemm-energy", "--devices", "0,1"]);
        assert_eq!((c.shape.m, c.shape.k, c.seconds), (8192, 8192, 2.0));
        assert!(c.idle_seconds > 0.0);
        assert!(out.ends_with("gemm-energy-devices"));
        let (c, _) = cfg(&["perfwatt", "gemm-energy"]);
        assert_eq!(c.shape.m, 64);
    }
}
