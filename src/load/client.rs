//! One streamed request to an OpenAI-compatible server, timed token by token.
//!
//! In: the server's base URL, the endpoint (completions or chat), a prompt, max tokens.
//! Out: `RequestRecord`: send, first-token, every token and end time (seconds on the run's
//! clock), output tokens (the server's `usage` when it sends one, else the chunks that
//! carried text), or the error by kind (connect, HTTP status, timeout: a stalled stream,
//! malformed stream). HTTP is ureq's; the server-sent-event framing (`data: ...` lines,
//! `data: [DONE]`) is read here.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Which OpenAI endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// One request's timings: seconds on the run's clock (`Clock`), tokens, and how it ended.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RequestRecord {
    /// Offered rate ("4" req/s, "inf") or concurrency ("c8") of the run it belongs to.
    pub load: String,
    pub replicate: usize,
    pub id: usize,
    /// Warm-up requests are recorded and excluded from every statistic.
    pub warmup: bool,
    pub sent_s: f64,
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    /// Arrival time of every chunk that carried text.
    pub token_s: Vec<f64>,
    pub output_tokens: usize,
    /// Error kind: "connect", "http 503", "timeout", "stream"; None for a completed request.
    pub error: Option<String>,
    pub error_detail: Option<String>,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
    pub fn ttft_s(&self) -> Option<f64> {
        Some(self.first_token_s? - self.sent_s)
    }
    pub fn e2e_s(&self) -> f64 {
        self.end_s - self.sent_s
    }
    /// Time per output token after the first: (last chunk - first chunk) / (tokens - 1).
    pub fn tpot_s(&self) -> Option<f64> {
        let (first, last) = (self.token_s.first()?, self.token_s.last()?);
        (self.output_tokens >= 2).then(|| (last - first) / (self.output_tokens - 1) as f64)
    }
    /// Gaps between consecutive text chunks.
    pub fn itl_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_s.windows(2).map(|w| w[1] - w[0])
    }
}

/// What every request of a run shares.
#[derive(Debug, Clone)]
pub struct Target {
    pub base_url: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub max_tokens: usize,
    /// A stream that sends nothing for this long is a stalled request.
    pub timeout: Duration,
}

impl Target {
    fn body(&self, prompt: &str) -> Value {
        let mut b = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": true,
            "temperature": 0,
            "stream_options": {"include_usage": true},
        });
        match self.endpoint {
            Endpoint::Completions => b["prompt"] = json!(prompt),
            Endpoint::Chat => b["messages"] = json!([{"role": "user", "content": prompt}]),
        }
        b
    }

    fn agent(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(self.timeout)
            .build()
    }

    /// Send one streamed request and time it on `t0`'s clock.
    pub fn send(&self, prompt: &str, t0: Instant, mut rec: RequestRecord) -> RequestRecord {
        let now = || t0.elapsed().as_secs_f64();
        rec.sent_s = now();
        let url = format!("{}{}", self.base_url, self.endpoint.path());
        let fail = |mut rec: RequestRecord, kind: String, detail: String| {
            rec.end_s = now();
            rec.error = Some(kind);
            rec.error_detail = Some(detail);
            rec
        };
        let resp = match self
            .agent()
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&self.body(prompt).to_string())
        {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                return fail(
                    rec,
                    format!("http {code}"),
                    body.chars().take(300).collect(),
                );
            }
            Err(e) => return fail(rec, error_kind(&e.to_string()), e.to_string()),
        };
        let mut lines = std::io::BufReader::new(resp.into_reader());
        let mut line = String::new();
        let mut usage = None;
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return fail(rec, error_kind(&e.to_string()), e.to_string()),
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // blank separators, comments (": ping"), event names
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let v: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(e) => return fail(rec, "stream".into(), format!("not JSON ({e}): {data}")),
            };
            if let Some(err) = v.get("error") {
                return fail(rec, "stream".into(), err.to_string());
            }
            let choice = &v["choices"][0];
            let text = choice["text"]
                .as_str()
                .or_else(|| choice["delta"]["content"].as_str())
                .unwrap_or("");
            if !text.is_empty() {
                let t = now();
                rec.first_token_s.get_or_insert(t);
                rec.token_s.push(t);
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage = Some(n as usize);
            }
        }
        rec.end_s = now();
        rec.output_tokens = usage.unwrap_or(rec.token_s.len());
        // A completion may be empty (its first token ends it): it has no TTFT then.
        rec
    }
}

/// "timeout" for a read or connect that timed out, "connect" for a refused or unreachable
/// server, else "io".
fn error_kind(msg: &str) -> String {
    let m = msg.to_ascii_lowercase();
    if m.contains("timed out") || m.contains("timeout") {
        "timeout"
    } else if m.contains("connect") || m.contains("refused") || m.contains("dns") {
        "connect"
    } else {
        "io"
    }
    .into()
}

/// The first model the server lists at /v1/models.
pub fn first_model(base_url: &str) -> Result<String, String> {
    let url = format!("{base_url}/v1/models");
    let text = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .get(&url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON ({e})"))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{url}: no model listed ({v}); pass --model"))
}
