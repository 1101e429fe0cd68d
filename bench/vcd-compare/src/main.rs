//! Baselines for scripts/bench-vcd.sh. Usage: vcd-compare vcd|wellen FILE.vcd
//! `vcd`: per-signal toggle count with the `vcd` crate (the same reference counter the
//! test suite checks perfwatt against). `wellen`: wellen's VCD load of header and body
//! (multi-threaded), then every signal loaded: what a waveform viewer does to open a file.

#[path = "../../../tests/common/vcd_crate.rs"]
mod vcd_crate;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vcd-compare vcd|wellen FILE.vcd");
        std::process::exit(2);
    }
    let path = &args[2];
    match args[1].as_str() {
        "vcd" => {
            let f = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path).unwrap());
            let r = vcd_crate::vcd_crate_toggles(f).unwrap();
            let total: u64 = r.values().map(|v| v.1).sum();
            println!("vcd crate: {} signals, {total} toggles", r.len());
        }
        "wellen" => {
            let mut w = wellen::simple::read(path).unwrap();
            let ids: Vec<_> = w.hierarchy().iter_vars().map(|v| v.signal_ref()).collect();
            w.load_signals_multi_threaded(&ids);
            println!("wellen: {} vars, {} time steps", ids.len(), w.time_table().len());
        }
        m => {
            eprintln!("unknown mode {m}");
            std::process::exit(2);
        }
    }
}
