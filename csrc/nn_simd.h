// nn_simd.h — the AVX2 and AVX-512 versions of two nn.c kernels, written once over
// vectors of VW floats. nn_avx2.c and nn_avx512.c each include it once, after the vector
// operations of their ISA (vec_avx2.h, vec_avx512.h) and the names COLSUM_BLOCK and
// SOFTMAX_XENT_ROWS of the two functions (declared in internal.h):
//  - a block of column sums, 16 vectors of columns in registers, rows added in order;
//  - the fused softmax cross-entropy on up to VW rows at once, one row per lane. The
//    scalar code in nn.c is latency-bound on short rows (10 logits), a chain per row;
//    here each lane runs exactly the scalar operations in the same order (nn_math.h, no
//    FMA contraction), so the bits are the scalar code's (tested).

// sum[j] = x[0][j] + ... + x[m-1][j] in that order, for j < width <= 256; row i of x
// starts at x + i * ld.
KERNEL_TARGET void COLSUM_BLOCK(float *sum, const float *x, int64_t m, int64_t ld, int64_t width) {
    for (int64_t c0 = 0; c0 < width; c0 += 16 * VW) {
        vec acc[16];
        vmask mask[16];
#pragma GCC unroll 16
        for (int v = 0; v < 16; v++) {
            acc[v] = vzero();
            mask[v] = lane_mask(width - c0, v);
        }
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * ld + c0;
#pragma GCC unroll 16
            for (int v = 0; v < 16; v++) acc[v] = vadd(acc[v], vload_mask(xi + VW * v, mask[v]));
        }
#pragma GCC unroll 16
        for (int v = 0; v < 16; v++) vstore_mask(sum + c0 + VW * v, mask[v], acc[v]);
    }
}

// nn_exp_nonpositive, lane by lane.
ALWAYS_INLINE KERNEL_TARGET vec exp_nonpositive(vec x) {
    vec n = vsub(vadd(vmul(x, vset1(NN_LOG2E)), vset1(NN_ROUND_MAGIC)), vset1(NN_ROUND_MAGIC));
    vec r = vsub(x, vmul(n, vset1(NN_LN2_HI)));
    r = vsub(r, vmul(n, vset1(NN_LN2_LO)));
    vec p;
    NN_EXP_POLY(p, r, vmul, vadd, vset1);
    p = vadd(vadd(vmul(vmul(p, r), r), r), vset1(1.0f));
    // p * 2^e without overflow in the exponent field, as the scalar code splits it.
    veci e = vcvtt_i(n);
    vmask tiny = ilt(e, iset1(-126));
    p = vselect(tiny, vmul(p, vset1(0x1p-24f)), p);
    e = iadd_where(e, tiny, iset1(24));
    vec y = vmul(p, vbits_f(islli(iadd(e, iset1(127)), 23)));
    // Outside the range: NaN stays NaN, the rest underflows to 0 (as the scalar branch).
    y = vselect(vcmp(x, vset1(NN_EXP_MIN), _CMP_GE_OQ), y, vzero());
    return vselect(vcmp(x, x, _CMP_UNORD_Q), x, y);
}

// nn_log_ge1, lane by lane.
ALWAYS_INLINE KERNEL_TARGET vec log_ge1(vec x) {
    veci bits = vbits_i(x);
    veci e = isub(iand(isrli(bits, 23), iset1(0xff)), iset1(126));
    vec m = vbits_f(ior(iand(bits, iset1(0x807fffff)), iset1(126 << 23)));
    vmask low = vcmp(m, vset1(NN_SQRT_HALF), _CMP_LT_OQ);
    e = iadd_where(e, low, iset1(-1));
    m = vselect(low, vsub(vadd(m, m), vset1(1.0f)), vsub(m, vset1(1.0f)));
    vec z = vmul(m, m);
    vec y;
    NN_LOG_POLY(y, m, vmul, vadd, vset1);
    y = vmul(vmul(y, m), z);
    vec fe = vcvt_f(e);
    y = vadd(y, vmul(fe, vset1(NN_LN2_LO)));
    y = vadd(y, vmul(vset1(-0.5f), z));
    vec out = vadd(vadd(m, y), vmul(fe, vset1(NN_LN2_HI)));
    // NaN and +inf propagate (the scalar early return).
    return vselect(vcmp(x, vset1(NN_FLOAT_MAX), _CMP_LE_OQ), out, x);
}

// softmax_xent_row (nn.c) for rows [0, rows) of z and dz, rows <= VW, n < 2^26, row i in
// lane i. Column j of the block is a gather; dz may alias z: column j is read before it is
// written, and z[label] is read before any write, as in the scalar code.
KERNEL_TARGET void SOFTMAX_XENT_ROWS(float *dz, float *row_loss, const float *z,
                                     const int32_t *labels, int64_t rows, int64_t n,
                                     float grad_scale, float smoothing) {
    const vmask live = lane_mask(rows, 0);
    const veci row_start = imullo(iota(), iset1((int)n));
    const veci at_label = iadd(row_start, iload_mask(labels, live));
    const float spread = smoothing / (float)n;

    vec zmax = vgather(z, row_start, live), zsum = zmax;
    for (int64_t j = 1; j < n; j++) {
        vec zj = vgather(z + j, row_start, live);
        zmax = vselect(vcmp(zj, zmax, _CMP_GT_OQ), zj, zmax);
        zsum = vadd(zsum, zj);
    }
    vec z_label = vgather(z, at_label, live);
    vec sum = vzero();
    for (int64_t j = 0; j < n; j++) {
        vec e = exp_nonpositive(vsub(vgather(z + j, row_start, live), zmax));
        if (dz != NULL) vscatter(dz + j, row_start, live, e);
        sum = vadd(sum, e);
    }
    vec target = smoothing == 0.0f ? vsub(zmax, z_label)
                                   : vsub(vsub(zmax, vmul(vset1(1.0f - smoothing), z_label)),
                                          vmul(vset1(spread), zsum));
    vstore_mask(row_loss, live, vadd(target, log_ge1(sum)));
    if (dz != NULL) {
        vec inv = vdiv(vset1(grad_scale), sum), off = vset1(grad_scale * spread);
        for (int64_t j = 0; j < n; j++)
            vscatter(dz + j, row_start, live,
                     vsub(vmul(vgather(dz + j, row_start, live), inv), off));
        const float hit = grad_scale * (1.0f - smoothing);
        for (int64_t r = 0; r < rows; r++) dz[r * n + labels[r]] -= hit;
    }
}
