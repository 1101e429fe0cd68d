//! The repacked Q4_1 tiles (vendor/candle-core, repack_q4_1.rs) against candle's unpacked
//! Q4_1 matmul: bit for bit, at decode and prefill shapes, SmolLM2's row lengths, and row
//! counts that leave a partial unit of 4 activation rows.

use candle_core::quantized::{self, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

fn random(rng: &mut perfwatt::stats::Rng, shape: (usize, usize), scale: f32) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| (rng.unit() as f32 * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn tiles_equal_unpacked() {
    let mut rng = perfwatt::stats::Rng::new(11);
    for (m, k, n, scale) in [
        (1, 576, 48, 0.05),
        (3, 576, 960, 1.0),
        (5, 1536, 32, 3.0),
        (40, 576, 64, 0.2),
        (2, 64, 16, 100.0),
    ] {
        let w = QTensor::quantize(&random(&mut rng, (n, k), scale), GgmlDType::Q4_1).unwrap();
        let mm = QMatMul::from_qtensor(w).unwrap();
        let x = random(&mut rng, (m, k), 1.0);
        let run = |tiles: bool| {
            quantized::set_q4_1_tiles(tiles);
            let y = mm.forward(&x).unwrap().flatten_all().unwrap();
            y.to_vec1::<f32>().unwrap()
        };
        let (tiled, unpacked) = (run(true), run(false));
        for (i, (a, b)) in tiled.iter().zip(&unpacked).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "m={m} k={k} n={n}: element {i}: tiles {a} vs unpacked {b}"
            );
        }
    }
    quantized::set_q4_1_tiles(true);
}
