"""The warm-up's accuracy: sigma_est / sigma_SVD - 1 right after build.

For freshly initialized (Glorot) kernels, builds `keras_sn.SpectralNormalization`
with the default `warmup_iterations=15` and compares `layer.sigma` (the value
the first call divides by, float32 state) with numpy's SVD of the same kernel
(`keras_sn.spectral_norm`). Also prints what 15 plain power steps from the
same kind of random start give, for comparison.

    python benchmarks/warmup_accuracy.py --seeds 10 --markdown
"""

import argparse
import datetime
import platform

import keras
import numpy as np

import keras_sn

CASES = {
    "Dense 64->128": (lambda: keras.layers.Dense(128), (None, 64)),
    "Conv2D 3x3 32->64": (lambda: keras.layers.Conv2D(64, 3), (None, 16, 16, 32)),
    "Conv2D 4x4 s2 64->128": (
        lambda: keras.layers.Conv2D(128, 4, strides=2), (None, 16, 16, 64)),
}


def power_error(matrix, steps, rng):
    u = rng.standard_normal(matrix.shape[0])
    for _ in range(steps):
        v = matrix.T @ u
        v /= np.linalg.norm(v)
        u = matrix @ v
        u /= np.linalg.norm(u)
    return np.linalg.norm(matrix @ v) / np.linalg.svd(matrix, compute_uv=False)[0] - 1


def measure(seeds):
    rows = []
    for name, (make, shape) in CASES.items():
        errors, power = [], []
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            layer = keras_sn.SpectralNormalization(make())
            layer.build(shape)
            estimate = float(layer.sigma)
            exact = keras_sn.spectral_norm(layer)
            errors.append(estimate / exact - 1.0)
            kernel = np.asarray(layer.layer.kernel.numpy(), np.float64)
            matrix = kernel.reshape(-1, kernel.shape[-1]).T
            power.append(power_error(matrix, 15, np.random.default_rng(seed)))
        rows.append((name, np.array(errors), np.array(power)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per layer")
    parser.add_argument("--markdown", action="store_true",
                        help="print a Markdown table with its date")
    args = parser.parse_args()
    rows = measure(args.seeds)
    if args.markdown:
        print(f"{datetime.date.today().isoformat()}, keras {keras.__version__}, "
              f"backend {keras.backend.backend()}, {platform.machine()} CPU, "
              f"{args.seeds} seeds, warmup_iterations=15")
        print()
        print("| layer | sigma_est / sigma_SVD - 1 after the warm-up: median | worst |"
              " 15 power steps: median | worst |")
        print("|---|---|---|---|---|")
    for name, errors, power in rows:
        worst = errors[np.argmax(np.abs(errors))]
        pworst = power[np.argmax(np.abs(power))]
        if args.markdown:
            print(f"| {name} | {np.median(errors):.1e} | {worst:.1e} |"
                  f" {np.median(power):.1e} | {pworst:.1e} |")
        else:
            print(name, "warm-up:", np.array2string(errors, precision=2),
                  "power:", np.array2string(power, precision=2))


if __name__ == "__main__":
    main()
