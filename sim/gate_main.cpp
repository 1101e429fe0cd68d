// Driver of a Verilator model of a gate-level netlist (src/sim/gate): reads cycle records
// (PwCycle<PW_NW> of sim/shim.h, the RTL harness's layout) from stdin, runs each as two
// evaluations (inputs with clk low, then the rising edge), and after every evaluation counts
// per net how often its bit changed. At EOF it prints `cycles N`, `acc V` and one count per
// net, in net order. src/sim/gate/model.rs generates PW_NW, PW_NETS and pw_gate_snap (the
// nets' bits packed into 64-bit words) in front of this file.
#include <cstdio>
#include <vector>
#include "shim.h"

int main() {
    VerilatedContext ctx;
    Vgate* m = new Vgate{&ctx};
    auto* r = m->rootp;
    constexpr int NS = (PW_NETS + 63) / 64;
    std::vector<uint64_t> count(PW_NETS, 0);
    uint64_t now[NS], last[NS];
    bool seen = false;
    uint64_t cycles = 0;
    auto sample = [&] {
        pw_gate_snap(r, now);
        if (seen) {
            for (int k = 0; k < NS; ++k) {
                uint64_t d = now[k] ^ last[k];
                while (d) {
                    ++count[k * 64 + __builtin_ctzll(d)];
                    d &= d - 1;
                }
            }
        }
        for (int k = 0; k < NS; ++k) last[k] = now[k];
        seen = true;
    };
    static PwCycle<PW_NW> buf[4096];
    size_t n;
    while ((n = fread(buf, sizeof(buf[0]), 4096, stdin)) > 0) {
        for (size_t i = 0; i < n; ++i) {
            const PwCycle<PW_NW>& c = buf[i];
            m->clk_i = 0;
            m->rst_ni = c.rst_n;
            m->valid_i = c.valid;
            m->clear_i = c.clear;
            pw_set(m->a_i, c.a);
            pw_set(m->b_i, c.b);
            m->eval();
            sample();
            m->clk_i = 1;
            m->eval();
            sample();
            ++cycles;
        }
    }
    printf("cycles %llu\nacc %llu\n", (unsigned long long)cycles, (unsigned long long)m->acc_o);
    for (int k = 0; k < PW_NETS; ++k) printf("%llu\n", (unsigned long long)count[k]);
    m->final();
    delete m;
    return 0;
}
