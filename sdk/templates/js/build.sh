#!/bin/sh
# Build {{name}}.wasm with componentize-js (installed into ./node_modules
# the first time). The same as `npm install && npm run build`.
set -eu
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund
fi
npm run --silent build
echo "built {{name}}.wasm"
