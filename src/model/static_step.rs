//! Greedy decode steps with static shapes (`Opt::Graphs`), replayed as a CUDA graph.
//!
//! In: a `Llama` whose KV cache is reserved (`Llama::reserve_kv`), the first decode tokens
//! and their position. Out: each step's greedy tokens [batch].
//!
//! Every step runs the same kernels on the same buffers: the tokens and the position live
//! in device tensors that the step itself advances (argmax into `tokens`, `pos + 1` into
//! `pos`), keys and values are scattered at the position, attention spans the reserved
//! capacity under a mask computed from the position. On CUDA that makes the step
//! capturable: the first step runs as it is (loading kernels and filling candle's caches of
//! small host-to-device uploads, which a capture may not make), the second is captured
//! into a graph, and from then on each step is one graph launch instead of hundreds of
//! kernel launches, each with its host-side work. On the CPU every step runs as it is:
//! the same arithmetic, which is what tests/opts.rs checks against the plain step.

use candle_core::{DType, Tensor};

use crate::error::Result;

use super::fused;
use super::llama::{me, Llama, StaticInputs};
use super::opts::Opt;

pub struct StaticStep {
    at: StaticInputs,
    /// [1] u32 one: what the step adds to `pos`.
    one: Tensor,
    /// Steps run so far (the first one warms up, the second is captured).
    steps: usize,
    #[cfg(feature = "cuda")]
    graph: Option<cuda::Graph>,
}

impl StaticStep {
    /// Steps for `batch` sequences over a KV cache of `capacity` positions on `m`'s device.
    /// A graph captured by it is valid while `m.reserve_kv` allocates nothing new.
    pub fn new(m: &Llama, batch: usize, capacity: usize) -> Result<StaticStep> {
        let dev = &m.device;
        let cap = capacity as u32;
        Ok(StaticStep {
            at: StaticInputs {
                tokens: Tensor::zeros(batch, DType::U32, dev).map_err(me)?,
                pos: Tensor::zeros(1, DType::U32, dev).map_err(me)?,
                key_pos: Tensor::arange(0u32, cap, dev).map_err(me)?,
                open: Tensor::zeros(capacity, DType::F32, dev).map_err(me)?,
                shut: Tensor::full(f32::NEG_INFINITY, capacity, dev).map_err(me)?,
            },
            one: Tensor::ones(1, DType::U32, dev).map_err(me)?,
            steps: 0,
            #[cfg(feature = "cuda")]
            graph: None,
        })
    }

    /// Set the next step's tokens (one per sequence) and their position.
    pub fn start(&mut self, tokens: &[u32], pos: usize) -> Result<()> {
        let dev = self.at.tokens.device();
        let set = |dst: &Tensor, v: &[u32]| {
            dst.slice_set(&Tensor::new(v, dev).map_err(me)?, 0, 0)
                .map_err(me)
        };
        set(&self.at.tokens, tokens)?;
        set(&self.at.pos, &[pos as u32])
    }

    /// One greedy step: the tokens after the current ones, which become current.
    pub fn step(&mut self, m: &mut Llama) -> Result<Vec<u32>> {
        #[cfg(feature = "cuda")]
        let replayed = match m.device.clone() {
            candle_core::Device::Cuda(dev) => self.replay(m, &dev).map(|()| true)?,
            _ => false,
        };
        #[cfg(not(feature = "cuda"))]
        let replayed = false;
        if !replayed {
            self.run(m)?;
        }
        self.steps += 1;
        self.at.tokens.to_vec1::<u32>().map_err(me)
    }

    /// One step as it is, never from a graph, with its logits [batch, vocab] (which a
    /// graph does not keep): what tests compare with the plain step.
    pub fn step_logits(&mut self, m: &mut Llama) -> Result<(Vec<u32>, Tensor)> {
        let logits = self.run(m)?;
        self.steps += 1;
        Ok((self.at.tokens.to_vec1::<u32>().map_err(me)?, logits))
    }

    /// The step's kernels, launched (or recorded, while a capture is on).
    fn run(&self, m: &mut Llama) -> Result<Tensor> {
        let logits = m.forward_static(&self.at)?;
        let next = fused::argmax(&logits, m.opts.has(Opt::Fused))?;
        self.at.tokens.slice_set(&next, 0, 0).map_err(me)?;
        let pos = self.at.pos.add(&self.one).map_err(me)?;
        self.at.pos.slice_set(&pos, 0, 0).map_err(me)?;
        Ok(logits)
    }

    #[cfg(feature = "cuda")]
    fn replay(&mut self, m: &mut Llama, dev: &candle_core::CudaDevice) -> Result<()> {
        if self.graph.is_none() {
            // Small uploads (kernel shape parameters) come from candle's cache while this
            // guard lives: filled by the warm-up step, read by the capture.
            let _cache = dev.enable_cuda_graph_htod_cache();
            if self.steps == 0 {
                return self.run(m).map(drop);
            }
            self.graph = Some(cuda::Graph::capture(dev, || self.run(m).map(drop))?);
        }
        self.graph.as_ref().map_or(Ok(()), |g| g.launch())
    }

    /// Whether steps are replayed from a captured CUDA graph (from the third step on).
    pub fn graphed(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.graph.is_some();
        #[cfg(not(feature = "cuda"))]
        false
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda::cudarc::driver::{sys, CudaGraph};
    use candle_core::CudaDevice;

    use crate::error::{Error, Result};

    /// A captured decode step.
    pub struct Graph(CudaGraph);

    // SAFETY: a CudaGraph is a handle that must not be used from two threads at once; a
    // Graph lives in one StaticStep, which `&mut self` serializes.
    unsafe impl Send for Graph {}

    fn err(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Model(format!("CUDA graph {what}: {e}"))
    }

    impl Graph {
        /// Record what `record` launches on `dev`'s stream into an instantiated graph.
        pub fn capture(dev: &CudaDevice, record: impl FnOnce() -> Result<()>) -> Result<Graph> {
            let stream = dev.cuda_stream();
            // Relaxed: library calls that allocate outside the stream (cuBLAS workspaces)
            // are allowed while capturing.
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|e| err("capture", e))?;
            let recorded = record();
            // Ended whatever happened, so the stream is usable again.
            let flags =
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH;
            let graph = stream.end_capture(flags);
            recorded?;
            let graph = graph
                .map_err(|e| err("instantiate", e))?
                .ok_or_else(|| err("capture", "nothing was recorded"))?;
            graph.upload().map_err(|e| err("upload", e))?;
            Ok(Graph(graph))
        }

        pub fn launch(&self) -> Result<()> {
            self.0.launch().map_err(|e| err("launch", e))
        }
    }
}
