#!/bin/sh
# Build {{name}}.wasm: C bindings for world `bot` into gen/, clang with
# wasi-libc, then turn the core module into a component. Needs clang, lld,
# wasi-libc and compiler-rt for wasm32 (Debian: `apt-get install clang lld
# wasi-libc libclang-rt-dev-wasm32`; or a wasi-sdk in WASI_SDK_PATH), and a
# botbox checkout (BOTBOX_DIR) for the bindings and the componentize step
# unless `wit-bindgen` 0.60 and `wasm-tools` are installed.
set -eu
cd "$(dirname "$0")"
BOTBOX_DIR="${BOTBOX_DIR:-{{botbox_dir}}}"

xtask() {
    (unset CARGO_TARGET_DIR && cargo run --quiet --manifest-path "$BOTBOX_DIR/Cargo.toml" -p xtask -- "$@")
}

if [ ! -f gen/bot.h ] || [ wit/bot.wit -nt gen/bot.h ]; then
    if [ -f "$BOTBOX_DIR/Cargo.toml" ]; then
        xtask c-bindings "$PWD/wit" "$PWD/gen"
    else
        wit-bindgen c wit --world bot --out-dir gen
    fi
fi

if [ -n "${WASI_SDK_PATH:-}" ]; then
    set -- "$WASI_SDK_PATH/bin/clang" "--sysroot=$WASI_SDK_PATH/share/wasi-sysroot"
else
    set -- clang
fi
"$@" --target=wasm32-wasi -mexec-model=reactor -Oz -flto -std=c17 -Wall -Wextra \
    -Wl,--strip-all -I gen -o gen/core.wasm gen/bot.c ./*.c gen/bot_component_type.o

if [ -f "$BOTBOX_DIR/Cargo.toml" ]; then
    # Also checks that it imports nothing but the botbox interfaces.
    xtask componentize "$PWD/gen/core.wasm" "$PWD/{{name}}.wasm"
else
    wasm-tools component new gen/core.wasm -o "{{name}}.wasm"
fi
echo "built {{name}}.wasm"
