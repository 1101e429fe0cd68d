// Main for the Verilator toggle-coverage cross-check (tests/sim.rs): runs mac_tb with
// --timing until $finish and writes Verilator's own coverage counts to coverage.dat.
#include <memory>
#include "Vmac_tb.h"
#include "verilated.h"
#include "verilated_cov.h"

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vmac_tb>(ctx.get());
    while (!ctx->gotFinish()) {
        top->eval();
        if (!top->eventsPending()) break;
        ctx->time(top->nextTimeSlot());
    }
    top->final();
    ctx->coveragep()->write("coverage.dat");
    return 0;
}
