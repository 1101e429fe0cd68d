//! `perfwatt serve` as a client meets it: greedy output equal to `perfwatt infer` on the
//! same prompt ids whatever else shares the batch, `perfwatt load` driving it at two rates,
//! OpenAI-style errors for bad requests, a disconnecting client freeing its row, and
//! Ctrl-C letting the request in flight finish.

use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str]) -> Server {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(["serve", "--port", "0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Server(c, url)
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    match ureq::post(&format!("{}{path}", s.1)).send_string(&body.to_string()) {
        Ok(r) => (
            r.status(),
            serde_json::from_str(&r.into_string().unwrap()).unwrap(),
        ),
        Err(ureq::Error::Status(code, r)) => (
            code,
            serde_json::from_str(&r.into_string().unwrap()).unwrap(),
        ),
        Err(e) => panic!("{e}"),
    }
}

fn metric(s: &Server, name: &str) -> f64 {
    let text = ureq::get(&format!("{}/metrics", s.1))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

#[test]
fn greedy_output_equals_infer_whatever_else_is_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("infer.json");
    let ok = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args([
            "infer",
            "--batch",
            "3",
            "--max-new-tokens",
            "10",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let infer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let s = serve(&["--max-batch", "2"]);
    // Three requests on two rows, started apart: rows join mid-stream, one waits for a row.
    let answers: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (s, ids) = (&s, infer["prompt_ids"][i].clone());
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(150 * i as u64));
                    post(
                        s,
                        "/v1/completions",
                        &json!({"prompt": ids, "max_tokens": 10, "temperature": 0}),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (code, a)) in answers.iter().enumerate() {
        assert_eq!(*code, 200, "{a}");
        let text = a["choices"][0]["text"].as_str().unwrap();
        let want = infer["generated"][i].as_str().unwrap();
        match a["choices"][0]["finish_reason"].as_str().unwrap() {
            "length" => assert_eq!(text, want, "request {i}"),
            _ => assert!(want.starts_with(text), "request {i}: {text:?} vs {want:?}"),
        }
        assert_eq!(a["usage"]["prompt_tokens"], 40);
    }
    assert_eq!(metric(&s, "perfwatt_batch_active"), 0.0);
    assert_eq!(metric(&s, "perfwatt_requests_total"), 3.0);
}

#[test]
fn load_drives_serve_at_two_rates() {
    let s = serve(&["--max-batch", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("load");
    let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args([
            "load",
            "--url",
            &s.1,
            "--chat",
            "--rate",
            "4,inf",
            "--requests",
            "4",
            "--max-tokens",
            "6",
            "--warmup",
            "0",
            "--idle-s",
            "0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            (r["completed"].as_u64(), r["failed"].as_u64()),
            (Some(4), Some(0)),
            "{r}"
        );
        // Chat prompts get answers (raw prompts make this instruct model stop at once).
        assert_eq!(r["ttft"]["samples"], 4, "{r}");
        assert!(
            r["ttft"]["p50"].as_f64().unwrap() > 0.0 && r["tpot"]["p50"].as_f64().unwrap() > 0.0
        );
    }
    assert!(out.join("report.md").exists());
}

#[test]
fn bad_requests_disconnects_and_a_drain() {
    let s = serve(&["--max-batch", "2", "--max-context", "64"]);
    let raw = |body: &str| match ureq::post(&format!("{}/v1/completions", s.1)).send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let (code, body) = raw("{not json");
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (code, v) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "hi", "model": "gpt-9"}),
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (code, v) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 0}),
    );
    assert_eq!(
        (code, v["error"]["param"].as_str()),
        (400, Some("max_tokens"))
    );
    let (code, v) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "word ".repeat(100)}),
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    let (code, _) = post(&s, "/v1/chat/completions", &json!({"messages": []}));
    assert_eq!(code, 400);

    // A client that reads one chunk and hangs up frees its row long before 60 tokens.
    let before = metric(&s, "perfwatt_generated_tokens_total");
    {
        let r = ureq::post(&format!("{}/v1/completions", s.1))
            .send_string(
                &json!({"prompt": "Once", "max_tokens": 60, "stream": true, "temperature": 0})
                    .to_string(),
            )
            .unwrap();
        let mut first = [0u8; 64];
        r.into_reader().read_exact(&mut first).unwrap();
    }
    let t = Instant::now();
    while metric(&s, "perfwatt_batch_active") > 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the row was not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(metric(&s, "perfwatt_generated_tokens_total") - before < 59.0);

    // Ctrl-C while a request is in flight: it completes, then the server exits 0.
    let mut s = s;
    let pid = s.0.id().to_string();
    let url = s.1.clone();
    let inflight = std::thread::spawn(move || {
        ureq::post(&format!("{url}/v1/completions"))
            .send_string(&json!({"prompt": "The", "max_tokens": 30, "temperature": 0}).to_string())
            .map(|r| r.into_string().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let body = inflight
        .join()
        .unwrap()
        .expect("the request in flight completes");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        true,
        "{v}"
    );
    let status = s.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Gemma 3 behind `serve`: two requests sharing the batch, one of them a 609-token prompt
/// whose chunked prefill and decode reach past the 512-position sliding window, answer with
/// llama.cpp's greedy tokens (tests/data/gemma-reference.json).
#[test]
fn gemma_rows_past_the_sliding_window_answer_as_llama_cpp() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gemma-reference.json"
    ))
    .unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let (_, tok) = perfwatt::model::load(
        &perfwatt::model::model_path("gemma3"),
        perfwatt::model::Precision::Gguf,
        perfwatt::model::Opts::all(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let s = serve(&[
        "--model",
        "gemma3",
        "--dtype",
        "gguf",
        "--max-batch",
        "2",
        "--max-context",
        "640",
    ]);
    let cases = reference["cases"].as_array().unwrap();
    let answers: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = cases
            .iter()
            .map(|c| {
                let s = &s;
                let n = c["greedy"].as_array().unwrap().len();
                sc.spawn(move || {
                    post(
                        s,
                        "/v1/completions",
                        &json!({"prompt": c["prompt"], "max_tokens": n, "temperature": 0}),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, (code, a)) in cases.iter().zip(&answers) {
        assert_eq!(*code, 200, "{a}");
        let ids: Vec<u32> = c["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = a["choices"][0]["text"].as_str().unwrap();
        let want = tok.decode(&ids);
        match a["choices"][0]["finish_reason"].as_str().unwrap() {
            "length" => assert_eq!(got, want, "{}", c["name"]),
            // Stopped at <eos> / <end_of_turn>: a prefix of llama.cpp's continuation.
            _ => assert!(want.starts_with(got), "{}: {got:?} vs {want:?}", c["name"]),
        }
    }
}
