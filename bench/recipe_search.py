"""Screen torch_recipe.py recipes on the validation split, many runs in one process.

Each positional argument is one recipe (torch_recipe.py's flags in one string); each is
run for every --seeds seed, one run at a time, on data read once. The test split is
never read, so no choice can look at it. One JSON line per run is appended to --out:
the recipe with every flag spelt out (so that it survives a change of defaults), seed,
torch threads, validation precision at each evaluation, steps, training FLOP
(6 x weights x examples trained) and the training loop's seconds.

    python bench/recipe_search.py --seeds 1,2,3 "--hidden 512 --lr 0.1 --epochs 2"
    python bench/recipe_search.py --summary   # a markdown table of --out, one row a recipe
"""

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_recipe


def weights(hidden):
    sizes = [784, *hidden, 10]
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


ALWAYS_SHOWN = ("hidden", "batch_size", "epochs", "optimizer", "lr", "schedule")
NOT_RECIPE = ("help", "seed", "eval", "threads", "data_dir")


def flags(parser, args, keep=lambda name: True):
    """`args` (parsed by torch_recipe.py's parser) as flags, in the parser's order."""
    out = []
    for action in parser._actions:
        if action.dest in NOT_RECIPE or not keep(action.dest):
            continue
        value = getattr(args, action.dest)
        name = action.option_strings[0]
        if isinstance(value, bool):
            out.append(name if value else "--no-" + name[2:])
        else:
            out.append(
                f"{name} {','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
            )
    return " ".join(out)


def short(parser, recipe):
    """A stored (fully explicit) recipe as its main flags plus those that differ from
    torch_recipe.py's defaults."""
    args, defaults = parser.parse_args(shlex.split(recipe)), parser.parse_args([])
    return flags(
        parser, args, lambda n: n in ALWAYS_SHOWN or getattr(args, n) != getattr(defaults, n)
    )


def summary(path):
    """One markdown row per recipe: final validation precision per seed (in %), mean,
    min, training GFLOP and the median training-loop seconds."""
    parser = torch_recipe.build_parser()
    runs = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        runs.setdefault(short(parser, row["recipe"]), {})[row["seed"]] = row
    print("| recipe | GFLOP | validation % by seed | mean | min | torch s |")
    print("|---|---|---|---|---|---|")
    for recipe, by_seed in runs.items():
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        final = [100 * r["validation"][-1][1] for r in rows]
        seeds = " ".join(f"{r['seed']}:{v:.2f}" for r, v in zip(rows, final))
        seconds = statistics.median(r["train_seconds"] for r in rows)
        mean = statistics.mean(final)
        print(
            f"| `{recipe}` | {rows[0]['train_gflop']:.0f} | {seeds} | {mean:.2f} "
            f"| {min(final):.2f} | {seconds:.1f} |"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*")
    p.add_argument("--seeds", default="1")
    p.add_argument("--out", default=Path(__file__).with_name("recipe_search.jsonl"))
    p.add_argument("--data-dir", default="/work/shared/data/mnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--summary", action="store_true", help="print --out as a table and stop")
    args = p.parse_args()
    if args.summary:
        return summary(args.out)
    torch.set_num_threads(args.threads)
    parser = torch_recipe.build_parser()
    data = torch_recipe.load_uint8(args.data_dir, ["validation"])
    tensors = {}
    for recipe in args.recipes:
        for seed in args.seeds.split(","):
            flags = shlex.split(recipe) + ["--seed", seed, "--eval", "validation"]
            run_args = torch_recipe.check(parser, parser.parse_args(flags))
            if run_args.standardize not in tensors:
                tensors[run_args.standardize] = torch_recipe.to_tensors(data, run_args.standardize)
            result = torch_recipe.run(run_args, tensors[run_args.standardize], say=lambda _: None)
            examples = result["steps"] * run_args.batch_size
            row = {
                "recipe": flags(parser, run_args),
                "seed": int(seed),
                "threads": args.threads,
                "validation": [(step, r["validation"]) for step, r in result["evals"]],
                "steps": result["steps"],
                "train_gflop": round(6 * weights(run_args.hidden) * examples / 1e9, 1),
                "train_seconds": round(result["train_seconds"], 2),
            }
            print(
                f"{row['validation'][-1][1]:.4f}  {row['train_gflop']:7.1f} GF "
                f"{row['train_seconds']:6.2f} s  seed {seed}  {recipe}",
                flush=True,
            )
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
