"""SN vs no SN across the paper's settings A-F on the bundled digits.

For every Table 1 setting (A-F), with and without spectral normalization on
the discriminator, and for each seed, it trains examples/dcgan.py's GAN with a
small budget (the same number of generator updates for every setting, as in
the paper) and scores it with the example's `--eval`: the Frechet distance
(FD) in a digits classifier's feature space and KL(labels || uniform). It
prints the machine, every run and a markdown table (mean and range over the
seeds), and writes all of it to `--json`.

Usage (the table in examples/README.md):
    taskset -c 1 python benchmarks/gan_quality.py --json benchmarks/results/gan_quality.json

XLA is off by default here (`--jit` turns it on): on a CPU it compiles each
of the 36 runs for tens of seconds and runs convolutions slower than
TensorFlow's oneDNN kernels (see benchmarks/gan_step_time.py); it changes the
speed, not the computation.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gan_step_time import load_example  # noqa: E402
from gan_step_time import machine  # noqa: E402


def summarize(values):
    mean = statistics.fmean(values)
    return f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"


def summarize_kl(values):
    mean = statistics.fmean(values)
    return f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})"


def markdown_table(runs, settings, reference):
    lines = [
        "| Setting (lr, β1, β2, n_dis) | FD, SN | FD, no SN | KL, SN | KL, no SN |",
        "|---|---|---|---|---|",
    ]
    for setting in settings:
        cells = {}
        for sn in (True, False):
            chosen = [
                r for r in runs if r["setting"] == setting and r["sn"] == sn
            ]
            cells[sn] = (
                summarize([r["fd"] for r in chosen]),
                summarize_kl([r["kl"] for r in chosen]),
            )
        lines.append(
            f"| {setting} ({runs_setting_text(runs, setting)}) | "
            f"{cells[True][0]} | {cells[False][0]} | "
            f"{cells[True][1]} | {cells[False][1]} |"
        )
    lines.append("")
    lines.append("Reference rows (same classifier, same sample size):")
    lines.append("")
    lines.append("| | FD | KL |")
    lines.append("|---|---|---|")
    for name, score in reference.items():
        lines.append(f"| {name} | {score['fd']:.2f} | {score['kl']:.3f} |")
    return "\n".join(lines)


def runs_setting_text(runs, setting):
    for r in runs:
        if r["setting"] == setting:
            h = r["hyper"]
            return (f"{h['learning_rate']:g}, {h['beta_1']:g}, "
                    f"{h['beta_2']:g}, {h['n_dis']}")
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="ABCDEF",
                        help="which Table 1 settings, e.g. ABCDEF")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=50,
                        help="generator updates per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--jit", action="store_true",
                        help="compile the train step with XLA")
    parser.add_argument("--cache-dir", default=None,
                        help="digits classifier cache (default: the example's)")
    parser.add_argument(
        "--json", default=None,
        help="write everything here, after every run; runs already in this "
        "file (same budget) are kept and not run again, so an interrupted "
        "benchmark resumes",
    )
    args = parser.parse_args(argv)

    dcgan = load_example()
    info = machine()
    print("Machine:", json.dumps(info), flush=True)
    budget = dict(
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, width=args.width, jit_compile=args.jit,
    )
    print("Budget per run:", json.dumps(budget), flush=True)
    runs, reference = previous_runs(args.json, budget)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for setting in args.settings:
            for sn in (True, False):
                for seed in range(args.seeds):
                    done = [r for r in runs if (r["setting"], r["sn"],
                                                r["seed"]) == (setting, sn, seed)]
                    if done:
                        print_run(done[0], "(from --json)")
                        continue
                    run_start = time.perf_counter()
                    result = dcgan.train(
                        setting=setting, spectral_norm=sn, seed=seed,
                        out=os.path.join(scratch, f"{setting}_{sn}_{seed}"),
                        evaluate=True, cache_dir=args.cache_dir, verbose=0,
                        export=False,
                        **budget,
                    )
                    score = result["eval"]["this generator"]
                    run = {
                        "setting": setting,
                        "hyper": vars(dcgan.SETTINGS[setting]),
                        "sn": sn,
                        "seed": seed,
                        "fd": score["fd"],
                        "kl": score["kl"],
                        "final": result["final"],
                        "wall_s": time.perf_counter() - run_start,
                    }
                    runs.append(run)
                    reference = {
                        k: v for k, v in result["eval"].items()
                        if k != "this generator"
                    }
                    print_run(run, f"({run['wall_s']:.0f} s)")
                    write_json(args.json, info, budget, runs, reference)
    total = time.perf_counter() - start
    chosen = [r for r in runs if r["setting"] in args.settings]
    table = markdown_table(chosen, args.settings, reference)
    print(f"\nTotal {total / 60:.1f} min\n")
    print(table)
    write_json(args.json, info, budget, runs, reference, table)


def print_run(run, note):
    print(
        f"RUN setting {run['setting']} SN {'on ' if run['sn'] else 'off'} "
        f"seed {run['seed']}: FD {run['fd']:8.2f}  KL {run['kl']:.3f}  "
        f"d_loss {run['final']['d_loss']:.3f}  "
        f"sn_bound {run['final']['sn_bound']:.3g}  {note}",
        flush=True,
    )


def previous_runs(json_path, budget):
    """`(runs, reference)` kept from an earlier `--json` with this budget."""
    if not json_path or not pathlib.Path(json_path).exists():
        return [], None
    previous = json.loads(pathlib.Path(json_path).read_text())
    if previous.get("budget") != budget:
        raise SystemExit(
            f"{json_path} holds runs with another budget "
            f"({previous.get('budget')}, this run: {budget}). Pass the same "
            "flags to resume it, or another --json path."
        )
    return previous["runs"], previous.get("reference")


def write_json(json_path, info, budget, runs, reference, table=None):
    if not json_path:
        return
    path = pathlib.Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": info, "budget": budget, "runs": runs,
                "reference": reference}
    if table is not None:
        document["table"] = table
    path.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
