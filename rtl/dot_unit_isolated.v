// dot_unit_isolated: dot_unit's interface, pipeline and results, with operand isolation
// per lane.
//
// What is gated, and why it saves switching:
//   * a lane's operand registers (a_q, b_q slices: its multiplier's inputs) load only when
//     valid_i is high AND both of its operands are non-zero (nz). Otherwise they hold, so
//     that lane's multiplier array sees no input change.
//   * a lane's product register (prod_q slice) takes the multiplier's output when its pair
//     was non-zero (nz_q), else 0: a zero lane must add 0 to the tree, and the baseline's
//     product register holds exactly these values (the product of a zero pair is 0), so
//     prod_q and the tree switch as in dot_unit. Holding prod_q instead would need a mask
//     between it and the tree, and that mask's output switches as prod_q does here (an
//     earlier version did that and measured worse than the baseline on real operands).
//   * sum_q and acc_q are enabled only when some lane of the slice was non-zero (any2_q)
//     or a clear is due: an all-zero slice (a zero activation block) leaves them quiet.
// So isolation saves in the operand registers and the multipliers (mult).
// Cost: LANES pairs of zero detectors, LANES flag flops (nz_q), one OR over the lanes and
// its two flops.
// The arithmetic result is identical to dot_unit for every stream (tested).
module dot_unit_isolated #(
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
  logic [LANES-1:0]        nz, nz_q;
  logic signed [S_W-1:0]   sum_q;
  logic                    clear_q, clear2_q, clear3_q, any2_q, any3_q;
  logic signed [ACC_W-1:0] acc_q, addend;

  for (genvar j = 0; j < LANES; j++) begin : g_lane
    logic signed [A_W:0] a_x;
    logic signed [B_W:0] b_x;
    logic signed [P_W-1:0] p;
    assign nz[j] = valid_i && (a_i[j*A_W +: A_W] != '0) && (b_i[j*B_W +: B_W] != '0);
    assign a_x = {A_SIGNED & a_q[j*A_W+A_W-1], a_q[j*A_W +: A_W]};
    assign b_x = {B_SIGNED & b_q[j*B_W+B_W-1], b_q[j*B_W +: B_W]};
    assign p   = a_x * b_x;
    assign mult[j*P_W +: P_W] = p;

    always_ff @(posedge clk_i) begin
      if (!rst_ni) begin
        a_q[j*A_W +: A_W]    <= '0;
        b_q[j*B_W +: B_W]    <= '0;
        prod_q[j*P_W +: P_W] <= '0;
      end else begin
        if (nz[j]) begin
          a_q[j*A_W +: A_W] <= a_i[j*A_W +: A_W];
          b_q[j*B_W +: B_W] <= b_i[j*B_W +: B_W];
        end
        prod_q[j*P_W +: P_W] <= nz_q[j] ? mult[j*P_W +: P_W] : '0;
      end
    end
  end

  // The adder tree (rtl/dot_tree.v): g_level[l].s inside u_tree.
  logic [S_W-1:0] tree_sum;
  dot_tree #(.LANES(LANES), .P_W(P_W)) u_tree (.prod_i(prod_q), .sum_o(tree_sum));

  assign addend = {{(ACC_W-S_W){sum_q[S_W-1]}}, sum_q};
  assign acc_o  = acc_q;

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      nz_q     <= '0;
      clear_q  <= 1'b0;
      clear2_q <= 1'b0;
      clear3_q <= 1'b0;
      any2_q   <= 1'b0;
      any3_q   <= 1'b0;
      sum_q    <= '0;
      acc_q    <= '0;
    end else begin
      nz_q     <= nz;
      clear_q  <= clear_i & valid_i;
      clear2_q <= clear_q;
      clear3_q <= clear2_q;
      any2_q   <= |nz_q;
      any3_q   <= any2_q;
      if (any2_q) sum_q <= $signed(tree_sum);
      if (any3_q) acc_q <= (clear3_q ? '0 : acc_q) + addend;
      else if (clear3_q) acc_q <= '0;
    end
  end
endmodule
