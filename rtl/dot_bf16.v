// dot_bf16: a LANES-wide fused bf16 dot-product unit with an fp32 accumulator, in the
// style of a tensor core (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA
// tensor cores", PeerJ Computer Science 7:e330, 2021): every cycle it takes a K-slice of
// LANES bf16 pairs and computes acc <- round(acc + sum_j a_j * b_j) with ONE rounding,
// where mac_bf16.v rounds after every product.
//
//   stage 1  a_q, b_q      LANES bf16 operands each, latched every cycle
//   comb     mult          per lane the exact product as a record of PB = 28 bits:
//                          {nan, inf, sign, esum (9 bits: ea + eb, 0 = a zero product),
//                          man (16 bits: {1.a} x {1.b}, 2 integer bits)}
//   stage 2  prod_q        registered product records
//   comb     emax          the largest exponent among the nonzero terms: the LANES products
//                          and the accumulator (fp32-biased, 10 bits signed: products
//                          reach beyond fp32's range)
//            aligned       the LANES + 1 terms (products in lanes 0..LANES-1, the
//                          accumulator last) as signed fixed-point numbers of F + 1 bits:
//                          each significand placed so that a term of exponent emax has
//                          its leading bit at bit F-1, F = 24 + EXTRA; bits shifted out
//                          below bit 0 are dropped (truncation toward zero of the
//                          magnitude, before the sign is applied), as the paper finds
//            tree_sum      the exact sum of the aligned terms (SW bits, signed)
//            sum           tree_sum normalized and rounded once to nearest even into fp32
//   stage 3  acc_q         loads sum when the slice is valid; holds otherwise
//
// Special values (the Rust reference, src/sim/fp.rs `dot_bf16`, implements the same):
//   * subnormal operands read as zero; a product is exact with an exponent of its own
//     (it never overflows or underflows alone); a result below the smallest normal fp32
//     becomes a zero of its sign, a result exponent past fp32's range an inf of its sign;
//   * a NaN term, inf x 0, or +inf and -inf among the terms give the canonical NaN
//     0x7fc00000; otherwise an inf term gives the result an inf of its sign;
//   * a zero sum is +0, unless every term is a zero of negative sign (-0).
// clear_i comes with the first slice of a dot product: the accumulator term reads +0.
// A slice's sum reaches acc_o two cycles after it is presented. Synchronous active-low
// reset.
module dot_bf16 #(
  parameter int LANES = 16,
  parameter int EXTRA = 3
) (
  input  logic                 clk_i,
  input  logic                 rst_ni,
  input  logic                 valid_i,
  input  logic                 clear_i,
  input  logic [LANES*16-1:0]  a_i,
  input  logic [LANES*16-1:0]  b_i,
  output logic [31:0]          acc_o
);
  localparam logic [31:0] QNAN = 32'h7fc0_0000;
  localparam int PB = 28;                 // a product record
  localparam int F  = 24 + EXTRA;         // aligned significand bits
  localparam int T  = LANES + 1;          // terms: the products and the accumulator
  localparam int SW = F + 1 + $clog2(T);  // the signed sum of T terms of F + 1 bits

  logic [LANES*16-1:0] a_q, b_q;
  logic                valid_q, clear_q, valid2_q, clear2_q;
  logic [LANES*PB-1:0] mult, prod_q;
  logic [31:0]         sum, acc_q;

  // The exact product of two bf16 values as a record (see the header).
  function automatic logic [PB-1:0] product(input logic [15:0] a, input logic [15:0] b);
    logic        a_nan, b_nan, a_inf, b_inf, a_zero, b_zero, sign;
    logic [15:0] man;
    a_nan  = a[14:7] == 8'hff && a[6:0] != 7'd0;
    b_nan  = b[14:7] == 8'hff && b[6:0] != 7'd0;
    a_inf  = a[14:7] == 8'hff && a[6:0] == 7'd0;
    b_inf  = b[14:7] == 8'hff && b[6:0] == 7'd0;
    a_zero = a[14:7] == 8'd0;
    b_zero = b[14:7] == 8'd0;
    sign   = a[15] ^ b[15];
    man    = {8'd0, 1'b1, a[6:0]} * {8'd0, 1'b1, b[6:0]};
    if (a_nan || b_nan || (a_inf && b_zero) || (b_inf && a_zero)) product = {3'b100, 25'd0};
    else if (a_inf || b_inf)   product = {2'b01, sign, 25'd0};
    else if (a_zero || b_zero) product = {2'b00, sign, 25'd0};
    else                       product = {2'b00, sign, {1'b0, a[14:7]} + {1'b0, b[14:7]}, man};
  endfunction

  always_comb begin
    for (int j = 0; j < LANES; j++) begin
      mult[j*PB +: PB] = product(a_q[j*16 +: 16], b_q[j*16 +: 16]);
    end
  end

  // ---------------------------------------------------------------- fused sum
  logic [31:0]          acc_in;
  logic                 any_nan, pos_inf, neg_inf;
  logic [T-1:0]         t_nz, t_sign;      // per term: nonzero finite, sign
  logic [T*10-1:0]      t_exp;             // per term: exponent of the leading bit
  logic [T*F-1:0]       t_sig;             // per term: significand, leading bit at F-1
  logic signed [9:0]    emax;
  logic [9:0]           shift;
  logic [F-1:0]         shifted;
  logic signed [SW-1:0] term, tree_sum;
  logic [T*(F+1)-1:0]   aligned;
  logic [SW-1:0]        mag, norm;
  logic [5:0]           lz;
  logic signed [10:0]   e;
  logic [24:0]          rounded;
  logic                 inc, neg;
  always_comb begin
    acc_in  = clear2_q ? 32'd0 : acc_q;
    any_nan = acc_in[30:23] == 8'hff && acc_in[22:0] != 23'd0;
    pos_inf = acc_in[30:23] == 8'hff && acc_in[22:0] == 23'd0 && !acc_in[31];
    neg_inf = acc_in[30:23] == 8'hff && acc_in[22:0] == 23'd0 && acc_in[31];
    for (int j = 0; j < LANES; j++) begin
      any_nan   = any_nan | prod_q[j*PB+27];
      pos_inf   = pos_inf | (prod_q[j*PB+26] & !prod_q[j*PB+25]);
      neg_inf   = neg_inf | (prod_q[j*PB+26] & prod_q[j*PB+25]);
      t_nz[j]   = prod_q[j*PB+16 +: 9] != 9'd0;
      t_sign[j] = prod_q[j*PB+25];
      // man in [1, 4): the leading bit is bit 15 or 14.
      t_exp[j*10 +: 10] = {1'b0, prod_q[j*PB+16 +: 9]} - 10'd127 + {9'd0, prod_q[j*PB+15]};
      t_sig[j*F +: F]   = prod_q[j*PB+15] ? {prod_q[j*PB +: 16], {(F-16){1'b0}}}
                                          : {prod_q[j*PB +: 15], {(F-15){1'b0}}};
    end
    t_nz[LANES]   = acc_in[30:23] != 8'd0 && acc_in[30:23] != 8'hff;
    t_sign[LANES] = acc_in[31];
    t_exp[LANES*10 +: 10] = {2'b0, acc_in[30:23]};
    t_sig[LANES*F +: F]   = {1'b1, acc_in[22:0], {EXTRA{1'b0}}};

    emax = -10'sd512;
    for (int i = 0; i < T; i++) begin
      if (t_nz[i] && $signed(t_exp[i*10 +: 10]) > emax) emax = $signed(t_exp[i*10 +: 10]);
    end
    tree_sum = '0;
    for (int i = 0; i < T; i++) begin
      shift    = emax - $signed(t_exp[i*10 +: 10]);
      shifted = t_nz[i] ? t_sig[i*F +: F] >> shift : {F{1'b0}};
      term    = $signed({{(SW-F){1'b0}}, shifted});
      if (t_sign[i]) term = -term;
      aligned[i*(F+1) +: F+1] = term[F:0];
    end
    // The adder tree: the aligned terms sign-extended and summed exactly.
    for (int i = 0; i < T; i++) begin
      tree_sum = tree_sum + SW'($signed(aligned[i*(F+1) +: F+1]));
    end

    // Normalize: the leading one of |tree_sum| to bit SW-1, then round to 24 bits.
    neg = tree_sum < 0;
    mag = neg ? -tree_sum : tree_sum;
    lz  = 6'd0;
    for (int i = 0; i < SW; i++) begin
      if (mag[i]) lz = 6'(SW - 1 - i);   // the last (highest) set bit wins
    end
    norm    = mag << lz;
    e       = 11'(emax) + 11'(SW - F) - {5'd0, lz};
    inc     = norm[SW-25] && (norm[SW-26:0] != 0 || norm[SW-24]);
    rounded = {1'b0, norm[SW-1 -: 24]} + {24'd0, inc};
    if (rounded[24]) begin
      rounded = rounded >> 1;
      e = e + 11'sd1;
    end
    if (any_nan || (pos_inf && neg_inf)) sum = QNAN;
    else if (pos_inf)                    sum = 32'h7f80_0000;
    else if (neg_inf)                    sum = 32'hff80_0000;
    else if (mag == 0)                   sum = {&t_sign && t_nz == 0, 31'd0};
    else if (e >= 11'sd255)              sum = {neg, 8'hff, 23'd0};
    else if (e <= 11'sd0)                sum = {neg, 31'd0};
    else                                 sum = {neg, e[7:0], rounded[22:0]};
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
