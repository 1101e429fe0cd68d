#!/usr/bin/env bash
# Runs on the lent GPU machine (see shared/GPU.md and README "GPU"): the candle CUDA
# binary and the model are in ~/pw (put there by the carry steps), results go to $OUT.
#   1. headline: candle Q4_1, batch 1, 64 new tokens;  PyTorch generate on the same
#      GGUF and prompt ids (bf16, f32, and bf16 with a static cache: CUDA graphs), same
#      NVML energy counter and idle definition
#   2. overheads: NVML sampling at 1 Hz vs 50 Hz vs 200 Hz; bounded operand capture on/off
#   3. batched decode 1..64 (q4_1)
#   4. the sweep experiments/gpu.toml and its report
#   5. roofline: peaks, kernels and energy per kernel (bf16 kernels, full preset)
#   6. nvml: the NVML sampler's own cost, sampler on/paused in alternating runs of one
#      process (ABBA), 50 Hz and 200 Hz, two processes each
#   7. nvml-long: the same with 600 short runs per process (roofline-nvml-long: 5 then 7)
#   8. nvml-batch: the same A/B at batch 16 and 64 (GPU-bound runs, less run-to-run noise)
#   9. nvml-steps: the A/B per decode step within runs (batch 1 twice, batch 64)
#  10. gemm-energy: data-dependent GEMM energy (int8 + bf16, 8192^3, every pattern, real
#      SmolLM2 operands, K permutation) against the RTL hardware models; written straight
#      into $OUT/gemm-energy so that a run stopped at the time limit keeps its rounds
#  11. devices, devices-sweep: every GPU of a host at once (infer and gemm-energy, then a
#      sweep, with --devices all)
#  12. opts: the optimization knobs (--opt) on and off, the sweep experiments/gpu-opts.toml
#  14. gemm-tile (only when asked for): issue 25's regimes, tile orders, calibration and
#      held-out check (see the step)
#  15. measure (only when asked for): `perfwatt measure` around the PyTorch baseline,
#      its per-run energy against the script's own, and the sampler's cost (issue 28)
#  13. graphs: --opt all / all,-graphs / all,-fused / none at batch 1 and 16, whether the
#      tokens agree (NO_TORCH=1 stops there),
#      and PyTorch's static-cache (CUDA graphs) bf16 on the same prompt
# Lessons from the lent machine (2026-11-23): it is handed back after 30 s idle, so the
# carry calls must follow each other at once; the working tree (~38 MB on 2026-11-30) plus
# the carried paths must stay under 64 MiB a call, so split the model into 28,000,000-byte
# parts (`split -b 28000000 -d MODEL carried/model.part`; one call per part, the last with
# perfwatt.xz + the gguf wheel); only a limited number
# of files comes back from $OUT per call (the rest is "left out (count)"): tar result
# folders; $OUT is empty again in the next call. HEADLINE_ONLY=1 stops the headline step
# after the PyTorch runs; SWEEP_DIR keeps a resumable sweep outside $OUT across calls.
set -uo pipefail
PW=${PW:-$HOME/pw}
STEP=${1:-all}
# Results go outside $OUT (which returns only a few files) and are tarred into $OUT at the end.
R=${RESULTS:-$PW/results-$STEP}
mkdir -p "$R"
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))'):${LD_LIBRARY_PATH:-}
export PERFWATT_MODEL=$PW/model.gguf
BIN=$PW/perfwatt
log() { echo "== $(date -u +%T) $*" | tee -a "$R/log.txt"; }
nvidia-smi -q -d POWER,CLOCK > "$R/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv > "$R/gpu.csv" 2>&1
inf() { local name=$1; shift; log "infer $name"; $BIN infer --device cuda --out "$R/$name.json" "$@" >> "$R/log.txt" 2>&1 || log "FAILED $name"; }
if [ "$STEP" = all ] || [ "$STEP" = headline ]; then
  inf candle_q4_1_b1 --dtype q4_1 --max-new-tokens 64 --warmup 2 --repeats 5
  inf candle_bf16_b1 --dtype bf16 --max-new-tokens 64 --warmup 2 --repeats 5
  inf candle_f32_b1 --dtype f32 --max-new-tokens 64 --warmup 2 --repeats 5
  python3 -c "import json;print(json.dumps(json.load(open('$R/candle_q4_1_b1.json'))['prompt_ids']))" > "$R/ids.json"
  mkdir -p "$PW/py" && python3 -m pip install -q --no-deps --target "$PW/py" "$PW"/gguf-*.whl >> "$R/log.txt" 2>&1
  for dt in bf16 f32; do
    log "torch $dt"
    PYTHONPATH=$PW/py HF_HUB_OFFLINE=1 python3 scripts/torch_baseline.py --gguf "$PERFWATT_MODEL" --prompts "$R/ids.json" \
      --dtype $dt --max-new-tokens 64 --warmup 2 --repeats 5 --out "$R/torch_${dt}_b1.json" >> "$R/log.txt" 2>&1 || log "FAILED torch $dt"
  done
  # PyTorch's best: a static cache, which transformers compiles with CUDA graphs.
  log "torch bf16 static"
  PYTHONPATH=$PW/py HF_HUB_OFFLINE=1 python3 scripts/torch_baseline.py --gguf "$PERFWATT_MODEL" --prompts "$R/ids.json" \
    --dtype bf16 --static-cache --max-new-tokens 64 --warmup 3 --repeats 5 --out "$R/torch_bf16_static_b1.json" >> "$R/log.txt" 2>&1 || log "FAILED torch bf16 static"
  [ -n "${HEADLINE_ONLY:-}" ] && exit 0
  for hz in 1 50 200; do inf overhead_sample_${hz}hz --dtype q4_1 --max-new-tokens 64 --warmup 2 --repeats 5 --sample-hz $hz; done
  inf overhead_capture --dtype q4_1 --max-new-tokens 64 --warmup 2 --repeats 5 --capture "$R/capture_q4_1.ops"
  for b in 1 4 16 64; do inf batch_q4_1_b$b --dtype q4_1 --batch $b --max-new-tokens 64 --warmup 2 --repeats 5; done
fi
if [ "$STEP" = all ] || [ "$STEP" = overhead ]; then
  # Overheads with enough repeats for tight CIs: NVML sampling 1 Hz vs 50 Hz in alternating
  # processes (drift hits both arms), and capture: its run (the first measured one) against
  # the other runs of the same process.
  for i in 1 2 3; do
    for hz in 1 50; do inf ovh_${hz}hz_$i --dtype q4_1 --max-new-tokens 64 --warmup 3 --repeats 20 --sample-hz $hz; done
  done
  for i in 1 2 3; do inf ovh_capture_$i --dtype q4_1 --max-new-tokens 64 --warmup 3 --repeats 10 --capture "$R/ovh_capture_$i.ops"; done
  rm -f "$R"/*.ops
fi
if [ "$STEP" = all ] || [ "$STEP" = sweep ]; then
  # Resumable: a call stopped at the time limit is continued by the next one.
  log "sweep"
  $BIN sweep experiments/gpu.toml --out "${SWEEP_DIR:-$R/sweep}" --report >> "$R/log.txt" 2>&1 || log "FAILED sweep"
fi
if [ "$STEP" = all ] || [ "$STEP" = roofline ] || [ "$STEP" = roofline-nvml ] || [ "$STEP" = roofline-nvml-long ]; then
  log "roofline"
  $BIN roofline --device cuda --out "$R/roofline" >> "$R/log.txt" 2>&1 || log "FAILED roofline"
  cp "$R/log.txt" "$R/roofline/log.txt" 2>/dev/null
fi
if [ "$STEP" = all ] || [ "$STEP" = nvml ] || [ "$STEP" = roofline-nvml ]; then
  for i in 1 2; do
    for hz in 50 200; do inf nvml_ab_${hz}hz_$i --dtype q4_1 --max-new-tokens 64 --warmup 3 --repeats 40 --sample-hz $hz --sampler-ab runs; done
  done
fi
if [ "$STEP" = nvml-long ] || [ "$STEP" = roofline-nvml-long ]; then
  # Many short runs (16 new tokens) for a tight paired CI; pinned to 4 cores so thread
  # migrations add less noise (the sampler thread shares them with the token loop).
  PIN=""; command -v taskset >/dev/null && PIN="taskset -c 2-5"
  for run in 50hz_1:50 50hz_2:50 200hz_1:200; do
    log "infer nvml_ab16_${run%%:*}"
    $PIN $BIN infer --device cuda --out "$R/nvml_ab16_${run%%:*}.json" --dtype q4_1 --max-new-tokens 16 --warmup 5 --repeats 600 --sample-hz ${run##*:} --sampler-ab runs >> "$R/log.txt" 2>&1 || log "FAILED nvml_ab16_${run%%:*}"
  done
fi
if [ "$STEP" = devices ]; then
  # Issue 14: every GPU of the host at once (nvidia-h200-x2). infer: one shared window,
  # pooled percentiles, per-GPU and summed energy checked against one reader; each GPU
  # alone for comparison; gemm-energy on every GPU. (devices-sweep: the sweep, one worker
  # per GPU; SWEEP_DIR keeps it resumable across calls.)
  nvidia-smi -L > "$R/gpus.txt" 2>&1
  nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,power.limit --format=csv > "$R/gpus.csv" 2>&1
  mkdir -p "$R/infer"
  # Both at once, each alone, then the same in reverse order (drift and order show).
  for run in both-1 alone-cuda0-1 alone-cuda1-1 alone-cuda1-2 alone-cuda0-2 both-2; do
    case $run in
      both-*) dev=(--devices all) ;;
      *) g=${run#alone-cuda}; dev=(--device cuda:${g%%-*}) ;;
    esac
    log "infer $run"
    $BIN infer "${dev[@]}" --dtype q4_1 --max-new-tokens 64 --warmup 2 --repeats 10 --out "$R/infer/$run.json" >> "$R/log.txt" 2>&1 || log "FAILED infer $run"
  done
  log "gemm-energy --devices all"
  $BIN gemm-energy --devices all --dtype int8,bf16 --no-real --permute none \
    --patterns zeros,normal,uniform-full,sparse50-a,sparse90-a,2:4-b,alternating,low-bits \
    --seconds 1.5 --rounds 3 --out "$R/gemm-energy" >> "$R/log.txt" 2>&1 || log "FAILED gemm-energy devices"
  log "devices done"
fi
if [ "$STEP" = devices-sweep ]; then
  log "sweep --devices all"
  $BIN sweep experiments/gpu-devices.toml --devices all --out "${SWEEP_DIR:-$R/sweep}" --report >> "$R/log.txt" 2>&1 || log "FAILED sweep devices"
  cp -r "${SWEEP_DIR:-$R/sweep}" "$R/sweep-copy" 2>/dev/null
fi
if [ "$STEP" = gemm-energy ]; then
  log "gemm-energy"
  G=${OUT:-$R}/gemm-energy
  $BIN gemm-energy --device cuda --dtype int8,bf16 --seconds "${GE_SECONDS:-2}" --rounds "${GE_ROUNDS:-3}" --out "$G" >> "$R/log.txt" 2>&1 || log "FAILED gemm-energy"
  tar -C "$G" -czf "${OUT:-$R}/gemm-energy-plots.tgz" plots 2>/dev/null
  cp "$R/log.txt" "${OUT:-$R}/gemm-energy-log.txt"
fi
if [ "$STEP" = gemm-tile ]; then
  # Issue 25: both regimes, int8 + bf16, the tile unit's orders, nested selection, a
  # calibration per regime; then patterns held out of it (and a new seed) predicted by it.
  # Kept in $PW (resumable while the machine stays warm: call again after a time-out);
  # every command shares one deadline (GE_BUDGET seconds from here) so that the tar into
  # $OUT at the end always runs inside the lent machine's per-call limit.
  G=$PW/gemm-tile
  HOLD=checker,zeros-a-normal-b,rows-alternating-b,normal-a-same-rows-b,laplace,sparse50-both,sorted-same-rows,low-bits
  EXCL=$(echo "$HOLD" | sed 's/\([^,]*\)/-\1/g')
  DEADLINE=$(( $(date +%s) + ${GE_BUDGET:-540} ))
  left() { echo $(( DEADLINE - $(date +%s) )); }
  common="--device cuda --dtype int8,bf16 --seconds ${GE_SECONDS:-1} --rounds ${GE_ROUNDS:-2}"
  log "gemm-tile calibrate ($(left) s left)"
  timeout "$(left)" $BIN gemm-energy $common --regime both --calibrate --patterns "all,$EXCL" \
    --out "$G/calibrate" >> "$R/log.txt" 2>&1 || log "STOPPED calibrate (call again to resume)"
  for reg in back-to-back duty; do
    [ -f "$G/calibrate/$reg/calibration.json" ] && [ "$(left)" -gt 30 ] || continue
    log "gemm-tile holdout $reg ($(left) s left)"
    timeout "$(left)" $BIN gemm-energy $common --regime $reg --no-real --permute none --patterns "$HOLD" \
      --seed 2 --check-calibration "$G/calibrate/$reg/calibration.json" --out "$G/holdout/$reg" \
      >> "$R/log.txt" 2>&1 || log "STOPPED holdout $reg"
  done
  cp "$R/log.txt" "$G/log.txt"
  tar -C "$G" -czf "${OUT:-$R}/gemm-tile.tgz" .
fi
if [ "$STEP" = nvml-batch ]; then
  # The same A/B where runs are GPU-bound (batch 16 and 64) and vary less than at batch 1.
  PIN=""; command -v taskset >/dev/null && PIN="taskset -c 2-5"
  for run in b16_50hz_1:16 b64_50hz_1:64 b16_50hz_2:16; do
    log "infer nvml_ab_${run%%:*}"
    $PIN $BIN infer --device cuda --out "$R/nvml_ab_${run%%:*}.json" --dtype q4_1 --batch ${run##*:} --max-new-tokens 64 --warmup 3 --repeats 120 --sample-hz 50 --sampler-ab runs >> "$R/log.txt" 2>&1 || log "FAILED nvml_ab_${run%%:*}"
  done
fi
if [ "$STEP" = nvml-steps ]; then
  # Sampler on / paused alternating per decode step inside each run (ABBA over steps):
  # thousands of adjacent-step pairs, which vary far less than whole runs.
  for run in b1:1 b64:64 b1_2:1; do
    log "infer nvml_steps_${run%%:*}"
    $BIN infer --device cuda --out "$R/nvml_steps_${run%%:*}.json" --dtype q4_1 --batch ${run##*:} --max-new-tokens 64 --warmup 3 --repeats 120 --sample-hz 50 --sampler-ab steps >> "$R/log.txt" 2>&1 || log "FAILED nvml_steps_${run%%:*}"
  done
fi
if [ "$STEP" = graphs ]; then
  # Issue 13: the static decode step replayed as a CUDA graph. Batch 1 and 16, each set in
  # alternating order, then whether every set generated the same tokens; PyTorch's best
  # (bf16, static cache, CUDA graphs) on the same prompt ids in the same call.
  # (Speed and tokens; the sweep `opts` measures energy with idle windows and CIs.)
  for o in all all,-graphs all,-fused none; do
    n=${o//,-/_no_}
    for b in 1 16; do
      inf graphs_b${b}_${n} --dtype q4_1 --opt $o --batch $b --max-new-tokens 128 --warmup 2 --repeats 5 --idle-seconds 1 --idle-windows 1
    done
  done
  python3 - "$R" > "$R/same-tokens.txt" 2>&1 <<'PY'
import json, sys, glob, collections
by = collections.defaultdict(dict)
for f in sorted(glob.glob(sys.argv[1] + "/graphs_*.json")):
    j = json.load(open(f)); b = f.split("graphs_")[1].split("_")[0]
    by[b][f.rsplit("/", 1)[1]] = (j["tokens"], j["tokens_per_s_decode"])
for b, runs in by.items():
    ref = next(iter(runs.values()))[0]
    for name, (gen, tps) in runs.items():
        print(b, name, "same tokens" if gen == ref else "DIFFERENT tokens", "decode tok/s", tps)
PY
  cat "$R/same-tokens.txt" | tee -a "$R/log.txt"
  [ -n "${NO_TORCH:-}" ] && { log done; exit 0; }
  python3 -c "import json;print(json.dumps(json.load(open('$R/graphs_b1_all.json'))['prompt_ids']))" > "$R/ids.json"
  mkdir -p "$PW/py" && python3 -m pip install -q --no-deps --target "$PW/py" "$PW"/gguf-*.whl >> "$R/log.txt" 2>&1
  log "torch bf16 static"
  PYTHONPATH=$PW/py HF_HUB_OFFLINE=1 python3 scripts/torch_baseline.py --gguf "$PERFWATT_MODEL" --prompts "$R/ids.json" \
    --dtype bf16 --static-cache --max-new-tokens 128 --warmup 3 --repeats 5 --out "$R/torch_bf16_static_b1.json" >> "$R/log.txt" 2>&1 || log "FAILED torch bf16 static"
fi
if [ "$STEP" = measure ]; then
  # Issue 28: `perfwatt measure` around PyTorch (a CPU build of perfwatt is enough: NVML is
  # loaded at run time). MEASURE_WORKLOAD=gemm (default: scripts/torch_gemm_phases.py, no
  # model needed) or baseline (scripts/torch_baseline.py on the GGUF). (a) agreement: the
  # workload's own counter energy per window vs the phase perfwatt measured from outside;
  # (b) the sampler's cost: 10 ms vs 1000 ms interval in alternating processes (ABBA,
  # MEASURE_PAIRS pairs).
  if [ "${MEASURE_WORKLOAD:-gemm}" = baseline ]; then
    $BIN infer --device cpu --max-new-tokens 1 --warmup 0 --repeats 1 --out "$R/cpu_ids.json" >> "$R/log.txt" 2>&1 || log "FAILED ids"
    python3 -c "import json;print(json.dumps(json.load(open('$R/cpu_ids.json'))['prompt_ids']))" > "$R/ids.json"
    mkdir -p "$PW/py" && python3 -m pip install -q --no-deps --target "$PW/py" "$PW"/gguf-*.whl >> "$R/log.txt" 2>&1
    work="env PYTHONPATH=$PW/py HF_HUB_OFFLINE=1 python3 scripts/torch_baseline.py --gguf $PERFWATT_MODEL --prompts $R/ids.json --dtype bf16 --max-new-tokens 64 --warmup 2 --repeats 5 --idle-seconds 2 --idle-windows 1"
  else
    work="python3 scripts/torch_gemm_phases.py --repeats 3"
  fi
  log "measure around $work (agreement)"
  mkdir -p "$R/agree"
  $BIN measure --interval-ms 10 --idle-s 3 --idle-after-s 2 --out "$R/agree" --trace "$R/agree/trace.json" -- \
    $work --out "$R/agree/torch.json" >> "$R/log.txt" 2>&1 || log "FAILED measure agree"
  python3 scripts/measure-check.py agree "$R/agree" "$R/agree/torch.json" > "$R/agree.md" 2>&1; cat "$R/agree.md" | tee -a "$R/log.txt"
  fast=(); slow=()
  for i in $(seq 1 "${MEASURE_PAIRS:-3}"); do
    for ms in 10 1000; do
      [ $(( i % 2 )) = 0 ] && ms=$(( 1010 - ms ))  # ABBA order
      log "overhead pair $i interval $ms ms"
      $BIN measure --interval-ms $ms --idle-s 1 --out "$R/overhead-$i-$ms" -- $work --out "$R/overhead-$i-$ms.json" >> "$R/log.txt" 2>&1 || log "FAILED overhead $i $ms"
      if [ $ms = 10 ]; then fast+=("$R/overhead-$i-$ms.json"); else slow+=("$R/overhead-$i-$ms.json"); fi
    done
  done
  python3 scripts/measure-check.py overhead --fast "${fast[@]}" --slow "${slow[@]}" > "$R/overhead.txt" 2>&1; cat "$R/overhead.txt" | tee -a "$R/log.txt"
fi
if [ "$STEP" = offload-peers ]; then
  # Issue 29: the offload curve (--gpu-layers L, L = 0..all; EDP in each report). Issue 26:
  # perfwatt against PyTorch's hand-written decode loop (scripts/torch_decode.py), both
  # batch 1, 128 new tokens, the same prompt ids, in alternating processes (PAIRS pairs:
  # the independent repeats the ratio's CI is over).
  $BIN infer --device cpu --max-new-tokens 1 --warmup 0 --repeats 1 --out "$R/cpu_ids.json" >> "$R/log.txt" 2>&1 || log "FAILED ids"
  python3 -c "import json;print(json.dumps(json.load(open('$R/cpu_ids.json'))['prompt_ids']))" > "$R/ids.json"
  mkdir -p "$PW/py" && python3 -m pip install -q --no-deps --target "$PW/py" "$PW"/gguf-*.whl >> "$R/log.txt" 2>&1
  for l in ${OFFLOAD_LAYERS:-0 8 16 24 30}; do
    inf offload_gl$l --dtype q4_1 --gpu-layers $l --max-new-tokens 64 --warmup 1 --repeats 3 --idle-seconds 1 --idle-windows 1
  done
  for i in $(seq 1 "${PAIRS:-5}"); do
    inf peer_perfwatt_$i --dtype q4_1 --max-new-tokens 128 --warmup 3 --repeats 10 --idle-seconds 2 --idle-windows 1
    for dt in bf16 ${PEER_F16:+f16}; do
      log "torch_decode $dt $i"
      PYTHONPATH=$PW/py HF_HUB_OFFLINE=1 python3 scripts/torch_decode.py --gguf "$PERFWATT_MODEL" --prompts "$R/ids.json" \
        --dtype $dt --max-new-tokens 128 --warmup 3 --repeats 10 --idle-seconds 2 --out "$R/peer_torch_${dt}_$i.json" >> "$R/log.txt" 2>&1 || log "FAILED torch_decode $dt $i"
    done
  done
fi
if [ "$STEP" = opts ]; then
  log "sweep gpu-opts"
  $BIN sweep experiments/gpu-opts.toml --out "${SWEEP_DIR:-$R/sweep}" --report >> "$R/log.txt" 2>&1 || log "FAILED sweep opts"
fi
log done
if [ -n "${OUT:-}" ]; then tar czf "$OUT/results-$STEP.tar.gz" --exclude='*.ops' -C "$(dirname "$R")" "$(basename "$R")"; fi
