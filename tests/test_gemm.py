"""SGEMM (mnc_sgemm_f32 through mnistc._kernels.sgemm) against the float64 reference, on
every CPU target this machine supports, plus the rounding contract of mnistc.h: bits that
do not depend on the thread count, and AVX2 = AVX-512 bit for bit.

Shapes are a covering set, not the full cube: every size of {1, 2, 7, 15, 16, 17, 31, 32,
33, 100, 128, 785} appears as m, n and k, next to the register tiles' MR±1 (generic 4,
AVX2 6, AVX-512 12) and NR±1 (8, 16, 32), and k around MNC_GEMM_KC and past it, so
that edge tiles, partial panels and the reduction blocking are all exercised."""

import os

import numpy as np
import pytest

from mnistc import _kernels

import reference
from conftest import supported_isas

KC = _kernels.GEMM_KC  # MNC_GEMM_KC in csrc/mnistc.h

SHAPES = [  # (m, n, k)
    (1, 1, 1),
    (2, 7, 15),
    (7, 16, 17),
    (15, 17, 31),
    (16, 31, 32),
    (17, 32, 33),
    (31, 33, 100),
    (32, 100, 128),
    (33, 128, 7),
    (100, 15, 785),
    (128, 2, 16),
    (785, 1, 2),
    (3, 785, 1),
    (4, 9, 5),
    (5, 8, 3),
    (6, 15, 9),
    (11, 64, 13),
    (12, 65, 12),
    (13, 47, 11),
    (25, 96, 40),
    (24, 10, 100),
    (1, 785, 33),
    (1, 400, 128),
    (1, 17, 7),  # m = 1: the row kernels (B, or B transposed)
    (1, 100, 6),
    (1, 2100, 9),  # m = 1, wider than a register block: passes of 1024 columns
    (128, 130, 40),
    (256, 200, 9),  # TN/TT: lda % 128 == 0 -> A tiles copied k-major
    (40, 300, 50),  # a small B whose rows are >= 1 KiB apart: packed, not read in place
    (601, 130, 300),  # TN/TT: A rows 2404 B apart, depth 300 -> A tiles copied k-major
]
BIG_K_SHAPES = [
    (13, 33, KC - 1),
    (5, 40, KC),
    (7, 17, KC + 1),
    (3, 9, 2 * KC + 52),
    (1, 300, KC + 7),
    (29, 130, KC),
    (13, 100, 2 * KC),
]  # NN/NT: rows 4 KiB apart, A tiles packed
SCALES = [(1.0, 0.0), (-0.01, 1.0), (0.5, 2.0)]  # (alpha, beta)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
TRANS_IDS = ["NN", "TN", "NT", "TT"]

# The model's GEMMs, (m, n, k, trans_a, trans_b, epilogue): forward with bias+ReLU (NN),
# input gradient with the ReLU mask (NT), fused weight update (TN, alpha=-lr, beta=1).
MODEL_GEMMS = [
    (100, 128, 784, False, False, "bias_relu"),
    (100, 32, 128, False, False, "bias_relu"),
    (100, 10, 32, False, False, "bias"),
    (100, 128, 32, False, True, "mask"),
    (100, 32, 10, False, True, "mask"),
    (784, 128, 100, True, False, "update"),
    (128, 32, 100, True, False, "update"),
    (32, 10, 100, True, False, "update"),
    (1, 128, 784, False, False, "bias_relu"),
    (784, 128, 1, True, False, "update"),
    (1, 1024, 784, False, False, "bias_relu"),
    (1, 10, 1024, False, False, "bias"),
]


def operands(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    return a, b, c


def check(a, b, c0, trans_a, trans_b, alpha, beta, what, n_threads=1, **epilogue):
    """Runs sgemm on a copy of c0 and compares with the reference; returns the result."""
    c = c0.copy()
    out = _kernels.sgemm(
        a,
        b,
        c,
        trans_a=trans_a,
        trans_b=trans_b,
        alpha=alpha,
        beta=beta,
        n_threads=n_threads,
        **epilogue,
    )
    assert out is c
    expected = reference.gemm(a, b, c0, trans_a, trans_b, alpha, beta, **epilogue)
    bound = reference.gemm_tolerance(a, b, c0, trans_a, trans_b, alpha, beta, epilogue.get("bias"))
    reference.assert_close(out, expected, bound, what)
    return out


@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_against_reference(isa, trans):
    rng = np.random.default_rng(1)
    trans_a, trans_b = trans
    for m, n, k in SHAPES:
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        for alpha, beta in SCALES:
            check(
                a,
                b,
                c0,
                trans_a,
                trans_b,
                alpha,
                beta,
                f"{isa} {m}x{n}x{k} trans={trans} alpha={alpha} beta={beta}",
            )


@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_reduction_longer_than_kc(isa, trans):
    rng = np.random.default_rng(2)
    trans_a, trans_b = trans
    for m, n, k in BIG_K_SHAPES:
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        for alpha, beta in SCALES:
            check(
                a,
                b,
                c0,
                trans_a,
                trans_b,
                alpha,
                beta,
                f"{isa} {m}x{n}x{k} trans={trans} alpha={alpha} beta={beta}",
            )


def test_reduction_blocks_round_like_the_contract():
    """k > KC: each KC block is its own chain, folded in with beta = 1 — so a call equals
    a first call on the first block followed by a beta=1 call on the rest (on FMA targets,
    where both sides round identically)."""
    if "avx2" not in supported_isas():
        pytest.skip("needs an FMA target")
    rng = np.random.default_rng(3)
    m, n, k = 9, 37, KC + 300
    a, b, c0 = operands(rng, m, n, k, False, False)
    whole = _kernels.sgemm(a, b, c0.copy(), alpha=0.5, beta=2.0)
    split = _kernels.sgemm(
        np.ascontiguousarray(a[:, :KC]),
        np.ascontiguousarray(b[:KC]),
        c0.copy(),
        alpha=0.5,
        beta=2.0,
    )
    split = _kernels.sgemm(
        np.ascontiguousarray(a[:, KC:]), np.ascontiguousarray(b[KC:]), split, alpha=0.5, beta=1.0
    )
    np.testing.assert_array_equal(whole, split)


@pytest.mark.parametrize("trans_b", [False, True], ids=["NN", "NT"])
def test_sub_blocks_keep_one_chain(isa, trans_b):
    """With beta = 0 a KC block may be cut into sub-blocks whose partial sums wait in C
    (gemm.c, k > 256): the chain, and every bit, must be the uncut one. Each row of C
    equals the m = 1 calls, which the row kernels compute in one piece (FMA targets):
    B untransposed and B transposed (transposed in registers as it is read)."""
    if isa == "generic":
        pytest.skip("the row kernel is an FMA target's")
    rng = np.random.default_rng(11)
    for m, n, k in [
        (30, 70, 257),
        (25, 64, 300),
        (13, 100, 784),
        (40, 33, KC),
        (12, 32, 2 * KC + 300),
    ]:
        a, b, _ = operands(rng, m, n, k, False, trans_b)
        mask = np.maximum(rng.standard_normal((m, n)), 0).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        b_nn = np.ascontiguousarray(b.T) if trans_b else b
        b_nt = b if trans_b else np.ascontiguousarray(b.T)
        for kwargs in (dict(alpha=0.5), dict(relu_mask=mask), dict(bias=bias, relu=True)):
            whole = run_on(isa, a, b, np.zeros((m, n), np.float32), trans_b=trans_b, **kwargs)
            for i in range(m):
                row_kwargs = dict(kwargs)
                if "relu_mask" in kwargs:
                    row_kwargs["relu_mask"] = np.ascontiguousarray(mask[i : i + 1])
                for b_row, row_trans_b in ((b_nn, False), (b_nt, True)):
                    row = run_on(
                        isa,
                        np.ascontiguousarray(a[i : i + 1]),
                        b_row,
                        np.zeros((1, n), np.float32),
                        trans_b=row_trans_b,
                        **row_kwargs,
                    )
                    np.testing.assert_array_equal(
                        whole[i : i + 1],
                        row,
                        err_msg=f"{isa} {m}x{n}x{k} row {i} NT={row_trans_b} {list(kwargs)}",
                    )


@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_epilogues(isa, trans):
    rng = np.random.default_rng(4)
    trans_a, trans_b = trans
    for m, n, k in [
        (1, 1, 1),
        (17, 33, 31),
        (100, 10, 32),
        (13, 128, 785),
        (2, 7, 1025),
        (1, 300, 50),
    ]:
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        bias = rng.standard_normal(n).astype(np.float32)
        mask = np.maximum(rng.standard_normal((m, n)), 0).astype(np.float32)
        for alpha, beta in SCALES:
            what = f"{isa} {m}x{n}x{k} trans={trans} alpha={alpha} beta={beta}"
            check(a, b, c0, trans_a, trans_b, alpha, beta, what + " bias", bias=bias)
            check(a, b, c0, trans_a, trans_b, alpha, beta, what + " relu", relu=True)
            out = check(
                a, b, c0, trans_a, trans_b, alpha, beta, what + " bias+relu", bias=bias, relu=True
            )
            assert (out >= 0).all()
            out = check(a, b, c0, trans_a, trans_b, alpha, beta, what + " mask", relu_mask=mask)
            assert (out[mask <= 0] == 0).all()
            check(
                a,
                b,
                c0,
                trans_a,
                trans_b,
                alpha,
                beta,
                what + " all three",
                bias=bias,
                relu=True,
                relu_mask=mask,
            )


def test_epilogues_let_nan_through(isa):
    rng = np.random.default_rng(5)
    a, b, _ = operands(rng, 20, 40, 50, False, False)
    a[3, 7] = np.nan
    mask = np.ones((20, 40), np.float32)
    out = _kernels.sgemm(a, b, bias=np.full(40, -1e6, np.float32), relu=True, relu_mask=mask)
    assert np.isnan(out[3]).all()
    assert not np.isnan(np.delete(out, 3, axis=0)).any()


@pytest.mark.parametrize("m, n, k", [(33, 40, 7), (13, 33, 600), (1, 40, 9)])
@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_fused_epilogue_is_the_separate_steps_bit_for_bit(isa, trans, m, n, k):
    """The epilogue runs in the microkernel's registers (or, for m == 1, as a pass), and
    must give exactly what mnistc.h's steps give on the plain GEMM's output: + bias, then
    v < 0 ? 0 : v (NaN and -0 pass), then mask <= 0 ? 0 : v (a NaN mask keeps v), also
    after sub-blocks of a deep reduction (k = 600) and for edge tiles."""
    rng = np.random.default_rng(m * 1000 + k)
    a, b, _ = operands(rng, m, n, k, *trans)
    (a.T if trans[0] else a)[0] = 0.0  # row 0 of C is alpha * (+0) = -0 below
    if m > 1:
        (a.T if trans[0] else a)[-1, 0] = np.nan  # and the last row all NaN
    bias = rng.standard_normal(n).astype(np.float32)
    bias[::3] = -0.0
    mask = rng.standard_normal((m, n)).astype(np.float32)
    mask[:, 1::5] = np.nan
    mask[:, 2::7] = 0.0
    plain = _kernels.sgemm(a, b, trans_a=trans[0], trans_b=trans[1], alpha=-1.0)
    for kwargs in (
        dict(bias=bias),
        dict(bias=bias, relu=True),
        dict(relu_mask=mask),
        dict(bias=bias, relu=True, relu_mask=mask),
    ):
        want = plain.copy()
        if "bias" in kwargs:
            want = want + bias
        if kwargs.get("relu"):
            want = np.where(want < 0, np.float32(0), want)
        if "relu_mask" in kwargs:
            want = np.where(mask <= 0, np.float32(0), want)
        got = _kernels.sgemm(a, b, trans_a=trans[0], trans_b=trans[1], alpha=-1.0, **kwargs)
        np.testing.assert_array_equal(
            got.view(np.uint32), want.view(np.uint32), err_msg=f"{sorted(kwargs)}"
        )
    assert np.signbit(plain[0]).all()  # the -0 case was exercised


@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_beta_zero_never_reads_c(isa, trans):
    rng = np.random.default_rng(6)
    trans_a, trans_b = trans
    for m, n, k in [(1, 1, 1), (13, 33, 17), (100, 128, 784), (25, 10, 1100), (1, 500, 30)]:
        a, b, _ = operands(rng, m, n, k, trans_a, trans_b)
        c = np.full((m, n), np.nan, np.float32)
        out = _kernels.sgemm(a, b, c, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=0.0)
        assert np.isfinite(out).all()
        bound = reference.gemm_tolerance(a, b, None, trans_a, trans_b, 0.5)
        reference.assert_close(
            out,
            reference.gemm(a, b, None, trans_a, trans_b, 0.5),
            bound,
            f"{isa} {m}x{n}x{k} trans={trans}",
        )


def guarded(values, pad=64):
    """values copied into the middle of a NaN-filled buffer: a contiguous array whose
    neighbours are NaN, so a read past its ends poisons the result and a write past its
    ends shows up in the guard bands."""
    buf = np.full(values.size + 2 * pad, np.nan, np.float32)
    view = buf[pad : pad + values.size].reshape(values.shape)
    view[...] = values
    return buf, view


def ending_at_a_page_guard(values):
    """values copied into memory that ends exactly where an inaccessible page begins, so
    a read past the array's end faults (NaN guard bands cannot show a read into lanes the
    kernel discards). Returns (view, keepalive)."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    size = values.nbytes
    pages = -(-size // page) + 1
    region = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + (pages - 1) * page, page, 0) == 0  # PROT_NONE
    offset = (pages - 1) * page - size
    view = np.frombuffer(region, np.float32, values.size, offset).reshape(values.shape)
    view[...] = values
    return view, region


@pytest.mark.skipif(not hasattr(os, "sysconf"), reason="needs mmap and mprotect (POSIX)")
@pytest.mark.parametrize("n", [1, 10, 16, 17, 33])
def test_partial_b_panel_read_in_place_stays_inside_b(isa, n):
    """A last B panel narrower than a vector is read in place on AVX-512, by masked
    loads: B's last row ends at an inaccessible page, and the product is the reference's."""
    rng = np.random.default_rng(13)
    a = rng.standard_normal((30, 40)).astype(np.float32)
    b, keep = ending_at_a_page_guard(rng.standard_normal((40, n)).astype(np.float32))
    got = _kernels.sgemm(a, b)
    reference.assert_close(got, reference.gemm(a, b), reference.gemm_tolerance(a, b), f"n={n}")
    del b, keep  # the view before the mapping it points into


@pytest.mark.parametrize("k", [256, 272, 1024])
def test_row_kernel_bits_do_not_depend_on_where_b_starts(isa, k):
    """m = 1 with B transposed cuts its first block of k short so that the others start on
    a cache line of B's rows (k long, ldb = k a multiple of 16): B at every float offset
    within a line gives the same bits, and the reference's values."""
    rng = np.random.default_rng(14)
    a = rng.standard_normal((1, k)).astype(np.float32)
    b = rng.standard_normal((48, k)).astype(np.float32)
    results = []
    for offset in range(16):
        buf = np.zeros(b.size + 32, np.float32)
        start = (-buf.ctypes.data // 4) % 16 + offset
        moved = buf[start : start + b.size].reshape(b.shape)
        moved[...] = b
        assert moved.ctypes.data % 64 == 4 * offset
        results.append(_kernels.sgemm(a, moved, trans_b=True))
    for offset, got in enumerate(results):
        np.testing.assert_array_equal(got, results[0], err_msg=f"{isa}: B at +{4 * offset} B")
    bound = reference.gemm_tolerance(a, b, trans_b=True)
    reference.assert_close(results[0], reference.gemm(a, b, trans_b=True), bound, isa)


def test_row_kernel_every_width_of_its_register_blocks(isa):
    """m = 1, B untransposed, every width up to one past the widest register block: the
    blocks of whole vectors and the tails of 1 to 8 vectors, the last whole or partial,
    give the reference's values, and each column the bits of the same column alone (its
    chain does not depend on the columns beside it)."""
    rng = np.random.default_rng(15)
    k = 19
    a = rng.standard_normal((1, k)).astype(np.float32)
    b_all = rng.standard_normal((k, 24 * 16 + 1)).astype(np.float32)
    c_all = rng.standard_normal((1, b_all.shape[1])).astype(np.float32)
    for n in range(1, b_all.shape[1] + 1):
        b = np.ascontiguousarray(b_all[:, :n])
        got = check(a, b, c_all[:, :n].copy(), False, False, 0.5, 2.0, f"{isa} 1x{n}x{k}")
        last = _kernels.sgemm(
            a, np.ascontiguousarray(b[:, -1:]), c_all[:, n - 1 : n].copy(), alpha=0.5, beta=2.0
        )
        np.testing.assert_array_equal(got[:, -1:], last, err_msg=f"{isa} 1x{n}x{k}")


@pytest.mark.parametrize("trans", TRANSPOSES, ids=TRANS_IDS)
def test_no_access_outside_the_operands(isa, trans):
    rng = np.random.default_rng(9)
    trans_a, trans_b = trans
    for m, n, k in [
        (1, 1, 1),
        (13, 33, 17),
        (7, 10, 100),
        (25, 47, 1030),
        (12, 32, 5),
        (1, 401, 20),
    ]:
        a0, b0, c0 = operands(rng, m, n, k, trans_a, trans_b)
        (_, a), (_, b), (cbuf, c) = guarded(a0), guarded(b0), guarded(c0)
        (_, mask) = guarded(np.maximum(c0, 0))
        out = _kernels.sgemm(
            a,
            b,
            c,
            trans_a=trans_a,
            trans_b=trans_b,
            alpha=0.5,
            beta=2.0,
            bias=guarded(c0[0])[1],
            relu_mask=mask,
        )
        assert out is c and np.isfinite(out).all(), f"{isa} {m}x{n}x{k}: read outside"
        assert np.isnan(cbuf[:64]).all() and np.isnan(cbuf[-64:]).all(), (
            f"{isa} {m}x{n}x{k}: wrote outside c"
        )


def test_a_rows_4kib_apart_through_the_c_api(isa):
    """An untransposed A whose rows are 4 KiB apart (lda = 1024) is copied to k-major form
    VW k at a time (AVX2, AVX-512). Through the C API, with k below lda and not a multiple of
    16, every edge of that copy runs; each product must be bit for bit the one of a
    contiguous copy of A (lda = k, read in place): the same chains."""
    import ctypes

    lib = ctypes.CDLL(_kernels.__file__)
    sgemm = lib.mnc_sgemm_f32
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    sgemm.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        i64,
        i64,
        i64,
        ctypes.c_float,
        ptr,
        i64,
        ptr,
        i64,
        ctypes.c_float,
        ptr,
        i64,
        ptr,
        ctypes.c_int,
    ]
    sgemm.restype = None
    rng = np.random.default_rng(11)
    lda = 1024
    for m, n, k, trans_b in [
        (29, 130, 1000, False),
        (13, 200, 17, True),
        (12, 128, 1, False),
        (25, 100, 1024, True),
    ]:
        a_rows = rng.standard_normal((m, lda)).astype(np.float32)
        a = np.ascontiguousarray(a_rows[:, :k])
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        for alpha, beta in SCALES:
            expected = _kernels.sgemm(a, b, c0.copy(), trans_b=trans_b, alpha=alpha, beta=beta)
            c = c0.copy()
            sgemm(
                0,
                int(trans_b),
                m,
                n,
                k,
                alpha,
                a_rows.ctypes.data,
                lda,
                b.ctypes.data,
                b.shape[1],
                beta,
                c.ctypes.data,
                n,
                None,
                1,
            )
            np.testing.assert_array_equal(c, expected, err_msg=f"{isa} {m}x{n}x{k} {beta=}")


def test_without_a_packing_buffer_the_same_bits(isa):
    """When the packing buffer cannot be allocated, gemm.c computes element by element
    (gemm_unbuffered) with the same chains, so the same bits as the tiled path. The test
    hook mnc_gemm_test_pack_limit caps the buffer to force that path and counts it."""
    import ctypes

    limit = ctypes.CDLL(_kernels.__file__).mnc_gemm_test_pack_limit
    limit.argtypes, limit.restype = [ctypes.c_size_t], ctypes.c_size_t
    no_limit = ctypes.c_size_t(-1).value
    rng = np.random.default_rng(12)
    # Each needs the buffer: a partial panel (except on AVX-512, which reads a last panel
    # of up to 16 columns in place), a transposed B, an A tile copy.
    in_place = 2 if isa == "avx512" else 0  # the first case's two calls
    cases = []
    for m, n, k, trans_a, trans_b in [
        (13, 33, 17, False, False),  # 33 = 32 + 1 column
        (7, 40, KC + 80, False, True),
        (128, 64, 50, True, False),
        (30, 100, 300, True, True),
        (601, 130, 300, True, False),  # A rows far apart: copied (see SHAPES)
    ]:
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        kwargs = dict(
            trans_a=trans_a,
            trans_b=trans_b,
            bias=rng.standard_normal(n).astype(np.float32),
            relu=True,
            relu_mask=np.maximum(rng.standard_normal((m, n)), 0).astype(np.float32),
        )
        for alpha, beta, n_threads in [(1.0, 0.0, 1), (0.5, 2.0, 2)]:
            cases.append((a, b, c0, dict(kwargs, alpha=alpha, beta=beta, n_threads=n_threads)))
    tiled = [_kernels.sgemm(a, b, c0.copy(), **kwargs) for a, b, c0, kwargs in cases]
    limit(0)
    try:
        unbuffered = [_kernels.sgemm(a, b, c0.copy(), **kwargs) for a, b, c0, kwargs in cases]
    finally:
        calls = limit(no_limit)
    assert calls == len(cases) - in_place
    for (a, b, _, kwargs), want, got in zip(cases, tiled, unbuffered):
        np.testing.assert_array_equal(got, want, err_msg=f"{isa} {a.shape} {b.shape} {kwargs}")


def test_empty_reduction(isa):
    a = np.zeros((5, 0), np.float32)
    b = np.zeros((0, 7), np.float32)
    c = np.arange(35, dtype=np.float32).reshape(5, 7)
    out = _kernels.sgemm(a, b, c.copy(), alpha=3.0, beta=2.0, bias=np.ones(7, np.float32))
    np.testing.assert_array_equal(out, 2 * c + 1)
    out = _kernels.sgemm(a, b, np.full((5, 7), np.nan, np.float32))
    np.testing.assert_array_equal(out, np.zeros((5, 7), np.float32))


# Big enough that every case runs on more than one thread, with edges in m and n.
THREADED = [
    (256, 784, 1024, False, False),
    (784, 256, 1024, True, False),
    (256, 1000, 1024, False, True),
    (250, 130, 2100, True, True),
    (100, 128, 784, False, False),
    (784, 128, 100, True, False),
    (1, 1000, 1100, False, False),
    (1, 1024, 784, True, False),
    (1, 1000, 1100, False, True),
    (1, 1024, 784, True, True),
    (256, 300, 1024, True, False),
    (784, 128, 256, True, False),  # the input layer's dW at batch 256: A tiles copied
]


@pytest.mark.parametrize("m,n,k,trans_a,trans_b", THREADED)
def test_bits_do_not_depend_on_thread_count(isa, m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(7)
    a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
    bias = rng.standard_normal(n).astype(np.float32)
    kwargs = dict(trans_a=trans_a, trans_b=trans_b, alpha=-0.01, beta=1.0, bias=bias, relu=True)
    one = _kernels.sgemm(a, b, c0.copy(), n_threads=1, **kwargs)
    for n_threads in (2, 3):
        many = _kernels.sgemm(a, b, c0.copy(), n_threads=n_threads, **kwargs)
        np.testing.assert_array_equal(many, one, err_msg=f"{isa} n_threads={n_threads}")


@pytest.mark.parametrize(
    "m,n,k,trans_b", [(256, 128, 32, True), (128, 100, 128, True), (200, 96, 64, False)]
)
def test_c_off_a_cache_line_splits_rows_with_the_same_bits(isa, m, n, k, trans_b):
    """A C whose panel boundaries are not on 64-byte lines (a start off a line, as NumPy's
    16-byte alignment allows, or a row of 100 floats), which a team splits by rows rather
    than column panels (gemm.c): at every offset and thread count the bits of one thread
    on an aligned C, and the reference's values."""
    rng = np.random.default_rng(16)
    a, b, c0 = operands(rng, m, n, k, False, trans_b)
    bias = rng.standard_normal(n).astype(np.float32)
    kwargs = dict(trans_b=trans_b, alpha=0.5, beta=2.0, bias=bias)
    one = check(a, b, c0, False, trans_b, 0.5, 2.0, f"{isa} {m}x{n}x{k}", bias=bias)
    for offset in (0, 1, 4, 13):  # floats past a line
        buf = np.zeros(m * n + 32, np.float32)
        start = (-buf.ctypes.data // 4) % 16 + offset
        c = buf[start : start + m * n].reshape(m, n)
        for n_threads in (1, 2, 3):
            c[...] = c0
            _kernels.sgemm(a, b, c, n_threads=n_threads, **kwargs)
            np.testing.assert_array_equal(
                c, one, err_msg=f"{isa} C +{offset} floats, {n_threads} threads"
            )


def run_on(isa, *args, **kwargs):
    previous = _kernels.isa_active()
    _kernels.set_isa(isa)
    try:
        return _kernels.sgemm(*args, **kwargs)
    finally:
        _kernels.set_isa(previous)


def cross_target_cases():
    rng = np.random.default_rng(8)
    for m, n, k, trans_a, trans_b, kind in MODEL_GEMMS:
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        kwargs = dict(trans_a=trans_a, trans_b=trans_b)
        if kind == "bias_relu":
            kwargs.update(bias=rng.standard_normal(n).astype(np.float32), relu=True)
        elif kind == "bias":
            kwargs.update(bias=rng.standard_normal(n).astype(np.float32))
        elif kind == "mask":
            kwargs.update(relu_mask=np.maximum(rng.standard_normal((m, n)), 0).astype(np.float32))
        else:
            kwargs.update(alpha=-0.1, beta=1.0)
        yield f"model {m}x{n}x{k} {kind}", a, b, c0, kwargs
    for i, (m, n, k) in enumerate(SHAPES + BIG_K_SHAPES):
        trans_a, trans_b = TRANSPOSES[i % 4]
        a, b, c0 = operands(rng, m, n, k, trans_a, trans_b)
        alpha, beta = SCALES[i % len(SCALES)]
        yield (
            f"{m}x{n}x{k} trans={trans_a, trans_b}",
            a,
            b,
            c0,
            dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta),
        )


def test_avx2_and_avx512_give_identical_bits():
    if "avx512" not in supported_isas():
        pytest.skip("this CPU has no AVX-512")
    for what, a, b, c0, kwargs in cross_target_cases():
        avx2 = run_on("avx2", a, b, c0.copy(), **kwargs)
        avx512 = run_on("avx512", a, b, c0.copy(), **kwargs)
        np.testing.assert_array_equal(avx512, avx2, err_msg=what)


def test_generic_agrees_with_fma_targets():
    best = supported_isas()[-1]
    if best == "generic":
        pytest.skip("no FMA target on this CPU")
    for what, a, b, c0, kwargs in cross_target_cases():
        generic = run_on("generic", a, b, c0.copy(), **kwargs)
        fma = run_on(best, a, b, c0.copy(), **kwargs)
        bound = 2 * reference.gemm_tolerance(
            a,
            b,
            c0,
            kwargs.get("trans_a", False),
            kwargs.get("trans_b", False),
            kwargs.get("alpha", 1.0),
            kwargs.get("beta", 0.0),
            kwargs.get("bias"),
        )
        reference.assert_close(generic, fma, bound, what)


# ---------------------------------------------------------------------------------
# The wrapper's argument checks (mnistc/_kernels.pyx)


def f32(*shape):
    return np.ones(shape, np.float32)


def misaligned(a):
    """A C-contiguous float32 copy of a whose data starts 1 byte past a 4-byte boundary."""
    out = np.frombuffer(np.zeros(a.nbytes + 1, np.uint8)[1:].data, np.float32)
    return out.reshape(a.shape)


@pytest.mark.parametrize(
    "call,error,name",
    [
        (lambda: _kernels.sgemm(f32(2, 3).tolist(), f32(3, 4)), TypeError, "a"),
        (lambda: _kernels.sgemm(f32(2, 3), np.ones((3, 4))), TypeError, "b"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), np.ones((2, 4))), TypeError, "c"),
        (lambda: _kernels.sgemm(f32(2, 3, 1), f32(3, 4)), ValueError, "a"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3)), ValueError, "b"),
        (lambda: _kernels.sgemm(f32(3, 2).T, f32(3, 4)), ValueError, "a"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(4, 3).T), ValueError, "b"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), f32(4, 2).T), ValueError, "c"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(2, 4)), ValueError, "inner dimensions"),
        (
            lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), trans_a=True),
            ValueError,
            "inner dimensions",
        ),
        (
            lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), trans_b=True),
            ValueError,
            "inner dimensions",
        ),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), f32(4, 2)), ValueError, "c"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), beta=1.0), ValueError, "beta"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), bias=f32(3)), ValueError, "bias"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), bias=f32(1, 4)), ValueError, "bias"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), bias=np.ones(4)), TypeError, "bias"),
        (
            lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), relu_mask=f32(4, 2)),
            ValueError,
            "relu_mask",
        ),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), relu_mask=f32(8)), ValueError, "relu_mask"),
        (
            lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), relu_mask=f32(4, 2).T),
            ValueError,
            "relu_mask",
        ),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), n_threads=-1), ValueError, "n_threads"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), n_threads="2"), TypeError, "n_threads"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), n_threads=2**40), ValueError, "n_threads"),
        (lambda: _kernels.sgemm(f32(2, 3).astype(">f4"), f32(3, 4)), TypeError, "a"),
        (lambda: _kernels.sgemm(f32(2, 3), misaligned(f32(3, 4))), ValueError, "b"),
        (lambda: _kernels.sgemm(f32(2, 3), f32(3, 4), bias=misaligned(f32(4))), ValueError, "bias"),
    ],
)
def test_wrapper_rejects_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_wrapper_returns_new_array_and_writes_given_c():
    a, b = f32(2, 3), f32(3, 4)
    out = _kernels.sgemm(a, b)
    assert out.shape == (2, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.full((2, 4), 3, np.float32))
    c = np.zeros((2, 4), np.float32)
    assert _kernels.sgemm(a, b, c) is c
    np.testing.assert_array_equal(c, out)
