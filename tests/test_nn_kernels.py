# tests/test_nn_kernels.py: the non-GEMM C kernels (csrc/nn.c) through their Python
# wrappers (mnistc/_kernels.pyx), each against a float64 NumPy reference (reference.py)
# on every CPU target and at 1..3 threads, plus the wrappers' argument checks. The GEMM
# and the MLP driver are tested elsewhere (test_gemm.py, test_mlp_kernel.py).
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistc import _kernels as K

import reference as ref
from conftest import supported_isas

EPS32 = ref.EPS32
F32 = np.float32

# Awkward shapes: 1, primes, the 10 classes and 784(+1) pixels, around the column-sum
# block of 64, and one row or one column.
SHAPES = [
    (1, 1),
    (1, 785),
    (785, 1),
    (7, 10),
    (10, 7),
    (33, 100),
    (100, 33),
    (100, 785),
    (785, 10),
    (3, 63),
    (5, 64),
    (2, 65),
    (9, 129),
]
# Big enough that every kernel splits it over threads (2^15 elements per thread).
BIG = (3000, 785)


def rng(*key):
    return np.random.default_rng(list(key))


def randn(shape, *key, scale=1.0):
    return (rng(*key).standard_normal(shape) * scale).astype(F32)


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def same_bits(a, b):
    """Identical float32 bit patterns (NaNs included, -0 distinguished)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------ bias_relu


@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_exact(isa, n_threads, shape):
    m, n = shape
    x = randn(shape, 1, m, n)
    b = randn(n, 2, m, n)
    # One float32 addition and a comparison: bit-exact against NumPy in float32.
    np.testing.assert_array_equal(K.bias_relu(x, b, n_threads=n_threads), np.maximum(x + b, F32(0)))


def test_bias_relu_nan_and_alias(isa, n_threads):
    x = randn((7, 10), 3)
    x[0, 0] = np.nan
    x[3, 4] = -np.inf
    x[5, 9] = np.inf
    b = randn(10, 4)
    b[7] = np.nan
    want = np.maximum(x + b, F32(0))  # np.maximum propagates NaN, as the contract does
    got = K.bias_relu(x, b, n_threads=n_threads)
    assert np.isnan(got[0, 0]) and np.isnan(got[:, 7]).all()
    assert got[3, 4] == 0 and got[5, 9] == np.inf
    np.testing.assert_array_equal(got, want)
    out = K.bias_relu(x, b, out=x, n_threads=n_threads)  # in place
    assert out is x
    np.testing.assert_array_equal(x, want)


def test_bias_relu_out_given(isa):
    x, b = randn((4, 5), 5), randn(5, 6)
    out = np.full((4, 5), np.nan, F32)
    assert K.bias_relu(x, b, out=out) is out
    np.testing.assert_array_equal(out, np.maximum(x + b, F32(0)))


# --------------------------------------------------------------------- relu_backward


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_exact(isa, n_threads, shape):
    m, n = shape
    dy = randn(shape, 7, m, n)
    y = np.maximum(randn(shape, 8, m, n), F32(0))  # a ReLU output: about half exact zeros
    got = K.relu_backward(dy, y, n_threads=n_threads)
    np.testing.assert_array_equal(got, np.where(y > 0, dy, F32(0)))
    assert (got[y == 0] == 0).all()


def test_relu_backward_special_values_and_alias(isa, n_threads):
    dy = randn((6, 9), 9)
    dy[1, 1] = np.nan
    dy[2, 2] = np.nan
    y = np.abs(randn((6, 9), 10))
    y[1, 1] = 0.0  # NaN gradient of a dead unit is dropped
    y[3, 3] = -0.0
    y[4, 4] = np.nan  # NaN activation: not > 0, so no gradient flows
    y[5, 5] = np.inf
    want = np.where(y > 0, dy, F32(0))
    np.testing.assert_array_equal(K.relu_backward(dy, y, n_threads=n_threads), want)
    assert np.isnan(want[2, 2]) and want[1, 1] == 0 and want[4, 4] == 0
    out = K.relu_backward(dy, y, out=dy, n_threads=n_threads)
    assert out is dy
    np.testing.assert_array_equal(dy, want)


# ----------------------------------------------------------------------- colsum_axpy


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (-0.01, 1.0), (2.5, -0.5)])
def test_colsum_axpy(isa, n_threads, shape, alpha, beta):
    m, n = shape
    x = randn(shape, 11, m, n, scale=3.0)
    out0 = randn(n, 12, m, n)
    out = out0.copy()
    got = K.colsum_axpy(x, out=out, alpha=alpha, beta=beta, n_threads=n_threads)
    assert got is out
    want = beta * out0.astype(np.float64) + alpha * x.astype(np.float64).sum(axis=0)
    # Tolerance: |alpha| (m + 1) eps32 sum_i |x_ij| + 2 eps32 |beta out_j| (reference.py).
    ref.assert_close(
        got,
        want,
        ref.colsum_tolerance(x, out0, alpha, beta),
        f"colsum_axpy {shape} alpha={alpha} beta={beta}",
    )


def test_colsum_axpy_exact_order(isa, n_threads):
    # The contract fixes the order (down i, float32): a sequential float32 loop in
    # NumPy gives the same bits.
    x = randn((37, 130), 13, scale=100.0)
    want = np.zeros(130, F32)
    for row in x:
        want = want + row
    np.testing.assert_array_equal(K.colsum_axpy(x, n_threads=n_threads), want)


def test_colsum_axpy_beta0_ignores_out(isa, n_threads):
    x = randn((10, 70), 14)
    out = np.full(70, np.nan, F32)
    K.colsum_axpy(x, out=out, alpha=1.0, beta=0.0, n_threads=n_threads)
    assert np.isfinite(out).all()
    ref.assert_close(
        out,
        x.astype(np.float64).sum(axis=0),
        ref.colsum_tolerance(x),
        "colsum_axpy beta=0 over NaN",
    )
    assert K.colsum_axpy(x).shape == (70,)  # out=None allocates (beta must be 0)


def test_colsum_axpy_empty_rows(isa):
    out = np.array([1.0, -2.0], F32)
    K.colsum_axpy(np.zeros((0, 2), F32), out=out, alpha=3.0, beta=0.5)
    np.testing.assert_array_equal(out, [0.5, -1.0])
    K.colsum_axpy(np.zeros((0, 2), F32), out=out, alpha=3.0, beta=0.0)
    np.testing.assert_array_equal(out, [0.0, 0.0])


# ---------------------------------------------------------------------- softmax_xent


def check_softmax_xent(logits, labels, grad_scale=None, n_threads=None, what=""):
    """The wrapper's (mean, row_loss, dlogits) against reference.softmax_xent, within
    reference.softmax_xent_tolerance (derived there)."""
    mean, row, dz = K.softmax_xent(logits, labels, grad_scale=grad_scale, n_threads=n_threads)
    want_mean, want_row, want_dz = ref.softmax_xent(logits, labels, grad_scale)
    row_tol, dz_tol = ref.softmax_xent_tolerance(logits, labels, grad_scale)
    assert row.dtype == F32 and dz.dtype == F32 and isinstance(mean, float)
    ref.assert_close(row, want_row, row_tol, f"row loss {what}")
    ref.assert_close(dz, want_dz, dz_tol, f"dlogits {what}")
    # The mean is the double sum of the float32 row losses divided by m.
    assert mean == pytest.approx(row.astype(np.float64).sum() / len(row), rel=1e-15, abs=0)
    ref.assert_close(mean, want_mean, row_tol.mean(), f"mean loss {what}")
    return mean, row, dz


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spread", [1.0, 30.0])
def test_softmax_xent_vs_reference(isa, n_threads, shape, spread):
    m, n = shape
    z = randn(shape, 20, m, n, scale=spread)
    y = rng(21, m, n).integers(0, n, m)
    _, row, dz = check_softmax_xent(z, y, n_threads=n_threads, what=f"{shape} x{spread}")
    # Properties: loss >= 0; each dlogits row sums to ~0; softmax rows sum to 1.
    assert (row >= 0).all()
    g = 1.0 / m
    _, dz_tol = ref.softmax_xent_tolerance(z, y)
    row_sums = dz.astype(np.float64).sum(axis=1)
    assert (np.abs(row_sums) <= dz_tol.sum(axis=1)).all(), np.abs(row_sums).max()
    onehot = np.zeros((m, n))
    onehot[np.arange(m), y] = 1.0
    prob = dz.astype(np.float64) / g + onehot
    assert (prob >= -dz_tol / g).all()  # the label's p - g may round just below -g
    assert np.allclose(prob.sum(axis=1), 1.0, rtol=0, atol=(n + 4) * EPS32)


@pytest.mark.parametrize("grad_scale", [None, 1.0, 0.01, -3.0])
def test_softmax_xent_grad_scale(isa, grad_scale):
    z = randn((9, 10), 22, scale=4.0)
    y = rng(23).integers(0, 10, 9)
    _, _, dz = check_softmax_xent(z, y, grad_scale, what=f"grad_scale={grad_scale}")
    if grad_scale is None:  # default: 1/m, the gradient of the mean loss
        _, _, dz1 = K.softmax_xent(z, y, grad_scale=1.0 / 9)
        np.testing.assert_array_equal(dz, dz1)


def test_softmax_xent_shift_invariance(isa, n_threads):
    z = randn((50, 10), 24, scale=5.0)
    y = rng(25).integers(0, 10, 50)
    _, row, _ = K.softmax_xent(z, y, n_threads=n_threads)
    row_tol, _ = ref.softmax_xent_tolerance(z, y)
    for c in [-1e4, -37.5, 0.25, 100.0, 1e4]:
        shifted = (z + F32(c)).astype(F32)
        _, row_c, _ = check_softmax_xent(shifted, y, n_threads=n_threads, what=f"z+{c}")
        # Rounding z + c moves every logit by <= u |z + c|, so the loss by <= 2u max|z+c|.
        tol_c, _ = ref.softmax_xent_tolerance(shifted, y)
        input_rounding = EPS32 * np.abs(shifted).max(axis=1)
        ref.assert_close(row_c, row, row_tol + tol_c + input_rounding, f"shift by {c}")


@pytest.mark.parametrize("big", [1e4, 1.5e38, 3e38])
def test_softmax_xent_huge_logits(isa, big):
    z = np.array([[big, -big], [-big, big], [big, 0.0], [0.0, -big], [big, big], [big, -big]], F32)
    y = np.array([0, 1, 1, 0, 0, 1])
    mean, row, dz = K.softmax_xent(z, y)
    assert np.isfinite(dz).all()
    true_loss = ref.softmax_xent(z, y)[1]  # float64: 0, 0, big, 0, log 2, 2 big
    fits = true_loss <= np.finfo(F32).max
    assert np.isfinite(row[fits]).all(), row
    row_tol, dz_tol = ref.softmax_xent_tolerance(z, y)
    ref.assert_close(row[fits], true_loss[fits], row_tol[fits], f"row loss at {big}")
    ref.assert_close(dz, ref.softmax_xent(z, y)[2], dz_tol, f"dlogits at {big}")
    # A true loss beyond float32's range (2 * 3e38) overflows to +inf, never NaN. (The
    # header says "finite for any finite logits": only true while max - z_y fits.)
    assert (row[~fits] == np.inf).all()
    assert not np.isnan(mean)


def test_softmax_xent_nan_propagates(isa):
    z = randn((4, 10), 26)
    z[1, 3] = np.nan  # a non-target logit
    z[2, 0] = np.nan  # the first column (the running max starts there)
    z[3, 5] = np.nan  # the target itself
    y = np.array([2, 2, 4, 5])
    mean, row, dz = K.softmax_xent(z, y)
    assert np.isfinite(row[0]) and np.isnan(row[1:]).all()
    assert np.isnan(mean)
    assert np.isfinite(dz[0]).all() and np.isnan(dz[1:]).all()


def test_softmax_xent_inf_logit(isa):
    # +inf - inf = NaN around the maximum: a NaN loss, like a NaN logit (divergence shows).
    z = np.array([[np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]], F32)
    _, row, dz = K.softmax_xent(z, np.array([1, 2]))
    assert np.isnan(row[0])
    # -inf is an ordinary "probability 0" logit.
    want = ref.softmax_xent(z[1:], [2], grad_scale=0.5)
    assert row[1] == pytest.approx(want[1][0], rel=4 * EPS32)
    np.testing.assert_allclose(dz[1], want[2][0], rtol=8 * EPS32, atol=0)


def test_softmax_xent_forward_only_and_alias(isa, n_threads):
    z = randn((33, 10), 27, scale=3.0)
    y = rng(28).integers(0, 10, 33)
    mean, row, dz = K.softmax_xent(z, y, n_threads=n_threads)
    mean2, row2, none = K.softmax_xent(z, y, gradient=False, n_threads=n_threads)
    assert none is None and mean2 == mean and same_bits(row2, row)
    z2 = z.copy()
    mean3, row3, dz3 = K.softmax_xent(z2, y, dlogits=z2, n_threads=n_threads)
    assert dz3 is z2
    assert mean3 == mean and same_bits(row3, row) and same_bits(dz3, dz)
    out = np.full_like(z, np.nan)
    assert K.softmax_xent(z, y, dlogits=out)[2] is out and same_bits(out, dz)


@pytest.mark.parametrize("bad", [-1, 10, 255])
def test_softmax_xent_label_out_of_range(isa, bad):
    z = randn((5, 10), 29)
    y = np.array([1, 2, 3, bad, 4])
    dz = np.full_like(z, 7.0)
    with pytest.raises(ValueError, match=rf"labels\[3\] = {bad} is outside \[0, 10\)"):
        K.softmax_xent(z, y, dlogits=dz)
    assert (dz == 7.0).all()  # nothing written


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64]
)
def test_softmax_xent_label_dtypes(isa, dtype):
    z = randn((6, 10), 30)
    y = np.array([0, 9, 3, 3, 7, 1])
    want = K.softmax_xent(z, y.astype(np.int32))
    got = K.softmax_xent(z, y.astype(dtype))
    assert got[0] == want[0] and same_bits(got[1], want[1]) and same_bits(got[2], want[2])


def test_softmax_xent_huge_label_values(isa):
    z = randn((2, 10), 31)
    with pytest.raises(ValueError, match="labels"):
        K.softmax_xent(z, np.array([0, 2**31], np.int64))
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        K.softmax_xent(z, np.array([0, 2**32 - 1], np.uint32))


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 10), (7, 10), (16, 10), (17, 3), (33, 100), (100, 10), (40, 785)]
)
def test_softmax_xent_same_bits_on_every_isa(shape):
    """AVX-512 runs 16 rows per vector (nn_avx512.c), the other targets one row at a time
    (nn.c): the same operations in the same order, so the same bits, with NaN, +-inf,
    underflow into subnormals, huge logits and dlogits aliasing the logits."""
    m, n = shape
    z = randn(shape, 77, m, n, scale=30.0)
    specials = [np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -90.0, -100.0, -102.9, -103.5]
    for i in range(min(m, 12)):
        z[i, (i * 7) % n] = specials[i % len(specials)]
    if m > 12 and n > 3:
        z[12, :4] = [0.0, -87.5, -95.0, -102.5]  # exp(x) in the subnormal range
    labels = rng(78, m, n).integers(0, n, m).astype(np.int32)
    previous = K.isa_active()
    results = {}
    try:
        for name in supported_isas():
            K.set_isa(name)
            aliased = z.copy()
            results[name] = (
                K.softmax_xent(z, labels, grad_scale=0.01),
                K.softmax_xent(z, labels, gradient=False)[:2],
                K.softmax_xent(aliased, labels, dlogits=aliased)[:2] + (aliased,),
            )
    finally:
        K.set_isa(previous)
    first, want = next(iter(results.items()))
    for name, got in results.items():
        for got_part, want_part in zip(got, want):
            for g, w in zip(got_part, want_part):
                assert same_bits(g, w), f"{name} differs from {first}"


# ------------------------------------------ accuracy of nn.c's own exp and log


def ulps(got, want):
    """|got - want| in units of float32's ulp at want (float64 want)."""
    want = np.asarray(want, np.float64)
    return np.abs(np.asarray(got, np.float64) - want) / np.spacing(np.abs(want).astype(F32))


def test_own_exp_accuracy(isa):
    # A row [0, d], label 0, grad_scale 1: s = 1 + exp(d). Below d = -17.4, exp(d) <
    # 2^-25 so s rounds to exactly 1 and dlogits[:, 1] = exp(d) * (1 / 1) IS nn.c's exp.
    # The Cephes polynomial is good to about 1 ulp; we assert <= 1 ulp where the result
    # is a normal float and <= 1 subnormal ulp (2^-149) below -87.3.
    d = np.linspace(-103.0, -17.5, 100001).astype(F32)
    z = np.stack([np.zeros_like(d), d], axis=1)
    _, _, dz = K.softmax_xent(z, np.zeros(len(d), np.int32), grad_scale=1.0)
    want = np.exp(d.astype(np.float64))
    normal = want >= np.finfo(F32).tiny
    err = ulps(dz[normal, 1], want[normal])
    assert err.max() <= 1.0, f"exp: max {err.max():.3f} ulp at d = {d[normal][err.argmax()]}"
    sub_err = np.abs(dz[~normal, 1] - want[~normal]) / 2.0**-149
    assert sub_err.max() <= 1.0, sub_err.max()


def test_own_exp_accuracy_through_softmax(isa):
    # d in [-17.5, 0]: dlogits[:, 1] = exp(d) / (1 + exp(d)), i.e. exp, a sum, a division
    # and a product: 1 ulp for exp + 3 half-ulp roundings = 2.5 ulp.
    d = np.linspace(-17.5, 0.0, 100001).astype(F32)
    z = np.stack([np.zeros_like(d), d], axis=1)
    _, row, dz = K.softmax_xent(z, np.zeros(len(d), np.int32), grad_scale=1.0)
    e = np.exp(d.astype(np.float64))
    err = ulps(dz[:, 1], e / (1.0 + e))
    assert err.max() <= 2.5, f"max {err.max():.3f} ulp at d = {d[err.argmax()]}"
    # The row loss is log(1 + exp(d)), computed as log of the rounded sum (not log1p):
    # absolute error <= u (the sum's rounding) + 1 ulp of the result.
    loss = np.log1p(e)
    bound = EPS32 / 2 + np.spacing(loss.astype(F32))
    assert (np.abs(row - loss) <= bound).all(), np.max(np.abs(row - loss) / bound)


def test_own_log_accuracy(isa):
    # Rows of c zeros and (W - c) logits of -1e30 (exp underflows to exactly 0): the sum
    # is exactly c, so row loss = 0 + log(c) - 0 is nn.c's log on the integer c.
    # Cephes' log is good to about 1 ulp; we assert <= 1 ulp.
    counts = np.unique(np.r_[np.arange(1, 2049), rng(32).integers(2049, 2**24, 60), 2**24])
    z = np.full((len(counts), 2048), -1e30, F32)
    for i, c in enumerate(counts[counts <= 2048]):
        z[i, :c] = 0.0
    small = counts <= 2048
    _, row, _ = K.softmax_xent(z[small], np.zeros(small.sum(), np.int32), gradient=False)
    assert row[0] == 0.0  # log(1)
    err = ulps(row[1:], np.log(counts[small][1:].astype(np.float64)))
    assert err.max() <= 1.0, f"log: {err.max():.3f} ulp"
    # Larger sums: a row of width c of zeros, one row per call.
    for c in counts[~small][:6]:
        _, row, _ = K.softmax_xent(
            np.zeros((1, int(c)), F32), np.zeros(1, np.int32), gradient=False
        )
        # The float32 sum of c ones is exact up to 2^24.
        assert ulps(row, np.log(float(c))).max() <= 1.0, c


# --------------------------------------------------------------------------- in_top_k


@pytest.mark.parametrize("shape", [(1, 1), (7, 10), (100, 10), (33, 100), (10, 785)])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_in_top_k_vs_reference(isa, n_threads, shape, k):
    m, n = shape
    # Few distinct values, so ties are common.
    z = rng(40, m, n).integers(-3, 4, shape).astype(F32)
    y = rng(41, m, n).integers(0, n, m)
    n_correct, correct = K.in_top_k(z, y, k, n_threads=n_threads)
    want = ref.in_top_k(z, y, k)
    assert correct.dtype == bool
    np.testing.assert_array_equal(correct, want)
    assert n_correct == want.sum()


def test_in_top_k_ties_are_hits(isa):
    z = np.full((5, 10), 0.5, F32)
    y = np.arange(5)
    assert K.in_top_k(z, y, 1)[0] == 5
    z = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]], F32)
    assert K.in_top_k(z, np.array([2]), 1)[0] == 1  # tied at the top
    assert K.in_top_k(z, np.array([0]), 3)[0] == 0  # three strictly greater
    assert K.in_top_k(z, np.array([0]), 4)[0] == 1


def test_in_top_k_non_finite_targets(isa):
    # A NaN, +inf or -inf target logit is never a hit (TensorFlow's rule), whatever k;
    # non-finite non-target logits are just compared (NaN is never "greater").
    z = np.array(
        [
            [np.nan, 1, 2],
            [np.inf, 1, 2],
            [-np.inf, 1, 2],
            [0, np.nan, 2],
            [0, np.inf, -1],
            [5, -np.inf, 1],
        ],
        F32,
    )
    y = np.array([0, 0, 0, 2, 0, 0])
    for k in [1, 3, 10]:
        n_correct, correct = K.in_top_k(z, y, k)
        want = [False, False, False, True, k >= 2, True]
        np.testing.assert_array_equal(correct, want, err_msg=f"k={k}")
        np.testing.assert_array_equal(correct, ref.in_top_k(z, y, k))


def test_in_top_k_k_larger_than_n(isa):
    z = randn((20, 10), 42)
    assert K.in_top_k(z, rng(43).integers(0, 10, 20), 11)[0] == 20
    assert K.in_top_k(z, rng(43).integers(0, 10, 20), 10**12)[0] == 20


@pytest.mark.parametrize("bad", [-1, 10])
def test_in_top_k_label_out_of_range(isa, bad):
    with pytest.raises(ValueError, match=rf"labels\[2\] = {bad} is outside \[0, 10\)"):
        K.in_top_k(randn((4, 10), 44), np.array([0, 1, bad, 3]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        K.in_top_k(randn((4, 10), 44), np.array([0, 1, 2, 3]), 0)


# ---------------------------------------------------------------------- gather_scale


@pytest.mark.parametrize(
    "rows, d, batch", [(1, 1, 1), (10, 784, 7), (300, 33, 100), (50, 785, 200)]
)
@pytest.mark.parametrize("scale", [1.0 / 255.0, 1.0, 0.5])
def test_gather_scale_exact(isa, n_threads, rows, d, batch, scale):
    images = rng(50, rows, d).integers(0, 256, (rows, d), dtype=np.uint8)
    labels = rng(51, rows).integers(0, 256, rows, dtype=np.uint8)  # any uint8 value
    idx = rng(52, batch).integers(0, rows, batch).astype(np.int32)
    x, y = K.gather_scale(images, labels, idx, scale, n_threads=n_threads)
    assert x.dtype == F32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, images[idx].astype(F32) * F32(scale))
    np.testing.assert_array_equal(y, labels[idx].astype(np.int32))


def test_gather_scale_default_scale_and_empty(isa):
    images = np.arange(6, dtype=np.uint8).reshape(2, 3) * 51
    x, y = K.gather_scale(images, np.array([3, 4], np.uint8), np.array([1, 0, 1], np.int32))
    np.testing.assert_array_equal(x, images[[1, 0, 1]].astype(F32) * F32(1 / 255))
    np.testing.assert_array_equal(y, [4, 3, 4])
    x, y = K.gather_scale(images, np.array([3, 4], np.uint8), np.zeros(0, np.int32))
    assert x.shape == (0, 3) and y.shape == (0,)


@pytest.mark.parametrize("bad", [-1, 5, 2**31 - 1])
def test_gather_scale_index_out_of_range(isa, bad):
    images = np.zeros((5, 4), np.uint8)
    with pytest.raises(ValueError, match=rf"idx\[1\] = {bad} is outside \[0, 5\)"):
        K.gather_scale(images, np.zeros(5, np.uint8), np.array([0, bad], np.int32))


# ------------------------------------ big problems: threaded, and bit-identical


@pytest.fixture(scope="module")
def big_inputs():
    m, n = BIG
    z = randn(BIG, 60, scale=4.0)
    z[::97, ::13] = 0.0
    return dict(
        x=z,
        bias=randn(n, 61),
        y=np.maximum(randn(BIG, 62), F32(0)),
        labels=rng(63).integers(0, n, m).astype(np.int32),
        images=rng(64).integers(0, 256, BIG, dtype=np.uint8),
    )


def run_all_kernels(inp, n_threads):
    x, labels = inp["x"], inp["labels"]
    out = {}
    out["bias_relu"] = K.bias_relu(x, inp["bias"], n_threads=n_threads)
    out["relu_backward"] = K.relu_backward(x, inp["y"], n_threads=n_threads)
    acc = inp["bias"].copy()
    out["colsum"] = K.colsum_axpy(x, out=acc, alpha=-0.01, beta=1.0, n_threads=n_threads)
    mean, row, dz = K.softmax_xent(x, labels, n_threads=n_threads)
    out["mean"], out["row"], out["dz"] = np.float64(mean), row, dz
    hits, out["correct"] = K.in_top_k(x, labels, 5, n_threads=n_threads)
    out["hits"] = np.int64(hits)
    idx = rng(65).integers(0, BIG[0], BIG[0]).astype(np.int32)
    out["gx"], out["gy"] = K.gather_scale(
        inp["images"], inp["images"][:, 0].copy(), idx, n_threads=n_threads
    )
    return out


@pytest.fixture(scope="module")
def big_single_thread(big_inputs):
    previous = K.isa_active()
    K.set_isa("generic")
    out = run_all_kernels(big_inputs, 1)
    K.set_isa(previous)
    return out


def test_big_bit_identical_across_threads(isa, n_threads, big_inputs, big_single_thread):
    """Work is split over rows/column blocks, never a reduction: the same bits at any
    thread count (and these kernels have no ISA-specific code, so on any target)."""
    got = run_all_kernels(big_inputs, n_threads)
    for name, want in big_single_thread.items():
        assert same_bits(got[name], want), f"{name} differs at {n_threads} threads on {isa}"


def test_big_against_reference(big_inputs, big_single_thread):
    inp, out = big_inputs, big_single_thread
    x, labels = inp["x"], inp["labels"]
    np.testing.assert_array_equal(out["bias_relu"], np.maximum(x + inp["bias"], F32(0)))
    np.testing.assert_array_equal(out["relu_backward"], np.where(inp["y"] > 0, x, F32(0)))
    want = inp["bias"] - 0.01 * x.astype(np.float64).sum(axis=0)
    ref.assert_close(
        out["colsum"], want, ref.colsum_tolerance(x, inp["bias"], -0.01, 1.0), "colsum big"
    )
    row_tol, dz_tol = ref.softmax_xent_tolerance(x, labels)
    _, want_row, want_dz = ref.softmax_xent(x, labels)
    ref.assert_close(out["row"], want_row, row_tol, "row loss big")
    ref.assert_close(out["dz"], want_dz, dz_tol, "dlogits big")
    np.testing.assert_array_equal(out["correct"], ref.in_top_k(x, labels, 5))


def test_default_threads(big_inputs, big_single_thread):
    """n_threads=None and 0 mean mnc_max_threads(); negative is refused."""
    x = big_inputs["x"]
    for nt in (None, 0):
        assert same_bits(
            K.bias_relu(x, big_inputs["bias"], n_threads=nt), big_single_thread["bias_relu"]
        )
    with pytest.raises(ValueError, match="n_threads"):
        K.bias_relu(x, big_inputs["bias"], n_threads=-1)


# ---------------------------------------------------------- wrapper argument checks

f32 = lambda *shape: np.ones(shape, F32)  # noqa: E731
i32 = lambda *shape: np.zeros(shape, np.int32)  # noqa: E731
u8 = lambda *shape: np.zeros(shape, np.uint8)  # noqa: E731
noncontig = lambda a: np.repeat(a, 2, axis=-1)[..., ::2]  # noqa: E731


def unaligned(a):
    """An array of a's shape and dtype (itemsize > 1) whose data is 1 byte off alignment."""
    return np.frombuffer(np.zeros(a.nbytes + 1, np.uint8)[1:].data, a.dtype).reshape(a.shape)


# (call, exception, argument name the message must contain)
BAD_CALLS = [
    (lambda: K.bias_relu(f32(3, 4).astype(np.float64), f32(4)), TypeError, "x"),
    (lambda: K.bias_relu([[1.0]], f32(1)), TypeError, "x"),
    (lambda: K.bias_relu(f32(3, 4), f32(4).astype(np.float16)), TypeError, "bias"),
    (lambda: K.bias_relu(f32(3, 4), f32(5)), ValueError, "bias"),
    (lambda: K.bias_relu(f32(3, 4), f32(1, 4)), ValueError, "bias"),
    (lambda: K.bias_relu(f32(12), f32(4)), ValueError, "x"),
    (lambda: K.bias_relu(noncontig(f32(3, 4)), f32(4)), ValueError, "x"),
    (lambda: K.bias_relu(f32(4, 3).T, f32(4)), ValueError, "x"),
    (lambda: K.bias_relu(f32(3, 4), f32(4), out=f32(4, 3)), ValueError, "out"),
    (lambda: K.bias_relu(f32(3, 4), f32(4), out=noncontig(f32(3, 4))), ValueError, "out"),
    (lambda: K.bias_relu(f32(3, 4), f32(4), out=i32(3, 4)), TypeError, "out"),
    (lambda: K.relu_backward(f32(3, 4), f32(3, 5)), ValueError, "y"),
    (lambda: K.relu_backward(f32(3, 4), i32(3, 4)), TypeError, "y"),
    (lambda: K.relu_backward(noncontig(f32(3, 4)), f32(3, 4)), ValueError, "dy"),
    (lambda: K.relu_backward(f32(3, 4), f32(3, 4), out=f32(3, 4, 1)), ValueError, "out"),
    (lambda: K.colsum_axpy(f32(3, 4), out=f32(3)), ValueError, "out"),
    (lambda: K.colsum_axpy(f32(3, 4), out=noncontig(f32(4))), ValueError, "out"),
    (lambda: K.colsum_axpy(f32(3, 4), beta=1.0), ValueError, "out"),
    (lambda: K.colsum_axpy(f32(3, 4).astype(np.float64)), TypeError, "x"),
    (lambda: K.colsum_axpy(f32(3, 4, 1)), ValueError, "x"),
    (lambda: K.softmax_xent(f32(3, 4).astype(np.float64), i32(3)), TypeError, "logits"),
    (lambda: K.softmax_xent(f32(3, 4), f32(3)), TypeError, "labels"),
    (lambda: K.softmax_xent(f32(3, 4), i32(3).astype(bool)), TypeError, "labels"),
    (lambda: K.softmax_xent(f32(3, 4), [0, 1, 2]), TypeError, "labels"),
    (lambda: K.softmax_xent(f32(3, 4), i32(4)), ValueError, "labels"),
    (lambda: K.softmax_xent(f32(3, 4), i32(3, 1)), ValueError, "labels"),
    (lambda: K.softmax_xent(f32(0, 4), i32(0)), ValueError, "logits"),
    (lambda: K.softmax_xent(f32(3, 0), i32(3)), ValueError, "logits"),
    (lambda: K.softmax_xent(f32(3, 4).T, i32(4)), ValueError, "logits"),
    (lambda: K.softmax_xent(f32(3, 4), i32(3), dlogits=f32(4, 3)), ValueError, "dlogits"),
    (lambda: K.in_top_k(f32(3, 4), i32(2)), ValueError, "labels"),
    (lambda: K.in_top_k(f32(3), i32(3)), ValueError, "logits"),
    (lambda: K.in_top_k(f32(3, 4).astype(np.float16), i32(3)), TypeError, "logits"),
    (lambda: K.gather_scale(u8(5, 4).astype(np.int8), u8(5), i32(2)), TypeError, "images"),
    (lambda: K.gather_scale(u8(5, 4), u8(5).astype(np.int32), i32(2)), TypeError, "labels"),
    (lambda: K.gather_scale(u8(5, 4), u8(6), i32(2)), ValueError, "labels"),
    (lambda: K.gather_scale(u8(5, 4), u8(5), i32(2).astype(np.int64)), TypeError, "idx"),
    (lambda: K.gather_scale(u8(5, 4), u8(5), i32(2, 1)), ValueError, "idx"),
    (lambda: K.gather_scale(noncontig(u8(5, 4)), u8(5), i32(2)), ValueError, "images"),
    (lambda: K.gather_scale(u8(5, 4), u8(5), noncontig(i32(2))), ValueError, "idx"),
    (lambda: K.gather_scale(u8(5, 4), u8(5), unaligned(i32(2))), ValueError, "idx"),
    (lambda: K.gather_scale(u8(5, 4), u8(5), i32(2).astype(">i4")), TypeError, "idx"),
    (lambda: K.bias_relu(unaligned(f32(3, 4)), f32(4)), ValueError, "x"),
    (lambda: K.bias_relu(f32(3, 4), f32(4), out=unaligned(f32(3, 4))), ValueError, "out"),
    (lambda: K.relu_backward(f32(3, 4), f32(3, 4).astype(">f4")), TypeError, "y"),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)))
def test_wrapper_rejects_bad_arguments(case):
    call, exc, name = BAD_CALLS[case]
    with pytest.raises(exc) as info:
        call()
    assert name in str(info.value), str(info.value)


def test_wrappers_accept_readonly_inputs(isa):
    """Inputs are const in the C API: read-only arrays (np.load(mmap_mode='r'), frozen
    buffers) must be accepted, and give the same result as writeable copies."""
    x, b = randn((5, 7), 70), randn(7, 71)
    y = np.maximum(randn((5, 7), 72), F32(0))
    labels = np.array([0, 6, 2, 3, 1], np.int32)
    images = rng(73).integers(0, 256, (5, 7), dtype=np.uint8)
    idx = np.array([4, 0], np.int32)
    calls = {
        "bias_relu": lambda f: K.bias_relu(f(x), f(b)),
        "relu_backward": lambda f: K.relu_backward(f(x), f(y)),
        "colsum_axpy": lambda f: K.colsum_axpy(f(x)),
        "softmax_xent": lambda f: K.softmax_xent(f(x), f(labels))[1],
        "in_top_k": lambda f: K.in_top_k(f(x), f(labels), 2)[1],
        "gather_scale": lambda f: K.gather_scale(f(images), f(images[:, 0].copy()), f(idx))[0],
    }
    failures = []
    for name, call in calls.items():
        try:
            got = call(readonly)
        except ValueError as e:
            failures.append(f"{name}: {e}")
            continue
        assert same_bits(got, call(np.copy)), name
    assert not failures, "read-only inputs refused: " + "; ".join(failures)


# A hypothesis sweep: random shapes, dtypes and layouts fed to every wrapper either work
# or raise TypeError/ValueError — never another exception, never a crash.

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8, np.bool_]


@st.composite
def arrays(draw, max_dims=3, max_side=6):
    ndim = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    rng_ = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = np.asarray((rng_.standard_normal(shape) * 8).astype(dtype))
    layout = draw(st.sampled_from(["c", "c", "c", "f", "strided", "readonly", "list"]))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "readonly":
        a.flags.writeable = False
    elif layout == "list":
        return a.tolist()
    return a


def plausible(draw, like_shape, dtype, *, valid=None):
    """An argument of about the right shape and dtype, exactly right half of the time.
    Integer arguments (labels, indices) take values in range(*valid), or one beyond."""
    kind = draw(st.sampled_from(["random", "perturbed", "right", "right"]))
    if kind == "random":
        return draw(arrays())
    shape = like_shape
    if kind == "perturbed":
        shape = tuple(max(0, s + draw(st.sampled_from([0, -1, 1]))) for s in like_shape)
    if valid is None:
        return np.ones(shape, dtype)
    lo, hi = valid
    if draw(st.booleans()):
        lo, hi = lo - 1, hi + 1
    gen = np.random.default_rng(draw(st.integers(0, 99)))
    return gen.integers(lo, max(hi, lo + 1), shape).astype(dtype)


@st.composite
def wrapper_calls(draw):
    name = draw(
        st.sampled_from(
            [
                "bias_relu",
                "relu_backward",
                "colsum_axpy",
                "softmax_xent",
                "in_top_k",
                "gather_scale",
            ]
        )
    )
    m, n = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    nt = draw(st.sampled_from([None, 0, 1, 2, 3]))
    x = plausible(draw, (m, n), F32)
    kw = {}
    if name == "bias_relu":
        args = (x, plausible(draw, (n,), F32))
        kw = dict(out=draw(st.sampled_from([None, None, "x"])))
        if kw["out"] == "x":
            kw["out"] = x
    elif name == "relu_backward":
        args = (x, plausible(draw, (m, n), F32))
    elif name == "colsum_axpy":
        args = (x,)
        kw = dict(
            out=draw(st.sampled_from([None, plausible(draw, (n,), F32)])),
            alpha=draw(st.sampled_from([1.0, -0.5])),
            beta=draw(st.sampled_from([0.0, 1.0])),
        )
    elif name == "softmax_xent":
        args = (x, plausible(draw, (m,), np.int64, valid=(0, n)))
        kw = dict(
            gradient=draw(st.booleans()),
            dlogits=draw(st.sampled_from([None, plausible(draw, (m, n), F32)])),
        )
    elif name == "in_top_k":
        args = (x, plausible(draw, (m,), np.int32, valid=(0, n)), draw(st.integers(-1, 8)))
    else:
        rows = draw(st.integers(0, 5))
        args = (
            plausible(draw, (rows, n), np.uint8),
            plausible(draw, (rows,), np.uint8),
            plausible(draw, (m,), np.int32, valid=(0, rows)),
        )
    kw["n_threads"] = nt
    return name, args, kw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wrapper_calls())
def test_wrappers_fuzz_work_or_raise(call):
    name, args, kw = call
    try:
        result = getattr(K, name)(*args, **kw)
    except (TypeError, ValueError):
        return
    # It worked: then the inputs were valid and the output has the right shape.
    x = args[0]
    if name in ("bias_relu", "relu_backward"):
        assert result.shape == x.shape and result.dtype == F32
    elif name == "colsum_axpy":
        assert result.shape == (x.shape[1],)
    elif name == "softmax_xent":
        assert result[1].shape == (x.shape[0],)
        assert (result[1] >= 0).all()
    elif name == "in_top_k":
        assert 0 <= result[0] <= x.shape[0]
    else:
        assert result[0].shape == (args[2].shape[0], args[0].shape[1])


# ----------------------------------------------------------------------------------
# Label smoothing: targets (1 - eps) onehot + eps / n (torch's label_smoothing)


@pytest.mark.parametrize("shape", [(1, 10), (17, 10), (100, 10), (5, 3), (33, 1000)])
@pytest.mark.parametrize("eps", [0.1, 0.5, 0.95])
def test_softmax_xent_label_smoothing_vs_reference(isa, n_threads, shape, eps):
    m, n = shape
    z = randn(shape, 40, m, n, scale=6.0)
    y = rng(41, m, n).integers(0, n, m)
    mean, row, dz = K.softmax_xent(z, y, label_smoothing=eps, n_threads=n_threads)
    want_mean, want_row, want_dz = ref.softmax_xent(z, y, label_smoothing=eps)
    row_tol, dz_tol = ref.softmax_xent_tolerance(z, y, label_smoothing=eps)
    ref.assert_close(row, want_row, row_tol, f"smoothed row loss {shape} eps={eps}")
    ref.assert_close(dz, want_dz, dz_tol, f"smoothed dlogits {shape} eps={eps}")
    assert mean == pytest.approx(row.astype(np.float64).sum() / m, rel=1e-15, abs=0)
    # Each gradient row sums to ~0 (softmax and targets both sum to 1).
    assert np.abs(dz.astype(np.float64).sum(axis=1)).max() <= 4 * n * EPS32 / m


def test_softmax_xent_zero_smoothing_is_the_plain_kernel(isa):
    z = randn((37, 10), 42, scale=9.0)
    y = rng(43).integers(0, 10, 37)
    plain = K.softmax_xent(z, y)
    zero = K.softmax_xent(z, y, label_smoothing=0.0)
    assert plain[0] == zero[0] and same_bits(plain[1], zero[1]) and same_bits(plain[2], zero[2])


def test_softmax_xent_smoothing_same_bits_on_every_target():
    """The SIMD rows (AVX2, AVX-512) follow the scalar rounding exactly (mnistc.h)."""
    z = randn((45, 10), 44, scale=7.0)
    y = rng(45).integers(0, 10, 45)
    previous = K.isa_active()
    try:
        results = []
        for name in supported_isas():
            K.set_isa(name)
            results.append(K.softmax_xent(z, y, label_smoothing=0.1))
    finally:
        K.set_isa(previous)
    for mean, row, dz in results[1:]:
        assert mean == results[0][0] and same_bits(row, results[0][1])
        assert same_bits(dz, results[0][2])


def test_softmax_xent_smoothing_matches_torch():
    torch = pytest.importorskip("torch")
    z = randn((64, 10), 46, scale=3.0)
    y = rng(47).integers(0, 10, 64)
    mean, row, dz = K.softmax_xent(z, y, label_smoothing=0.1)
    logits = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    theirs = torch.nn.functional.cross_entropy(logits, torch.tensor(y), label_smoothing=0.1)
    theirs.backward()
    assert mean == pytest.approx(theirs.item(), rel=1e-6)
    np.testing.assert_allclose(dz, logits.grad.numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "bad, error",
    [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError), ("0.1", TypeError)],
)
def test_softmax_xent_bad_label_smoothing(bad, error):
    z = randn((3, 10), 48)
    with pytest.raises(error, match="label_smoothing"):
        K.softmax_xent(z, np.array([1, 2, 3]), label_smoothing=bad)
