#!/usr/bin/env bash
# Build the wheel (`python -m build`), install it into a fresh virtual environment and smoke-test
# it there: the command, the import, and the files the wheel must carry (recipes, report template);
# a wheel that passes is copied to dist/.
# The fresh environment borrows the project environment's dependencies (torch, MONAI, ...) through
# a .pth file instead of downloading them again; the wheel itself is installed with --no-deps.
# Usage: scripts/check-wheel.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
unset PYTHONPATH  # only the installed wheel may be importable
cd "$(dirname "$0")/.."
project=$(pwd)
PYTHON=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Built from a copy, so that no stale build/ folder of the checkout ends up in the wheel.
mkdir "$work/project"
cp -r pyproject.toml README.md src "$work/project/"
find "$work/project" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m build --wheel --no-isolation --outdir "$work/dist" "$work/project" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/kidneyseg-*.whl)
"$PYTHON" -m venv --without-pip "$work/venv"
deps=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" >"$site/project-dependencies.pth"
"$PYTHON" -m pip --python "$work/venv/bin/python" install --quiet --no-deps --no-index "$wheel"

cd "$work"  # away from the source tree, so that only the installed wheel can be imported
"$work/venv/bin/kidneyseg" --help >/dev/null
"$work/venv/bin/kidneyseg" train --list-recipes >/dev/null
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
from importlib import resources

import kidneyseg

assert kidneyseg.__file__.startswith(sys.argv[1]), f"imported {kidneyseg.__file__}, not the wheel"
assert callable(kidneyseg.segment)
assert resources.files("kidneyseg.report").joinpath("template.html").is_file()
assert resources.files("kidneyseg").joinpath("py.typed").is_file()
from kidneyseg.predict.pretrained import default_model
from kidneyseg.checkpoint import load_checkpoint

assert load_checkpoint(default_model()).config.model.name == "sca_unet_3d"  # the bundled weights
print(f"wheel OK: kidneyseg {kidneyseg.__version__} from {kidneyseg.__file__}")
PY
mkdir -p "$project/dist"
cp "$wheel" "$project/dist/"
echo "built dist/$(basename "$wheel")"
