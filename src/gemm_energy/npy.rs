//! A reader for NumPy `.npy` files (format 1.0-3.0), for `gemm-energy --operands`.
//!
//! In: a file. Out: an `Array` (shape and values as f64), with errors naming the file and
//! what is wrong. Accepted dtypes: int8 (`|i1`), float16 (`<f2`), float32 (`<f4`),
//! float64 (`<f8`), little-endian, C order.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::gemm_energy::patterns::Dtype;

pub struct Array {
    pub file: String,
    pub descr: String,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Array {
    pub fn read(path: &Path) -> Result<Array> {
        let data = std::fs::read(path).at(path)?;
        Self::parse(&data, &path.display().to_string())
    }

    pub fn parse(data: &[u8], file: &str) -> Result<Array> {
        let bad = |m: String| Error::Config(format!("{file}: {m}"));
        if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
            return Err(bad("not a .npy file (bad magic)".into()));
        }
        let (hlen, hstart) = match data[6] {
            1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
            2 | 3 if data.len() >= 12 => (
                u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize,
                12,
            ),
            v => return Err(bad(format!("npy format version {v} unsupported"))),
        };
        let header = data
            .get(hstart..hstart + hlen)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad("truncated or non-text header".into()))?;
        let field = |key: &str| -> Option<&str> {
            let at = header.find(&format!("'{key}':"))? + key.len() + 3;
            Some(header[at..].trim_start())
        };
        let descr = field("descr")
            .and_then(|s| s.strip_prefix('\'')?.split('\'').next())
            .ok_or_else(|| bad("header has no descr".into()))?
            .to_string();
        if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
            return Err(bad(
                "Fortran-order arrays are not supported (save with np.ascontiguousarray)".into(),
            ));
        }
        let shape: Vec<usize> = field("shape")
            .and_then(|s| s.strip_prefix('(')?.split(')').next())
            .ok_or_else(|| bad("header has no shape".into()))?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| bad(format!("bad shape entry '{t}'"))))
            .collect::<Result<_>>()?;
        let count: usize = shape.iter().product();
        let body = &data[hstart + hlen..];
        let size = match descr.as_str() {
            "|i1" | "<i1" => 1,
            "<f2" => 2,
            "<f4" => 4,
            "<f8" => 8,
            d => {
                return Err(bad(format!(
                    "dtype '{d}' unsupported (int8, float16, float32 or float64, little-endian)"
                )))
            }
        };
        if body.len() != count * size {
            return Err(bad(format!(
                "shape {shape:?} of {descr} needs {} bytes of data, the file has {}",
                count * size,
                body.len()
            )));
        }
        let values = match size {
            1 => body.iter().map(|&b| b as i8 as f64).collect(),
            2 => body
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            4 => body
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            _ => body
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        };
        Ok(Array {
            file: file.into(),
            descr,
            shape,
            values,
        })
    }

    /// The values as `dtype` stores them. int8 GEMMs take only integer arrays in range.
    pub fn encoded(&self, dtype: Dtype) -> Result<Vec<i16>> {
        if dtype == Dtype::Int8 {
            if let Some(v) = self
                .values
                .iter()
                .find(|v| v.fract() != 0.0 || !(-128.0..=127.0).contains(*v))
            {
                return Err(Error::Config(format!(
                    "{}: value {v} is not an int8; an int8 GEMM takes int8 operands (dtype {})",
                    self.file, self.descr
                )));
            }
        }
        Ok(self
            .values
            .iter()
            .map(|&v| dtype.encode(v as f32))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reads_int8_and_f32_and_rejects_the_rest() {
        let a = Array::parse(&npy("|i1", "(2, 3)", &[1, 2, 3, 255, 254, 0]), "a.npy").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values, vec![1.0, 2.0, 3.0, -1.0, -2.0, 0.0]);
        let f: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = Array::parse(&npy("<f4", "(2,)", &f), "b.npy").unwrap();
        assert_eq!(b.values, vec![1.5, -2.0]);
        let e = b.encoded(Dtype::Int8).unwrap_err().to_string();
        assert!(e.contains("b.npy") && e.contains("not an int8"), "{e}");
        let e = Array::parse(&npy("<i8", "(1,)", &[0; 8]), "c.npy")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("c.npy") && e.contains("unsupported"), "{e}");
        let e = Array::parse(&npy("|i1", "(4,)", &[0; 3]), "d.npy")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs 4 bytes"), "{e}");
    }
}
