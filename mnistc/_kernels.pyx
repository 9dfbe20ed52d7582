# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin bindings to mnistc's C kernels (csrc/mnistc.h).

Each wrapper checks dtype, shape and contiguity and raises TypeError/ValueError naming
the argument at fault; the arithmetic is all in C, called with the GIL released. This
module holds no model logic: mnistc.model drives it.
"""
import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t


cdef extern from "mnistc.h" nogil:
    ctypedef enum mnc_isa:
        MNC_ISA_GENERIC
        MNC_ISA_AVX2
        MNC_ISA_AVX512
    mnc_isa mnc_isa_supported()
    mnc_isa mnc_isa_active()
    mnc_isa mnc_isa_set(mnc_isa isa)
    const char *mnc_isa_name(mnc_isa isa)
    int mnc_openmp_enabled()
    int mnc_max_threads()

    ctypedef struct mnc_epilogue:
        const float *bias
        int relu
        const float *relu_mask
        int64_t ld_mask
    void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, const float *b,
                       int64_t ldb, float beta, float *c, int64_t ldc,
                       const mnc_epilogue *epilogue, int n_threads)

    void mnc_bias_relu_f32(float *y, const float *x, const float *bias,
                           int64_t m, int64_t n, int n_threads)
    void mnc_relu_backward_f32(float *dx, const float *dy, const float *y,
                               int64_t m, int64_t n, int n_threads)
    void mnc_colsum_axpy_f32(float *out, const float *x, int64_t m, int64_t n,
                             float alpha, float beta, int n_threads)
    int mnc_softmax_xent_f32(float *dlogits, float *row_loss, double *mean_loss,
                             const float *logits, const int32_t *labels,
                             int64_t m, int64_t n, float grad_scale, int n_threads)
    int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, int64_t k,
                         int n_threads)
    void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images,
                             const uint8_t *labels, const int32_t *idx,
                             int64_t m, int64_t d, float scale, int n_threads)

    ctypedef struct mnc_mlp:
        int n_layers
        const int64_t *sizes
        float **weights
        float **biases
    ctypedef struct mnc_mlp_buffers:
        int64_t batch
        float *input
        int32_t *labels
        float **activations
        float **grads
        float *row_loss
    int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                           const uint8_t *images, const uint8_t *labels,
                           const int32_t *idx, int64_t m, int64_t image_size,
                           float scale, float lr, double *loss, int n_threads)
    int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                         const uint8_t *images, const uint8_t *labels, int64_t m,
                         int64_t image_size, float scale, int64_t k,
                         int64_t *n_correct, float *logits_out, int n_threads)

cdef extern from "stdlib.h" nogil:
    void *calloc(size_t n, size_t size)
    void free(void *p)


# ----------------------------------------------------------------------------------
# Targets and threads

_ISA_BY_NAME = {"generic": MNC_ISA_GENERIC, "avx2": MNC_ISA_AVX2, "avx512": MNC_ISA_AVX512}
ISA_NAMES = tuple(_ISA_BY_NAME)


def isa_supported():
    """The best CPU target this machine and OS support: 'generic', 'avx2' or 'avx512'."""
    return mnc_isa_name(mnc_isa_supported()).decode()


def isa_active():
    """The CPU target the kernels use now."""
    return mnc_isa_name(mnc_isa_active()).decode()


def set_isa(name):
    """Cap the CPU target at `name` ('generic', 'avx2', 'avx512'); returns the target in
    use, which is lower than `name` when the machine lacks it."""
    if name not in _ISA_BY_NAME:
        raise ValueError(f"unknown CPU target {name!r}; expected one of {', '.join(ISA_NAMES)}")
    return mnc_isa_name(mnc_isa_set(_ISA_BY_NAME[name])).decode()


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(mnc_openmp_enabled())


def max_threads():
    """Threads a kernel uses when n_threads <= 0 (OpenMP's default)."""
    return mnc_max_threads()


# ----------------------------------------------------------------------------------
# Argument checks: every message names the argument and what is wrong with it.

cdef object _array(str name, object x, object dtype, int ndim):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, not {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, not {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    return x


cdef object _output(str name, object out, tuple shape, object dtype=np.float32):
    if out is None:
        return np.empty(shape, dtype=dtype)
    _array(name, out, dtype, len(shape))
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out


cdef object _labels(object labels, Py_ssize_t m):
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy.ndarray, not {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, not {labels.dtype}")
    if labels.shape != (m,):
        raise ValueError(f"labels must have shape ({m},), got {labels.shape}")
    if labels.dtype.itemsize > 4 and m and (labels.min() < -2**31 or labels.max() >= 2**31):
        raise ValueError("labels must fit in int32")
    return np.ascontiguousarray(labels, dtype=np.int32)


cdef int _threads(object n_threads) except? -1:
    if n_threads is None:
        return 0
    if int(n_threads) < 0:
        raise ValueError(f"n_threads must be >= 0, got {n_threads}")
    return int(n_threads)


cdef object _bad_label(int status, object labels, Py_ssize_t n):
    cdef Py_ssize_t row = -1 - status
    return ValueError(f"labels[{row}] = {labels[row]} is outside [0, {n})")


# ----------------------------------------------------------------------------------
# Kernels

def sgemm(a, b, c=None, *, trans_a=False, trans_b=False, float alpha=1.0,
          float beta=0.0, bias=None, relu=False, relu_mask=None, n_threads=None):
    """C := epilogue(alpha * op(A) @ op(B) + beta * C), float32, row-major.

    op(X) is X.T when trans_x. With c=None a new array is returned (beta must be 0).
    Epilogue: + bias[j], then ReLU (relu=True), then zero where relu_mask <= 0.
    """
    _array("a", a, np.float32, 2)
    _array("b", b, np.float32, 2)
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    if k != kb:
        raise ValueError(f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {kb}x{n}")
    if c is None and beta != 0.0:
        raise ValueError("beta != 0 needs an existing c")
    c = _output("c", c, (m, n))
    cdef mnc_epilogue ep
    ep.bias = NULL
    ep.relu = 1 if relu else 0
    ep.relu_mask = NULL
    ep.ld_mask = n
    cdef const float[::1] bias_v
    cdef const float[:, ::1] mask_v
    if bias is not None:
        _array("bias", bias, np.float32, 1)
        if bias.shape[0] != n:
            raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
        if n:
            bias_v = bias
            ep.bias = &bias_v[0]
    if relu_mask is not None:
        _array("relu_mask", relu_mask, np.float32, 2)
        if relu_mask.shape != (m, n):
            raise ValueError(f"relu_mask must have shape {(m, n)}, got {relu_mask.shape}")
        if m and n:
            mask_v = relu_mask
            ep.relu_mask = &mask_v[0, 0]
    if m == 0 or n == 0:
        return c
    if k == 0:
        # An empty sum: apply alpha*0 + beta*C and the epilogue through the kernel's
        # own rules by using a 1-deep zero product.
        a = np.zeros((m, 1), np.float32)
        b = np.zeros((1, n), np.float32)
        trans_a = trans_b = False
        k = 1
    cdef const float[:, ::1] av = a
    cdef const float[:, ::1] bv = b
    cdef float[:, ::1] cv = c
    cdef int ta = 1 if trans_a else 0, tb = 1 if trans_b else 0
    cdef int nt = _threads(n_threads)
    cdef mnc_epilogue *epp = &ep if (ep.bias != NULL or ep.relu or ep.relu_mask != NULL) else NULL
    with nogil:
        mnc_sgemm_f32(ta, tb, m, n, k, alpha, &av[0, 0], av.shape[1], &bv[0, 0],
                      bv.shape[1], beta, &cv[0, 0], cv.shape[1], epp, nt)
    return c


def bias_relu(x, bias, out=None, n_threads=None):
    """out = max(x + bias, 0) row by row (NaN stays NaN). out may be x."""
    _array("x", x, np.float32, 2)
    _array("bias", bias, np.float32, 1)
    if bias.shape[0] != x.shape[1]:
        raise ValueError(f"bias must have shape ({x.shape[1]},), got {bias.shape}")
    out = _output("out", out, x.shape)
    if x.size == 0:
        return out
    cdef const float[:, ::1] xv = x
    cdef const float[::1] bv = bias
    cdef float[:, ::1] ov = out
    cdef int nt = _threads(n_threads)
    with nogil:
        mnc_bias_relu_f32(&ov[0, 0], &xv[0, 0], &bv[0], xv.shape[0], xv.shape[1], nt)
    return out


def relu_backward(dy, y, out=None, n_threads=None):
    """out = dy where y > 0 else 0 (y is the ReLU output). out may be dy."""
    _array("dy", dy, np.float32, 2)
    _array("y", y, np.float32, 2)
    if y.shape != dy.shape:
        raise ValueError(f"y must have the shape of dy {dy.shape}, got {y.shape}")
    out = _output("out", out, dy.shape)
    if dy.size == 0:
        return out
    cdef const float[:, ::1] dyv = dy
    cdef const float[:, ::1] yv = y
    cdef float[:, ::1] ov = out
    cdef int nt = _threads(n_threads)
    with nogil:
        mnc_relu_backward_f32(&ov[0, 0], &dyv[0, 0], &yv[0, 0], dyv.shape[0], dyv.shape[1], nt)
    return out


def colsum_axpy(x, out=None, float alpha=1.0, float beta=0.0, n_threads=None):
    """out[j] = beta * out[j] + alpha * sum_i x[i, j] (fixed order). Returns out."""
    _array("x", x, np.float32, 2)
    if out is None and beta != 0.0:
        raise ValueError("beta != 0 needs an existing out")
    out = _output("out", out, (x.shape[1],))
    if x.shape[1] == 0:
        return out
    if x.shape[0] == 0:
        out[...] = out * beta if beta != 0.0 else 0.0
        return out
    cdef const float[:, ::1] xv = x
    cdef float[::1] ov = out
    cdef int nt = _threads(n_threads)
    with nogil:
        mnc_colsum_axpy_f32(&ov[0], &xv[0, 0], xv.shape[0], xv.shape[1], alpha, beta, nt)
    return out


def softmax_xent(logits, labels, dlogits=None, grad_scale=None, *, gradient=True,
                 n_threads=None):
    """Fused sparse softmax cross-entropy.

    Returns (mean_loss, row_loss, dlogits): row_loss[i] = logsumexp(logits[i]) -
    logits[i, labels[i]], dlogits = grad_scale * (softmax - onehot) (grad_scale
    defaults to 1/m, the gradient of the mean), or None when gradient=False.
    """
    _array("logits", logits, np.float32, 2)
    cdef Py_ssize_t m = logits.shape[0], n = logits.shape[1]
    if m == 0 or n == 0:
        raise ValueError(f"logits must be non-empty, got shape {logits.shape}")
    lab = _labels(labels, m)
    if gradient:
        dlogits = _output("dlogits", dlogits, (m, n))
    row_loss = np.empty(m, np.float32)
    cdef float scale = (1.0 / m) if grad_scale is None else grad_scale
    cdef const float[:, ::1] lv = logits
    cdef const int32_t[::1] labv = lab
    cdef float[::1] rv = row_loss
    cdef float[:, ::1] dv
    cdef float *dptr = NULL
    if gradient:
        dv = dlogits
        dptr = &dv[0, 0]
    cdef double mean = 0.0
    cdef int status
    cdef int nt = _threads(n_threads)
    with nogil:
        status = mnc_softmax_xent_f32(dptr, &rv[0], &mean, &lv[0, 0], &labv[0], m, n, scale, nt)
    if status != 0:
        raise _bad_label(status, labels, n)
    return mean, row_loss, (dlogits if gradient else None)


def in_top_k(logits, labels, k=1, n_threads=None):
    """(n_correct, correct): TensorFlow's in_top_k — ties count as hits, a non-finite
    target logit never does."""
    _array("logits", logits, np.float32, 2)
    cdef Py_ssize_t m = logits.shape[0], n = logits.shape[1]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lab = _labels(labels, m)
    correct = np.zeros(m, np.uint8)
    if m == 0:
        return 0, correct.astype(bool)
    if n == 0:
        raise ValueError("logits must have at least one column")
    cdef const float[:, ::1] lv = logits
    cdef const int32_t[::1] labv = lab
    cdef uint8_t[::1] cv = correct
    cdef int64_t hits = 0, kk = k
    cdef int status
    cdef int nt = _threads(n_threads)
    with nogil:
        status = mnc_in_top_k_f32(&cv[0], &hits, &lv[0, 0], &labv[0], m, n, kk, nt)
    if status != 0:
        raise _bad_label(status, labels, n)
    return int(hits), correct.astype(bool)


cdef object _check_dataset(object images, object labels):
    _array("images", images, np.uint8, 2)
    _array("labels", labels, np.uint8, 1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but images has {images.shape[0]}")


cdef object _check_indices(object idx, Py_ssize_t n_rows):
    _array("idx", idx, np.int32, 1)
    cdef const int32_t[::1] iv = idx
    cdef Py_ssize_t i
    for i in range(iv.shape[0]):
        if iv[i] < 0 or iv[i] >= n_rows:
            raise ValueError(f"idx[{i}] = {iv[i]} is outside [0, {n_rows})")


def gather_scale(images, labels, idx, float scale=1.0 / 255.0, n_threads=None):
    """(x, y): x = images[idx] * scale as float32 [len(idx), d], y = labels[idx] as int32."""
    _check_dataset(images, labels)
    _check_indices(idx, images.shape[0])
    cdef Py_ssize_t m = idx.shape[0], d = images.shape[1]
    x = np.empty((m, d), np.float32)
    y = np.empty(m, np.int32)
    if m == 0 or d == 0:
        y[:] = labels[idx]
        return x, y
    cdef const uint8_t[:, ::1] imv = images
    cdef const uint8_t[::1] labv = labels
    cdef const int32_t[::1] iv = idx
    cdef float[:, ::1] xv = x
    cdef int32_t[::1] yv = y
    cdef int nt = _threads(n_threads)
    with nogil:
        mnc_gather_scale_u8(&xv[0, 0], &yv[0], &imv[0, 0], &labv[0], &iv[0], m, d, scale, nt)
    return x, y


# ----------------------------------------------------------------------------------
# The MLP driver: one C call per training step or evaluation pass.

cdef class MLPKernel:
    """Binds an MLP's parameter arrays and per-batch scratch buffers to the C driver.

    weights[l] is [sizes[l], sizes[l+1]] and biases[l] is [sizes[l+1]], float32,
    C-contiguous; they are updated in place by train_step. The arrays are kept alive
    by this object; the scratch buffers are allocated once, here.
    """
    cdef mnc_mlp net
    cdef mnc_mlp_buffers buf
    cdef int64_t *sizes
    cdef float **wptr
    cdef float **bptr
    cdef float **aptr
    cdef float **gptr
    cdef readonly tuple layer_sizes
    cdef readonly Py_ssize_t n_classes
    cdef readonly Py_ssize_t batch_size
    cdef list _keep

    def __cinit__(self):
        self.sizes = NULL
        self.wptr = self.bptr = self.aptr = self.gptr = NULL

    def __init__(self, weights, biases, Py_ssize_t batch_size):
        cdef Py_ssize_t n_layers = len(weights), l
        if n_layers < 1 or len(biases) != n_layers:
            raise ValueError("need one bias per weight matrix and at least one layer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sizes = [0] * (n_layers + 1)
        for l in range(n_layers):
            _array(f"weights[{l}]", weights[l], np.float32, 2)
            _array(f"biases[{l}]", biases[l], np.float32, 1)
            for what, arr in ((f"weights[{l}]", weights[l]), (f"biases[{l}]", biases[l])):
                if not arr.flags.writeable:
                    raise ValueError(f"{what} must be writeable (train_step updates it in place)")
            if l == 0:
                sizes[0] = weights[0].shape[0]
            elif weights[l].shape[0] != sizes[l]:
                raise ValueError(f"weights[{l}] has {weights[l].shape[0]} rows, "
                                 f"expected {sizes[l]} (the previous layer's width)")
            sizes[l + 1] = weights[l].shape[1]
            if biases[l].shape[0] != sizes[l + 1]:
                raise ValueError(f"biases[{l}] must have shape ({sizes[l + 1]},), got {biases[l].shape}")
            if weights[l].size == 0:
                raise ValueError(f"weights[{l}] is empty")
        self.layer_sizes = tuple(sizes)
        self.n_classes = sizes[n_layers]
        self.batch_size = batch_size
        inputs = np.zeros((batch_size, sizes[0]), np.float32)
        labels = np.zeros(batch_size, np.int32)
        row_loss = np.zeros(batch_size, np.float32)
        acts = [np.zeros((batch_size, sizes[l + 1]), np.float32) for l in range(n_layers)]
        grads = [np.zeros((batch_size, sizes[l + 1]), np.float32) for l in range(n_layers)]
        self._keep = [list(weights), list(biases), inputs, labels, row_loss, acts, grads]

        self.sizes = <int64_t *>calloc(n_layers + 1, sizeof(int64_t))
        self.wptr = <float **>calloc(n_layers, sizeof(float *))
        self.bptr = <float **>calloc(n_layers, sizeof(float *))
        self.aptr = <float **>calloc(n_layers, sizeof(float *))
        self.gptr = <float **>calloc(n_layers, sizeof(float *))
        if not (self.sizes and self.wptr and self.bptr and self.aptr and self.gptr):
            raise MemoryError()
        cdef float[:, ::1] v2
        cdef float[::1] v1
        cdef int32_t[::1] i1
        for l in range(n_layers + 1):
            self.sizes[l] = sizes[l]
        for l in range(n_layers):
            v2 = weights[l]; self.wptr[l] = &v2[0, 0]
            v1 = biases[l]; self.bptr[l] = &v1[0]
            v2 = acts[l]; self.aptr[l] = &v2[0, 0]
            v2 = grads[l]; self.gptr[l] = &v2[0, 0]
        self.net.n_layers = <int>n_layers
        self.net.sizes = self.sizes
        self.net.weights = self.wptr
        self.net.biases = self.bptr
        self.buf.batch = batch_size
        v2 = inputs; self.buf.input = &v2[0, 0]
        i1 = labels; self.buf.labels = &i1[0]
        v1 = row_loss; self.buf.row_loss = &v1[0]
        self.buf.activations = self.aptr
        self.buf.grads = self.gptr

    def __dealloc__(self):
        free(self.sizes); free(self.wptr); free(self.bptr); free(self.aptr); free(self.gptr)

    @property
    def activations(self):
        """The scratch activations of the last call (the last entry holds logits)."""
        return tuple(self._keep[5])

    @property
    def gradients(self):
        """dLoss/dZ of each layer from the last train_step."""
        return tuple(self._keep[6])

    def train_step(self, images, labels, idx, float lr, float scale=1.0 / 255.0,
                   n_threads=None):
        """One SGD step on rows idx of (images, labels); returns the batch's mean loss
        before the update."""
        _check_dataset(images, labels)
        if images.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"images have {images.shape[1]} columns, the model expects "
                             f"{self.layer_sizes[0]}")
        _check_indices(idx, images.shape[0])
        cdef Py_ssize_t m = idx.shape[0]
        if m < 1 or m > self.batch_size:
            raise ValueError(f"idx must hold 1..{self.batch_size} indices, got {m}")
        cdef const uint8_t[:, ::1] imv = images
        cdef const uint8_t[::1] labv = labels
        cdef const int32_t[::1] iv = idx
        cdef double loss = 0.0
        cdef int status
        cdef int nt = _threads(n_threads)
        with nogil:
            status = mnc_mlp_train_step(&self.net, &self.buf, &imv[0, 0], &labv[0], &iv[0],
                                        m, imv.shape[1], scale, lr, &loss, nt)
        if status != 0:
            row = idx[-1 - status]
            raise ValueError(f"labels[{row}] = {labels[row]} is outside "
                             f"[0, {self.n_classes})")
        return loss

    def evaluate(self, images, labels=None, Py_ssize_t k=1, logits=None,
                 float scale=1.0 / 255.0, n_threads=None):
        """Number of rows of (images, labels) whose label is in the top k (TF tie rule),
        over the whole set (no remainder dropped); 0 when labels is None. Writes the
        logits into `logits` ([N, classes] float32) when given."""
        if labels is None:
            _array("images", images, np.uint8, 2)
        else:
            _check_dataset(images, labels)
        if images.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"images have {images.shape[1]} columns, the model expects "
                             f"{self.layer_sizes[0]}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        cdef Py_ssize_t m = images.shape[0]
        cdef float[:, ::1] ov
        cdef float *optr = NULL
        if logits is not None:
            _output("logits", logits, (m, self.n_classes))
            if m:
                ov = logits
                optr = &ov[0, 0]
        if m == 0:
            return 0
        cdef const uint8_t[:, ::1] imv = images
        cdef const uint8_t[::1] labv
        cdef const uint8_t *lptr = NULL
        if labels is not None:
            labv = labels
            lptr = &labv[0]
        cdef int64_t hits = 0
        cdef int status
        cdef int nt = _threads(n_threads)
        with nogil:
            status = mnc_mlp_evaluate(&self.net, &self.buf, &imv[0, 0], lptr, m,
                                      imv.shape[1], scale, k, &hits, optr, nt)
        if status != 0:
            row = -1 - status
            raise ValueError(f"labels[{row}] = {labels[row]} is outside "
                             f"[0, {self.n_classes})")
        return int(hits)
