#!/usr/bin/env bash
# Set up .venv with everything bevboost, its tests and its benchmarks need, CPU-only.
# Idempotent: a second run only checks. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${BEVBOOST_VENV:-.venv}
TORCH=2.13.0
# A prebuilt mmcv 2.1.0 wheel for this torch saves a ~25 min compile: BEVBOOST_WHEELS, else
# ../shared/wheels next to the checkout, else the wheel an earlier set-up built and kept in
# BEVBOOST_WHEEL_CACHE (default ~/.cache/bevboost/wheels/torch-<version>-<python>).
WHEELS=${BEVBOOST_WHEELS:-}
if [ -z "$WHEELS" ] && [ -d ../shared/wheels ]; then
  WHEELS=../shared/wheels
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
CACHE=${BEVBOOST_WHEEL_CACHE:-$HOME/.cache/bevboost/wheels/torch-$TORCH-$(python -c \
  'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')}
find_links=()
for dir in "$WHEELS" "$CACHE"; do
  if [ -n "$dir" ] && compgen -G "$dir/mmcv-2.1.0-*.whl" > /dev/null; then
    find_links+=(--find-links "$dir")
  fi
done

pip install -q "setuptools<82" wheel
# torch first, pinned, so nothing below pulls a multi-GB CUDA build
pip install -q "torch==$TORCH"
pip install -q "setuptools<82"  # torch's install may raise it; mmengine/mmcv need pkg_resources
if [ ${#find_links[@]} -eq 0 ] && ! python -c 'import mmcv' 2>/dev/null; then
  echo "note: no prebuilt mmcv 2.1.0 wheel (BEVBOOST_WHEELS, ../shared/wheels, $CACHE):" \
       "building it from source, about 25 min on 2 cores; it is kept in $CACHE" >&2
  ./scripts/build_mmcv.sh "$CACHE"
  find_links=(--find-links "$CACHE")
fi
pip install -q "${find_links[@]}" -r requirements/ci.txt
# mmdet3d without its requirements (they pull open3d, ~900 MB, unused here)
pip install -q --no-deps mmdet3d==1.4.0
pip install -q "${find_links[@]}" -e ".[dev,bench,dali]"
python - <<'PY'
import torch, mmengine, mmcv, mmdet, mmdet3d, bevboost
print(f'bevboost {bevboost.__version__}: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}')
PY
