#!/usr/bin/env bash
# One command for a machine with a GPU (issue 11): the Triton and torch backend tests without the interpreter,
# `autotune bench` on the GPU (Triton against cuDNN through the torch backend, float32 and bfloat16) and a short
# `autotune tune`, all written into one table: $OUT/gpu_check.md (OUT defaults to ./gpu-check).
#   scripts/gpu_check.sh [--dry-run] [--python PY] [--out DIR] [--only NAME...]
# --dry-run prints the steps without running them (and needs no GPU). Without a GPU it fails with exit status 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-gpu-check}
DRY=0
ONLY=(dcgan_g2 unet_up_deep superres_x2 decoder_s1_3x3)
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --python) PY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --only) shift; ONLY=(); while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ONLY+=("$1"); shift; done; continue ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

STEPS=(
  "tests|env -u TRITON_INTERPRET $PY -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_torch_backend.py tests/test_backends.py -k 'triton or torch'"
  "bench float32|env -u TRITON_INTERPRET $PY -m autotune.cli bench --backends triton torch --only ${ONLY[*]} --csv $OUT/bench_float32.csv"
  "bench bfloat16|env -u TRITON_INTERPRET $PY -m autotune.cli bench --backends triton torch --problems $OUT/problems_bfloat16.csv --csv $OUT/bench_bfloat16.csv"
  "tune|env -u TRITON_INTERPRET $PY -m autotune.cli tune --backends triton torch --only ${ONLY[0]} --trials 8 --results $OUT/results"
  "bench tuned|env -u TRITON_INTERPRET $PY -m autotune.cli bench --backends triton torch --only ${ONLY[0]} --configs tuned --results $OUT/results --csv $OUT/bench_tuned.csv"
)
if [ "$DRY" = 1 ]; then
  for s in "${STEPS[@]}"; do echo "${s%%|*}: ${s#*|}"; done
  exit 0
fi

if ! env -u TRITON_INTERPRET "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no GPU: torch sees no CUDA/HIP device here (torch.cuda.is_available() is False); run this on a" \
       "machine with a GPU, or --dry-run to see the steps" >&2
  exit 3
fi
mkdir -p "$OUT"
# the bfloat16 problems: the chosen suite rows with a dtype column
env -u TRITON_INTERPRET "$PY" - "$OUT/problems_bfloat16.csv" "${ONLY[@]}" <<'PYEOF'
import csv, sys
from autotune.problems import load_problems
rows = [n for n in load_problems() if n.name in sys.argv[2:]]
with open(sys.argv[1], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["name", "N", "C_in", "H", "W", "C_out", "kH", "kW", "stride", "padding", "output_padding", "dilation",
                "groups", "bias", "dtype"])
    for n in rows:
        p = n.problem
        pair = lambda v: f"{v[0]}:{v[1]}"
        (t, b), (l, r) = p.padding
        w.writerow([n.name, p.N, p.C_in, p.H, p.W, p.C_out, p.kH, p.kW, pair(p.stride), f"{t}:{b}:{l}:{r}",
                    pair(p.output_padding), pair(p.dilation), p.groups, int(p.bias), "bfloat16"])
PYEOF
TABLE="$OUT/gpu_check.md"
{ echo "# gpu_check $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  echo; echo "| step | status | seconds |"; echo "|---|---|---|"; } > "$TABLE"
FAILED=0
for s in "${STEPS[@]}"; do
  name=${s%%|*}; cmd=${s#*|}; start=$(date +%s)
  if bash -c "$cmd" > "$OUT/${name// /_}.log" 2>&1; then st=ok; else st="FAILED (see ${name// /_}.log)"; FAILED=1; fi
  echo "| $name | $st | $(( $(date +%s) - start )) |" >> "$TABLE"
done
{ for name in "bench float32" "bench bfloat16" "bench tuned"; do
    echo; echo "## $name"; echo '```'; grep -v '^bench:' "$OUT/${name// /_}.log" || true; echo '```'; done; } >> "$TABLE"
cat "$TABLE"
exit $FAILED
