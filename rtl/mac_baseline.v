// mac_baseline: signed W x W multiply-accumulate, three stages, no gating.
//
//   stage 1  a_q, b_q      operand registers = the multiplier's inputs, latched EVERY cycle
//   comb     mult          a_q * b_q (2W bits, signed)
//   stage 2  prod_q        registered product, latched every cycle
//   stage 3  acc_q         acc_q + prod_q (sign-extended, wraps at ACC_W bits)
//
// clear_i comes with the first operand of a new dot product: that operand's product is
// added to zero instead of the old sum. valid_i low: the operands are don't-care and
// nothing is accumulated, but the registers still follow the inputs. The result of an
// operand pair is in acc_o two cycles after it is presented.
// Synchronous active-low reset. This is the reference for mac_isolated.v.
module mac_baseline #(
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
  logic                    valid_q, clear_q, valid2_q, clear2_q;
  logic signed [2*W-1:0]   mult, prod_q;
  logic signed [ACC_W-1:0] acc_q, addend;

  assign mult   = a_q * b_q;
  assign addend = valid2_q ? {{(ACC_W-2*W){prod_q[2*W-1]}}, prod_q} : '0;
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
