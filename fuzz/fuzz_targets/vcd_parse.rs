//! Fuzz the VCD parser and toggle counter: any bytes must give Ok or an error, never a
//! panic, and an accepted file must give consistent totals; SAIF export must not panic.
#![no_main]

#[path = "../../src/error.rs"]
#[allow(dead_code)]
mod error;
#[path = "../../src/vcd/mod.rs"]
#[allow(dead_code)]
mod vcd;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = vcd::count_toggles(data, "fuzz") {
        let sum: u64 = r.signals.iter().map(|s| s.toggles).sum();
        assert_eq!(sum, r.total_toggles);
        for s in &r.signals {
            assert_eq!(s.bits.len(), s.width as usize);
            assert_eq!(s.bits.iter().map(|b| b.toggles).sum::<u64>(), s.toggles);
        }
        let _ = vcd::saif::to_saif(&r);
    }
});
