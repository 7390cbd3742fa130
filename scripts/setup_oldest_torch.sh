#!/usr/bin/env bash
# Set up .venv-torch21: the oldest torch bevboost supports (2.1.2, CPU-usable) + mmengine 0.10.7,
# without mmcv/mmdet/mmdet3d, then install the kit the way README's "add bevboost to an existing
# MMDetection3D environment" says (pip constraints pinning what is installed), and fail if that
# changed torch's version. Used by .ci/run to run the core test tier on the oldest torch.
# Idempotent: a second run only checks. A first run took 1.5-3 min on a 2-core machine (torch
# 2.1.2 from PyPI brings its CUDA runtime wheels, ~2.5 GB; they are unused on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${BEVBOOST_OLDEST_VENV:-.venv-torch21}
TORCH=${BEVBOOST_OLDEST_TORCH:-2.1.2}
export PIP_DISABLE_PIP_VERSION_CHECK=1

start=$SECONDS
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install -q "setuptools<82" wheel
echo "installing torch $TORCH (first time: a few minutes, ~2.5 GB) ..." >&2
# numpy<2: torch 2.1 was built against numpy 1.x
"${pip[@]}" install -q "torch==$TORCH" "numpy<2" mmengine==0.10.7

# The existing environment's torch/mmengine/numpy are what the kit must not move.
keep="$VENV/keep-constraints.txt"
"${pip[@]}" freeze | grep -iE '^(torch|numpy|mmengine|mmcv|mmdet|mmdet3d)==' > "$keep"
before=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
"${pip[@]}" install -q -c "$keep" -e ".[dev]"
after=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
if [ "$before" != "$after" ]; then
  echo "error: installing bevboost changed torch $before -> $after" >&2
  exit 1
fi
"$VENV/bin/python" - <<'PY'
import torch, mmengine, bevboost
print(f'bevboost {bevboost.__version__} ({__import__("sys").prefix}): torch {torch.__version__}, '
      f'mmengine {mmengine.__version__}')
PY
echo "oldest-torch venv ready in $((SECONDS - start)) s" >&2
