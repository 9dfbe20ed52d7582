"""A trained MLP as an ONNX model: ``mnistc.export_onnx("runs/mnistc", "model.onnx")``.

The graph takes what `model.predict` takes, uint8 images [N, pixels] (input `images`), and
does the same arithmetic: Cast to float32, times float32(PIXEL_SCALE), then per layer
Gemm (x @ weights + biases) and Relu, the last layer's Gemm giving `logits` float32
[N, classes] and a Softmax over the classes `probabilities`. The model's metadata
(`metadata_props`) carries `mnistc_version`, `global_step`, `dataset` and `class_names` (a
JSON list); `model_version` is the step too.

Opset 13, the first with a per-axis Softmax (older ones flatten the input); every operator
used is unchanged since, so any runtime of the last years loads it. The IR version is the
lowest that opset allows, for the same reason. The `onnx` package is an optional extra
(``pip install "mnistc[onnx]"``); NumPy remains mnistc's only runtime dependency.

A runtime sums the dot products in its own order, so its logits differ from mnistc's in
the last bits; tests/test_onnx_export.py bounds the difference by float32 rounding.
"""

import json
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import MnistcError
from .fileio import atomic_write
from .model import PIXEL_SCALE

OPSET = 13
ONNX_HINT = 'ONNX export needs the onnx package: pip install "mnistc[onnx]"'


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MnistcError(ONNX_HINT) from None
    return onnx


def to_onnx(model):
    """The ONNX ModelProto of `model` (an MLP from mnistc.load), checked by onnx.checker."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    pixels, classes = model.sizes[0], model.sizes[-1]
    initializers = [numpy_helper.from_array(np.array(PIXEL_SCALE, np.float32), "pixel_scale")]
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pixels", "pixel_scale"], ["x0"], name="scale"),
    ]
    x = "x0"
    params = model.params  # built on each access (the first layer's weights from panels)
    for i, name in enumerate(model.names):
        weights, biases = f"{name}/weights", f"{name}/biases"
        initializers += [
            numpy_helper.from_array(params[weights], weights),
            numpy_helper.from_array(params[biases], biases),
        ]
        last = i == len(model.names) - 1
        out = "logits" if last else f"{name}/linear"
        nodes.append(helper.make_node("Gemm", [x, weights, biases], [out], name=name))
        if not last:
            x = f"x{i + 1}"
            nodes.append(helper.make_node("Relu", [out], [x], name=f"{name}/relu"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes,
        "mnistc_mlp",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", pixels])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
        ],
        initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="mnistc",
        producer_version=__version__,
        model_version=model.global_step,
        doc_string=f"mnistc MLP {'-'.join(map(str, model.sizes))} trained on "
        f"{model.meta.dataset}, step {model.global_step}: uint8 images [N, {pixels}] in "
        f"(scaled by 1/255 inside), logits and probabilities [N, {classes}] out",
    )
    helper.set_model_props(
        proto,
        {
            "mnistc_version": __version__,
            "global_step": str(model.global_step),
            "dataset": model.meta.dataset,
            "class_names": json.dumps(list(model.class_names)),
        },
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save(proto, output):
    """Write a ModelProto to `output` atomically; MnistcError naming the file on failure."""
    output = Path(output)
    try:
        atomic_write(output, [proto.SerializeToString()])
    except OSError as error:
        raise MnistcError(f"{output}: cannot write: {error.strerror or error}") from None
    return output


def export_onnx(source, output, step=None):
    """Export a trained model to the ONNX file `output` and return its ModelProto.

    source: a train dir or checkpoint file (loaded with mnistc.load, `step` as there), or
    an MLP already loaded."""
    if isinstance(source, (str, Path)):
        from .restore import load

        source = load(source, step)
    elif step is not None:
        raise ValueError("step applies to a train directory or file, not a loaded model")
    proto = to_onnx(source)
    save(proto, output)
    return proto
