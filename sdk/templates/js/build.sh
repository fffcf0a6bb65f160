#!/bin/sh
# Build {{name}}.wasm: regenerate types/ from wit/ (`jco guest-types`), then
# make the component with componentize-js. The pinned tools of package.json
# are installed into ./node_modules the first time. `npm run check`
# type-checks bot.js against types/.
set -eu
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ] || [ ! -x node_modules/.bin/jco ]; then
    npm install --no-audit --no-fund
fi

# The declarations follow wit/, the contract of the host that made this
# project. They are generated aside and copied over only where the text
# changed: `botbox dev` rebuilds on every saved file, so rewriting identical
# ones would rebuild forever.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
node_modules/.bin/jco guest-types wit --world-name bot --out-dir "$fresh" --quiet
(cd "$fresh" && find . -type f) | while IFS= read -r file; do
    if ! cmp -s "$fresh/$file" "types/$file"; then
        mkdir -p "$(dirname "types/$file")"
        cp "$fresh/$file" "types/$file"
    fi
done
# Interfaces the WIT no longer has.
(cd types && find . -type f) | while IFS= read -r file; do
    [ -e "$fresh/$file" ] || rm "types/$file"
done

npm run --silent build
echo "built {{name}}.wasm"
