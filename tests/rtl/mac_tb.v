// iverilog testbench for every datapath in rtl/: replays a stimulus file of one hex word
// per clock cycle, {rst_n, valid, clear, a_i, b_i} ({rst_n, valid, clear, sel_i, a_i, b_i}
// for the tile unit, built with -DHAS_SEL -Pmac_tb.SEL_W=...), with the same schedule as src/sim
// (inputs change with clk low at time 2k, rising edge at 2k+1), and dumps the DUT's
// signals. A_PW / B_PW are the operand ports' widths (W for a serial MAC, W+1 for the
// sign-magnitude one, LANES x bits for a dot unit); DUT_PARAMS the DUT's parameters.
// Build: iverilog -g2012 -DDUT=mac_baseline -Pmac_tb.W=8 rtl/mac_baseline.v tests/rtl/mac_tb.v
//        iverilog -g2012 -DDUT=dot_unit '-DDUT_PARAMS=.LANES(16),.A_W(8),.B_W(4),.B_SIGNED(0)'
//                 -Pmac_tb.A_PW=128 -Pmac_tb.B_PW=64 rtl/dot_unit.v tests/rtl/mac_tb.v
// Run:   vvp a.out +stim=FILE +n=CYCLES +vcd=OUT.vcd   (+nodump: no VCD, for timing)
`timescale 1ns/1ps
`ifndef DUT_PARAMS
`define DUT_PARAMS .W(W)
`endif
module mac_tb;
  parameter int W = 8;
  parameter int A_PW = W;
  parameter int B_PW = W;
  parameter int SEL_W = 0;
  localparam int SW = SEL_W > 0 ? SEL_W : 1;
  localparam int MAXN = 1 << 20;
  reg clk = 1'b0, rst_n = 1'b0, valid = 1'b0, clear = 1'b0;
  reg [A_PW-1:0] a = '0;
  reg [B_PW-1:0] b = '0;
  wire [31:0] acc;
  reg [SW-1:0] sel = '0;
  reg [A_PW+B_PW+SEL_W+2:0] stim [0:MAXN-1];
  reg [A_PW+B_PW+SEL_W+2:0] word;
  reg [8*256-1:0] stim_file, vcd_file;
  integer n, i;
`ifdef HAS_SEL
  `DUT #(`DUT_PARAMS) dut (.clk_i(clk), .rst_ni(rst_n), .valid_i(valid), .clear_i(clear), .sel_i(sel), .a_i(a), .b_i(b), .acc_o(acc));
`else
  `DUT #(`DUT_PARAMS) dut (.clk_i(clk), .rst_ni(rst_n), .valid_i(valid), .clear_i(clear), .a_i(a), .b_i(b), .acc_o(acc));
`endif
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
      word = stim[i];
      b = word[B_PW-1:0];
      a = word[B_PW +: A_PW];
      if (SEL_W > 0) sel = word[A_PW+B_PW +: SW];
      {rst_n, valid, clear} = word[A_PW+B_PW+SEL_W +: 3];
      clk = 1'b0;
      #1;
      clk = 1'b1;
      #1;
    end
    $display("acc=%0d", $signed(acc));
    $finish;
  end
endmodule
