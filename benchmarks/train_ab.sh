#!/usr/bin/env bash
# The training step of two checkouts taking turns, three times: each runs its own
# benchmarks/train_speed.py (same data, batches and rounds), and the CPU time of its whole process is
# printed beside its table, because on a shared host the CPU time of the same work varies less than the
# wall time.
#   OLD=/tmp/mt-old NEW=. DATA=work/bible/data PYTHON=.venv/bin/python bash benchmarks/train_ab.sh
set -eu
for round in 1 2 3; do
  for tree in "${OLD:?set OLD and NEW to two checkouts}" "${NEW:?set NEW}"; do
    /usr/bin/time -f "$tree (round $round): CPU %U+%S s, wall %e s" env PYTHONPATH="$tree" "${PYTHON:-python}" \
      "$tree/benchmarks/train_speed.py" --data "${DATA:?set DATA to a prepared data folder}" --config rnn-base-cpu \
      --variants float32,mixed_bfloat16 --batches 16 --rounds 3 2>&1 | grep -E '^\| (float32|mixed)|CPU '
  done
done
