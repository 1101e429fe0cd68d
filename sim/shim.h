// extern "C" shim over a Verilator model of a MAC design: create, drive one half clock
// cycle (set inputs, eval, optionally dump VCD), read the accumulator, snapshot the
// sampled signals, free. build.rs instantiates PW_EXPORT once per (design, width) model
// with the snapshot body generated from sim/signals.rs.
#pragma once
#include <cstdint>
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

#define PW_EXPORT(M, SNAP)                                                                  \
    extern "C" void* pw_##M##_new(int trace) { return new PwHarness<M>(trace != 0); }      \
    extern "C" void pw_##M##_free(void* h) { delete static_cast<PwHarness<M>*>(h); }       \
    extern "C" int pw_##M##_open_vcd(void* h, const char* path) {                          \
        auto* x = static_cast<PwHarness<M>*>(h);                                            \
        x->vcd = new VerilatedVcdC;                                                         \
        x->m->trace(x->vcd, 99);                                                            \
        x->vcd->open(path);                                                                 \
        return x->vcd->isOpen() ? 0 : -1;                                                   \
    }                                                                                       \
    extern "C" void pw_##M##_step(void* h, uint8_t clk, uint8_t rst_n, uint8_t valid,      \
                                  uint8_t clear, uint32_t a, uint32_t b, uint64_t t) {     \
        auto* x = static_cast<PwHarness<M>*>(h);                                            \
        M* m = x->m;                                                                        \
        m->clk_i = clk;                                                                     \
        m->rst_ni = rst_n;                                                                  \
        m->valid_i = valid;                                                                 \
        m->clear_i = clear;                                                                 \
        m->a_i = a;                                                                         \
        m->b_i = b;                                                                         \
        m->eval();                                                                          \
        if (x->vcd) x->vcd->dump(t);                                                        \
    }                                                                                       \
    extern "C" uint64_t pw_##M##_acc(void* h) {                                            \
        return (uint64_t) static_cast<PwHarness<M>*>(h)->m->acc_o;                          \
    }                                                                                       \
    extern "C" void pw_##M##_snapshot(void* h, uint64_t* out) {                            \
        M* m = static_cast<PwHarness<M>*>(h)->m;                                            \
        SNAP                                                                                \
    }
