//! The Verilator models build.rs linked, behind a safe wrapper.
//!
//! In: a design and its model parameters (which pick one model of OUT_DIR/models.rs), a
//! schedule's cycle records. Out: a live `Model` that runs them, optionally counting
//! toggles of the sampled signals in the shim (`FastCounter`), and its accumulator.

use std::ffi::{c_void, CString};
use std::path::Path;

use crate::error::{Error, Result};

use super::catalogue::{Params, LANES, WIDTHS};
use super::schedule::Schedule;
use super::Design;

type NewFn = unsafe extern "C" fn(i32) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type OpenVcdFn = unsafe extern "C" fn(*mut c_void, *const std::ffi::c_char) -> i32;
type RunFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    u64,
    *mut u64,
    i32,
    *mut u64,
    *mut u64,
    *mut i32,
);
type AccFn = unsafe extern "C" fn(*mut c_void) -> u64;

struct ModelApi {
    new: NewFn,
    free: FreeFn,
    open_vcd: OpenVcdFn,
    run: RunFn,
    acc: AccFn,
}

/// The entry points of every model build.rs built, by model name (OUT_DIR/models.rs lists
/// them as `models_table!(Vmac_baseline_w8, ...)`).
macro_rules! models_table {
    ($($m:ident),* $(,)?) => {
        #[allow(non_snake_case)]
        mod ffi {
            $(pub mod $m {
                use std::ffi::c_void;
                extern "C" {
                    #[link_name = concat!("pw_", stringify!($m), "_new")]
                    pub fn new(trace: i32) -> *mut c_void;
                    #[link_name = concat!("pw_", stringify!($m), "_free")]
                    pub fn free(h: *mut c_void);
                    #[link_name = concat!("pw_", stringify!($m), "_open_vcd")]
                    pub fn open_vcd(h: *mut c_void, path: *const std::ffi::c_char) -> i32;
                    #[link_name = concat!("pw_", stringify!($m), "_run")]
                    pub fn run(h: *mut c_void, cyc: *const c_void, n: u64, t: *mut u64,
                        count: i32, toggles: *mut u64, prev: *mut u64, primed: *mut i32);
                    #[link_name = concat!("pw_", stringify!($m), "_acc")]
                    pub fn acc(h: *mut c_void) -> u64;
                }
            })*
        }
        static MODELS: &[(&str, ModelApi)] = &[$((
            stringify!($m),
            ModelApi {
                new: ffi::$m::new,
                free: ffi::$m::free,
                open_vcd: ffi::$m::open_vcd,
                run: ffi::$m::run,
                acc: ffi::$m::acc,
            },
        )),*];
    };
}
include!(concat!(env!("OUT_DIR"), "/models.rs"));

/// `lean`: the model built without tracing or public signals (simulate-only runs).
fn api(design: Design, p: Params, lean: bool) -> Result<&'static ModelApi> {
    let name = if lean {
        design.lean_model_name(p)
    } else {
        design.model_name(p)
    };
    MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, api)| api)
        .ok_or_else(|| {
            Error::Sim(format!(
                "{}: no model built for these parameters ({name}; serial MACs: widths {WIDTHS:?}, dot units: lanes {LANES:?})",
                design.name()
            ))
        })
}

/// One live model. Freed on drop (which also closes its VCD).
pub(super) struct Model {
    api: &'static ModelApi,
    h: *mut c_void,
    t: u64,
}

impl Model {
    pub(super) fn new(design: Design, p: Params, vcd: Option<&Path>, lean: bool) -> Result<Self> {
        let api = api(design, p, lean)?;
        // SAFETY: the shim allocates a harness; `h` is only used through this struct.
        let h = unsafe { (api.new)(vcd.is_some() as i32) };
        let m = Model { api, h, t: 0 };
        if let Some(p) = vcd {
            let c = CString::new(p.to_string_lossy().as_bytes())
                .map_err(|_| Error::Sim("VCD path has a NUL byte".into()))?;
            // SAFETY: `h` is live, `c` outlives the call.
            if unsafe { (m.api.open_vcd)(m.h, c.as_ptr()) } != 0 {
                return Err(Error::Sim(format!(
                    "cannot open VCD {} for writing",
                    p.display()
                )));
            }
        }
        Ok(m)
    }
    /// Run the cycles of `s`; with `counter`, count toggles of the sampled signals.
    pub(super) fn run(
        &mut self,
        s: &Schedule,
        range: std::ops::Range<usize>,
        counter: Option<&mut FastCounter>,
    ) {
        let (count, toggles, prev, primed) = match counter {
            Some(c) => (
                1,
                c.toggles.as_mut_ptr(),
                c.prev.as_mut_ptr(),
                &mut c.primed as *mut i32,
            ),
            None => (
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        };
        let words = &s.words[range.start * s.stride..range.end * s.stride];
        // SAFETY: `h` is live; `words` holds whole cycle records of the layout this model
        // was built with (`PwCycle<NW>`, `stride` = 2 NW + 1 words); the counter's arrays
        // have one slot per snapshot slot and are only touched when `count` is 1.
        unsafe {
            (self.api.run)(
                self.h,
                words.as_ptr() as *const c_void,
                range.len() as u64,
                &mut self.t,
                count,
                toggles,
                prev,
                primed,
            )
        };
    }
    pub(super) fn acc(&self) -> u64 {
        // SAFETY: `h` is live.
        unsafe { (self.api.acc)(self.h) }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: created by `new`, freed once.
        unsafe { (self.api.free)(self.h) }
    }
}

/// Per-slot toggle counts kept across `Model::run` calls (filled in by the shim:
/// popcount of what changed between consecutive evaluations).
pub(super) struct FastCounter {
    pub(super) prev: Vec<u64>,
    pub(super) toggles: Vec<u64>,
    pub(super) primed: i32,
}

impl FastCounter {
    pub(super) fn new(n: usize) -> Self {
        FastCounter {
            prev: vec![0; n],
            toggles: vec![0; n],
            primed: 0,
        }
    }
}
