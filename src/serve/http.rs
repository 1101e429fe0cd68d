//! The OpenAI-compatible HTTP side of `perfwatt serve` (axum on tokio).
//!
//! In: HTTP requests. Out: `/v1/completions` and `/v1/chat/completions` (stream = true as
//! server-sent events, one chunk per piece of text, a usage chunk when
//! `stream_options.include_usage`, then `[DONE]`; stream = false as one JSON body),
//! `/v1/models`, `/health`, `/metrics` (Prometheus text). A request is validated and
//! tokenized here and handed to the engine thread as a `Job`; bad requests get OpenAI-style
//! 4xx JSON errors (`{"error": {"message", "type", "param", "code"}}`).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as Sse_, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::engine::{Counters, Event, Job, Sampling};
use crate::energy::GpuMeter;
use crate::model::Tokenizer;

pub struct AppState {
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub tok: Arc<Tokenizer>,
    pub model_name: String,
    /// Positions each row holds (prompt + generated).
    pub capacity: usize,
    pub max_batch: usize,
    pub counters: Arc<Counters>,
    pub gpus: Vec<GpuMeter>,
    /// Requests so far: the default seed of a sampled request.
    pub next_id: std::sync::atomic::AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// An OpenAI-style error response.
fn error(
    status: StatusCode,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
    msg: String,
) -> Response {
    let body = json!({"error": {"message": msg, "type": kind, "param": param, "code": code}});
    (status, axum::Json(body)).into_response()
}

fn bad(param: &str, msg: String) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(param),
        None,
        msg,
    )
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": st.model_name, "object": "model", "owned_by": "perfwatt"}]}))
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let c = &st.counters;
    let mut m = String::new();
    let mut put = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        m += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, v) in lines {
            m += &format!("{name}{labels} {v}\n");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    put(
        "perfwatt_requests_total",
        "counter",
        "Requests the engine admitted.",
        one(c.requests.load(Ordering::Relaxed) as f64),
    );
    put(
        "perfwatt_generated_tokens_total",
        "counter",
        "Tokens generated.",
        one(c.tokens.load(Ordering::Relaxed) as f64),
    );
    put(
        "perfwatt_engine_steps_total",
        "counter",
        "Batched forward passes.",
        one(c.steps.load(Ordering::Relaxed) as f64),
    );
    put(
        "perfwatt_batch_active",
        "gauge",
        "Rows of the batch holding a request.",
        one(c.active.load(Ordering::Relaxed) as f64),
    );
    put(
        "perfwatt_batch_rows",
        "gauge",
        "Rows of the batch (--max-batch).",
        one(st.max_batch as f64),
    );
    put(
        "perfwatt_requests_waiting",
        "gauge",
        "Requests waiting for a row.",
        one(c.waiting.load(Ordering::Relaxed) as f64),
    );
    let per_gpu = |f: &dyn Fn(&GpuMeter) -> Option<f64>| -> Vec<(String, f64)> {
        st.gpus
            .iter()
            .filter_map(|g| {
                Some((
                    format!("{{gpu=\"{}\",name=\"{}\"}}", g.index(), g.name),
                    f(g)?,
                ))
            })
            .collect()
    };
    put(
        "perfwatt_gpu_energy_joules_total",
        "counter",
        "NVML total-energy counter.",
        per_gpu(&|g| Some(g.energy_mj()? as f64 / 1000.0)),
    );
    put(
        "perfwatt_gpu_power_watts",
        "gauge",
        "NVML power (driver-averaged).",
        per_gpu(&|g| g.power_w()),
    );
    put(
        "perfwatt_gpu_sm_clock_mhz",
        "gauge",
        "SM clock.",
        per_gpu(&|g| g.sm_clock_mhz().map(f64::from)),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}

/// What both endpoints take after their prompt: sampling, limits, streaming.
struct Params {
    max_tokens: usize,
    sampling: Sampling,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn params(st: &AppState, v: &Value, default_max: usize) -> Result<Params, Response> {
    if let Some(m) = v.get("model").and_then(Value::as_str) {
        if m != st.model_name {
            return Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
                format!(
                    "The model `{m}` does not exist; this server has `{}`",
                    st.model_name
                ),
            ));
        }
    }
    let max_tokens = match v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
    {
        None | Some(Value::Null) => default_max,
        Some(x) => match x.as_u64() {
            Some(n) if n > 0 => n as usize,
            _ => {
                return Err(bad(
                    "max_tokens",
                    format!("max_tokens must be a positive integer, not {x}"),
                ))
            }
        },
    };
    let temperature = match v.get("temperature") {
        None | Some(Value::Null) => 1.0,
        Some(x) => match x.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => t,
            _ => {
                return Err(bad(
                    "temperature",
                    format!("temperature must be between 0 and 2, not {x}"),
                ))
            }
        },
    };
    let seed = v
        .get("seed")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| st.next_id.fetch_add(1, Ordering::Relaxed));
    let stop = match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) && a.len() <= 4 => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(x) => {
            return Err(bad(
                "stop",
                format!("stop must be a string or up to 4 strings, not {x}"),
            ))
        }
    };
    Ok(Params {
        max_tokens,
        sampling: if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Temperature {
                t: temperature as f32,
                seed,
            }
        },
        stop,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
    })
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(bad("body", "the request body must be a JSON object".into())),
        Err(e) => Err(bad(
            "body",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

fn tokens_of(st: &AppState, text: &str) -> Result<Vec<u32>, Response> {
    st.tok
        .encode(text)
        .map_err(|e| bad("prompt", format!("cannot tokenize the prompt: {e}")))
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let prompt = match &v["prompt"] {
        Value::String(s) => tokens_of(&st, s),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            tokens_of(&st, a[0].as_str().unwrap_or(""))
        }
        // Token ids, as the OpenAI API allows.
        Value::Array(a)
            if !a.is_empty()
                && a.iter().all(|x| {
                    x.as_u64()
                        .is_some_and(|t| (t as usize) < st.tok.vocab_size())
                }) =>
        {
            Ok(a.iter()
                .filter_map(|x| x.as_u64().map(|t| t as u32))
                .collect())
        }
        x => Err(bad(
            "prompt",
            format!(
                "prompt must be a string, one string in a list, or token ids below {}; got {x}",
                st.tok.vocab_size()
            ),
        )),
    };
    let prompt = match prompt {
        Ok(p) => p,
        Err(r) => return r,
    };
    run(st, v, prompt, false).await
}

async fn chat(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(msgs) = v["messages"].as_array().filter(|m| !m.is_empty()) else {
        return bad(
            "messages",
            "messages must be a non-empty list of {role, content}".into(),
        );
    };
    let mut turns = Vec::new();
    for m in msgs {
        match (m["role"].as_str(), m["content"].as_str()) {
            (Some(r @ ("system" | "user" | "assistant")), Some(c)) => turns.push((r, c)),
            _ => {
                return bad(
                    "messages",
                    format!(
                        "each message needs a role (system, user, assistant) and text content: {m}"
                    ),
                )
            }
        }
    }
    match chat_ids(&st.tok, &turns) {
        Ok(ids) => run(st, v, ids, true).await,
        Err(e) => bad("messages", format!("cannot tokenize the messages: {e}")),
    }
}

/// The model's chat template (`ChatFormat`), tokenized in the pieces `perfwatt infer` uses
/// (template text, then each message's text), so one user message gives infer's exact ids;
/// without a system message, infer's default one (SmolLM's).
fn chat_ids(tok: &Tokenizer, turns: &[(&str, &str)]) -> crate::Result<Vec<u32>> {
    let chat = tok.chat;
    let mut ids = Vec::new();
    let mut open = chat.begin(turns[0].0 == "system").to_string();
    for (role, content) in turns {
        open += &chat.open(role);
        ids.extend(tok.encode(&open)?);
        ids.extend(tok.encode(content)?);
        open = chat.close().into();
    }
    ids.extend(tok.encode(&(open + &chat.open("assistant")))?);
    Ok(ids)
}

/// Hand the job to the engine and answer as a stream or as one body.
async fn run(st: Arc<AppState>, v: Value, prompt: Vec<u32>, chat: bool) -> Response {
    if prompt.len() + 1 > st.capacity {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("prompt"),
            Some("context_length_exceeded"),
            format!(
                "the prompt has {} tokens; this server's context holds {} (--max-context)",
                prompt.len(),
                st.capacity
            ),
        );
    }
    let p = match params(&st, &v, if chat { st.capacity - prompt.len() } else { 16 }) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut stop_ids = vec![st.tok.eos];
    if let Some(end) = st.tok.token_id(st.tok.chat.end_token()) {
        stop_ids.push(end);
    }
    let job = Job {
        prompt,
        max_tokens: p.max_tokens,
        sampling: p.sampling,
        stop: p.stop.clone(),
        stop_ids,
        events: tx,
    };
    if st.jobs.send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            None,
            "the engine has stopped".into(),
        );
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("cmpl-{}", st.next_id.fetch_add(1, Ordering::Relaxed));
    let chunk = Chunk {
        id,
        created,
        model: st.model_name.clone(),
        chat,
    };
    if !p.stream {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(t) => text += &t,
                Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    return axum::Json(chunk.whole(
                        &text,
                        finish_reason,
                        prompt_tokens,
                        completion_tokens,
                    ))
                    .into_response()
                }
                Event::Failed(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        None,
                        None,
                        e,
                    )
                }
            }
        }
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            None,
            "the engine dropped the request".into(),
        );
    }
    // Stream: a task turns engine events into SSE events; when the client goes away the
    // SSE channel closes, the task ends, and the engine sees the job's channel closed.
    let (sse_tx, sse_rx) = mpsc::unbounded_channel::<Result<Sse_, Infallible>>();
    let include_usage = p.include_usage;
    tokio::spawn(async move {
        let send = |v: Value| sse_tx.send(Ok(Sse_::default().data(v.to_string()))).is_ok();
        if chat && !send(chunk.piece(Some(json!({"role": "assistant", "content": ""})), None)) {
            return;
        }
        while let Some(ev) = rx.recv().await {
            let ok = match ev {
                Event::Text(t) => send(chunk.piece(Some(chunk.text(&t)), None)),
                Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    send(chunk.piece(None, Some(finish_reason)));
                    if include_usage {
                        send(chunk.usage(prompt_tokens, completion_tokens));
                    }
                    let _ = sse_tx.send(Ok(Sse_::default().data("[DONE]")));
                    return;
                }
                Event::Failed(e) => {
                    send(json!({"error": {"message": e, "type": "server_error"}}));
                    return;
                }
            };
            if !ok {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::UnboundedReceiverStream::new(sse_rx)).into_response()
}

/// The OpenAI objects of one response.
struct Chunk {
    id: String,
    created: u64,
    model: String,
    chat: bool,
}

impl Chunk {
    fn head(&self, object: &str) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model})
    }

    fn text(&self, t: &str) -> Value {
        if self.chat {
            json!({"content": t})
        } else {
            json!(t)
        }
    }

    fn piece(&self, text: Option<Value>, finish: Option<&str>) -> Value {
        let mut v = self.head(if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        });
        let key = if self.chat { "delta" } else { "text" };
        let empty = if self.chat { json!({}) } else { json!("") };
        v["choices"] = json!([{"index": 0, key: text.unwrap_or(empty), "finish_reason": finish, "logprobs": null}]);
        v
    }

    fn usage(&self, prompt: usize, completion: usize) -> Value {
        let mut v = self.head(if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        });
        v["choices"] = json!([]);
        v["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
        v
    }

    fn whole(&self, text: &str, finish: &str, prompt: usize, completion: usize) -> Value {
        let mut v = self.head(if self.chat {
            "chat.completion"
        } else {
            "text_completion"
        });
        v["choices"] = if self.chat {
            json!([{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": null}])
        } else {
            json!([{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}])
        };
        v["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
        v
    }
}
