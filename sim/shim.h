// extern "C" shim over a Verilator model of a MAC or dot-product design: create, run cycles
// (optionally dumping VCD and counting toggles of the sampled signals), read the
// accumulator, free. build.rs instantiates PW_EXPORT once per model (design, parameters)
// with the snapshot body generated from sim/designs.rs.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>
#include "verilated.h"
#include "verilated_vcd_c.h"

template <class M>
struct PwHarness {
    VerilatedContext ctx;
    M* m = nullptr;
    VerilatedVcdC* vcd = nullptr;
    explicit PwHarness(bool trace) {
        // Tracing must be enabled before the model is built.
        ctx.traceEverOn(trace);
        m = new M{&ctx};
    }
    ~PwHarness() {
        if (vcd) {
            vcd->close();
            delete vcd;
        }
        m->final();
        delete m;
    }
};

// Bit count: one instruction where build.rs enables it (-mpopcnt on x86-64), else the
// compiler's portable fallback.
static inline uint64_t pw_popcount(uint64_t x) { return (uint64_t)__builtin_popcountll(x); }

// One clock cycle's inputs; the layout src/sim/schedule.rs writes (NW 32-bit words per
// operand port, lane 0 in the low bits of word 0; then the control bytes). NW = 1 for the
// serial MACs. sel drives sel_i where a model has one (the tile unit's accumulator entry).
template <int NW>
struct PwCycle {
    uint32_t a[NW];
    uint32_t b[NW];
    uint8_t rst_n;
    uint8_t valid;
    uint8_t clear;
    uint8_t sel;
};

// sel_i, driven only on models that have the port (detected at compile time).
template <class R, class = void>
struct pw_has_sel : std::false_type {};
template <class R>
struct pw_has_sel<R, std::void_t<decltype(std::declval<R&>().sel_i)>> : std::true_type {};
template <class R>
static inline void pw_set_sel(R* r, uint8_t sel) {
    if constexpr (pw_has_sel<R>::value) r->sel_i = sel;
}

// Drive an operand port from its words: a scalar port (up to 64 bits) or a VlWide.
template <class T, int NW>
static inline void pw_set(T& port, const uint32_t (&w)[NW]) {
    uint64_t v = w[0];
    if (NW > 1) v |= (uint64_t)w[NW > 1 ? 1 : 0] << 32;
    port = (T)v;
}
template <std::size_t N, int NW>
static inline void pw_set(VlWide<N>& port, const uint32_t (&w)[NW]) {
    static_assert(N <= (std::size_t)NW, "cycle record narrower than the port");
    for (std::size_t i = 0; i < N; ++i) port.at(i) = w[i];
}

// Append a signal to the snapshot: one 64-bit slot, or ceil(bits / 64) for a VlWide.
template <class T>
static inline void pw_snap(uint64_t*& o, const T& v) { *o++ = (uint64_t)v; }
template <std::size_t N>
static inline void pw_snap(uint64_t*& o, const VlWide<N>& v) {
    for (std::size_t i = 0; i < N; i += 2)
        *o++ = (uint64_t)v.at(i) | (i + 1 < N ? (uint64_t)v.at(i + 1) << 32 : 0);
}

// The run loop of every model: n cycles, each two evaluations (inputs with clk low at time
// t, rising edge at t+1), dumping VCD if open. With count != 0 (full models only, NS > 0)
// the NS sampled signals are read by `snap` after every evaluation and
// toggles[k] += popcount(new ^ previous); prev/primed carry the state between calls.
// The whole loop stays in C++: no call per half cycle.
//
// Speed, for simulate-only runs above all: after the first eval() (which initialises the
// model), and unless a VCD is open, each evaluation calls the root's _eval (`root_eval`)
// directly: what eval() adds (init check, thread id, message-queue flush, the trace's
// activity flag) is idle work for a single-threaded model without $display or a dump.
// The inputs are written into the root's own fields (the model's port members are
// references to them: a store through one reloads its pointer, since a 1-byte store may
// alias anything), once per cycle; the rising edge changes only the clock. build.rs
// compiles each model and its entry points as one translation unit, so the `flatten`
// entry points inline the whole scheduler (_eval, its regions and triggers) into this loop.
template <int NS, int NW, class M, class Snap, class RootEval>
inline __attribute__((always_inline)) void pw_run(PwHarness<M>* x, const PwCycle<NW>* cyc,
                                                  uint64_t n, uint64_t* t, int32_t count,
                                                  uint64_t* toggles, uint64_t* prev,
                                                  int32_t* primed, Snap snap,
                                                  RootEval root_eval) {
    M* m = x->m;
    auto* r = m->rootp;
    VerilatedVcdC* const vcd = x->vcd;
    const bool counting = NS > 0 && count;
    // Local copies: the pointers may alias, which would force memory traffic.
    uint64_t out[NS > 0 ? NS : 1], last[NS > 0 ? NS : 1], tgl[NS > 0 ? NS : 1];
    uint64_t now = *t;
    bool seen = counting && *primed;
    for (int k = 0; k < NS; ++k) {
        last[k] = counting ? prev[k] : 0;
        tgl[k] = 0;
    }
    auto sampled = [&] {
        if (vcd) vcd->dump(now);
        ++now;
        if (NS > 0 && counting) {
            snap(r, out);
            if (seen)
                for (int k = 0; k < NS; ++k) tgl[k] += pw_popcount(out[k] ^ last[k]);
            for (int k = 0; k < NS; ++k) last[k] = out[k];
            seen = true;
        }
    };
    // One cycle: the inputs with the clock low, then the rising edge (only the clock moves).
    auto cycle = [&](const PwCycle<NW>& c, auto eval) {
        r->clk_i = 0;
        r->rst_ni = c.rst_n;
        r->valid_i = c.valid;
        r->clear_i = c.clear;
        pw_set_sel(r, c.sel);
        pw_set(r->a_i, c.a);
        pw_set(r->b_i, c.b);
        eval();
        sampled();
        r->clk_i = 1;
        eval();
        sampled();
    };
    uint64_t i = 0;
    for (; i < n && (now == 0 || vcd); ++i) cycle(cyc[i], [m] { m->eval(); });
    for (; i < n; ++i) cycle(cyc[i], [&] { root_eval(r); });
    *t = now;
    if (counting) {
        for (int k = 0; k < NS; ++k) {
            toggles[k] += tgl[k];
            prev[k] = last[k];
        }
        *primed = seen;
    }
}

// Entry points every model has: create (tracing on or off), free, read the accumulator,
// run (pw_run with this model's cycle record and sampled signals: NS snapshot slots).
#define PW_EXPORT_COMMON(M, NW, NS, SNAP)                                                       \
    void M##___024root___eval(M##___024root* vlSelf);                                       \
    extern "C" void* pw_##M##_new(int trace) { return new PwHarness<M>(trace != 0); }      \
    extern "C" void pw_##M##_free(void* h) { delete static_cast<PwHarness<M>*>(h); }       \
    extern "C" uint64_t pw_##M##_acc(void* h) {                                            \
        return (uint64_t) static_cast<PwHarness<M>*>(h)->m->acc_o;                          \
    }                                                                                       \
    extern "C" __attribute__((flatten)) void pw_##M##_run(                                  \
        void* h, const void* cyc, uint64_t n, uint64_t* t, int32_t count,                   \
        uint64_t* toggles, uint64_t* prev, int32_t* primed) {                               \
        pw_run<NS, NW>(                                                                     \
            static_cast<PwHarness<M>*>(h), static_cast<const PwCycle<NW>*>(cyc), n, t,       \
            count, toggles, prev, primed,                                                   \
            [](M##___024root* r, uint64_t* out) { SNAP }, M##___024root___eval);            \
    }

// A full model (--trace, --public-flat-rw): VCD and the toggle fast path.
#define PW_EXPORT(M, NW, NS, SNAP)                                                          \
    PW_EXPORT_COMMON(M, NW, NS, SNAP)                                                           \
    extern "C" int pw_##M##_open_vcd(void* h, const char* path) {                          \
        auto* x = static_cast<PwHarness<M>*>(h);                                            \
        x->vcd = new VerilatedVcdC;                                                         \
        x->m->trace(x->vcd, 99);                                                            \
        x->vcd->open(path);                                                                 \
        return x->vcd->isOpen() ? 0 : -1;                                                   \
    }

// A lean model (built without --trace and --public-flat-rw, so Verilator may optimise every
// internal signal away) for runs that count nothing: it cannot open a VCD (returns -1) and
// ignores the counting arguments.
#define PW_EXPORT_LEAN(M, NW)                                                               \
    PW_EXPORT_COMMON(M, NW, 0, (void)r; (void)out;)                                             \
    extern "C" int pw_##M##_open_vcd(void*, const char*) { return -1; }
