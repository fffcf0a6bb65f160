#!/bin/sh
# Build {{name}}.wasm: compile for wasm32-unknown-unknown, then turn the core
# module into a component. Needs a botbox checkout (BOTBOX_DIR) for the SDK
# and, unless `wasm-tools` is installed, for `cargo xtask componentize`.
set -eu
cd "$(dirname "$0")"
BOTBOX_DIR="${BOTBOX_DIR:-{{botbox_dir}}}"
TARGET=wasm32-unknown-unknown
LIB=$(echo "{{name}}" | tr '-' '_')

if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    # The ordinary route: `rustup target add wasm32-unknown-unknown`.
    cargo build --release --target "$TARGET"
elif [ -x /usr/bin/rustc ] &&
    [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/std" ]; then
    # No rustup target (it cannot always be downloaded): Debian's rustc-web
    # builds the standard library itself (see botbox's shared/toolchains.md).
    PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        /usr/bin/cargo build --release --target "$TARGET" -Zbuild-std=std,panic_abort
else
    echo "no Rust toolchain for $TARGET: run \`rustup target add $TARGET\`" >&2
    exit 1
fi

CORE="${CARGO_TARGET_DIR:-target}/$TARGET/release/$LIB.wasm"
case "$CORE" in /*) ;; *) CORE="$PWD/$CORE" ;; esac
if [ -f "$BOTBOX_DIR/Cargo.toml" ]; then
    # Also checks that it imports nothing but the botbox interfaces.
    (unset CARGO_TARGET_DIR && cargo run --quiet --manifest-path "$BOTBOX_DIR/Cargo.toml" \
        -p xtask -- componentize "$CORE" "$PWD/{{name}}.wasm")
else
    wasm-tools component new "$CORE" -o "{{name}}.wasm"
fi
echo "built {{name}}.wasm"
