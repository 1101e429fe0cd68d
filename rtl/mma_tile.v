// mma_tile: a tile-level integer MMA unit, tensor-core style: an ROWS x COLS array of
// LANES-wide dot-product cells that share their operands. Where dot_unit.v replays one dot
// product along K, this unit holds a K-slice of ROWS rows of A and COLS rows of B in
// fragment registers and broadcasts them: cell (r, c) multiplies A row r by B row c, so a
// multiplier lane sees A[m, k] then A[m', k] (another row) whenever the replay steps to
// another sub-block of the output tile with the same K-slice (src/sim/tile.rs: the
// traversal orders, shaped after PTX mma.m16n8k32's fragments).
//
//   stage 1  a_frag_q      ROWS A fragments (LANES operands each), broadcast along a row
//            b_frag_q      COLS B fragments, broadcast along a column: the operand-delivery
//                          wires, their own signal groups ("A delivery", "B delivery")
//   comb     mult          ROWS*COLS*LANES products, P_W bits each (exact)
//   stage 2  prod_q        registered products
//   comb     g_level[l].s  every cell's adder tree, level l: ROWS*COLS*(LANES>>l) partial
//                          sums of P_W+l bits (cell-major, exact widths, as rtl/dot_tree.v)
//   stage 3  sum_q         every cell's tree root, S_W = P_W + log2(LANES) bits
//   stage 4  acc_q         an accumulator file: DEPTH entries per cell (one per sub-block of
//                          the output tile the replay keeps open), ACC_W bits, wrapping
//
// Nothing is gated: every register loads every cycle (the baseline of the tile designs).
// Ports: a_i packs ROWS fragments (row r, lane j at bits [(r*LANES+j)*A_W +: A_W]), b_i
// COLS. sel_i: with valid_i, its low log2(DEPTH) bits name the accumulator entry the slice
// adds to (the same entry in every cell); clear_i with valid_i writes the sum instead of
// adding it. acc_o reads entry sel_i of the flat file (index = cell*DEPTH + entry, cell =
// r*COLS + c), combinationally, for read-out. A slice reaches acc_q four edges after it is
// presented (three after the fragments latch). ROWS, COLS, LANES, DEPTH: powers of two.
// Synchronous active-low reset.
module mma_tile #(
  parameter int ROWS     = 4,
  parameter int COLS     = 4,
  parameter int LANES    = 16,
  parameter int DEPTH    = 8,
  parameter int A_W      = 8,
  parameter int B_W      = 8,
  parameter bit A_SIGNED = 1'b1,
  parameter bit B_SIGNED = 1'b1,
  parameter int ACC_W    = 32
) (
  input  logic                      clk_i,
  input  logic                      rst_ni,
  input  logic                      valid_i,
  input  logic                      clear_i,
  input  logic [$clog2(ROWS*COLS*DEPTH)-1:0] sel_i,
  input  logic [ROWS*LANES*A_W-1:0] a_i,
  input  logic [COLS*LANES*B_W-1:0] b_i,
  output logic signed [ACC_W-1:0]   acc_o
);
  localparam int CELLS = ROWS * COLS;
  localparam int LOG   = $clog2(LANES);
  localparam int E_W   = $clog2(DEPTH);
  localparam int P_W   = A_W + B_W + ((A_SIGNED || B_SIGNED) ? 0 : 1);
  localparam int S_W   = P_W + LOG;

  logic [ROWS*LANES*A_W-1:0]     a_frag_q;
  logic [COLS*LANES*B_W-1:0]     b_frag_q;
  logic [CELLS*LANES*P_W-1:0]    mult, prod_q;
  logic [CELLS*S_W-1:0]          sum_q;
  logic [CELLS*DEPTH*ACC_W-1:0]  acc_q;
  logic [E_W-1:0]                sel_q, sel2_q, sel3_q;
  logic                          valid_q, clear_q, valid2_q, clear2_q, valid3_q, clear3_q;

  // Products: cell (r, c), lane j multiplies lane j of A fragment r by lane j of B fragment
  // c, each operand widened by its sign (or a zero) so one signed multiplier serves both.
  for (genvar r = 0; r < ROWS; r++) begin : g_row
    for (genvar c = 0; c < COLS; c++) begin : g_col
      for (genvar j = 0; j < LANES; j++) begin : g_lane
        localparam int AT = (r * LANES + j) * A_W;
        localparam int BT = (c * LANES + j) * B_W;
        logic signed [A_W:0]   a_x;
        logic signed [B_W:0]   b_x;
        logic signed [P_W-1:0] p;
        assign a_x = {A_SIGNED & a_frag_q[AT+A_W-1], a_frag_q[AT +: A_W]};
        assign b_x = {B_SIGNED & b_frag_q[BT+B_W-1], b_frag_q[BT +: B_W]};
        assign p   = a_x * b_x;
        assign mult[((r * COLS + c) * LANES + j)*P_W +: P_W] = p;
      end
    end
  end

  // Every cell's adder tree, one level at a time across all cells: node i of a cell's level
  // l adds its nodes 2i and 2i+1 of level l-1, each sign-extended by one bit.
  for (genvar l = 0; l <= LOG; l++) begin : g_level
    localparam int N = LANES >> l;
    logic [CELLS*N*(P_W+l)-1:0] s;
    if (l == 0) begin : g_leaves
      assign s = prod_q;
    end else begin : g_adders
      localparam int CW = P_W + l - 1;
      for (genvar x = 0; x < CELLS; x++) begin : g_cell
        for (genvar i = 0; i < N; i++) begin : g_node
          logic signed [CW-1:0] lhs, rhs;
          assign lhs = g_level[l-1].s[(x*2*N + 2*i)*CW +: CW];
          assign rhs = g_level[l-1].s[(x*2*N + 2*i + 1)*CW +: CW];
          assign s[(x*N + i)*(CW+1) +: CW+1] = {lhs[CW-1], lhs} + {rhs[CW-1], rhs};
        end
      end
    end
  end

  assign acc_o = acc_q[sel_i*ACC_W +: ACC_W];

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      a_frag_q <= '0;
      b_frag_q <= '0;
      valid_q  <= 1'b0;
      clear_q  <= 1'b0;
      sel_q    <= '0;
      prod_q   <= '0;
      valid2_q <= 1'b0;
      clear2_q <= 1'b0;
      sel2_q   <= '0;
      sum_q    <= '0;
      valid3_q <= 1'b0;
      clear3_q <= 1'b0;
      sel3_q   <= '0;
      acc_q    <= '0;
    end else begin
      a_frag_q <= a_i;
      b_frag_q <= b_i;
      valid_q  <= valid_i;
      clear_q  <= clear_i & valid_i;
      sel_q    <= sel_i[E_W-1:0];
      prod_q   <= mult;
      valid2_q <= valid_q;
      clear2_q <= clear_q;
      sel2_q   <= sel_q;
      sum_q    <= g_level[LOG].s;
      valid3_q <= valid2_q;
      clear3_q <= clear2_q;
      sel3_q   <= sel2_q;
      // The addressed entry of every cell: the cell's sum added to it (or written).
      for (int x = 0; x < CELLS; x++) begin
        if (valid3_q) begin
          acc_q[(x*DEPTH + int'(sel3_q))*ACC_W +: ACC_W] <=
            (clear3_q ? '0 : acc_q[(x*DEPTH + int'(sel3_q))*ACC_W +: ACC_W])
            + {{(ACC_W-S_W){sum_q[x*S_W+S_W-1]}}, sum_q[x*S_W +: S_W]};
        end
      end
    end
  end
endmodule
