//! Fuzz the VCD parser and toggle counter: any bytes must give Ok or an error, never a
//! panic, and an accepted file must give consistent totals; SAIF export must not panic.
//! Differential: counting the file in 3 pieces on threads must give exactly the
//! sequential result (counts or the same error).
#![no_main]

#[path = "../../src/error.rs"]
#[allow(dead_code)]
mod error;
#[path = "../../src/vcd/mod.rs"]
#[allow(dead_code, unused_imports)]
mod vcd;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let seq = vcd::count_toggles_with(data, "fuzz", false);
    if let Ok(r) = &seq {
        let sum: u64 = r.signals.iter().map(|s| s.toggles).sum();
        assert_eq!(sum, r.total_toggles);
        for s in &r.signals {
            assert_eq!(s.bits.len(), s.width as usize);
            assert_eq!(s.bits.iter().map(|b| b.toggles).sum::<u64>(), s.toggles);
        }
    }
    if let Ok(r) = vcd::count_toggles(data, "fuzz") {
        let _ = vcd::saif::to_saif(&r);
    }
    let path = std::env::temp_dir().join(format!("pw-fuzz-{}.vcd", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let par = vcd::count_toggles_segmented(&path, 3);
    match (&seq, &par) {
        (Ok(a), Ok(b)) => {
            let bits = |r: &vcd::ToggleReport| -> Vec<Vec<(u64, u64)>> {
                r.signals.iter().map(|s| s.bits.iter().map(|b| (b.toggles, b.x_transitions)).collect()).collect()
            };
            assert_eq!(bits(a), bits(b));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("sequential {:?} vs segmented {:?}", seq.as_ref().err().map(|e| e.to_string()), par.as_ref().err().map(|e| e.to_string())),
    }
});
