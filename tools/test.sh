#!/usr/bin/env bash
# The whole test suite, in tiers, each in the environment it needs. It makes
# every virtual environment itself (on a fresh machine too) and prints, per
# tier, pytest's counts and the wall time. CI (.ci/run) runs exactly this.
#
# The tiers run in two lanes side by side (tensorflow, torch, docs | the wheel,
# the floors).
#
#   tier          environment                              tests
#   tensorflow    .venv: latest TF, JAX, torch (editable)  all: core, unit, integration, doctests
#   torch         .venv                                    unit
#   jax-wheel     .venv-wheel: the built wheel, JAX only,  unit (and: the wheel installs and
#                 no TensorFlow                             imports, twine check passes)
#   floor         .venv-floor: the declared floors         unit, TensorFlow backend
#   docs          .venv                                    mkdocs build --strict
#
# Usage: bash tools/test.sh [pytest args for every tier, e.g. -x]
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
# The floors (setup.cfg) and what TensorFlow 2.16 needs beside them.
FLOOR_PINS=${FLOOR_PINS:-"keras==3.8.0 tensorflow==2.16.2 numpy<2"}
# CI's machines hold this CPU build of torch; elsewhere any torch>=2.1 works.
TORCH_PIN=${TORCH_PIN:-"torch==2.13.0"}
LOGS=$ROOT/.test-logs
rm -rf "$LOGS" dist && mkdir -p "$LOGS"
export TF_CPP_MIN_LOG_LEVEL=2 PIP_DISABLE_PIP_VERSION_CHECK=1
start_all=$(date +%s)
failed=0

step() {  # step NAME COMMAND...: run, log, time; remember a failure
  local name=$1; shift
  local start rc
  start=$(date +%s)
  echo "=== $name: $*"
  "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  tail -n 3 "$LOGS/$name.log"
  local counts
  counts=$(grep -aE "[0-9]+ (passed|failed|error)" "$LOGS/$name.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
  printf '%-12s %5d s  rc=%d  %s\n' "$name" $(( $(date +%s) - start )) "$rc" \
    "$counts" >> "$LOGS/summary.txt"
  if [ "$rc" -ne 0 ]; then
    echo "--- $name failed (rc=$rc); the end of its log:"
    tail -n 60 "$LOGS/$name.log"
  fi
  return "$rc"
}

setup_main() {
  "$PYTHON" -m venv .venv &&
    .venv/bin/pip install -q "$TORCH_PIN" &&
    .venv/bin/pip install -q -e ".[tensorflow,jax,torch,test,docs,release]"
}

setup_wheel() {  # build the wheel and sdist, check them, install the wheel with JAX only
  .venv/bin/python -m build --sdist --wheel --outdir dist . &&
    .venv/bin/twine check --strict dist/* &&
    rm -rf .venv-wheel && "$PYTHON" -m venv .venv-wheel &&
    .venv-wheel/bin/pip install -q "$(ls dist/*.whl)[jax,test]" &&
    (cd /tmp && KERAS_BACKEND=jax "$ROOT/.venv-wheel/bin/python" -c "
import importlib.util, keras_sn
assert 'site-packages' in keras_sn.__file__, keras_sn.__file__
assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow is installed'
print('wheel', keras_sn.__version__, 'imports from', keras_sn.__file__, 'without TensorFlow')")
}

setup_floor() {  # the pinned floors first: they need nothing from .venv
  rm -rf .venv-floor && "$PYTHON" -m venv .venv-floor &&
    .venv-floor/bin/pip install -q $FLOOR_PINS
}

setup_floor_package() {  # after setup-main: editable installs write the tree
  .venv-floor/bin/pip install -q -e ".[test]" $FLOOR_PINS &&
    .venv-floor/bin/python -c "import keras, tensorflow as tf; print('floor: keras', keras.__version__, 'tensorflow', tf.__version__)"
}

wait_for_setup_main() {
  while [ ! -e "$LOGS/setup-main.done" ] && [ ! -e "$LOGS/setup-main.failed" ]; do
    sleep 2
  done
  [ -e "$LOGS/setup-main.done" ]
}

# Two lanes side by side (2 cores): each tier is a separate process, so the
# lanes share nothing but the machine. A lane goes on after a failed tier.
# Lane B starts at once with the floor environment, which needs nothing from
# .venv; it builds the wheel (with .venv's build and twine) after that.
lane_a() {
  step setup-main setup_main || { touch "$LOGS/setup-main.failed"; return 1; }
  touch "$LOGS/setup-main.done"
  step tensorflow env KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -p no:cacheprovider --durations=15 "$@"
  step torch env KERAS_BACKEND=torch .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -m "not core and not integration" "$@"
  if [ -f mkdocs.yml ]; then
    step docs .venv/bin/mkdocs build --strict --site-dir "$LOGS/site"
  fi
}

lane_b() {
  step setup-floor setup_floor
  wait_for_setup_main || return 1
  step setup-floor-pkg setup_floor_package &&
    step floor env KERAS_BACKEND=tensorflow .venv-floor/bin/python -m pytest -p no:cacheprovider --durations=15 tests -m "not core and not integration" "$@"
  # `pytest` (not `python -m pytest`) on the `tests` folder: the repository
  # root is not on sys.path, so the installed wheel is what runs.
  step setup-wheel setup_wheel &&
    step jax-wheel env KERAS_BACKEND=jax .venv-wheel/bin/pytest -p no:cacheprovider --durations=15 tests -m "not core and not integration" "$@"
}

lane_a "$@" > "$LOGS/lane-a.out" 2>&1 &
lane_a_pid=$!
lane_b "$@" > "$LOGS/lane-b.out" 2>&1 &
lane_b_pid=$!
wait "$lane_a_pid"; wait "$lane_b_pid"
cat "$LOGS/lane-a.out" "$LOGS/lane-b.out"
for tier in setup-main tensorflow torch jax-wheel floor; do
  grep -q "^$tier " "$LOGS/summary.txt" || echo "$tier not run" >> "$LOGS/summary.txt"
done
grep -q "rc=[1-9]\| not run" "$LOGS/summary.txt" && failed=1

echo
echo "=== summary: wall time and pytest's counts per tier"
cat "$LOGS/summary.txt"
echo "total wall time: $(( $(date +%s) - start_all )) s"
# One closing line over all tiers: N passed, N failed, N skipped.
total() {  # sum of "N $1" over each tier's closing pytest line
  for tier in tensorflow torch jax-wheel floor; do
    grep -aE "[0-9]+ (passed|failed|error)" "$LOGS/$tier.log" 2>/dev/null |
      tail -n 1 | grep -oE "[0-9]+ $1"
  done | awk '{s += $1} END {print s + 0}'
}
echo "all tiers: $(total passed) passed, $(( $(total failed) + $(total error) )) failed, $(total skipped) skipped"
exit "$failed"
