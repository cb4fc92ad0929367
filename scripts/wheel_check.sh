#!/usr/bin/env bash
# The package as a user gets it (run by .ci/run): build the wheel, check that it carries the
# shipped mappings, install it into a clean virtual environment that reuses the active (test)
# environment's packages (a .pth line to its site-packages: its editable transfer-weights is not
# seen, and nothing is downloaded), then, from an empty folder, run the main job by the shipped
# mapping's name and list the shipped mappings. Each step prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "wheel check: $1 ($((SECONDS - started)) s)"; }
started=$SECONDS

# the environment's own setuptools when it has one (Python 3.12+ venvs may not): then no download
build=(--no-build-isolation --no-index)
python -c 'import setuptools.build_meta' 2>/dev/null || build=()
python -m pip wheel -q --no-deps "${build[@]}" -w "$work/dist" .
wheel=$(ls "$work"/dist/transfer_weights-*.whl)
step "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
shipped=$(python -m zipfile -l "$wheel" | grep -c 'transfer/mappings/.*\.yaml' || true)
expected=$(ls mappings/*.yaml | wc -l)
if [ "$shipped" -ne "$expected" ]; then
  echo "wheel check: the wheel carries $shipped shipped mappings; mappings/ holds $expected" >&2
  exit 1
fi
step "the wheel carries all $shipped shipped mappings"

python -m venv --without-pip "$work/venv"
test_site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
clean_site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$test_site" > "$clean_site/_test_environment.pth"
python -m pip --python "$work/venv/bin/python" install -q --no-deps --no-index "$wheel"
step "installed into a clean environment"

mkdir "$work/empty"
cd "$work/empty"
installed=$("$work/venv/bin/python" -c 'import transfer; print(transfer.__file__)')
case "$installed" in
  "$work/venv/"*) ;;
  *) echo "wheel check: transfer was imported from $installed, not from the wheel" >&2; exit 1 ;;
esac
"$work/venv/bin/transfer-weights" --map unet_vgg16_hed --out unet.keras
test -s unet.keras
step "the main job from an empty folder wrote unet.keras"
"$work/venv/bin/transfer-weights" mappings
listed=$("$work/venv/bin/transfer-weights" mappings | grep -c ' -> ' || true)
if [ "$listed" -ne "$expected" ]; then
  echo "wheel check: transfer-weights mappings listed $listed mappings; expected $expected" >&2
  exit 1
fi
step "transfer-weights mappings listed all $listed"
