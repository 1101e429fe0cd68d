// mac_signmag: mac_baseline's pipeline with sign-magnitude operands.
//
// Operands arrive in sign-magnitude, W+1 bits: bit W is the sign, bits W-1..0 the magnitude,
// so every W-bit two's-complement value has a code, -2^(W-1) included (real int8 data
// holds -128). For values above -2^(W-1) the top magnitude bit stays 0 and never switches.
// What changes, and why it matters for switching: in two's complement a small value that
// flips sign flips nearly every bit (+1 = 0000_0001, -1 = 1111_1111); in sign-magnitude
// only the sign bit and the few magnitude bits that differ switch (-1 = 1000_0001).
// LLM activations and weights are small and change sign often, so the operand registers
// and the unsigned magnitude multiplier see fewer toggles. Nothing is gated: like the
// baseline, every register loads every cycle, so the comparison isolates the encoding.
//
//   stage 1  a_q, b_q      sign-magnitude operand registers (multiplier inputs)
//   comb     mult          {sign_a ^ sign_b, |a| * |b|}: sign + 2W-bit magnitude
//   stage 2  prod_q        registered sign-magnitude product
//   stage 3  acc_q         two's-complement accumulator: adds +/- magnitude
module mac_signmag #(
  parameter int W     = 8,
  parameter int ACC_W = 32
) (
  input  logic                    clk_i,
  input  logic                    rst_ni,
  input  logic                    valid_i,
  input  logic                    clear_i,
  input  logic        [W:0]       a_i,
  input  logic        [W:0]       b_i,
  output logic signed [ACC_W-1:0] acc_o
);
  logic [W:0]              a_q, b_q;
  logic                    valid_q, clear_q, valid2_q, clear2_q;
  logic [2*W:0]            mult, prod_q;
  logic [2*W-1:0]          mag_prod;
  logic [ACC_W-1:0]        mag;
  logic signed [ACC_W-1:0] acc_q, addend;

  assign mag_prod = {{W{1'b0}}, a_q[W-1:0]} * {{W{1'b0}}, b_q[W-1:0]};
  assign mult   = {a_q[W] ^ b_q[W], mag_prod};
  assign mag    = ACC_W'(prod_q[2*W-1:0]);
  assign addend = !valid2_q ? '0 : (prod_q[2*W] ? -mag : mag);
  assign acc_o  = acc_q;

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      a_q      <= '0;
      b_q      <= '0;
      valid_q  <= 1'b0;
      clear_q  <= 1'b0;
      prod_q   <= '0;
      valid2_q <= 1'b0;
      clear2_q <= 1'b0;
      acc_q    <= '0;
    end else begin
      a_q      <= a_i;
      b_q      <= b_i;
      valid_q  <= valid_i;
      clear_q  <= clear_i & valid_i;
      prod_q   <= mult;
      valid2_q <= valid_q;
      clear2_q <= clear_q;
      acc_q    <= (clear2_q ? '0 : acc_q) + addend;
    end
  end
endmodule
