// mac_isolated: mac_baseline's interface, pipeline and results, with operand isolation.
//
// What is gated, and why it saves switching:
//   * a_q, b_q (the multiplier's inputs) load only when valid_i is high AND both operands
//     are non-zero (nz). Otherwise they hold their old values, so the multiplier array
//     sees no input change and its partial products do not switch. In activations full of
//     zeros (ReLU/SiLU outputs near zero, pruned weights) most cycles are such cycles.
//   * prod_q loads only when the pair in stage 1 was non-zero (nz_q). A held multiplier
//     output would be the stale product, so nz_q also tells stage 3 to add nothing.
//   * acc_q is enabled only when the product is non-zero (nz2_q) or a clear is due: adding
//     zero would not change it anyway, but the enable keeps the register's clock pin quiet
//     (clock gating in a real flow). Because of that enable the adder needs no zero mux:
//     addend is the held prod_q, so it does not switch on zero pairs either (the
//     baseline's addend drops to 0 and back around every zero pair).
// nz/nz_q/nz2_q replace the baseline's valid pipeline (a zero pair is as good as no pair).
// Cost: two zero detectors (W-bit NOR each) and two flag flops (nz_q, nz2_q).
// The arithmetic result is identical to mac_baseline for every stream (tested).
module mac_isolated #(
  parameter int W     = 8,
  parameter int ACC_W = 32
) (
  input  logic                    clk_i,
  input  logic                    rst_ni,
  input  logic                    valid_i,
  input  logic                    clear_i,
  input  logic signed [W-1:0]     a_i,
  input  logic signed [W-1:0]     b_i,
  output logic signed [ACC_W-1:0] acc_o
);
  logic signed [W-1:0]     a_q, b_q;
  logic                    clear_q, clear2_q;
  logic                    nz, nz_q, nz2_q;
  logic signed [2*W-1:0]   mult, prod_q;
  logic signed [ACC_W-1:0] acc_q, addend;

  assign nz     = valid_i && (a_i != '0) && (b_i != '0);
  assign mult   = a_q * b_q;
  assign addend = {{(ACC_W-2*W){prod_q[2*W-1]}}, prod_q};
  assign acc_o  = acc_q;

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      a_q      <= '0;
      b_q      <= '0;
      clear_q  <= 1'b0;
      nz_q     <= 1'b0;
      prod_q   <= '0;
      clear2_q <= 1'b0;
      nz2_q    <= 1'b0;
      acc_q    <= '0;
    end else begin
      if (nz) begin
        a_q <= a_i;
        b_q <= b_i;
      end
      clear_q  <= clear_i & valid_i;
      nz_q     <= nz;
      if (nz_q) prod_q <= mult;
      clear2_q <= clear_q;
      nz2_q    <= nz_q;
      if (nz2_q) acc_q <= (clear2_q ? '0 : acc_q) + addend;
      else if (clear2_q) acc_q <= '0;
    end
  end
endmodule
