// dot_tree: the adder tree of the dot-product units (dot_unit.v, dot_unit_isolated.v),
// combinational. LANES signed products of P_W bits in, their exact sum out
// (P_W + log2(LANES) bits). Level l holds LANES >> l partial sums of P_W + l bits
// (g_level[l].s): node i of level l adds nodes 2i and 2i+1 of level l-1, each sign-extended
// by one bit, so no adder is wider than its sum needs. Nothing is gated here: a unit that
// isolates lanes must feed zeros for the lanes it skips. LANES: a power of two.
module dot_tree #(
  parameter int LANES = 16,
  parameter int P_W   = 16
) (
  input  logic [LANES*P_W-1:0]              prod_i,
  output logic [P_W+$clog2(LANES)-1:0]      sum_o
);
  // Inlined into its parent: the units' signals keep one flat scope in the C++ model.
  /* verilator inline_module */
  localparam int LOG = $clog2(LANES);

  for (genvar l = 0; l <= LOG; l++) begin : g_level
    logic [(LANES>>l)*(P_W+l)-1:0] s;
    if (l == 0) begin : g_leaves
      assign s = prod_i;
    end else begin : g_adders
      for (genvar i = 0; i < (LANES >> l); i++) begin : g_node
        localparam int CW = P_W + l - 1;
        logic signed [CW-1:0] lhs, rhs;
        assign lhs = g_level[l-1].s[(2*i)*CW +: CW];
        assign rhs = g_level[l-1].s[(2*i+1)*CW +: CW];
        assign s[i*(CW+1) +: CW+1] = {lhs[CW-1], lhs} + {rhs[CW-1], rhs};
      end
    end
  end

  assign sum_o = g_level[LOG].s;
endmodule
