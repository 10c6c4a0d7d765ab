#!/usr/bin/env bash
# The GPU measurements this project still owes (issues 4 and 5), packed for the `device` tool:
# few calls, each well inside its 10-minute limit, everything the reply needs under $OUT.
#
# Here (once):     bash benchmarks/gpu_session.sh prepare
#                  packs the cached MNIST (and FMNIST) files into .gpu_data/ (git-excluded, ~35 MB)
# On the device:   run(command="bash benchmarks/gpu_session.sh tests bench", carry=[".gpu_data"])
#                  run(command="FIG4_EPOCHS=1 bash benchmarks/gpu_session.sh fig4", carry=[".gpu_data"])
# Stages:
#   tests   pytest -m cuda (faithful GPU path == EulerSolver, CUDA graphs, trials)
#   bench   benchmarks/bench_engine.py --device cuda --batches 50
#   bench_tf32  the same with --tf32 (big and trials cases, no baseline or check)
#   fig4    eqprop reproduce fig4 --batched --device cuda --epochs $FIG4_EPOCHS (default 1)
#   fig2    eqprop reproduce fig2 --batched --device cuda --epochs $FIG2_EPOCHS (default 1)
#   table1  eqprop reproduce table1 --only images --batched --device cuda --epochs $T1_EPOCHS (default 1)
# Each experiment stage resumes from the results tarball of an earlier call if one is carried
# in .gpu_data/results-NAME.tar.gz (copy it there from the reply's files).
# The device image has torch, numpy, tqdm, matplotlib, sklearn and pytest (python3); the package
# runs from the tree (PYTHONPATH=.), no install. lark/PySpice are not needed for these stages.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# the CLI from the tree (no install there); an array so that `timeout` can run it
EQPROP=("$PY" -c 'import sys; from eqprop_cli.main import main; sys.exit(main())')

unpack_data() {
  export EQPROP_DATA=/tmp/eqprop-data
  mkdir -p "$EQPROP_DATA"
  for t in .gpu_data/mnist.tar.gz .gpu_data/fmnist.tar.gz; do
    [ -f "$t" ] && tar -xzf "$t" -C "$EQPROP_DATA"
  done
  return 0
}

experiment() {  # name, epochs, extra flags...
  local name=$1 epochs=$2; shift 2
  unpack_data
  local res=/tmp/results/$name
  mkdir -p "$res"
  [ -f ".gpu_data/results-$name.tar.gz" ] && tar -xzf ".gpu_data/results-$name.tar.gz" -C "$res"
  set +e
  # STAGE_LIMIT (seconds, 0 = none) stops the run but leaves time to pack what it has checkpointed
  timeout "${STAGE_LIMIT:-0}" "${EQPROP[@]}" reproduce "$name" --device cuda --epochs "$epochs" --compare \
    --out "$res" "$@" 2>&1 \
    | tee "$OUT/$name.log"
  set -e
  # the reports, metrics and plots first and apart: the whole tarball (checkpoints) can exceed what comes back
  tar -czf "$OUT/report-$name.tar.gz" -C "$res" --exclude='*.pt' .
  tar -czf "$OUT/results-$name.tar.gz" -C "$res" .
}

for stage in "$@"; do
  case $stage in
    prepare)
      cache=${EQPROP_DATA:-$HOME/.cache/eqprop-spice}
      mkdir -p .gpu_data
      mkdir -p "$(git rev-parse --git-common-dir)/info"
      exclude="$(git rev-parse --git-common-dir)/info/exclude"
      grep -qx "/.gpu_data/" "$exclude" 2>/dev/null || echo "/.gpu_data/" >> "$exclude"
      for ds in mnist fmnist; do
        [ -d "$cache/$ds" ] && tar -czf ".gpu_data/$ds.tar.gz" -C "$cache" "$ds"
      done
      du -sh .gpu_data/* ;;
    tests)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
      $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/gpu.txt"
      set +e
      $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_fast_relax.py tests/test_trainer.py 2>&1 | tee "$OUT/tests_cuda.log"
      set -e ;;
    bench)
      $PY benchmarks/bench_engine.py --device cuda --batches 50 2>&1 | tee "$OUT/bench_engine.log" ;;
    bench_tf32)  # the not-faithful TF32 variant, on the two cases with targets only
      $PY benchmarks/bench_engine.py --device cuda --batches 50 --tf32 --skip-baseline --skip-check \
        --cases big,trials 2>&1 | tee "$OUT/bench_engine_tf32.log" ;;
    fig4) experiment fig4 "${FIG4_EPOCHS:-1}" ;;
    fig2) experiment fig2 "${FIG2_EPOCHS:-1}" ;;
    table1) experiment table1 "${T1_EPOCHS:-1}" --only images ;;
    *) echo "unknown stage $stage (prepare tests bench bench_tf32 fig4 fig2 table1)" >&2; exit 2 ;;
  esac
done
