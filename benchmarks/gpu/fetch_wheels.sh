#!/usr/bin/env bash
# Download, HERE (where PyPI is reachable), the pure-Python wheels that the GPU machines lack, into
# benchmarks/gpu/wheels (git-ignored; the device tool's run carries the folder: carry ["benchmarks/gpu/wheels"]).
# The machines run Python 3.12 with torch 2.11 (CUDA), torchvision, timm, scikit-image, numpy, scipy, scikit-learn,
# pandas, matplotlib, opencv-python-headless, pyyaml, tqdm, regex, huggingface_hub, safetensors, pillow and pytest
# (/work/.library/device/KINDS.md); missing are open_clip (and its ftfy -> wcwidth) and nuscenes-devkit (with the
# pyquaternion and cachetools it imports). --no-deps: each needed dependency is named below, pinned to the versions
# this project is tested with. About 2.7 MB in all.
set -eu
cd "$(dirname "$0")"
mkdir -p wheels
PY=${PYTHON:-python3}
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d wheels \
    open_clip_torch==3.3.0 \
    ftfy==6.3.1 \
    wcwidth==0.9.5 \
    nuscenes-devkit==1.2.0 \
    pyquaternion==0.9.9 \
    cachetools==8.0.3
ls -l wheels
