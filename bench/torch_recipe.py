"""One mnistc training recipe, run in plain PyTorch: "the same recipe in PyTorch".

It trains a 784-...-10 ReLU MLP on the MNIST IDX files with mnistc's semantics, so that
a recipe means the same thing on both sides of a whole-process benchmark:
- splits: validation = the first 5000 training examples (file order), train = the other
  55000, test = t10k; pixels are uint8 * float32(1/255) (optionally standardised);
- one numpy PCG64 generator seeded by --seed draws the weights (truncated normal,
  sigma = 1/sqrt(fan_in), redrawn beyond 2 sigma; zero biases), layer by layer, then a
  fresh permutation of the training set for every epoch; a batch that straddles two
  epochs is the old one's tail and the new one's head; --epochs E runs ceil(E*N/B) steps;
- torch.optim's SGD (momentum, Nesterov) / Adam / AdamW, and torch's schedulers:
  onecycle = OneCycleLR(cycle_momentum=False), linear = LinearLR down to 0, cosine =
  CosineAnnealingLR down to 0, each but onecycle with an optional LinearLR warm-up.
The candidates that would need new mnistc kernels are flags too: --label-smoothing,
--ema (evaluate an exponential moving average of the weights), --standardize.
It is written as one would for speed in practice: the data become float32 tensors once,
no per-step host syncs, evaluation under inference_mode.

The defaults are the `fast` recipe chosen in bench/recipe_search.md (784-128-128-10, batch
128, 5 epochs, Nesterov 0.9, one-cycle peak 0.2, label smoothing 0.1); another recipe is
a matter of flags, e.g. the issue's 784-512-512-10 baseline:

    python bench/torch_recipe.py --hidden 512,512 --epochs 3 --label-smoothing 0

prints one line per evaluation (the precision of each split asked for with --eval) and,
last, the whole process's time (from the script's first line, before torch is imported).
"""

import time

PROCESS_START = time.perf_counter()

import argparse
import concurrent.futures
import gzip
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

VALIDATION_SIZE = 5000
PIXEL_SCALE = np.float32(1.0 / 255.0)
EVAL_CHUNK = 10000  # rows per evaluation forward pass: bounds the activations' memory


def read_idx(path):
    """An IDX file (.gz) as a numpy array."""
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_pair(data_dir, prefix):
    images = read_idx(Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz")
    return images.reshape(len(images), -1), labels


def load_uint8(data_dir, splits):
    """{split: (uint8 images [N, 784], uint8 labels [N])}; train is always read (the
    standardisation statistics come from it), t10k only if asked for, on a second thread
    (zlib releases the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        test = pool.submit(read_pair, data_dir, "t10k") if "test" in splits else None
        images, labels = read_pair(data_dir, "train")
        out = {
            "train": (images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]),
            "validation": (images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]),
        }
        if test is not None:
            out["test"] = test.result()
    return out


def to_tensors(data, standardize):
    """float32 image and int64 label tensors, once. Pixels are u8 * scale + offset: scale
    1/255 and offset 0, or the training split's global ('global') or per-pixel ('pixel')
    mean and standard deviation folded into them."""
    u8 = data["train"][0]
    scale, offset = PIXEL_SCALE, np.float32(0.0)
    if standardize == "global":
        mean, std = u8.mean(dtype=np.float64), u8.std(dtype=np.float64)
        scale, offset = np.float32(1.0 / std), np.float32(-mean / std)
    elif standardize == "pixel":
        mean, std = u8.mean(0, dtype=np.float64), u8.std(0, dtype=np.float64)
        std = np.maximum(std, 0.1 * std.mean())  # border pixels have std 0: floor it
        scale, offset = (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)
    tensors = {}
    for split, (images, labels) in data.items():
        x = np.multiply(images, scale, dtype=np.float32)
        if standardize != "none":
            x += offset
        tensors[split] = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    return tensors


def truncated_normal(rng, shape, stddev):
    values = rng.standard_normal(shape)
    while (outside := np.abs(values) > 2.0).any():
        values[outside] = rng.standard_normal(int(outside.sum()))
    return (values * stddev).astype(np.float32)


def build_mlp(sizes, rng):
    layers = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():  # mnistc's weights are [fan_in, fan_out]; torch's transposed
            linear.weight.copy_(
                torch.from_numpy(truncated_normal(rng, (fan_in, fan_out), fan_in**-0.5).T)
            )
            linear.bias.zero_()
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def index_stream(rng, n, count):
    """The first `count` training indices: a fresh permutation per epoch, concatenated."""
    epochs = math.ceil(count / n)
    return torch.from_numpy(np.concatenate([rng.permutation(n) for _ in range(epochs)])[:count])


def make_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=args.lr,
            momentum=args.momentum,
            nesterov=args.nesterov,
            weight_decay=args.weight_decay,
        )
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=args.lr, betas=args.betas, eps=args.eps, weight_decay=args.weight_decay)


def make_schedule(args, opt, steps, warmup):
    if args.schedule == "onecycle":
        return lr_scheduler.OneCycleLR(
            opt,
            max_lr=args.lr,
            total_steps=steps,
            pct_start=args.pct_start,
            div_factor=args.div_factor,
            final_div_factor=args.final_div_factor,
            cycle_momentum=False,
        )
    rest = steps - warmup
    main = {
        "constant": lambda: lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
        "linear": lambda: lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=rest),
        "cosine": lambda: lr_scheduler.CosineAnnealingLR(opt, T_max=rest),
    }[args.schedule]()
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(opt, args.warmup_start, 1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warmup])


@torch.inference_mode()
def precision(model, images, labels):
    correct = sum(
        int((model(x).argmax(1) == y).sum())
        for x, y in zip(images.split(EVAL_CHUNK), labels.split(EVAL_CHUNK))
    )
    return correct / len(labels)


def run(args, tensors, say=print):
    """Train one recipe; returns {"evals": [(step, {split: precision})], "train_seconds": s}."""
    rng = np.random.default_rng(args.seed)
    model = build_mlp([784, *args.hidden, 10], rng)  # weights first, then the data order
    images, labels = tensors["train"]
    n, batch = len(labels), args.batch_size
    steps = math.ceil(args.epochs * n / batch)
    warmup = math.ceil(args.warmup * n / batch)
    stream = index_stream(rng, n, steps * batch)
    opt = make_optimizer(args, model.parameters())
    schedule = make_schedule(args, opt, steps, warmup)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema)) if args.ema else None
    every = math.ceil(args.eval_every * n / batch) if args.eval_every else steps
    evals, train_seconds = [], 0.0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = stream[(step - 1) * batch : step * batch]
        loss = F.cross_entropy(
            model(images[idx]), labels[idx], label_smoothing=args.label_smoothing
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(model)
        if step % every == 0 or step == steps:
            train_seconds += time.perf_counter() - t0
            evaluated = ema or model
            result = {split: precision(evaluated, *tensors[split]) for split in args.eval}
            evals.append((step, result))
            shown = "  ".join(f"{split} Precision @ 1: {p:.4f}" for split, p in result.items())
            say(f"Step {step} (epoch {step * batch / n:.2f}): loss = {loss.item():.4f}  {shown}")
            t0 = time.perf_counter()
    return {"evals": evals, "train_seconds": train_seconds, "steps": steps}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data/mnist", help="folder with the four .gz files")
    p.add_argument("--hidden", type=lambda s: [int(w) for w in s.split(",")], default=[128, 128])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=float, default=5.0, help="runs ceil(epochs*55000/batch) steps")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.2, help="the peak (schedule's base) learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--betas", type=lambda s: tuple(float(b) for b in s.split(",")), default=(0.9, 0.999)
    )
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument(
        "--schedule", choices=("constant", "linear", "cosine", "onecycle"), default="onecycle"
    )
    p.add_argument("--pct-start", type=float, default=0.3, help="onecycle: rising fraction")
    p.add_argument("--div-factor", type=float, default=25.0, help="onecycle: peak / first lr")
    p.add_argument("--final-div-factor", type=float, default=1e4, help="onecycle: first / last lr")
    p.add_argument(
        "--warmup", type=float, default=0.0, help="epochs of linear warm-up (not onecycle)"
    )
    p.add_argument("--warmup-start", type=float, default=0.1, help="warm-up's first lr / peak lr")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument(
        "--ema", type=float, default=0.0, help="evaluate an EMA of the weights, this decay"
    )
    p.add_argument("--standardize", choices=("none", "global", "pixel"), default="none")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--eval",
        type=lambda s: s.split(","),
        default=["test"],
        help="comma-separated splits from train,validation,test (default: test)",
    )
    p.add_argument(
        "--eval-every", type=float, default=0.0, help="epochs between evaluations (0: end only)"
    )
    return p


def check(p, args):
    if args.warmup and args.schedule == "onecycle":
        p.error("onecycle warms up by itself (--pct-start); --warmup is for the other schedules")
    if unknown := set(args.eval) - {"train", "validation", "test"}:
        p.error(f"--eval: unknown split(s) {', '.join(sorted(unknown))}")
    return args


def main():
    p = build_parser()
    args = check(p, p.parse_args())
    torch.set_num_threads(args.threads)
    tensors = to_tensors(load_uint8(args.data_dir, args.eval), args.standardize)
    result = run(args, tensors)
    print(
        f"Train loop: {result['train_seconds']:.2f} s ({result['steps']} steps)  "
        f"Whole process: {time.perf_counter() - PROCESS_START:.2f} s"
    )


if __name__ == "__main__":
    main()
