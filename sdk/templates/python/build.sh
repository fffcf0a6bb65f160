#!/bin/sh
# Build {{name}}.wasm with componentize-py: the one on PATH, or one installed
# into ./.venv the first time.
set -eu
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null 2>&1; then
    COMPONENTIZE_PY=componentize-py
else
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    fi
    COMPONENTIZE_PY=.venv/bin/componentize-py
fi
"$COMPONENTIZE_PY" --quiet --wit-path wit --world bot componentize app --python-path . --output "{{name}}.wasm"
echo "built {{name}}.wasm"
