#!/usr/bin/env bash
# Set up .venv with everything bevboost, its tests and its benchmarks need, CPU-only.
# Idempotent: a second run only checks. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${BEVBOOST_VENV:-.venv}
# mmcv 2.1.0 CPU-ops wheel built for torch 2.13.0 (saves a ~38 min compile where present)
# (BEVBOOST_WHEELS, else ../shared/wheels next to the checkout when it exists)
WHEELS=${BEVBOOST_WHEELS:-}
if [ -z "$WHEELS" ] && [ -d ../shared/wheels ]; then
  WHEELS=../shared/wheels
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
find_links=()
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  find_links=(--find-links "$WHEELS")
else
  echo "note: no prebuilt mmcv wheel found (set BEVBOOST_WHEELS); pip may build mmcv from source (~40 min)" >&2
fi

pip install -q "setuptools<82" wheel
# torch first, pinned, so nothing below pulls a multi-GB CUDA build
pip install -q torch==2.13.0
pip install -q "${find_links[@]}" -r requirements/ci.txt
# mmdet3d without its requirements (they pull open3d, ~900 MB, unused here)
pip install -q --no-deps mmdet3d==1.4.0
pip install -q "${find_links[@]}" -e ".[dev,bench,dali]"
python - <<'PY'
import torch, mmengine, mmcv, mmdet, mmdet3d, bevboost
print(f'bevboost {bevboost.__version__}: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}')
PY
