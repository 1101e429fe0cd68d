// mac_bf16: serial bf16 x bf16 multiply-accumulate into an fp32 accumulator, no gating.
//
//   stage 1  a_q, b_q      bf16 operand registers, latched every cycle
//   comb     mult          the exact product as fp32 (8 x 8-bit significands: 16 bits fit
//                          fp32's 24, so nothing is rounded; only the range can end it)
//   stage 2  prod_q        registered product
//   comb     sum           acc + prod_q in fp32, rounded once to nearest even
//   stage 3  acc_q         loads sum (from +0 with clear) when a product is valid; holds
//                          otherwise (adding +0 would turn a -0 sum into +0)
//
// Special values (the Rust reference, src/sim/fp.rs, implements the same):
//   * subnormals are flushed to zero, keeping their sign: bf16 subnormal operands read as
//     zero, and a product or sum below the smallest normal fp32 becomes a signed zero;
//   * overflow of a product or a sum gives an infinity of its sign;
//   * NaN operands, inf x 0 and inf + -inf give the canonical NaN 0x7fc00000;
//   * x + (-x) = +0 (round to nearest even), -0 + -0 = -0.
// clear_i with the first pair of a dot product; synchronous active-low reset.
module mac_bf16 (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        valid_i,
  input  logic        clear_i,
  input  logic [15:0] a_i,
  input  logic [15:0] b_i,
  output logic [31:0] acc_o
);
  localparam logic [31:0] QNAN = 32'h7fc0_0000;

  logic [15:0] a_q, b_q;
  logic        valid_q, clear_q, valid2_q, clear2_q;
  logic [31:0] mult, prod_q, sum, acc_q;

  // ---------------------------------------------------------------- product
  logic       pa_nan, pb_nan, pa_inf, pb_inf, pa_zero, pb_zero, p_sign;
  logic [15:0] p_man;   // {1.a} x {1.b}: 2 integer bits, 14 fraction bits
  logic signed [9:0] p_exp;
  always_comb begin
    pa_nan  = a_q[14:7] == 8'hff && a_q[6:0] != 0;
    pb_nan  = b_q[14:7] == 8'hff && b_q[6:0] != 0;
    pa_inf  = a_q[14:7] == 8'hff && a_q[6:0] == 0;
    pb_inf  = b_q[14:7] == 8'hff && b_q[6:0] == 0;
    pa_zero = a_q[14:7] == 0;
    pb_zero = b_q[14:7] == 0;
    p_sign  = a_q[15] ^ b_q[15];
    p_man   = {1'b1, a_q[6:0]} * {1'b1, b_q[6:0]};
    p_exp   = $signed({2'b0, a_q[14:7]}) + $signed({2'b0, b_q[14:7]}) - 10'sd127
              + (p_man[15] ? 10'sd1 : 10'sd0);
    if (pa_nan || pb_nan || (pa_inf && pb_zero) || (pb_inf && pa_zero)) mult = QNAN;
    else if (pa_inf || pb_inf)   mult = {p_sign, 8'hff, 23'd0};
    else if (pa_zero || pb_zero) mult = {p_sign, 31'd0};
    else if (p_exp >= 10'sd255)  mult = {p_sign, 8'hff, 23'd0};
    else if (p_exp <= 10'sd0)    mult = {p_sign, 31'd0};
    else if (p_man[15])          mult = {p_sign, p_exp[7:0], p_man[14:0], 8'd0};
    else                         mult = {p_sign, p_exp[7:0], p_man[13:0], 9'd0};
  end

  // ---------------------------------------------------------------- fp32 adder
  logic [31:0] x, y, op_hi, op_lo;   // the operand of larger and of smaller magnitude
  logic        x_nan, y_nan, x_inf, y_inf, swap, sub;
  logic [8:0]  shift;
  logic [26:0] mb, ms, ms_sh;   // 24-bit significand, then guard, round, sticky
  logic        sticky;
  logic [27:0] s;
  logic [26:0] n;               // normalized: hidden bit at 26
  logic signed [9:0] e;
  logic [4:0]  lz;
  logic [24:0] rounded;
  logic        inc;
  always_comb begin
    x = clear2_q ? 32'd0 : acc_q;
    y = prod_q;
    x_nan = x[30:23] == 8'hff && x[22:0] != 0;
    y_nan = y[30:23] == 8'hff && y[22:0] != 0;
    x_inf = x[30:23] == 8'hff && x[22:0] == 0;
    y_inf = y[30:23] == 8'hff && y[22:0] == 0;
    swap  = y[30:0] > x[30:0];
    op_hi   = swap ? y : x;
    op_lo = swap ? x : y;
    sub   = op_hi[31] ^ op_lo[31];
    mb    = op_hi[30:23] == 0 ? 27'd0 : {1'b1, op_hi[22:0], 3'b0};
    ms    = op_lo[30:23] == 0 ? 27'd0 : {1'b1, op_lo[22:0], 3'b0};
    shift = {1'b0, op_hi[30:23]} - {1'b0, op_lo[30:23]};
    if (ms == 0) begin
      ms_sh  = 27'd0;
      sticky = 1'b0;
    end else if (shift >= 9'd27) begin
      ms_sh  = 27'd0;
      sticky = 1'b1;
    end else begin
      ms_sh  = ms >> shift;
      sticky = (ms & ((27'd1 << shift) - 27'd1)) != 0;
    end
    ms_sh[0] = ms_sh[0] | sticky;
    s = sub ? {1'b0, mb} - {1'b0, ms_sh} : {1'b0, mb} + {1'b0, ms_sh};
    e = $signed({2'b0, op_hi[30:23]});
    lz = 5'd0;
    n  = s[26:0];
    if (s[27]) begin
      n = {s[27:2], s[1] | s[0]};
      e = e + 10'sd1;
    end else begin
      // Leading zeros above the highest set bit (the last assignment wins).
      for (int i = 0; i <= 26; i++) begin
        if (s[i]) lz = 5'(26 - i);
      end
      n = s[26:0] << lz;
      e = e - $signed({5'b0, lz});
    end
    // Round to nearest even on guard (n[2]), round (n[1]) and sticky (n[0]).
    inc     = n[2] && (n[1] || n[0] || n[3]);
    rounded = {1'b0, n[26:3]} + {24'd0, inc};
    if (rounded[24]) begin
      rounded = rounded >> 1;
      e = e + 10'sd1;
    end
    if (x_nan || y_nan || (x_inf && y_inf && sub)) sum = QNAN;
    else if (x_inf || y_inf)      sum = x_inf ? x : y;
    else if (mb == 0 && ms == 0)  sum = {x[31] & y[31], 31'd0};
    else if (s == 0)              sum = 32'd0;
    else if (e >= 10'sd255)       sum = {op_hi[31], 8'hff, 23'd0};
    else if (e <= 10'sd0)         sum = {op_hi[31], 31'd0};
    else                          sum = {op_hi[31], e[7:0], rounded[22:0]};
  end

  assign acc_o = acc_q;

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
      if (valid2_q) acc_q <= sum;
    end
  end
endmodule
