#!/usr/bin/env bash
# One command for a GPU run of the benchmarks (XLA on), no internet needed:
#
#   bash benchmarks/gpu.sh              # the GPU run (< 8 minutes on an H100)
#   bash benchmarks/gpu.sh --dry-run    # tiny rounds, to check it runs (CPU)
#
# Prints the GPU name and the versions, then
#   1. benchmarks/step_time.py: training step and inference call, XLA on,
#      batch 64 and 4, discriminator and generator; plain, keras_sn, the
#      built-in keras.layers.SpectralNormalization, floor (and strip for
#      inference); median and IQR of the per-round ratios to plain;
#   2. benchmarks/gan_step_time.py: SN-GAN Table-3 generator updates per
#      second with XLA, batch 64 (discriminator plain / keras_sn / built-in).
# Every step is bounded by `timeout`, so the script ends in time even if a
# compilation hangs; what ran before is printed as it goes.
# PYTHON selects the interpreter (default: python).
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export KERAS_BACKEND=tensorflow
export TF_CPP_MIN_LOG_LEVEL=2
export PYTHONUNBUFFERED=1  # rows reach the log even if a timeout stops a step
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" = "--dry-run" ]; then
  # Every code path of the real run (train and inference, all variants,
  # memory, the GAN update) at batch 4 only, 2 rounds of 1 step: a check
  # that the script runs, on a CPU in a few minutes. Figures meaningless.
  BATCHES=(4)
  STEP_ARGS=(--rounds 2 --steps 1 --warmup-rounds 0)
  GAN_ARGS=(--batch 4 --rounds 2 --steps 1)
  STEP_TIMEOUT=1500 GAN_TIMEOUT=600  # a shared CPU compiles slowly
  echo "== DRY RUN: batch 4 only, tiny rounds, figures meaningless =="
else
  BATCHES=(64 4)
  STEP_ARGS=(--rounds 15 --steps 20 --warmup-rounds 2)
  GAN_ARGS=(--batch 64 --rounds 9 --steps 50)
  STEP_TIMEOUT=330 GAN_TIMEOUT=120  # the whole run within 8 minutes
fi

date -u +"date: %Y-%m-%dT%H:%M:%SZ"
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "nvidia-smi: not found (no NVIDIA GPU visible)"
fi
"$PYTHON" - <<'PY'
import platform, keras, tensorflow as tf
print("python", platform.python_version(), "| keras", keras.__version__,
      "| tensorflow", tf.__version__,
      "| cuda", tf.sysconfig.get_build_info().get("cuda_version"),
      "| cudnn", tf.sysconfig.get_build_info().get("cudnn_version"))
print("TensorFlow GPUs:", tf.config.list_physical_devices("GPU"))
PY

echo
echo "== 1. step time, XLA on (median and IQR of per-round ratios to plain) =="
timeout "$STEP_TIMEOUT" "$PYTHON" benchmarks/step_time.py --jit on --batch "${BATCHES[@]}" \
  --model both --mode both --no-torch --markdown "${STEP_ARGS[@]}" \
  2> >(grep -v -e "^[IWE]0000" -e "^WARNING" >&2)
echo "step_time.py exit status: $?"

echo
echo "== 2. SN-GAN generator updates per second, XLA on =="
timeout "$GAN_TIMEOUT" "$PYTHON" benchmarks/gan_step_time.py --jit on \
  "${GAN_ARGS[@]}" 2> >(grep -v -e "^[IWE]0000" -e "^WARNING" >&2)
echo "gan_step_time.py exit status: $?"
