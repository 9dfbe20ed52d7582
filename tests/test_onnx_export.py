"""ONNX export (mnistc.onnx_export, `python -m mnistc.export`): the file onnx.checker accepts,
its interface and metadata, and onnxruntime and onnx.reference.ReferenceEvaluator computing
what mnistc computes, on random weights of an awkward network and on the 10,000 MNIST test
images.

The tolerance. A runtime sums each dot product in its own order (blocked, FMA or not), so
its logits differ from mnistc's in the last bits. Any float32 evaluation of a dot product
of n nonzero terms plus a bias lies within gamma(n + 2) * (|x| @ |W| + |b|) of the exact
value, gamma(k) = k*u / (1 - k*u), u = 2**-24 (Higham, Accuracy and Stability of Numerical
Algorithms, 3.1): n roundings for the products and the n - 1 additions (zero terms add
exactly), one for the bias and one for the input's scaling (or, when a runtime folds the
scale into the GEMM, for that multiply). An error e already in a layer's input grows to
e @ |W| (ReLU does not enlarge it). `logits_bound` runs this recurrence in float64 along a
float64 forward pass (whose own error, ~1e-16 relative, is negligible) and gives, per
image and class, a bound B every correct float32 implementation meets; two of them agree
within 2B. It is a worst case (every rounding the same way), far above a typical
difference, and still small enough to decide nearly every label: mnistc's label t cannot
change where ours[t] - ours[j] > 2 (B_t + B_j) for every other class j. The tests assert
equal labels there and, at a near tie, that the runtime picked one of the tied classes.
"""

import json
import platform
import sys

import numpy as np
import pytest

import mnistc
from mnistc import data, onnx_export
from mnistc.config import TrainConfig
from mnistc.model import PIXEL_SCALE
from mnistc.restore import load
from mnistc.training import run_training

from conftest import import_or_skip
from test_eval_predict import assert_one_line_error, run_module

onnx = import_or_skip("onnx", "test")
from onnx import numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

# pyproject.toml's test extra installs onnxruntime wherever it has wheels: not for
# CPython >= 3.14 on Intel macOS.
ONNXRUNTIME_WHEELS = not (
    sys.platform == "darwin" and platform.machine() == "x86_64" and sys.version_info >= (3, 14)
)
U = 2.0**-24  # float32's unit roundoff


def gamma(k):
    return k * U / (1 - k * U)


def logits_bound(model, images):
    """(float64 logits, B): B bounds |float32 logits - float64 logits| elementwise (see the
    module docstring)."""
    a = images.astype(np.float64) * np.float64(np.float32(PIXEL_SCALE))  # exact in float64
    e = np.zeros_like(a)
    for i, name in enumerate(model.names):
        w = model.params[f"{name}/weights"].astype(np.float64)
        b = model.params[f"{name}/biases"].astype(np.float64)
        # Terms whose input is 0 in every implementation (|a| + e == 0) are exact.
        k = np.count_nonzero(np.abs(a) + e, axis=1, keepdims=True) + 2
        e = e @ np.abs(w) + gamma(k) * ((np.abs(a) + e) @ np.abs(w) + np.abs(b))
        z = a @ w + b
        a = z if i == len(model.names) - 1 else np.maximum(z, 0.0)
    return a, e


def softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def probabilities_tolerance(reference, bound):
    """Bound on |float32 softmax(float32 logits) - softmax64(reference)|. Logits off by at
    most d each move every probability by a factor within exp(+-2d); the float32 softmax
    adds, relative to p, u * |z - max| (the subtraction), 4u (a vectorised exp, taken as
    4 ulp), gamma(C - 1) (the sum of C terms, whose own exp errors count once more), u (the
    division); 2**-125 absorbs exp's underflow to zero or subnormals."""
    p = softmax64(reference)
    spread = (reference.max(axis=1, keepdims=True) - reference).max(axis=1, keepdims=True)
    classes = reference.shape[1]
    evaluation = 2 * U * spread + 8 * U + gamma(classes - 1) + U
    drift = np.expm1(2 * bound.max(axis=1, keepdims=True))
    return p * ((1 + drift) * (1 + evaluation) - 1) + 2.0**-125


def check_agrees(logits, probabilities, model, images):
    """A runtime's outputs against mnistc's (model.inference/predict) and the float64
    reference, with the module docstring's tolerances. Returns the near-tie count."""
    reference, bound = logits_bound(model, images)
    ours = model.inference(images)
    labels, _ = model.predict(images)
    assert logits.dtype == np.float32 and probabilities.dtype == np.float32
    assert logits.shape == probabilities.shape == ours.shape
    assert np.all(np.abs(ours - reference) <= bound), "mnistc itself is outside the bound"
    assert np.all(np.abs(logits - reference) <= bound)
    assert np.all(np.abs(logits - ours) <= 2 * bound)
    tolerance = probabilities_tolerance(reference, bound)
    assert np.all(np.abs(probabilities - softmax64(reference)) <= tolerance)
    rows = np.arange(len(ours))
    # Class j could overtake mnistc's label t only if ours[t] - ours[j] <= 2 (B_t + B_j).
    contenders = ours[rows, labels][:, None] - ours <= 2 * (bound[rows, labels][:, None] + bound)
    theirs = logits.argmax(axis=1)
    certain = contenders.sum(axis=1) == 1
    np.testing.assert_array_equal(theirs[certain], labels[certain])
    assert contenders[rows, theirs].all()
    return int((~certain).sum())


def run_onnxruntime(proto, images):
    ort = import_or_skip("onnxruntime", "test", required_in_ci=ONNXRUNTIME_WHEELS)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits", "probabilities"], {"images": images})


def run_reference(proto, images):
    return ReferenceEvaluator(proto).run(["logits", "probabilities"], {"images": images})


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """Fake data, an awkward three-hidden-layer network, checkpoints at steps 20 and 30."""
    train_dir = tmp_path_factory.mktemp("onnx_fake_run")
    options = dict(hidden=(7, 5, 3), batch_size=10, fake_data=True, quiet=True, tensorboard=False)
    run_training(TrainConfig(train_dir=str(train_dir), max_steps=20, **options))
    run_training(TrainConfig(train_dir=str(train_dir), max_steps=30, resume=True, **options))
    return train_dir


def random_model(train_dir, seed):
    """The run's model with random weights of a trained net's scale and random biases."""
    model = load(train_dir)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, value in model.params.items():
        fan_in = value.shape[0] if value.ndim == 2 else 1
        tensors[name] = (rng.standard_normal(value.shape) * 2 / np.sqrt(fan_in)).astype(np.float32)
    model.load_state_dict(tensors)
    return model


def test_graph_interface_and_metadata(fake_run):
    model = load(fake_run)
    proto = onnx_export.to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", onnx_export.OPSET)]
    assert proto.ir_version == 7  # the lowest opset 13 allows
    assert (proto.producer_name, proto.producer_version) == ("mnistc", mnistc.__version__)
    assert proto.model_version == 30
    assert {p.key: p.value for p in proto.metadata_props} == {
        "mnistc_version": mnistc.__version__,
        "global_step": "30",
        "dataset": "mnist",
        "class_names": json.dumps([str(d) for d in range(10)]),
    }

    def signature(values):
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    assert signature(proto.graph.input) == [("images", onnx.TensorProto.UINT8, ["N", 784])]
    assert signature(proto.graph.output) == [
        ("logits", onnx.TensorProto.FLOAT, ["N", 10]),
        ("probabilities", onnx.TensorProto.FLOAT, ["N", 10]),
    ]
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert weights.pop("pixel_scale") == np.float32(PIXEL_SCALE)
    assert weights.keys() == model.params.keys()
    for name, value in model.params.items():
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], value)


@pytest.mark.parametrize("run", [run_onnxruntime, run_reference])
def test_runtimes_compute_what_mnistc_computes_on_random_weights(fake_run, run):
    model = random_model(fake_run, seed=3)
    proto = onnx_export.to_onnx(model)
    rng = np.random.default_rng(4)
    for n in (1, 257):
        images = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        images[: n // 3] = 0  # blank images too: the biases alone
        logits, probabilities = run(proto, images)
        check_agrees(logits, probabilities, model, images)


def test_export_onnx_api_writes_the_file_it_returns(fake_run, tmp_path):
    output = tmp_path / "model.onnx"
    proto = mnistc.export_onnx(fake_run, output, step=20)
    assert output.read_bytes() == proto.SerializeToString()
    onnx.checker.check_model(str(output), full_check=True)
    assert proto.model_version == 20
    older = load(fake_run, step=20)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(output).graph.initializer}
    for name, value in older.params.items():
        np.testing.assert_array_equal(weights[name], value)
    assert mnistc.export_onnx(older, tmp_path / "again.onnx").model_version == 20
    with pytest.raises(ValueError, match="step applies"):
        mnistc.export_onnx(older, tmp_path / "never.onnx", step=20)
    assert not (tmp_path / "never.onnx").exists()


def test_cli_exports_a_step(fake_run, tmp_path):
    result = run_module(
        "export",
        "--train-dir",
        str(fake_run),
        "--step",
        "20",
        "--output",
        "model.onnx",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("Wrote model.onnx: 784-7-5-3-10 MLP, step 20, mnist, ONNX opset 13\n")
    proto = onnx.load(tmp_path / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert {p.key: p.value for p in proto.metadata_props}["global_step"] == "20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp left


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--step", "999", "-o", "model.onnx"], ["no checkpoint for step 999", "has steps 20, 30"]),
        (["--step", "x", "-o", "model.onnx"], ["--step", "expected a step number"]),
        (["--output", "missing/model.onnx"], ["missing/model.onnx: cannot write"]),
        ([], ["--output"]),
    ],
)
def test_cli_errors_are_one_line_and_leave_the_old_file(fake_run, tmp_path, args, fragments):
    (tmp_path / "model.onnx").write_bytes(b"the previous export")
    result = run_module("export", "--train-dir", str(fake_run), *args, cwd=tmp_path)
    assert_one_line_error(result, "export", *fragments)
    assert (tmp_path / "model.onnx").read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_cli_without_onnx_names_the_extra(fake_run, tmp_path):
    result = run_module(
        "export",
        "--train-dir",
        str(fake_run),
        "--output",
        "model.onnx",
        cwd=tmp_path,
        pre="import sys; sys.modules['onnx'] = None",
    )
    assert_one_line_error(result, "export", 'pip install "mnistc[onnx]"')
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.realdata
def test_exported_tutorial_model_agrees_on_the_10000_test_images(mnist_run, tmp_path):
    data_dir, train_dir = mnist_run
    result = run_module(
        "export", "--train-dir", str(train_dir), "--output", "model.onnx", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)
    proto = onnx.load(tmp_path / "model.onnx")
    model = load(train_dir)
    test = data.read_data_sets(str(data_dir), download=False).test
    assert test.num_examples == 10000
    for run in (run_onnxruntime, run_reference):
        logits, probabilities = run(proto, test.images)
        near_ties = check_agrees(logits, probabilities, model, test.images)
        # The label check means something only where the bound decides: nearly everywhere.
        assert near_ties <= 100, f"the bound leaves {near_ties} of 10000 labels undecided"
