// Test and benchmark design for the VCD engine: a 4-bit counter (toggles known in closed
// form), an 8-bit LFSR, and a 16-bit product accumulated into 32 bits (wide, busy vectors).
// Dumped by iverilog or Verilator (--binary --timing) to +vcd=FILE for +cycles=N cycles
// after reset (default 100).
`timescale 1ns/1ps
module counter_tb;
  reg clk = 1'b0;
  reg rst_n = 1'b0;
  reg [3:0] count;
  reg [7:0] lfsr;
  reg [15:0] prod;
  reg [31:0] acc;
  reg [8*256-1:0] vcd_file;
  integer cycles;
  always #5 clk = ~clk;
  always @(posedge clk) begin
    if (!rst_n) begin
      count <= 4'd0;
      lfsr <= 8'h01;
      prod <= 16'd0;
      acc <= 32'd0;
    end else begin
      count <= count + 4'd1;
      lfsr <= {lfsr[6:0], lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]};
      prod <= lfsr * {4'd0, count};
      acc <= acc + {16'd0, prod};
    end
  end
  initial begin
    if (!$value$plusargs("vcd=%s", vcd_file)) vcd_file = "counter.vcd";
    if (!$value$plusargs("cycles=%d", cycles)) cycles = 100;
    $dumpfile(vcd_file);
    $dumpvars(0, counter_tb);
    #12 rst_n = 1'b1;
    repeat (cycles) @(posedge clk);
    #2 $finish;
  end
endmodule
