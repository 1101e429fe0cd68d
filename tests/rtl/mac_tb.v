// iverilog testbench for the MAC designs: replays a stimulus file of one hex word per
// clock cycle, {rst_n, valid, clear, a, b}, with the same schedule as src/sim.rs (inputs
// change with clk low at time 2k, rising edge at 2k+1), and dumps the DUT's signals.
// Build: iverilog -g2012 -DDUT=mac_baseline -Pmac_tb.W=8 rtl/mac_baseline.v tests/rtl/mac_tb.v
// Run:   vvp a.out +stim=FILE +n=CYCLES +vcd=OUT.vcd   (+nodump: no VCD, for timing)
`timescale 1ns/1ps
module mac_tb;
  parameter int W = 8;
  localparam int MAXN = 1 << 20;
  reg clk = 1'b0, rst_n = 1'b0, valid = 1'b0, clear = 1'b0;
  reg [W-1:0] a = '0, b = '0;
  wire [31:0] acc;
  reg [2*W+2:0] stim [0:MAXN-1];
  reg [8*256-1:0] stim_file, vcd_file;
  integer n, i;
  `DUT #(.W(W)) dut (.clk_i(clk), .rst_ni(rst_n), .valid_i(valid), .clear_i(clear), .a_i(a), .b_i(b), .acc_o(acc));
  initial begin
    if (!$value$plusargs("stim=%s", stim_file)) $fatal(1, "+stim=FILE missing");
    if (!$value$plusargs("n=%d", n)) $fatal(1, "+n=CYCLES missing");
    if (!$value$plusargs("vcd=%s", vcd_file)) vcd_file = "mac.vcd";
    $readmemh(stim_file, stim);
    if (!$test$plusargs("nodump")) begin
      $dumpfile(vcd_file);
      $dumpvars(0, mac_tb.dut);
    end
    for (i = 0; i < n; i = i + 1) begin
      {rst_n, valid, clear, a, b} = stim[i];
      clk = 1'b0;
      #1;
      clk = 1'b1;
      #1;
    end
    $display("acc=%0d", $signed(acc));
    $finish;
  end
endmodule
