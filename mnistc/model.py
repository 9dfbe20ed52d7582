"""The Mechanics 101 network: an MLP over named float32 parameters.

What the tutorial split into `inference`, `loss`, `training` and `evaluation` is here a
class whose parameters live in ONE float32 block of named pieces (`hidden1/weights`,
`hidden1/biases`, ..., `softmax_linear/biases`), so the C driver and the optimizer's
update see the same memory; the optimizer's state (mnistc.optim) is blocks of the same
layout. The first layer's weights are stored in column panels (mnistc._kernels.to_panels:
its GEMMs then read them in place and split them between cores by whole panels); every
other tensor as its shape says. Checkpoints and `params` see every tensor as its shape
says. The arithmetic is in C (mnistc._kernels); this module owns shapes, names,
initialisation and state. It does not read files.
"""

import math

import numpy as np

from . import _kernels
from .optim import Optimizer

PIXEL_SCALE = _kernels.PIXEL_SCALE  # the model's input transform (see _kernels)
# float32 values held per batch row and per unit of every layer (the input included): the
# activations and their gradients (mnistc.h's mnc_mlp_buffers) and one evaluation
# thread's forward scratch.
BATCH_BUFFERS = 3


def layer_names(n_hidden):
    """hidden1 .. hiddenN, then softmax_linear — the tutorial's name scopes."""
    return [f"hidden{i + 1}" for i in range(n_hidden)] + ["softmax_linear"]


def parameter_shapes(sizes):
    """{name: shape} of every parameter of an MLP with layer widths `sizes`, in block order."""
    shapes = {}
    for name, fan_in, fan_out in zip(layer_names(len(sizes) - 2), sizes, sizes[1:]):
        shapes[f"{name}/weights"] = (fan_in, fan_out)
        shapes[f"{name}/biases"] = (fan_out,)
    return shapes


def memory_needed(sizes, batch_size, parameter_blocks=1):
    """Bytes an MLP with layer widths `sizes` needs at `batch_size`: `parameter_blocks`
    float32 blocks the size of its parameters (1: the parameters alone, as plain SGD;
    an optimizer adds a gradient block and one per state block, Adam's two), and
    BATCH_BUFFERS float32 values per batch row and unit."""
    n_params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
    return 4 * (parameter_blocks * n_params + BATCH_BUFFERS * batch_size * sum(sizes))


class ModelTooLarge(ValueError):
    """The network would need more memory than this process can have (check_memory)."""

    def __init__(self, sizes, batch_size, needed, limit):
        self.problem = (
            f"a {'-'.join(map(str, sizes))} network at batch size {batch_size} "
            f"needs about {needed / 2**30:.1f} GiB, more than the "
            f"{limit[0] / 2**30:.1f} GiB of {limit[1]}"
        )
        super().__init__(f"{self.problem}; choose a smaller --hidden or --batch-size")


def check_memory(sizes, batch_size, parameter_blocks=1):
    """ModelTooLarge, before anything is allocated, when memory_needed exceeds the most
    memory this process can have (mnistc.runtime.memory_limit)."""
    from .runtime import memory_limit

    needed, limit = memory_needed(sizes, batch_size, parameter_blocks), memory_limit()
    if limit is not None and needed > limit[0]:
        raise ModelTooLarge(sizes, batch_size, needed, limit)


def truncated_normal(rng, shape, stddev):
    """TensorFlow's truncated_normal: N(0, stddev²) with draws beyond 2σ redrawn."""
    values = rng.standard_normal(shape)
    while True:
        outside = np.abs(values) > 2.0
        count = int(outside.sum())
        if count == 0:
            return (values * stddev).astype(np.float32)
        values[outside] = rng.standard_normal(count)


class MLP:
    """784-hidden...-10 ReLU network trained on C kernels.

    hidden: widths of the hidden layers, e.g. (128, 32) as in the tutorial.
    batch_size: the largest batch train_step and the evaluation passes use; the C
    scratch buffers are allocated for it once, here.
    input_size, num_classes: the data set's pixels per image and classes (784, 10).
    optimizer: a mnistc.optim.Optimizer; None is plain SGD (the tutorial's).
    label_smoothing: ε in [0, 1): train_step's loss is the cross-entropy against the
    targets (1 - ε)·onehot + ε/classes (torch's label_smoothing); 0 is the tutorial's.
    """

    def __init__(
        self, hidden, batch_size, *, input_size, num_classes, optimizer=None, label_smoothing=0.0
    ):
        optimizer = Optimizer() if optimizer is None else optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a mnistc.optim.Optimizer or None, "
                f"not {type(optimizer).__name__}"
            )
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden layer widths must be >= 1, got {hidden}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.sizes = (int(input_size),) + hidden + (int(num_classes),)
        self.batch_size = int(batch_size)
        # The parameters, then a gradient block and the state blocks if the update needs them.
        blocks = 1 + (1 + len(optimizer.state_names) if optimizer.stores_gradients else 0)
        check_memory(self.sizes, self.batch_size, parameter_blocks=blocks)
        self.global_step = 0
        self.names = layer_names(len(hidden))
        self.shapes = shapes = parameter_shapes(self.sizes)
        self._block = _kernels.aligned_zeros(sum(math.prod(s) for s in shapes.values()))
        self._stored = self._pieces(self._block)
        self._kernel = _kernels.MLPKernel(
            [self._stored[f"{n}/weights"] for n in self.names],
            [self._stored[f"{n}/biases"] for n in self.names],
            self.batch_size,
        )
        self._optimizer = optimizer
        self._optimizer_state = {
            f"optimizer/{name}": _kernels.aligned_zeros(self._block.size)
            for name in optimizer.state_names
        }
        self._kernel.set_optimizer(
            optimizer.name,
            self._block,
            tuple(self._optimizer_state.values()),
            **optimizer.hyperparameters,
        )

    def _pieces(self, block):
        """{name: the piece of `block` that stores it} for a block of the parameters'
        layout (the parameters', their gradients' or an optimizer state's), in block
        order: the first layer's weights 1-D, in column panels; every other tensor a view
        shaped as the tensor."""
        pieces, offset = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            piece = block[offset : offset + size]
            offset += size
            pieces[name] = piece if self._in_panels(name) else piece.reshape(shape)
        return pieces

    def _in_panels(self, name):
        return name == f"{self.names[0]}/weights"

    def _read(self, name, piece):
        """The tensor a piece stores, shaped as the tensor (a copy for the panels)."""
        return _kernels.from_panels(piece, *self.shapes[name]) if self._in_panels(name) else piece

    def _write(self, name, piece, value):
        piece[...] = _kernels.to_panels(value) if self._in_panels(name) else value

    def _to_canonical(self, block):
        """A copy of a block of the parameters' layout with every tensor in row-major
        order (the order checkpoints store), in block order."""
        pieces = self._pieces(block).items()
        return np.concatenate([self._read(name, piece).ravel() for name, piece in pieces])

    def _from_canonical(self, block, flat):
        """Fill a block of the parameters' layout from _to_canonical's order."""
        offset = 0
        for name, piece in self._pieces(block).items():
            shape = self.shapes[name]
            self._write(name, piece, flat[offset : offset + piece.size].reshape(shape))
            offset += piece.size

    @property
    def params(self):
        """{name: read-only array} of the parameters, each shaped as the tensor: views of
        the live parameters, except the first layer's weights, a copy of their panels
        taken now (so each access builds the dict anew: bind it once). Set them with
        load_state_dict."""
        out = {}
        for name, piece in self._stored.items():
            value = self._read(name, piece).view()
            value.flags.writeable = False
            out[name] = value
        return out

    @property
    def hidden(self):
        return self.sizes[1:-1]

    @property
    def optimizer(self):
        """The mnistc.optim.Optimizer this model trains with (fixed at construction)."""
        return self._optimizer

    def initialize(self, rng):
        """The tutorial's init: truncated normal weights with stddev 1/sqrt(fan_in), zero
        biases, drawn layer by layer from `rng` (a numpy Generator)."""
        for name, fan_in in zip(self.names, self.sizes):
            weights = f"{name}/weights"
            draw = truncated_normal(rng, self.shapes[weights], 1.0 / math.sqrt(fan_in))
            self._write(weights, self._stored[weights], draw)
            self._stored[f"{name}/biases"][...] = 0.0
        self.global_step = 0
        for value in self._optimizer_state.values():
            value[...] = 0.0
        self._kernel.optimizer_step = 0

    # -- the tutorial's ops -------------------------------------------------------

    def train_step(self, images, labels, idx, learning_rate, n_threads=None):
        """One step of the model's optimizer at this learning rate on rows idx (int32)
        of a uint8 data set; returns the batch's mean (smoothed) cross-entropy before the
        update and advances global_step (and the optimizer's step count)."""
        loss = self._kernel.train_step(
            images,
            labels,
            idx,
            learning_rate,
            PIXEL_SCALE,
            n_threads,
            label_smoothing=self.label_smoothing,
        )
        self.global_step += 1
        return loss

    def evaluation(self, images, labels, k=1, logits=None, n_threads=None):
        """Number of examples of a whole uint8 data set whose label is in the top k
        logits (TensorFlow's in_top_k: ties count as correct). Nothing is dropped.
        When `logits` ([N, classes] float32) is given, the logits are written there in
        the same pass."""
        return self._kernel.evaluate(images, labels, k, logits, PIXEL_SCALE, n_threads)

    def inference(self, images, n_threads=None):
        """Logits [N, classes] for uint8 images [N, input_size]."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        logits = np.empty((images.shape[0], self.sizes[-1]), np.float32)
        self._kernel.evaluate(images, None, 1, logits, PIXEL_SCALE, n_threads)
        return logits

    def predict(self, images, n_threads=None):
        """(labels, probabilities) for uint8 images [N, input_size]."""
        logits = self.inference(images, n_threads).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs.argmax(axis=1), probs

    # -- state ----------------------------------------------------------------------

    def state_dict(self):
        """Copies of the named parameters."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, tensors):
        """Copy named parameters in; every name must be present with its exact shape
        and dtype float32 (ValueError naming the first mismatch otherwise)."""
        for name, shape in self.shapes.items():
            if name not in tensors:
                raise ValueError(f"missing parameter {name!r}")
            value = tensors[name]
            if value.shape != shape:
                raise ValueError(
                    f"parameter {name!r} has shape {value.shape}, the model needs {shape}"
                )
            if value.dtype != np.float32:
                raise ValueError(f"parameter {name!r} has dtype {value.dtype}, not float32")
        for name in self.shapes:
            self._write(name, self._stored[name], tensors[name])

    def optimizer_state(self):
        """(tensors, step): copies of the optimizer's state blocks, named
        "optimizer/<name>" for each of optimizer.state_names (float32, [n_params], every
        tensor row-major in block order, as checkpoints store them; none for plain SGD),
        and the number of optimizer updates taken (Adam's t)."""
        state = self._optimizer_state
        tensors = {name: self._to_canonical(value) for name, value in state.items()}
        return tensors, self._kernel.optimizer_step

    def load_optimizer_state(self, tensors, step):
        """Copy an optimizer_state() back in. Every state block this optimizer needs must
        be present with shape [n_params] and dtype float32, and no other "optimizer/"
        name (other names, such as the parameters', are ignored); step is an int >= 0.
        ValueError (TypeError for a step that is not an int) naming the first mismatch,
        and then nothing changes."""
        for name in self._optimizer_state:
            if name not in tensors:
                raise ValueError(
                    f"missing optimizer state {name!r} "
                    f"(the model's optimizer is {self.optimizer.name})"
                )
            value = tensors[name]
            if value.shape != self._block.shape:
                raise ValueError(
                    f"optimizer state {name!r} has shape {value.shape}, "
                    f"the model needs {self._block.shape}"
                )
            if value.dtype != np.float32:
                raise ValueError(f"optimizer state {name!r} has dtype {value.dtype}, not float32")
        for name in tensors:
            if name.startswith("optimizer/") and name not in self._optimizer_state:
                raise ValueError(
                    f"unexpected optimizer state {name!r} "
                    f"(the model's optimizer is {self.optimizer.name})"
                )
        self._kernel.optimizer_step = step  # checked there: TypeError, ValueError
        for name, value in self._optimizer_state.items():
            self._from_canonical(value, tensors[name])
