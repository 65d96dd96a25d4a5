#!/usr/bin/env bash
# bench_distill.py on one GPU (sized for one H100: under 5 minutes): batch 32, 200 timed steps
# after 30 warm-up steps, all of babylm-mini (the teacher cache covers its ~4.9M training tokens).
# The tables go to OUT.md and the numbers to OUT.json (OUT defaults to bench_distill_gpu);
# any further arguments are passed on, e.g. --compile or --batch 128.
#
#   bash benchmarks/bench_distill_gpu.sh [OUT] [--compile] [bench_distill.py options...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="bench_distill_gpu"
if [[ $# -gt 0 && "$1" != --* ]]; then
    out="$1"
    shift
fi
python="${PYTHON:-python}"
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this script is for a GPU machine (bench_distill.py runs on the CPU)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$python" "$here/bench_distill.py" --gpu --out-table "$out.md" --json "$out.json" "$@"
