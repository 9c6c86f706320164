#!/usr/bin/env bash
# usage: PYTHON=.venv/bin/python run.sh TREE OUTDIR
# Runs the before/after benchmark set of the restructure (issue 15) with the emauto of the
# checkout TREE (a git worktree of the commit to measure) and writes one JSON per benchmark.
set -u
TREE=$1; OUT=$2; mkdir -p "$OUT"; cd "$TREE"
PY="env PYTHONPATH=$TREE OMP_NUM_THREADS=1 ${PYTHON:-python} -m emauto"
run() { name=$1; shift; /usr/bin/time -f "$name %e s" $PY bench "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err"; tail -1 "$OUT/$name.err"; }
run probe-tuning probe-tuning --method all --episodes 10 --seed 0
run sparse-scan sparse-scan --coverage 0.05 --size 96 --seed 0
run fewshot fewshot --shots 1,5 --episodes 5 --seed 0
run region-search region-search --method all --episodes 1 --seed 0
run analysis analysis --images 1 --seed 0
echo done
