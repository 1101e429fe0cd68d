//! `perfwatt serve`: the shipped model behind an OpenAI-compatible HTTP server with
//! continuous batching.
//!
//! In: `ServeConfig` (model, device, precision, optimizations, rows of the batch, context
//! per row, address). Out: a server until Ctrl-C, which stops accepting, lets the requests
//! in flight finish (a drain) and returns. `engine` steps every active request at once
//! (`Llama::forward_rows`); `http` is the OpenAI side (axum on tokio).

pub mod engine;
mod http;

use std::path::PathBuf;
use std::sync::Arc;

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::model::{Opts, Precision};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model: PathBuf,
    pub device: DeviceSpec,
    pub precision: Precision,
    pub opts: Opts,
    /// Rows of the batch: requests decoded together; more wait for a free row.
    pub max_batch: usize,
    /// Positions each row holds, prompt and generated tokens together.
    pub max_context: usize,
    pub host: String,
    /// 0: any free port (the address is printed).
    pub port: u16,
}

/// Load the model, start the engine thread and serve until Ctrl-C. `ready(addr)` is called
/// once the server listens (the CLI prints it; tests read it).
pub fn run(cfg: &ServeConfig, ready: &mut dyn FnMut(std::net::SocketAddr)) -> Result<()> {
    if cfg.max_batch == 0 || cfg.max_context < 2 {
        return Err(Error::Config(
            "--max-batch must be at least 1 and --max-context at least 2".into(),
        ));
    }
    let device = cfg.device.candle()?;
    let (model, tok) = crate::model::load(&cfg.model, cfg.precision, cfg.opts, &device)?;
    let tok = Arc::new(tok);
    let counters = Arc::new(engine::Counters::default());
    let eng = engine::Engine::new(
        model,
        tok.clone(),
        cfg.max_batch,
        cfg.max_context,
        counters.clone(),
    )?;
    let (jobs, rx) = std::sync::mpsc::channel();
    let engine_thread = std::thread::spawn(move || eng.run(rx));
    let gpus = match cfg.device.ordinal() {
        Some(o) => crate::energy::GpuMeter::for_cuda(o).into_iter().collect(),
        _ => Vec::new(),
    };
    let name = cfg
        .model
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let state = Arc::new(http::AppState {
        jobs,
        tok,
        model_name: name,
        capacity: cfg.max_context,
        max_batch: cfg.max_batch,
        counters,
        gpus,
        next_id: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("tokio runtime: {e}")))?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| {
                Error::Config(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(e.to_string()))?;
        ready(addr);
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!(
                    "perfwatt serve: draining the requests in flight (Ctrl-C again to quit now)"
                );
                tokio::spawn(async {
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(130);
                });
            })
            .await
            .map_err(|e| Error::Config(format!("server: {e}")))
    });
    // The router (and with it the jobs sender) is gone: the engine finishes and returns.
    let _ = engine_thread.join();
    served
}
