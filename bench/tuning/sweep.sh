#!/bin/bash
# usage: sweep.sh MODEL NFES SEEDS "TAG|k=v k=v" ...   (sequential; run one per model in parallel)
cd /work/main
m=$1; n=$2; s=$3; shift 3
for spec in "$@"; do
  tag=${spec%%|*}; kv=${spec#*|}
  THREADS=1 .venv/bin/python bench/tuning/exp.py $m $n $s $tag $kv 2>&1 | grep -v -i warn
done
