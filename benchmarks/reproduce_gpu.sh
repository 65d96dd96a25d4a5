#!/usr/bin/env bash
# The DistilledGPT-44M chain of the paper on one GPU, bounded: GPT2-44M and Llama-60M teachers ->
# GPT2-44M student, with the paper's recipes (Table 1 hyperparameters, bf16 autocast where the GPU
# has it, the teacher-logit cache), at most STEPS optimizer steps per model, then BLiMP, the
# supplement and EWoK on every pair (when an evaluation folder is given). It is
# `tinyminds reproduce --scale paper --only ...`, so the run folder holds the usual report.md
# (Table 1, scores beside the paper's, learning curves, per-stage wall time, tokens/s and peak GPU
# memory, the machine) and a rerun reuses the finished stages. At the end it prints the stage
# timings and the projected time of the full chain (each recipe's epochs -- 6 for the GPT-2s, 4 for
# Llama-60M -- on the 10M-word BabyLM corpus) from the measured tokens/s.
#
# Sized for one H100/H200 on babylm-mini (tar -xzf babylm-mini.tar.gz): about 3-4 minutes with the
# default 300 steps (preparing babylm-mini with a 16,000-token BPE took 18 s on 2 CPU cores here).
# Needs only torch, transformers (with its tokenizers, pyyaml, tqdm), numpy, scipy, matplotlib.
#
#   bash benchmarks/reproduce_gpu.sh CORPUS_DIR [EVAL_DATA_DIR] [--out DIR] [--steps N] [--device cpu]
#
# --device cpu runs the same chain on the CPU (to check the script; use a few --steps there).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
usage="usage: bash benchmarks/reproduce_gpu.sh CORPUS_DIR [EVAL_DATA_DIR] [--out DIR] [--steps N] [--device cpu]"
corpus=""
eval_data=""
out="reproduce_gpu"
steps=300
device="cuda"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        --*) echo "$usage" >&2; exit 2 ;;
        *)
            if [[ -z "$corpus" ]]; then corpus="$1"
            elif [[ -z "$eval_data" ]]; then eval_data="$1"
            else echo "$usage" >&2; exit 2
            fi
            shift ;;
    esac
done
[[ -n "$corpus" ]] || { echo "$usage" >&2; exit 2; }
python="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$device" == "cuda" ]]; then
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU found: this script is for a GPU machine (--device cpu checks it on the CPU with a few --steps)')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

only="eval-gpt2-44m,eval-llama-60m,eval-distilledgpt-44m"
evaluation=(--eval-data "$eval_data")
if [[ -z "$eval_data" ]]; then
    only="distilledgpt-44m"
    evaluation=(--skip-evaluation)
    echo "no evaluation folder given: training only (pass EVAL_DATA_DIR to score the three models)"
fi
started=$(date +%s)
status=0
"$python" -m tinyminds reproduce --scale paper --corpus "$corpus" "${evaluation[@]}" --out "$out" \
    --only "$only" --max-steps "$steps" --device "$device" || status=$?
seconds=$(( $(date +%s) - started ))
if [[ -f "$out/report.md" ]]; then
    echo
    awk '/^## Stages/{p=1} /^## Table 1/{p=0} p' "$out/report.md" | grep -v '^Each stage'
    awk '/^## Projected full run/{p=1} /^## Not run/{p=0} p' "$out/report.md"
fi
{
    echo "device: $device"
    if [[ "$device" == "cuda" ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
    echo "steps per model: $steps"
    echo "wall time of the script's reproduce run: ${seconds} s"
    echo "exit status: $status"
} > "$out/timings.txt"
echo "wall time: ${seconds} s; report: $out/report.md; timings: $out/timings.txt"
exit "$status"
