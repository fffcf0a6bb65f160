#!/bin/sh
# Build {{name}}.wasm with componentize-py: the one on PATH, or one installed
# into ./.venv the first time. First it regenerates the bindings package
# (wit_world/ and its helpers) from wit/, for editors and type checkers.
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

# The bindings follow wit/, the contract of the host that made this project.
# They are generated aside and copied over only where the text changed:
# `botbox dev` rebuilds on every saved file, so rewriting identical ones
# would rebuild forever.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$COMPONENTIZE_PY" --quiet --wit-path wit --world bot bindings "$fresh"
(cd "$fresh" && find . -type f) | while IFS= read -r file; do
    if ! cmp -s "$fresh/$file" "$file"; then
        mkdir -p "$(dirname "$file")"
        cp "$fresh/$file" "$file"
    fi
done
# Interfaces the WIT no longer has.
(cd wit_world && find . -type f -name '*.py') | while IFS= read -r file; do
    [ -e "$fresh/wit_world/$file" ] || rm "wit_world/$file"
done

"$COMPONENTIZE_PY" --quiet --wit-path wit --world bot componentize app --python-path . --output "{{name}}.wasm"
echo "built {{name}}.wasm"
