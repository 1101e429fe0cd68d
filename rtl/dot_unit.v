// dot_unit: a LANES-wide integer dot-product unit, no gating (the reference for
// dot_unit_isolated.v). The arithmetic of a tensor core's integer datapath: every cycle
// it takes a K-slice of LANES operand pairs, so lane j sees elements j, j+LANES, j+2*LANES
// ... of each dot product, never two consecutive ones.
//
//   stage 1  a_q, b_q      per-lane operand registers (the multipliers' inputs), latched
//                          every cycle
//   comb     mult          LANES products, P_W bits each (exact: no rounding, no overflow)
//   stage 2  prod_q        registered products
//   comb     u_tree        a binary adder tree (rtl/dot_tree.v), level l holding LANES>>l
//                          partial sums of P_W+l bits (exact widths)
//   stage 3  sum_q         the tree's registered root, S_W = P_W + log2(LANES) bits
//   stage 4  acc_q         acc_q + sum_q (sign-extended, wraps at ACC_W bits)
//
// Operands: a_i packs LANES operands of A_W bits (lane j in bits [j*A_W +: A_W]), b_i
// LANES of B_W bits; each is signed or unsigned by A_SIGNED / B_SIGNED (int8 x int8:
// 8/8/1/1; Q4_1's weights x Q8_1 activations: int8 x uint4 = 8/4/1/0). Products are
// signed, P_W = A_W + B_W bits (one more when both operands are unsigned).
// clear_i comes with the first slice of a new dot product: its sum is added to zero
// instead of the old sum. valid_i low: nothing is accumulated, but the registers still
// follow the inputs. A slice's sum reaches acc_o three cycles after it is presented.
// LANES must be a power of two (4..64). Synchronous active-low reset.
module dot_unit #(
  parameter int LANES    = 16,
  parameter int A_W      = 8,
  parameter int B_W      = 8,
  parameter bit A_SIGNED = 1'b1,
  parameter bit B_SIGNED = 1'b1,
  parameter int ACC_W    = 32
) (
  input  logic                    clk_i,
  input  logic                    rst_ni,
  input  logic                    valid_i,
  input  logic                    clear_i,
  input  logic [LANES*A_W-1:0]    a_i,
  input  logic [LANES*B_W-1:0]    b_i,
  output logic signed [ACC_W-1:0] acc_o
);
  localparam int LOG = $clog2(LANES);
  localparam int P_W = A_W + B_W + ((A_SIGNED || B_SIGNED) ? 0 : 1);
  localparam int S_W = P_W + LOG;

  logic [LANES*A_W-1:0]    a_q;
  logic [LANES*B_W-1:0]    b_q;
  logic [LANES*P_W-1:0]    mult, prod_q;
  logic signed [S_W-1:0]   sum_q;
  logic                    valid_q, clear_q, valid2_q, clear2_q, valid3_q, clear3_q;
  logic signed [ACC_W-1:0] acc_q, addend;

  // Lane products: each operand widened by one bit (its sign, or a zero for unsigned)
  // so one signed multiplier serves every signedness.
  for (genvar j = 0; j < LANES; j++) begin : g_lane
    logic signed [A_W:0]   a_x;
    logic signed [B_W:0]   b_x;
    logic signed [P_W-1:0] p;
    assign a_x = {A_SIGNED & a_q[j*A_W+A_W-1], a_q[j*A_W +: A_W]};
    assign b_x = {B_SIGNED & b_q[j*B_W+B_W-1], b_q[j*B_W +: B_W]};
    assign p   = a_x * b_x;
    assign mult[j*P_W +: P_W] = p;
  end

  // The adder tree (rtl/dot_tree.v): g_level[l].s inside u_tree.
  logic [S_W-1:0] tree_sum;
  dot_tree #(.LANES(LANES), .P_W(P_W)) u_tree (.prod_i(prod_q), .sum_o(tree_sum));

  assign addend = !valid3_q ? '0 : {{(ACC_W-S_W){sum_q[S_W-1]}}, sum_q};
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
      sum_q    <= '0;
      valid3_q <= 1'b0;
      clear3_q <= 1'b0;
      acc_q    <= '0;
    end else begin
      a_q      <= a_i;
      b_q      <= b_i;
      valid_q  <= valid_i;
      clear_q  <= clear_i & valid_i;
      prod_q   <= mult;
      valid2_q <= valid_q;
      clear2_q <= clear_q;
      sum_q    <= $signed(tree_sum);
      valid3_q <= valid2_q;
      clear3_q <= clear2_q;
      acc_q    <= (clear3_q ? '0 : acc_q) + addend;
    end
  end
endmodule
