#!/usr/bin/env bash
# The whole test suite, in tiers, each in the environment it needs. It makes
# every virtual environment itself (on a fresh machine too) and prints, per
# tier, pytest's counts and the wall time. CI (.ci/run) runs exactly this.
#
# The tiers run in two lanes side by side (2 cores), in this order:
#
#   lane  tier          environment                         tests
#   A     tensorflow    .venv: latest TF, JAX, torch        core, unit, doctests
#                       (editable install)
#   A     torch         .venv                               unit
#   A     integration   .venv, TensorFlow                   integration, but the examples tier's
#   A     docs          .venv                               mkdocs build --strict
#   B     floor         .venv-floor: the declared floors    unit, TensorFlow backend
#   B     jax-wheel     .venv-wheel: the built wheel, JAX   unit (and: the wheel installs and
#                       only, no TensorFlow                 imports, twine check passes)
#   B     examples      .venv, TensorFlow                   integration: examples, docs, GAN tracking
#
# Installs go through uv (`uv pip install`, a drop-in for pip that installs
# the same packages about 10x faster: the four environments took 5.4 minutes
# of the 15-minute CI budget with pip). uv itself comes from PyPI into
# .venv-uv; where it cannot be installed, pip does the same installs.
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
# The integration tests (TensorFlow) in two tiers, one per lane: the
# examples', the documentation's and the GAN-tracking runs, and the rest
# (several processes, fresh-process reloads, distribution). The split keeps
# the lanes about even (lane A ran ~40 s longer with GAN tracking in it).
EXAMPLE_TESTS=(tests/test_example_dcgan.py tests/test_example_conditional.py
               tests/test_example_lipschitz_classifier.py tests/test_docs_snippets.py
               tests/test_gan_tracking.py)
# JAX compiles every new op shape; the unit tests check values, not speed,
# and XLA's fastest compilation (no LLVM optimization) takes about a third
# off the JAX tier (549 s -> 348-425 s). For the TensorFlow tiers it made no
# difference beyond the run-to-run spread (integration: 374 and 436 s
# without it, 433 and 447 s with it), so they compile as users do.
JAX_XLA_FLAGS=${JAX_XLA_FLAGS:-"--xla_backend_optimization_level=0"}
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

setup_installer() {  # uv, or nothing (then `install` uses pip)
  rm -rf .venv-uv && "$PYTHON" -m venv .venv-uv &&
    .venv-uv/bin/pip install -q "uv>=0.5" && .venv-uv/bin/uv --version ||
    { rm -rf .venv-uv; echo "uv unavailable: installing with pip"; }
}

# pip's own settings that uv does not read (pip.conf's find-links and
# constraint, e.g. a local CPU build of torch), passed on as flags.
uv_flags() {
  local links constraint dir
  links="$("$PYTHON" -m pip config get global.find-links 2>/dev/null) ${PIP_FIND_LINKS:-}"
  for dir in $links; do
    [ -e "$dir" ] && echo "--find-links $dir"
  done
  constraint=$("$PYTHON" -m pip config get global.constraint 2>/dev/null)
  for dir in $constraint ${PIP_CONSTRAINT:-}; do
    [ -f "$dir" ] && echo "--constraint $dir"
  done
}

install() {  # install VENV REQUIREMENT...: into VENV, with uv where there is one
  local venv=$1; shift
  if [ -x .venv-uv/bin/uv ]; then
    # shellcheck disable=SC2046
    .venv-uv/bin/uv pip install -q --python "$venv/bin/python" $(uv_flags) "$@"
  else
    "$venv/bin/pip" install -q "$@"
  fi
}

setup_main() {
  "$PYTHON" -m venv .venv &&
    install .venv "$TORCH_PIN" -e ".[tensorflow,jax,torch,test,docs,release]"
}

setup_wheel() {  # build the wheel and sdist, check them, install the wheel with JAX only
  local installer=()
  [ -x .venv-uv/bin/uv ] && installer=(--installer uv)
  PATH="$ROOT/.venv-uv/bin:$PATH" .venv/bin/python -m build "${installer[@]}" --sdist --wheel --outdir dist . &&
    .venv/bin/twine check --strict dist/* &&
    rm -rf .venv-wheel && "$PYTHON" -m venv .venv-wheel &&
    install .venv-wheel "$(ls dist/*.whl)[jax,test]" &&
    (cd /tmp && KERAS_BACKEND=jax "$ROOT/.venv-wheel/bin/python" -c "
import importlib.util, keras_sn
assert 'site-packages' in keras_sn.__file__, keras_sn.__file__
assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow is installed'
print('wheel', keras_sn.__version__, 'imports from', keras_sn.__file__, 'without TensorFlow')")
}

setup_floor() {  # the pinned floors first: they need nothing from .venv
  rm -rf .venv-floor && "$PYTHON" -m venv .venv-floor &&
    install .venv-floor $FLOOR_PINS
}

setup_floor_package() {  # after setup-main: editable installs write the tree
  install .venv-floor -e ".[test]" $FLOOR_PINS &&
    .venv-floor/bin/python -c "from importlib.metadata import version as v; print('floor: keras', v('keras'), 'tensorflow', v('tensorflow'))"
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
  step tensorflow env KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -m "not integration" "$@"
  step torch env KERAS_BACKEND=torch .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -m "not core and not integration" "$@"
  step integration env KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -m integration "${EXAMPLE_TESTS[@]/#/--ignore=}" tests "$@"
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
    step jax-wheel env KERAS_BACKEND=jax XLA_FLAGS="$JAX_XLA_FLAGS" .venv-wheel/bin/pytest -p no:cacheprovider --durations=15 tests -m "not core and not integration" "$@"
  step examples env KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -m integration "${EXAMPLE_TESTS[@]}" "$@"
}

step installer setup_installer
lane_a "$@" > "$LOGS/lane-a.out" 2>&1 &
lane_a_pid=$!
lane_b "$@" > "$LOGS/lane-b.out" 2>&1 &
lane_b_pid=$!
wait "$lane_a_pid"; wait "$lane_b_pid"
cat "$LOGS/lane-a.out" "$LOGS/lane-b.out"
for tier in setup-main tensorflow torch integration jax-wheel floor examples; do
  grep -q "^$tier " "$LOGS/summary.txt" || echo "$tier not run" >> "$LOGS/summary.txt"
done
grep -q "rc=[1-9]\| not run" "$LOGS/summary.txt" && failed=1

echo
echo "=== summary: wall time and pytest's counts per tier"
cat "$LOGS/summary.txt"
echo "total wall time: $(( $(date +%s) - start_all )) s"
# One closing line over all tiers: N passed, N failed, N skipped.
total() {  # sum of "N $1" over each tier's closing pytest line
  for tier in tensorflow torch integration jax-wheel floor examples; do
    grep -aE "[0-9]+ (passed|failed|error)" "$LOGS/$tier.log" 2>/dev/null |
      tail -n 1 | grep -oE "[0-9]+ $1"
  done | awk '{s += $1} END {print s + 0}'
}
echo "all tiers: $(total passed) passed, $(( $(total failed) + $(total error) )) failed, $(total skipped) skipped"
exit "$failed"
