#!/bin/bash
# Final runs for one model: recommended 'ours' (3 seeds, NFE 3..10), then the 'paper' preset at the same budget.
cd /work/main; m=$1
OURS="samples=4096 val_samples=1024 lr=0.003"
THREADS=1 .venv/bin/python bench/tuning/exp.py $m 3,4,5,6,7,8,9,10 0,1,2 ours-final $OURS 2>&1 | grep -v -i warn
for s in 0 1 2; do
  THREADS=1 .venv/bin/python bench/tuning/exp.py $m 3,4,5,6,7,8,9,10 $s paper-final preset=paper samples=4096 val_samples=1024 2>&1 | grep -v -i warn
done
