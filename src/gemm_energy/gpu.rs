//! The CUDA GEMM device: cuBLAS `cublasGemmEx` (int8 x int8 -> int32 with int32
//! compute, the IMMA tensor-core path; bf16/f16 -> f32 with f32 compute) through cudarc,
//! measured with the NVML energy counter.
//!
//! Layout: A [M, K] and B [N, K] row-major are column-major K x M and K x N, so C^T [N, M]
//! (= C [M, N] row-major) is op(B)^T op(A) with transa = T, transb = N: the "TN" layout
//! cuBLAS requires for int8. `open` checks int8 (exact) and bf16 against the host reference
//! on a small shape before anything is measured.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::{result as blas, sys, CudaBlas};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use crate::energy::GpuMeter;
use crate::error::{Error, Result};
use crate::gemm_energy::patterns::{Dtype, Operands, Shape};
use crate::gemm_energy::{reference_gemm, GemmDevice, Measurement, Pace};
use crate::stats::percentile;

struct Loaded {
    dtype: Dtype,
    shape: Shape,
    a: CudaSlice<u8>,
    b: CudaSlice<u8>,
    c: CudaSlice<u8>,
}

pub struct CudaDevice {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    meter: GpuMeter,
    cur: Option<Loaded>,
}

fn cuda<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Model(format!("cuda {what}: {e:?}"))
}

/// The element bytes as the device stores them.
fn bytes(dtype: Dtype, v: &[i16]) -> Vec<u8> {
    match dtype {
        Dtype::Int8 => v.iter().map(|&x| x as i8 as u8).collect(),
        _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    }
}

impl CudaDevice {
    pub fn open(index: usize) -> Result<Self> {
        let ctx = CudaContext::new(index)
            .map_err(cuda("context (is there an NVIDIA GPU and driver?)"))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(cuda("cuBLAS"))?;
        let meter = GpuMeter::for_cuda(index).map_err(Error::Model)?;
        let mut dev = CudaDevice {
            stream,
            blas,
            meter,
            cur: None,
        };
        dev.self_check()?;
        Ok(dev)
    }

    /// int8 must equal the host reference exactly; bf16 within its rounding.
    fn self_check(&mut self) -> Result<()> {
        let shape = Shape {
            m: 64,
            k: 128,
            n: 48,
        };
        for dtype in [Dtype::Int8, Dtype::Bf16] {
            let ops = crate::gemm_energy::patterns::find("uniform-full")
                .expect("pattern")
                .operands(dtype, shape, 5);
            self.load(&ops)?;
            self.launch()?;
            let got = self.output()?;
            let want = reference_gemm(&ops);
            let ok = match dtype {
                Dtype::Int8 => got == want,
                _ => got.iter().zip(&want).all(|(&g, &w)| {
                    let (g, w) = (f32::from_bits(g as u32), f32::from_bits(w as u32));
                    (g - w).abs() <= 1e-2 * w.abs().max(1.0)
                }),
            };
            if !ok {
                return Err(Error::Model(format!(
                    "cuBLAS {} GEMM disagrees with the host reference on a {}x{}x{} check",
                    dtype.name(),
                    shape.m,
                    shape.k,
                    shape.n
                )));
            }
        }
        Ok(())
    }

    /// One GEMM on the stream (asynchronous).
    fn launch(&mut self) -> Result<()> {
        let l = self
            .cur
            .as_mut()
            .ok_or_else(|| Error::Config("no GEMM loaded".into()))?;
        let Shape { m, k, n } = l.shape;
        use sys::cublasComputeType_t::{CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32I};
        use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_16F, CUDA_R_32F, CUDA_R_32I, CUDA_R_8I};
        let (ab, c_type, compute) = match l.dtype {
            Dtype::Int8 => (CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I),
            Dtype::Bf16 => (CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F),
            Dtype::F16 => (CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F),
        };
        let (one_i, zero_i, one_f, zero_f) = (1i32, 0i32, 1f32, 0f32);
        let (alpha, beta): (*const c_void, *const c_void) = if l.dtype == Dtype::Int8 {
            (&one_i as *const i32 as _, &zero_i as *const i32 as _)
        } else {
            (&one_f as *const f32 as _, &zero_f as *const f32 as _)
        };
        let (a, _ga) = l.a.device_ptr(&self.stream);
        let (b, _gb) = l.b.device_ptr(&self.stream);
        let (c, _gc) = l.c.device_ptr_mut(&self.stream);
        // SAFETY: the buffers hold [M, K], [N, K] and [M, N] elements of the types named;
        // alpha and beta outlive the call; the handle is bound to `self.stream`.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                alpha,
                b as *const c_void,
                ab,
                k as i32,
                a as *const c_void,
                ab,
                k as i32,
                beta,
                c as *mut c_void,
                c_type,
                n as i32,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cuda("gemm"))
    }

    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda("synchronize"))
    }
}

impl GemmDevice for CudaDevice {
    fn name(&self) -> String {
        self.meter.name.clone()
    }

    fn load(&mut self, ops: &Operands) -> Result<()> {
        let Shape { m, k, n } = ops.shape;
        if ops.dtype == Dtype::Int8 && (k % 4 != 0 || n % 4 != 0) {
            return Err(Error::Config(format!(
                "int8 GEMM on cuBLAS needs K and N multiples of 4 (shape {m},{k},{n})"
            )));
        }
        self.cur = None;
        let a = self
            .stream
            .clone_htod(&bytes(ops.dtype, &ops.a))
            .map_err(cuda("upload A"))?;
        let b = self
            .stream
            .clone_htod(&bytes(ops.dtype, &ops.b))
            .map_err(cuda("upload B"))?;
        let c = self
            .stream
            .alloc_zeros::<u8>(m * n * 4)
            .map_err(cuda("alloc C"))?;
        self.cur = Some(Loaded {
            dtype: ops.dtype,
            shape: ops.shape,
            a,
            b,
            c,
        });
        self.sync()
    }

    /// GEMMs in bursts of about `pace.burst_s` (synchronized, so the count is of finished
    /// GEMMs), each followed by `pace.sleep_s` of sleep (none back to back); power from the
    /// energy counter between its first and last update inside the loop (the counter moves
    /// in ~100 ms steps, so a window aligned to its updates avoids a +-5% quantization
    /// error on 2 s), energy = that power x the loop's time. SM clock and clock-event
    /// reasons read after every burst (before its sleep: the clock under load).
    fn measure(&mut self, warmup: f64, seconds: f64, pace: Pace) -> Result<Measurement> {
        let t = Instant::now();
        let mut per_gemm = f64::MAX;
        while t.elapsed().as_secs_f64() < warmup.max(1e-3) {
            let s = Instant::now();
            self.launch()?;
            self.sync()?;
            per_gemm = per_gemm.min(s.elapsed().as_secs_f64());
        }
        let batch = pace.burst(per_gemm);
        let (mut gemms, mut clocks, mut events) = (0u64, Vec::new(), Vec::<String>::new());
        let mut readings: Vec<(f64, u64)> = Vec::new();
        let t0 = Instant::now();
        loop {
            for _ in 0..batch {
                self.launch()?;
            }
            self.sync()?;
            gemms += batch;
            let now = t0.elapsed().as_secs_f64();
            if let Some(e) = self.meter.energy_mj() {
                if readings.last().is_none_or(|r| r.1 != e) {
                    readings.push((now, e));
                }
            }
            clocks.extend(self.meter.sm_clock_mhz().map(|c| c as f64));
            for e in self.meter.clock_events() {
                if !events.contains(&e) {
                    events.push(e);
                }
            }
            if now >= seconds {
                break;
            }
            pace.rest();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let power = match (readings.first(), readings.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => Some((b.1 - a.1) as f64 / 1e3 / (b.0 - a.0)),
            _ => None,
        };
        events.sort();
        Ok(Measurement {
            gemms,
            seconds: elapsed,
            joules: power.map(|p| p * elapsed),
            sm_mhz_median: percentile(&clocks, 50.0),
            power_w: power,
            throttle: events,
        })
    }

    fn output(&mut self) -> Result<Vec<i64>> {
        self.launch()?;
        self.sync()?;
        let l = self
            .cur
            .as_ref()
            .ok_or_else(|| Error::Config("no GEMM loaded".into()))?;
        let raw = self.stream.clone_dtoh(&l.c).map_err(cuda("download C"))?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| {
                let v = u32::from_le_bytes(c.try_into().unwrap());
                if l.dtype == Dtype::Int8 {
                    v as i32 as i64
                } else {
                    v as i64
                }
            })
            .collect())
    }

    fn idle_w(&mut self, seconds: f64) -> Option<f64> {
        self.meter
            .idle_power_w(std::time::Duration::from_secs_f64(seconds))
    }

    fn power_limit_w(&self) -> Option<f64> {
        self.meter.power_limit_w
    }
}
