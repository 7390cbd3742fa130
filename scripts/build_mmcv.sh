#!/usr/bin/env bash
# Build mmcv (default 2.1.0, with its ops) from source into a wheel, against the torch of the
# active environment, and keep the wheel in OUT_DIR for every later set-up.
#
#   scripts/build_mmcv.sh OUT_DIR            build (24 min measured on 2 busy cores, ninja)
#   scripts/build_mmcv.sh --dry-run          pip's metadata step only, same flags (seconds)
#
# Why these flags: mmcv's setup.py imports pkg_resources (gone in setuptools 82) and torch
# (to build its ops). In pip's default isolated build environment it gets the newest
# setuptools and no torch, and fails after a few seconds. So it is built in this
# environment (--no-build-isolation, PEP 517), after setuptools<82, wheel, numpy and ninja
# (parallel compilation; MAX_JOBS defaults to the core count) are installed next to torch.
# CUDA ops are built when torch sees a GPU or FORCE_CUDA=1 (then nvcc must match torch's CUDA).
set -euo pipefail
MMCV=${BEVBOOST_MMCV_VERSION:-2.1.0}
PY=${PYTHON:-python}
pip=("$PY" -m pip)
flags=(--use-pep517 --no-build-isolation --no-deps --no-binary mmcv "mmcv==$MMCV")

"$PY" -c 'import torch' 2>/dev/null || {
  echo "error: install torch into this environment before building mmcv" >&2; exit 1; }
"${pip[@]}" install -q "setuptools<82" wheel ninja "numpy<2"

if [ "${1:-}" = "--dry-run" ]; then
  # metadata only: mmcv's setup.py runs with this environment's setuptools and torch
  "${pip[@]}" install --dry-run --ignore-installed "${flags[@]}"
  exit 0
fi
out=${1:?usage: build_mmcv.sh OUT_DIR | --dry-run}
mkdir -p "$out"
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
log="$out/mmcv-$MMCV-build.log"
echo "building mmcv $MMCV from source against torch $torch_version: about 25 min on 2 cores" \
     "(fewer with more cores); full log: $log" >&2
start=$SECONDS
# ninja prints [done/total] per compiled file: show those counters with the elapsed time
set +e
MAX_JOBS=${MAX_JOBS:-$(nproc)} "${pip[@]}" wheel -v "${flags[@]}" -w "$out" 2>&1 | tee "$log" |
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    case $line in
      \[[0-9]*/[0-9]*\]*)
        echo "mmcv build ${line%%]*}] after $(( (SECONDS - start) / 60 )) min" >&2 ;;
    esac
  done
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "error: building mmcv $MMCV failed after $((SECONDS - start)) s; the last lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit "$status"
fi
echo "built $(ls "$out"/mmcv-"$MMCV"-*.whl) in $((SECONDS - start)) s; later set-ups use it" >&2
