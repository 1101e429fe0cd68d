//! Result files, read and written one way everywhere.
//!
//! In: a path and bytes, or a JSON Lines file. Out: the file written atomically (a crash
//! leaves the old file or the new one, never half of one); the file's rows, or an error
//! naming its path and line.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, IoContext, Result};

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).at(&tmp)?;
    f.write_all(bytes).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    drop(f);
    std::fs::rename(&tmp, path).at(path)
}

/// Every row of a JSON Lines file (blank lines skipped); a row that does not parse is an
/// error with its file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).at(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse {
                file: path.display().to_string(),
                line: i as u64 + 1,
                offset: 0,
                msg: e.to_string(),
            })
        })
        .collect()
}

/// `read_jsonl`, or no rows when the file does not exist yet (a run that resumes).
pub fn read_jsonl_if_exists<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if path.exists() {
        read_jsonl(path)
    } else {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Result files are read back to re-render reports: every f64 must come back with the
    /// same bits (serde_json's `float_roundtrip`; its default parser can be an ulp off).
    #[test]
    fn floats_round_trip_bit_for_bit() {
        let mut rng = crate::stats::Rng::new(3);
        for _ in 0..200_000 {
            let x = f64::from_bits(rng.next_u64());
            if !x.is_finite() {
                continue;
            }
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e}");
        }
    }

    #[test]
    fn jsonl_rows_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.jsonl");
        assert!(read_jsonl_if_exists::<u32>(&p).unwrap().is_empty());
        assert!(read_jsonl::<u32>(&p).is_err());
        write_atomic(&p, b"1\n\n2\n").unwrap();
        assert_eq!(read_jsonl::<u32>(&p).unwrap(), vec![1, 2]);
        write_atomic(&p, b"1\n\nx\n").unwrap();
        let e = read_jsonl::<u32>(&p).unwrap_err().to_string();
        assert!(e.contains("rows.jsonl:3:"), "{e}");
    }
}
