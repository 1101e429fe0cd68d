//! The command line as a user meets it: `--help` teaches with examples, one per line.

use std::process::Command;

fn help(cmd: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args([cmd, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_examples_are_verbatim_one_per_line() {
    for (cmd, example) in [
        (
            "toggles",
            "perfwatt toggles sim.vcd --format csv > toggles.csv",
        ),
        ("sim", "perfwatt sim --operands traces/sample_q4_1.ops"),
        (
            "infer",
            "perfwatt infer --dtype f16 --batch 4 --prompt-len medium --max-new-tokens 32",
        ),
        (
            "sweep",
            "perfwatt sweep experiments/cpu-demo.toml && perfwatt report experiments/runs/cpu-demo",
        ),
        ("roofline", "perfwatt roofline --quick"),
        ("measure", "perfwatt measure -- python train.py --epochs 1"),
        (
            "load",
            "perfwatt load --url http://127.0.0.1:8000 --rate 1,2,4,8,inf --requests 50 --max-tokens 64",
        ),
    ] {
        let text = help(cmd);
        let examples = text
            .split_once("Example")
            .unwrap_or_else(|| panic!("{cmd} --help has no examples:\n{text}"))
            .1;
        assert!(
            examples.lines().any(|l| l.trim() == example),
            "{cmd} --help: example not on a line of its own:\n{examples}"
        );
        // Every example line is one command: none runs into the next.
        for l in examples
            .lines()
            .filter(|l| l.trim_start().starts_with("perfwatt"))
        {
            assert_eq!(
                l.matches("perfwatt ").count() - l.matches("&& perfwatt").count(),
                1,
                "{l}"
            );
        }
    }
}

/// Device lists: a clear line for each mistake, before anything loads.
#[test]
fn bad_device_names_and_lists_are_refused_clearly() {
    let err = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };
    let e = err(&["infer", "--device", "cuda:x"]);
    assert!(e.contains("cuda:N"), "{e}");
    let e = err(&["infer", "--devices", "0,1,0"]);
    assert!(e.contains("GPU 0 named twice"), "{e}");
    let e = err(&["infer", "--devices", "0;1"]);
    assert!(e.contains("separated by commas"), "{e}");
    let e = err(&["gemm-energy", "--devices", "0,1", "--device", "cuda"]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = err(&["sweep", "experiments/cpu-demo.toml", "--devices", "0,1"]);
    assert!(
        e.contains("--devices runs GPU points") && e.contains("cpu"),
        "{e}"
    );
    let e = err(&["infer", "--devices", "0,1", "--capture", "x.ops"]);
    assert!(e.contains("cannot be used with"), "{e}");
}
