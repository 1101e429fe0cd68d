//! Operations that candle runs as two kernels, as one (`Opt::Fused`, CUDA, f32).
//!
//! In: tensors on any device and whether to fuse. Out: the same results as candle's
//! unfused operations, bit for bit: the kernels (fused.cu, compiled by NVRTC at first use)
//! repeat candle's float operations in candle's order. Where a kernel does not apply (the
//! CPU, another dtype, a layout it does not take) the unfused candle operations run.

use candle_core::Tensor;

use crate::error::Result;

use super::llama::me;

/// `(a + b, rms_norm(a + b) * alpha)`: a residual add and the RMSNorm after it.
pub fn add_rms_norm(
    a: &Tensor,
    b: &Tensor,
    alpha: &Tensor,
    eps: f32,
    fuse: bool,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if fuse && cuda::takes(&[a, b, alpha]) && a.dims().last().is_some_and(|&c| c < 1024) {
        let both = a
            .apply_op3_no_bwd(b, alpha, &cuda::AddRmsNorm { eps })
            .map_err(me)?;
        return Ok((both.get(0).map_err(me)?, both.get(1).map_err(me)?));
    }
    let _ = fuse;
    let h = (a + b).map_err(me)?;
    let y = candle_nn::ops::rms_norm(&h, alpha, eps).map_err(me)?;
    Ok((h, y))
}

/// `softmax(att + mask)` along the last dimension; `mask` [rows, cols] repeats over
/// `att`'s leading dimensions.
pub fn masked_softmax(att: &Tensor, mask: Option<&Tensor>, fuse: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(m) = mask.filter(|m| fuse && cuda::takes(&[att, m])) {
        return att.apply_op2_no_bwd(m, &cuda::MaskedSoftmax).map_err(me);
    }
    let _ = fuse;
    let att = match mask {
        Some(m) => att.broadcast_add(m).map_err(me)?,
        None => att.clone(),
    };
    candle_nn::ops::softmax_last_dim(&att).map_err(me)
}

/// Index of the largest value along the last dimension ([rows] u32): greedy decoding, with
/// candle's choice among equal values.
pub fn argmax(x: &Tensor, fuse: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fuse && cuda::takes(&[x]) {
        return x.apply_op1_no_bwd(&cuda::Argmax).map_err(me);
    }
    let _ = fuse;
    x.argmax(candle_core::D::Minus1).map_err(me)
}

/// Write one position's keys and values `k`, `v` [b, kv_heads, 1, d] into reserved caches
/// `kc`, `vc` [b, kv_heads * rep, cap, d] at the position `pos` ([1] u32) holds, each KV
/// head into its `rep` query heads, as one kernel. False where the kernel does not apply
/// (nothing written): the caller repeats and scatters with candle's operations.
pub fn kv_write(
    kc: &Tensor,
    vc: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: &Tensor,
    rep: usize,
    fuse: bool,
) -> Result<bool> {
    #[cfg(feature = "cuda")]
    if fuse && cuda::takes(&[kc, vc, k, v]) && pos.dtype() == candle_core::DType::U32 {
        cuda::kv_write(kc, vc, k, v, pos, rep).map_err(me)?;
        return Ok(true);
    }
    let _ = (kc, vc, k, v, pos, rep, fuse);
    Ok(false)
}

/// `silu(g) * u`: SwiGLU's gate.
pub fn silu_mul(g: &Tensor, u: &Tensor, fuse: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fuse && g.device().is_cuda() && g.dtype() == candle_core::DType::F32 {
        if let (Some(_), Some(_)) = (cuda::rows(g.layout()), cuda::rows(u.layout())) {
            return g.apply_op2_no_bwd(u, &cuda::SiluMul).map_err(me);
        }
    }
    let _ = fuse;
    (candle_nn::ops::silu(g).map_err(me)? * u).map_err(me)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda::WrapErr;
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Storage,
        Tensor,
    };

    const SOURCE: &str = include_str!("fused.cu");
    const MODULE: &str = "perfwatt_fused";

    /// fused.cu as PTX, compiled once per process.
    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            candle_core::cuda::cudarc::nvrtc::compile_ptx(SOURCE)
                .map(|p| p.to_src())
                .map_err(|e| format!("NVRTC could not compile src/model/fused.cu: {e}"))
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(e.clone()))
    }

    /// Whether the kernels take these tensors: f32 on a GPU, contiguous.
    pub fn takes(ts: &[&Tensor]) -> bool {
        ts.iter()
            .all(|t| t.device().is_cuda() && t.dtype() == DType::F32 && t.is_contiguous())
    }

    /// A layout as rows of its last dimension: (rows, cols, row stride), when the last
    /// dimension is contiguous and the leading ones step by whole rows.
    pub fn rows(l: &Layout) -> Option<(usize, usize, usize)> {
        let (dims, strides) = (l.dims(), l.stride());
        let cols = *dims.last()?;
        if cols > 1 && strides[dims.len() - 1] != 1 {
            return None;
        }
        // Leading dimensions of more than one entry, innermost first.
        let lead: Vec<(usize, usize)> = dims[..dims.len() - 1]
            .iter()
            .zip(strides)
            .filter(|(&d, _)| d > 1)
            .map(|(&d, &s)| (d, s))
            .rev()
            .collect();
        let ld = lead.first().map_or(cols, |&(_, s)| s);
        let mut expect = ld;
        for &(d, s) in &lead {
            if s != expect {
                return None;
            }
            expect = s * d;
        }
        Some((l.shape().elem_count() / cols.max(1), cols, ld))
    }

    fn slice<'a>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<candle_core::cuda::cudarc::driver::CudaView<'a, f32>> {
        Ok(s.as_cuda_slice::<f32>()?.slice(l.start_offset()..))
    }

    fn cpu_unused(op: &str) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{op}: a CUDA kernel (the CPU runs candle's own operations)")
    }

    /// A tensor's CUDA buffer from its first element, and the guard that keeps it.
    fn buffer<'a>(t: &'a Tensor) -> candle_core::Result<(candle_core::StorageRef<'a>, usize)> {
        let (storage, layout) = t.storage_and_layout();
        Ok((storage, layout.start_offset()))
    }

    fn view<'a>(
        storage: &'a Storage,
        offset: usize,
    ) -> candle_core::Result<candle_core::cuda::cudarc::driver::CudaView<'a, f32>> {
        match storage {
            Storage::Cuda(s) => Ok(s.as_cuda_slice::<f32>()?.slice(offset..)),
            _ => candle_core::bail!("a CUDA tensor expected"),
        }
    }

    /// See `super::kv_write`. The caches are written in place through their shared
    /// storage: candle has no in-place op of four inputs.
    pub fn kv_write(
        kc: &Tensor,
        vc: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pos: &Tensor,
        rep: usize,
    ) -> candle_core::Result<()> {
        let (b, kv_heads, _, d) = k.dims4()?;
        let cap = kc.dim(2)?;
        let Device::Cuda(dev) = k.device() else {
            candle_core::bail!("kv-write: a CUDA tensor expected")
        };
        let func = dev.get_or_load_custom_func("kv_write_f32", MODULE, ptx()?)?;
        let (skc, okc) = buffer(kc)?;
        let (svc, ovc) = buffer(vc)?;
        let (sk, ok) = buffer(k)?;
        let (sv, ov) = buffer(v)?;
        let (sp, op) = buffer(pos)?;
        let (kc, vc, k, v) = (
            view(&skc, okc)?,
            view(&svc, ovc)?,
            view(&sk, ok)?,
            view(&sv, ov)?,
        );
        let pos = match &*sp {
            Storage::Cuda(s) => s.as_cuda_slice::<u32>()?.slice(op..),
            _ => candle_core::bail!("kv-write: a CUDA position expected"),
        };
        let ints = [b as i32, kv_heads as i32, rep as i32, cap as i32, d as i32];
        let mut launch = func.builder();
        launch.arg(&k).arg(&v).arg(&pos).arg(&kc).arg(&vc);
        for i in &ints {
            launch.arg(i);
        }
        let cfg = LaunchConfig::for_num_elems((b * kv_heads * rep * d) as u32);
        unsafe { launch.launch(cfg) }.w()?;
        Ok(())
    }

    fn one_warp_per_row(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub struct AddRmsNorm {
        pub eps: f32,
    }

    impl CustomOp3 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "add-rms-norm"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_unused(self.name())
        }

        /// Out: [2, ...a's shape]: the sum, then its normalization.
        fn cuda_fwd(
            &self,
            a: &CudaStorage,
            la: &Layout,
            b: &CudaStorage,
            lb: &Layout,
            alpha: &CudaStorage,
            lalpha: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = a.device();
            let n = la.shape().elem_count();
            let cols = la.dims()[la.dims().len() - 1];
            let out = unsafe { dev.alloc::<f32>(2 * n)? };
            let func = dev.get_or_load_custom_func("add_rmsnorm_f32", MODULE, ptx()?)?;
            let (h, y) = (out.slice(..n), out.slice(n..));
            let (a, b, alpha) = (slice(a, la)?, slice(b, lb)?, slice(alpha, lalpha)?);
            let (cols_i, eps) = (cols as i32, self.eps);
            let mut launch = func.builder();
            launch
                .arg(&a)
                .arg(&b)
                .arg(&h)
                .arg(&y)
                .arg(&alpha)
                .arg(&cols_i)
                .arg(&eps);
            // One thread per column, whole warps.
            let cfg = LaunchConfig {
                grid_dim: ((n / cols) as u32, 1, 1),
                block_dim: (cols.div_ceil(32) as u32 * 32, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { launch.launch(cfg) }.w()?;
            let mut dims = vec![2];
            dims.extend_from_slice(la.dims());
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), dims.into()))
        }
    }

    pub struct MaskedSoftmax;

    impl CustomOp2 for MaskedSoftmax {
        fn name(&self) -> &'static str {
            "masked-softmax"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_unused(self.name())
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            lx: &Layout,
            mask: &CudaStorage,
            lm: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = x.device();
            let n = lx.shape().elem_count();
            let cols = lx.dims()[lx.dims().len() - 1];
            if lm.dims().last() != Some(&cols) {
                candle_core::bail!("masked-softmax: mask {:?} for rows of {cols}", lm.dims())
            }
            let mask_rows = (lm.shape().elem_count() / cols) as i32;
            let out = unsafe { dev.alloc::<f32>(n)? };
            let func = dev.get_or_load_custom_func("masked_softmax_f32", MODULE, ptx()?)?;
            let (x, mask, cols_i) = (slice(x, lx)?, slice(mask, lm)?, cols as i32);
            let mut launch = func.builder();
            launch
                .arg(&x)
                .arg(&mask)
                .arg(&out)
                .arg(&cols_i)
                .arg(&mask_rows);
            unsafe { launch.launch(one_warp_per_row(n / cols)) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                lx.shape().clone(),
            ))
        }
    }

    pub struct Argmax;

    impl candle_core::CustomOp1 for Argmax {
        fn name(&self) -> &'static str {
            "argmax"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_unused(self.name())
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            lx: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = x.device();
            let dims = lx.dims();
            let cols = dims[dims.len() - 1];
            let rows = lx.shape().elem_count() / cols;
            let out = unsafe { dev.alloc::<u32>(rows)? };
            let func = dev.get_or_load_custom_func("argmax_f32", MODULE, ptx()?)?;
            let (x, cols_i) = (slice(x, lx)?, cols as i32);
            let mut launch = func.builder();
            launch.arg(&x).arg(&out).arg(&cols_i);
            // As candle launches its argmax: the row's length up to 1024, a power of two.
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (cols.min(1024).next_power_of_two() as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { launch.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from_dims(&dims[..dims.len() - 1]),
            ))
        }
    }

    pub struct SiluMul;

    impl CustomOp2 for SiluMul {
        fn name(&self) -> &'static str {
            "silu-mul"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_unused(self.name())
        }

        fn cuda_fwd(
            &self,
            g: &CudaStorage,
            lg: &Layout,
            u: &CudaStorage,
            lu: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = g.device();
            let shape_of = |l: &Layout| {
                rows(l).ok_or_else(|| candle_core::Error::Msg("silu-mul: layout".into()))
            };
            let ((rows_g, cols, ld_g), (rows_u, cols_u, ld_u)) = (shape_of(lg)?, shape_of(lu)?);
            if (rows_g, cols) != (rows_u, cols_u) {
                candle_core::bail!("silu-mul: {:?} and {:?}", lg.dims(), lu.dims())
            }
            let n = rows_g * cols;
            let out = unsafe { dev.alloc::<f32>(n)? };
            let func = dev.get_or_load_custom_func("silu_mul_f32", MODULE, ptx()?)?;
            let ints = [rows_g as i32, cols as i32, ld_g as i32, ld_u as i32];
            let (g, u) = (slice(g, lg)?, slice(u, lu)?);
            let mut launch = func.builder();
            launch.arg(&g).arg(&u).arg(&out);
            for i in &ints {
                launch.arg(i);
            }
            let cfg = LaunchConfig::for_num_elems(n as u32);
            unsafe { launch.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                lg.shape().clone(),
            ))
        }
    }
}
