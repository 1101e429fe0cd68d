// Test design for the VCD engine: a 4-bit counter (toggles known in closed form) and an
// 8-bit LFSR, dumped by iverilog or Verilator (--binary --timing) to +vcd=FILE.
`timescale 1ns/1ps
module counter_tb;
  reg clk = 1'b0;
  reg rst_n = 1'b0;
  reg [3:0] count;
  reg [7:0] lfsr;
  reg [8*256-1:0] vcd_file;
  always #5 clk = ~clk;
  always @(posedge clk) begin
    if (!rst_n) begin
      count <= 4'd0;
      lfsr <= 8'h01;
    end else begin
      count <= count + 4'd1;
      lfsr <= {lfsr[6:0], lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]};
    end
  end
  initial begin
    if (!$value$plusargs("vcd=%s", vcd_file)) vcd_file = "counter.vcd";
    $dumpfile(vcd_file);
    $dumpvars(0, counter_tb);
    #12 rst_n = 1'b1;
    #1000 $finish;
  end
endmodule
