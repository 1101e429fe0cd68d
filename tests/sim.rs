//! MAC simulation: exact dot products, the two counting paths, iverilog as a reference
//! simulator, operand isolation's effect, and the .ops/.csv formats.

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;

use perfwatt::sim::{simulate, simulate_lanes, Counting, Design, DesignResult};
use perfwatt::trace::synth::{self, Kind};
use perfwatt::trace::{ElemFormat, OperandStream};

/// A design of the catalogue by name.
fn named(name: &str) -> Design {
    Design::named(name).unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stream(width: u8, pairs: Vec<(i16, i16)>) -> OperandStream {
    OperandStream::new(width, pairs, serde_json::json!({"source": "test"})).unwrap()
}

fn run(d: Design, s: &OperandStream, c: &Counting) -> DesignResult {
    simulate(d, s, c, &mut |_| {}).unwrap()
}

/// Dot product computed independently of the library: i64, then wrapped like an i32.
fn dot(pairs: &[(i16, i16)]) -> i64 {
    pairs.iter().map(|&(a, b)| a as i64 * b as i64).sum::<i64>() as i32 as i64
}

#[test]
fn exact_dot_products_both_designs_both_widths() {
    for width in [8u8, 16] {
        let (lo, hi) = OperandStream::range(width);
        let (lo, hi) = (lo as i16, hi as i16);
        let n = 3000;
        let cases: Vec<(&str, Vec<(i16, i16)>)> = vec![
            ("random", synth::stream(Kind::Random, n, width, 7).pairs),
            (
                "sparse",
                synth::stream(Kind::ActivationLike, n, width, 8).pairs,
            ),
            (
                "half-zero",
                synth::stream(Kind::HalfZero, n, width, 9).pairs,
            ),
            ("all-min", vec![(lo, lo); n]),
            ("all-max", vec![(hi, hi); n]),
            ("min-max", vec![(lo, hi); n]),
            (
                "alternating",
                (0..n)
                    .map(|i| if i % 2 == 0 { (hi, lo) } else { (lo, lo) })
                    .collect(),
            ),
            ("all-zero", vec![(0, 0); n]),
            ("single", vec![(lo, lo)]),
        ];
        for (name, pairs) in cases {
            let s = stream(width, pairs.clone());
            // Every serial MAC takes the full range, the sign-magnitude one included (its
            // W+1-bit operands encode -2^(W-1)).
            for d in Design::integer_macs() {
                let r = run(d, &s, &Counting::Fast);
                assert_eq!(r.acc_final, dot(&pairs), "{name} w{width} {}", d.name());
                assert_eq!(r.cycles, pairs.len() as u64 + 4);
                // The lean (untraced, non-public) model that simulate-only runs use.
                assert_eq!(
                    run(d, &s, &Counting::None).acc_final,
                    dot(&pairs),
                    "lean {name} w{width} {}",
                    d.name()
                );
            }
        }
    }
    // 1M random pairs per width, one dot product: every serial MAC exact.
    for width in [8u8, 16] {
        let s = synth::stream(Kind::Random, 1 << 20, width, 17);
        for d in Design::integer_macs() {
            assert_eq!(
                run(d, &s, &Counting::None).acc_final,
                dot(&s.pairs),
                "1M w{width} {}",
                d.name()
            );
        }
    }
    // 16-bit extremes overflow 32 bits: the accumulator wraps.
    let pairs = vec![(i16::MIN, i16::MIN); 5];
    assert_eq!(dot(&pairs), (5i64 << 30) as i32 as i64);
}

/// Dot-product units: exact against the Rust dot product for every lane count and operand
/// format, on 1M random pairs and on edge cases; K not a multiple of the lanes is refused.
#[test]
fn dot_units_are_exact_for_every_lane_count_and_format() {
    let n = 1 << 20;
    let random = synth::stream(Kind::Random, n, 8, 31).pairs;
    let int8 = |pairs: Vec<(i16, i16)>, dot_len: usize| {
        OperandStream::new(
            8,
            pairs,
            serde_json::json!({"source": "test", "dot_len": dot_len}),
        )
        .unwrap()
    };
    let u4 = |pairs: Vec<(i16, i16)>, dot_len: usize| {
        let pairs = pairs
            .into_iter()
            .map(|(a, b)| (a, b.rem_euclid(16)))
            .collect();
        let meta = serde_json::json!({"source": "test", "dot_len": dot_len});
        OperandStream::with_formats(ElemFormat::I8, ElemFormat::U4, "test", pairs, meta).unwrap()
    };
    let m = 4096;
    let edges: Vec<(&str, Vec<(i16, i16)>)> = vec![
        ("all -128", vec![(-128, -128); m]),
        ("max magnitudes", vec![(-128, 127); m]),
        (
            "alternating signs",
            (0..m as i16)
                .map(|i| {
                    if i % 2 == 0 {
                        (127, -128)
                    } else {
                        (-128, -128)
                    }
                })
                .collect(),
        ),
        ("all zero", vec![(0, 0); m]),
        (
            "sparse",
            synth::stream(Kind::ActivationLike, m, 8, 32).pairs,
        ),
    ];
    for lanes in perfwatt::sim::LANES.iter().copied() {
        let mut cases = vec![
            ("random 1M".to_string(), int8(random.clone(), 4096)),
            ("random 1M u4".into(), u4(random.clone(), 4096)),
        ];
        for (name, p) in &edges {
            cases.push((name.to_string(), int8(p.clone(), 1024)));
            cases.push((format!("{name} u4"), u4(p.clone(), 1024)));
        }
        for (name, s) in &cases {
            let last = &s.pairs[s.pairs.len() - s.dot_len().unwrap()..];
            for d in [named("dot"), named("dot-isolated")] {
                let r = simulate_lanes(d, lanes, s, &Counting::Fast, &mut |_| {}).unwrap();
                assert_eq!(r.acc_final, dot(last), "{name} {} l{lanes}", d.name());
                assert_eq!(r.cycles, (s.pairs.len() / lanes as usize) as u64 + 5);
                let lean = simulate_lanes(d, lanes, s, &Counting::None, &mut |_| {}).unwrap();
                assert_eq!(
                    lean.acc_final,
                    r.acc_final,
                    "lean {name} {} l{lanes}",
                    d.name()
                );
            }
        }
    }
    // K not a multiple of the lanes, and formats a dot unit cannot take: clear errors.
    let e = simulate_lanes(
        named("dot"),
        16,
        &int8(random[..1000].to_vec(), 100),
        &Counting::Fast,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("multiple of the lane count 16"), "{e}");
    let wide = synth::stream(Kind::Random, 64, 16, 1);
    let e = simulate(named("dot"), &wide, &Counting::Fast, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot take a i16 x i16 stream"), "{e}");
}

/// The bf16 MAC's and the fused bf16 dot unit's (4 and 16 lanes) fp32 accumulators equal
/// the Rust references bit for bit: one long accumulation of 1M products, thousands of
/// short random dot products over the whole exponent range (specials included), and
/// hand-picked edge cases (padded with +0 x +0 to whole slices).
#[test]
fn bf16_datapaths_are_bit_exact() {
    let mut r = perfwatt::stats::Rng::new(9);
    let mut bits = |exp_lo: u64, exp_span: u64| -> i16 {
        let sign = (r.next_u64() & 1) << 15;
        let exp = (exp_lo + r.next_u64() % exp_span) << 7;
        (sign | exp | (r.next_u64() & 0x7f)) as u16 as i16
    };
    let bf16 = |pairs: Vec<(i16, i16)>, dot_len: usize| {
        let meta = serde_json::json!({"source": "test", "dot_len": dot_len});
        OperandStream::with_formats(ElemFormat::Bf16, ElemFormat::Bf16, "test", pairs, meta)
            .unwrap()
    };
    let kinds = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    let designs = [
        (named("bf16"), 1),
        (named("bf16-dot"), 4),
        (named("bf16-dot"), 16),
    ];
    let check = |s: &OperandStream, what: &str| {
        let start = s.pairs.len() - s.dot_len().unwrap();
        for (d, lanes) in designs {
            let r = simulate_lanes(d, lanes, s, &Counting::Fast, &mut |_| {})
                .unwrap_or_else(|e| panic!("{what} {} x{lanes}: {e}", d.name()));
            let want = if d == named("bf16") {
                perfwatt::sim::fp::mac_bf16(&s.pairs[start..])
            } else {
                perfwatt::sim::fp::dot_bf16(&s.pairs[start..], lanes as usize)
            };
            assert_eq!(
                r.acc_final as i32 as u32,
                want,
                "{what} {} x{lanes}",
                d.name()
            );
        }
        let want = perfwatt::sim::fp::dot_bf16(&s.pairs[start..], 16);
        let v = f32::from_bits(want);
        let kind = if v.is_nan() {
            "nan"
        } else if v.is_infinite() {
            "inf"
        } else if v == 0.0 {
            "zero"
        } else {
            "finite"
        };
        *kinds.borrow_mut().entry(kind).or_default() += 1;
    };
    // Moderate exponents: a long sum with cancellations and many roundings.
    let long: Vec<(i16, i16)> = (0..1 << 20)
        .map(|_| (bits(120, 14), bits(120, 14)))
        .collect();
    check(
        &bf16(long.clone(), long.len()),
        "1M products, one dot product",
    );
    // Short dot products over every exponent (0 and 255 included: subnormals, inf, NaN).
    for i in 0..400 {
        let pairs: Vec<(i16, i16)> = (0..32).map(|_| (bits(0, 256), bits(0, 256))).collect();
        check(&bf16(pairs, 32), &format!("wide random #{i}"));
        let pairs: Vec<(i16, i16)> = (0..32).map(|_| (bits(60, 130), bits(60, 130))).collect();
        check(&bf16(pairs, 32), &format!("overflow/underflow random #{i}"));
    }
    let h = |v: u16| v as i16;
    let one = h(0x3f80);
    for (what, pairs) in [
        (
            "+-0",
            vec![(h(0x8000), one), (h(0x8000), one), (0, h(0x8000))],
        ),
        (
            "subnormals",
            vec![(h(0x0001), one), (one, h(0x807f)), (h(0x0040), h(0x0040))],
        ),
        (
            "cancellation",
            vec![(h(0x4049), one), (h(0xc049), one), (h(0x3c00), one)],
        ),
        (
            "largest exponents",
            vec![(h(0x7f7f), h(0x3f80)), (h(0x7f7f), h(0x3f80))],
        ),
        ("overflow to inf", vec![(h(0x7f7f), h(0x7f7f))]),
        (
            "smallest normal products",
            vec![(h(0x0080), h(0x3f80)), (h(0x2000), h(0x2000))],
        ),
        ("inf - inf", vec![(h(0x7f80), one), (h(0xff80), one)]),
    ] {
        let mut pairs = pairs;
        pairs.resize(16, (0, 0));
        check(&bf16(pairs, 16), what);
    }
    // The random cases reached every kind of result.
    let kinds = kinds.into_inner();
    assert!(
        ["nan", "inf", "zero", "finite"]
            .iter()
            .all(|k| kinds.get(k).copied().unwrap_or(0) >= 2),
        "{kinds:?}"
    );
}

/// Per-lane isolation saves switching on sparse real-like data and computes the same.
#[test]
fn dot_isolation_saves_on_sparse_data() {
    let mut s = synth::stream(Kind::HalfZero, 16_384, 8, 5);
    s.meta = serde_json::json!({"source": "test", "dot_len": 256});
    let b = run(named("dot"), &s, &Counting::Fast);
    let i = run(named("dot-isolated"), &s, &Counting::Fast);
    assert!(
        i.datapath_toggles < b.datapath_toggles * 9 / 10,
        "{} vs {}",
        i.datapath_toggles,
        b.datapath_toggles
    );
    assert!(i.groups["multiplier inputs"] < b.groups["multiplier inputs"] * 7 / 10);
    // The product registers hold the same values (0 for a zero lane), so they and the
    // tree switch exactly as in the baseline unit.
    let toggles = |r: &DesignResult, n: &str| {
        r.signals
            .iter()
            .find(|x| x.path.ends_with(n))
            .unwrap()
            .toggles
    };
    for n in [".prod_q", ".g_level[1].s", ".g_level[4].s"] {
        assert_eq!(toggles(&i, n), toggles(&b, n), "{n}");
    }
}

#[test]
fn dot_len_restarts_the_accumulator() {
    // Longer than one 65,536-cycle chunk of the run loop, so the lean model's per-chunk
    // entry (first evaluation only at time 0) is crossed too.
    let n = 70_000;
    let mut s = synth::stream(Kind::ActivationLike, n, 8, 3);
    s.meta = serde_json::json!({"source": "test", "dot_len": 64});
    let last = &s.pairs[((n - 1) / 64) * 64..];
    for d in Design::all().filter(|d| d.params_for(&s, 16).is_ok()) {
        for c in [Counting::Fast, Counting::None] {
            assert_eq!(run(d, &s, &c).acc_final, dot(last), "{} {c:?}", d.name());
        }
    }
}

#[test]
fn vcd_and_fast_counts_agree_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, width) in [
        (Kind::Random, 8),
        (Kind::ActivationLike, 8),
        (Kind::HalfZero, 16),
    ] {
        let s = synth::stream(kind, 5120, width, 11);
        // The same stream's 16-bit patterns as bf16 operands, for the bf16 MAC.
        let pairs = s
            .pairs
            .iter()
            .map(|&(a, b)| (a.wrapping_mul(97), b.wrapping_mul(89)))
            .collect();
        let meta = serde_json::json!({"dot_len": 64});
        let bf =
            OperandStream::with_formats(ElemFormat::Bf16, ElemFormat::Bf16, "test", pairs, meta)
                .unwrap();
        for d in [named("bf16"), named("bf16-dot")] {
            let both = run(d, &bf, &Counting::Both(dir.path().to_path_buf()));
            assert_eq!(both.signals, run(d, &bf, &Counting::Fast).signals);
        }
        for d in Design::all().filter(|d| d.params_for(&s, 16).is_ok()) {
            // Counting::Both fails the run unless the two paths agree signal by signal.
            let both = run(d, &s, &Counting::Both(dir.path().to_path_buf()));
            let fast = run(d, &s, &Counting::Fast);
            assert_eq!(both.signals, fast.signals);
            assert!(both.total_toggles > 0);
        }
    }
}

#[test]
fn isolation_saves_switching_on_sparse_data_and_is_neutral_on_dense() {
    let s = synth::stream(Kind::HalfZero, 20_000, 8, 5);
    let b = run(named("baseline"), &s, &Counting::Fast);
    let i = run(named("isolated"), &s, &Counting::Fast);
    assert!(
        i.datapath_toggles < b.datapath_toggles * 8 / 10,
        "{} vs {}",
        i.datapath_toggles,
        b.datapath_toggles
    );
    assert!(i.groups["multiplier inputs"] < b.groups["multiplier inputs"]);
    // No zeros at all: isolation cannot gate anything; multiplier inputs and product switch
    // the same, except that the baseline latches the zeros of the 2 drain cycles (at most
    // 2 x 8 operand bits and 2 x 16 product bits).
    let dense: Vec<(i16, i16)> = synth::stream(Kind::Random, 5000, 8, 6)
        .pairs
        .into_iter()
        .map(|(a, b)| (a | 1, b | 1))
        .collect();
    let s = stream(8, dense);
    let b = run(named("baseline"), &s, &Counting::Fast);
    let i = run(named("isolated"), &s, &Counting::Fast);
    let diff = |g: &str| b.groups[g] as i64 - i.groups[g] as i64;
    assert!(
        (0..=16).contains(&diff("multiplier inputs")),
        "{}",
        diff("multiplier inputs")
    );
    assert!((0..=64).contains(&diff("product")), "{}", diff("product"));
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok()
}

/// iverilog simulates the same RTL on the same stream: per-signal toggles must match, for
/// every design (serial MACs at both widths, dot units in both formats).
#[test]
fn iverilog_agrees_per_signal() {
    assert!(
        have("iverilog"),
        "iverilog is not installed: run `make deps`"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut q4 = synth::stream(Kind::ActivationLike, 1536, 8, 22);
    q4.pairs.iter_mut().for_each(|p| p.1 = p.1.rem_euclid(16));
    let mut r = perfwatt::stats::Rng::new(3);
    let mut bits = || {
        (((r.next_u64() & 1) << 15) | ((100 + r.next_u64() % 50) << 7) | (r.next_u64() & 0x7f))
            as u16 as i16
    };
    let bf = (0..1536).map(|_| (bits(), bits())).collect();
    let bf = OperandStream::with_formats(
        ElemFormat::Bf16,
        ElemFormat::Bf16,
        "test",
        bf,
        serde_json::json!({"source": "test", "dot_len": 96}),
    )
    .unwrap();
    iverilog_vs_ours(dir.path(), named("bf16"), 1, &bf);
    iverilog_vs_ours(dir.path(), named("bf16-dot"), 16, &bf);
    iverilog_vs_ours(dir.path(), named("bf16-dot"), 4, &bf);
    let q4 = OperandStream::with_formats(
        ElemFormat::I8,
        ElemFormat::U4,
        "test",
        q4.pairs,
        serde_json::json!({"source": "test", "dot_len": 96}),
    )
    .unwrap();
    for (kind, width) in [(Kind::ActivationLike, 8u8), (Kind::Random, 16u8)] {
        let mut s = synth::stream(kind, 1536, width, 21);
        s.meta = serde_json::json!({"source": "test", "dot_len": 96});
        for d in Design::all() {
            for (s, lanes) in [(&s, 16), (&s, 4), (&q4, 16)] {
                if d.params_for(s, lanes).is_err() || (!d.is_dot() && lanes != 16) {
                    continue;
                }
                iverilog_vs_ours(dir.path(), d, lanes, s);
            }
        }
    }
}

fn iverilog_vs_ours(dir: &std::path::Path, d: Design, lanes: u32, s: &OperandStream) {
    let ours = simulate_lanes(d, lanes, s, &Counting::Fast, &mut |_| {}).unwrap();
    let tag = format!("{} l{lanes} {}", d.name(), ours.format);
    let stim_text = perfwatt::sim::stimulus_hex(s, d, lanes).unwrap();
    let cycles = stim_text.lines().count();
    assert_eq!(cycles as u64, ours.cycles, "{tag}");
    let stim = dir.join("stim.hex");
    std::fs::write(&stim, &stim_text).unwrap();
    let port = |n: &str| {
        ours.signals
            .iter()
            .find(|x| x.path.ends_with(n))
            .unwrap()
            .width
    };
    let params = if d == named("bf16-dot") {
        format!(".LANES({lanes})")
    } else if d.is_dot() {
        let (a, b) = ours.format.split_once(" x ").unwrap();
        format!(
            ".LANES({lanes}),.A_W({}),.B_W({}),.A_SIGNED({}),.B_SIGNED({})",
            &a[1..],
            &b[1..],
            a.starts_with('i') as u8,
            b.starts_with('i') as u8
        )
    } else if d == named("bf16") {
        String::new()
    } else {
        format!(".W({})", ours.width)
    };
    let exe = dir.join("tb.vvp");
    let st = Command::new("iverilog")
        .args(["-g2012", &format!("-DDUT={}", d.module())])
        .arg(format!("-DDUT_PARAMS={params}"))
        .arg(format!("-Pmac_tb.W={}", ours.width))
        .arg(format!("-Pmac_tb.A_PW={}", port(".a_i")))
        .arg(format!("-Pmac_tb.B_PW={}", port(".b_i")))
        .arg("-o")
        .arg(&exe)
        .arg(root().join(format!("rtl/{}.v", d.module())))
        .args((d.is_dot() && !d.is_bf16()).then(|| root().join("rtl/dot_tree.v")))
        .arg(root().join("tests/rtl/mac_tb.v"))
        .status()
        .unwrap();
    assert!(st.success(), "{tag}");
    let vcd = dir.join("tb.vcd");
    let out = common::run_ok(
        Command::new("vvp")
            .arg("-n")
            .arg(&exe)
            .arg(format!("+stim={}", stim.display()))
            .arg(format!("+n={cycles}"))
            .arg(format!("+vcd={}", vcd.display())),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("acc={}", ours.acc_final)),
        "{tag}: {stdout}"
    );
    let iv = perfwatt::vcd::count_toggles_path(&vcd).unwrap();
    for sig in &ours.signals {
        let name = sig.path.split_once('.').unwrap().1;
        let theirs = iv
            .signal(&format!("mac_tb.dut.{name}"))
            .unwrap_or_else(|| panic!("{tag}: {name} not in iverilog VCD"));
        assert_eq!(theirs.toggles, sig.toggles, "{tag} {name}");
    }
}

#[test]
fn ops_round_trip_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    for width in [8u8, 16] {
        let mut s = synth::stream(Kind::ActivationLike, 777, width, 2);
        s.meta = serde_json::json!({"source": "test", "layer": 3, "scale_a": 0.01});
        let p = dir.path().join(format!("s{width}.ops"));
        s.write_ops(&p).unwrap();
        assert_eq!(OperandStream::read(&p, 8).unwrap(), s);
        let bytes = std::fs::read(&p).unwrap();
        // Any flipped byte is caught (magic, header or CRC).
        for i in [0, 10, 13, 30, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                OperandStream::from_ops_bytes(&b, "x").is_err(),
                "flip at {i}"
            );
        }
        for cut in [0, 5, 20, 40, bytes.len() - 1] {
            let e = OperandStream::from_ops_bytes(&bytes[..cut], "x.ops")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("x.ops") && (e.contains("truncated") || e.contains("magic")),
                "{e}"
            );
        }
    }
}

#[test]
fn csv_import_and_errors() {
    let s = OperandStream::from_csv("a,b\n1,2\n-128,127\n\n3, -4\n", 8, "p.csv").unwrap();
    assert_eq!(s.pairs, vec![(1, 2), (-128, 127), (3, -4)]);
    let e = OperandStream::from_csv("a,b\n1,2\n1,200\n", 8, "p.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.csv:3:") && e.contains("does not fit"),
        "{e}"
    );
    let e = OperandStream::from_csv("a,b\n1,x\n", 8, "p.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.csv:2:") && e.contains("not an integer"),
        "{e}"
    );
    let e = OperandStream::from_csv("x,y\n", 8, "p.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected header 'a,b'"), "{e}");
    let e = OperandStream::from_csv("a,b\n1,2,3\n", 8, "p.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("two fields"), "{e}");
    assert_eq!(
        OperandStream::from_csv("a,b\n300,-300\n", 16, "p.csv")
            .unwrap()
            .pairs,
        vec![(300, -300)]
    );
    // Floats for float formats: rounded to the format (nearest even), errors with the line.
    let s = OperandStream::from_csv_as(
        "a,b\n1.5,-2\n1.00390625,0\n-0,inf\n",
        ElemFormat::Bf16,
        "f.csv",
    )
    .unwrap();
    assert_eq!(s.format_name(), "bf16 x bf16");
    let h = |v: u16| v as i16;
    // 1 + 2^-8 is a tie between bf16 neighbours 1 and 1 + 2^-7: even mantissa, 1.
    assert_eq!(
        s.pairs,
        vec![
            (h(0x3fc0), h(0xc000)),
            (h(0x3f80), 0),
            (h(0x8000), h(0x7f80))
        ]
    );
    let r = simulate_lanes(named("bf16"), 1, &s, &Counting::Fast, &mut |_| {}).unwrap();
    assert_eq!(r.acc_final as u32, 0x7fc0_0000); // -0 x inf is NaN, canonical
    let f16 = OperandStream::from_csv_as("a,b\n0.5,1e-3\n", ElemFormat::F16, "h.csv").unwrap();
    assert_eq!(f16.pairs[0].0, 0x3800);
    for (text, fmt, want) in [
        (
            "a,b\n1,1e39\n",
            ElemFormat::Bf16,
            "beyond the range of bf16",
        ),
        ("a,b\n1,70000\n", ElemFormat::F16, "beyond the range of f16"),
        ("a,b\n1,x\n", ElemFormat::Bf16, "not a number"),
        ("a,b\n1,16\n", ElemFormat::U4, "does not fit in u4"),
        ("a,b\n-9,1\n", ElemFormat::I4, "does not fit in i4"),
    ] {
        let e = OperandStream::from_csv_as(text, fmt, "f.csv")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.csv:2:") && e.contains(want), "{e}");
    }
}

#[test]
fn cli_sim_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "a,b\n3,4\n0,9\n-2,5\n").unwrap();
    let out = common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .args(["sim", "--format", "json", "--operands"])
            .arg(&csv),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["designs"];
    assert_eq!(d[0]["design"], "baseline");
    assert_eq!(d[1]["design"], "isolated");
    assert_eq!(d[2]["design"], "signmag");
    for i in 0..3 {
        assert_eq!(d[i]["acc_final"], 2);
        assert_eq!(d[i]["cycles"], 7);
        assert!(d[i]["total_toggles"].as_u64().unwrap() > 0);
        assert!(d[i]["signals"][0]["path"].is_string() && d[i]["signals"][0]["width"].is_u64());
        assert!(d[i]["cycles_per_s"].as_f64().unwrap() > 0.0);
    }
    let bad = dir.path().join("bad.ops");
    std::fs::write(&bad, b"PWOPS\r\n\x1a\x01\x00").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(["sim", "--operands"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}

/// Verilator's own toggle coverage (--coverage-toggle, per bit, summed per signal) on the
/// same RTL and stimulus equals our counts for every signal.
#[test]
fn verilator_toggle_coverage_agrees() {
    assert!(
        Command::new("verilator").arg("--version").output().is_ok(),
        "verilator is not installed: run `make deps`"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut s = synth::stream(Kind::ActivationLike, 400, 8, 4);
    s.meta = serde_json::json!({"source": "test", "dot_len": 64});
    // The serial MACs (the dot units are cross-checked against iverilog above).
    for d in Design::integer_macs() {
        let stim = dir.path().join(format!("stim_{}.hex", d.name()));
        std::fs::write(&stim, perfwatt::sim::stimulus_hex(&s, d, 1).unwrap()).unwrap();
        let port_w = if d == named("signmag") { 9 } else { 8 };
        let obj = dir.path().join(format!("obj_{}", d.name()));
        common::run_ok(
            Command::new("verilator")
                .args([
                    "--cc",
                    "--exe",
                    "--build",
                    "-j",
                    "2",
                    "--timing",
                    "--coverage-toggle",
                    "-Wno-fatal",
                    "--top-module",
                    "mac_tb",
                    "-GW=8",
                ])
                .arg(format!("-GA_PW={port_w}"))
                .arg(format!("-GB_PW={port_w}"))
                .arg(format!("-DDUT={}", d.module()))
                .arg("--Mdir")
                .arg(&obj)
                .arg(root().join(format!("rtl/{}.v", d.module())))
                .arg(root().join("tests/rtl/mac_tb.v"))
                .arg(root().join("tests/rtl/cov_main.cpp")),
        );
        let exec = Command::new(obj.join("Vmac_tb"))
            .current_dir(dir.path())
            .arg(format!("+stim={}", stim.display()))
            .arg(format!("+n={}", s.pairs.len() + 4))
            .arg("+nodump")
            .output()
            .unwrap();
        assert!(exec.status.success());
        // coverage.dat lines: C '<\x01key\x02value...>' COUNT; toggle points have page
        // v_toggle/..., o = signal[bit], h = hierarchy.
        let dat = std::fs::read(dir.path().join("coverage.dat")).unwrap();
        let mut cov: std::collections::HashMap<String, u64> = Default::default();
        for line in String::from_utf8_lossy(&dat)
            .lines()
            .filter(|l| l.starts_with("C '") && l.contains("v_toggle"))
        {
            let field = |k: &str| {
                line.split('\x01')
                    .find_map(|f| f.strip_prefix(&format!("{k}\x02")))
                    .map(|v| v.trim_end_matches(['\'', ' ']).to_string())
            };
            let (Some(o), Some(h)) = (field("o"), field("h")) else {
                continue;
            };
            let h = h.split('\'').next().unwrap().to_string();
            let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            if h == "TOP.mac_tb.dut" {
                *cov.entry(o.split('[').next().unwrap().to_string())
                    .or_default() += count;
            }
        }
        let ours = run(d, &s, &Counting::Fast);
        for sig in &ours.signals {
            let name = sig.path.rsplit('.').next().unwrap();
            assert_eq!(
                cov.get(name).copied(),
                Some(sig.toggles),
                "{} {name}",
                d.name()
            );
        }
    }
}

/// Simulation on several threads joins to exactly the one-thread counts, on every signal,
/// for every design: dense and sparse streams, and a stream whose long zero runs keep
/// isolated registers holding across the seams (so warm-ups fail and pieces rerun).
#[test]
fn threads_join_exactly_for_every_design() {
    let mut holds = synth::stream(Kind::Random, 64 * 1024, 8, 5);
    for (i, p) in holds.pairs.iter_mut().enumerate() {
        // Long runs of zero activations: dot products 64..1024 of every 4096 pairs.
        if i % 4096 >= 64 {
            p.0 = 0;
        }
    }
    let mut streams = vec![
        synth::stream(Kind::Random, 96 * 1024, 8, 1),
        synth::stream(Kind::HalfZero, 96 * 1024, 8, 2),
        holds,
    ];
    for s in &mut streams {
        s.meta = serde_json::json!({"source": "test", "dot_len": 64});
    }
    let bf: Vec<(i16, i16)> = streams[1]
        .pairs
        .iter()
        .map(|&(a, b)| (a.wrapping_mul(97), b.wrapping_mul(89)))
        .collect();
    let bf = OperandStream::with_formats(
        ElemFormat::Bf16,
        ElemFormat::Bf16,
        "test",
        bf,
        serde_json::json!({"dot_len": 64}),
    )
    .unwrap();
    streams.push(bf);
    for s in &streams {
        for d in Design::all() {
            for lanes in [1, 4] {
                if (lanes == 4) != d.is_dot() || d.params_for(s, lanes).is_err() {
                    continue;
                }
                let one = simulate_lanes(d, lanes, s, &Counting::Fast, &mut |_| {}).unwrap();
                for threads in [2, 3] {
                    let many = perfwatt::sim::simulate_threads(
                        d,
                        lanes,
                        s,
                        &Counting::Fast,
                        threads,
                        &mut |_| {},
                    )
                    .unwrap();
                    assert_eq!(
                        many.signals,
                        one.signals,
                        "{} x{lanes} {threads} threads",
                        d.name()
                    );
                    assert_eq!(many.acc_final, one.acc_final);
                    let lean = perfwatt::sim::simulate_threads(
                        d,
                        lanes,
                        s,
                        &Counting::None,
                        threads,
                        &mut |_| {},
                    )
                    .unwrap();
                    assert_eq!(lean.acc_final, one.acc_final);
                }
            }
        }
    }
}
