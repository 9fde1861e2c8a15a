#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer on the stable toolchain (no nightly, no cargo-fuzz).
#
#   fuzz/run.sh build                    build every target; prints the directory of the binaries
#   fuzz/run.sh run <target> [seconds]   fuzz one target (default 300 s), new inputs kept in
#                                        target/fuzz/corpus/<target>, crashes in target/fuzz/artifacts/<target>
#   fuzz/run.sh merge <target>           fold what runs found into fuzz/corpus/<target>, minimised
#   fuzz/run.sh list                     the targets
#
# The instrumentation is the stable codegen flags cargo-fuzz passes with `--sanitizer none`.
# Build scripts and proc macros are left alone by naming the target triple (flags then apply
# to the target's crates only). Everything is built into its own directory, target/fuzz,
# never mixed with the normal build. Extra libFuzzer flags go after the seconds:
#   fuzz/run.sh run go_dsn 600 -jobs=2
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cargo="${CARGO:-cargo}"
out="${CARGO_TARGET_DIR:-$root/target}/fuzz"
host="$("${RUSTC:-rustc}" -vV | sed -n 's/^host: //p')"
bins="$out/$host/fuzz"

flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
)

targets() {
  sed -n 's/^name = "\(.*\)"$/\1/p' "$here/Cargo.toml" | grep -v '^eventscale-fuzz$'
}

build() {
  # Only these flags: RUSTFLAGS set for the main build would otherwise be mixed in.
  local encoded v
  encoded="$(printf '%s\x1f' "${flags[@]}")"
  # What a calling `cargo test` sets for its own crate goes too: build scripts that watch
  # these (ring's watches CARGO_PKG_NAME) would otherwise run again, and everything after them
  # be rebuilt, each time the caller changes.
  for v in $(compgen -e | grep -E '^(CARGO_PKG_|CARGO_BIN_EXE_|CARGO_MANIFEST_|CARGO_CRATE_NAME$|CARGO_BIN_NAME$|CARGO_PRIMARY_PACKAGE$|CARGO_TARGET_TMPDIR$|CARGO_RUSTC_CURRENT_DIR$|OUT_DIR$)'); do
    unset "$v"
  done
  env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    CARGO_ENCODED_RUSTFLAGS="${encoded%$'\x1f'}" \
    "$cargo" build --manifest-path "$here/Cargo.toml" --target "$host" --profile fuzz \
    --target-dir "$out" --bins >&2
  echo "$bins"
}

known() {
  targets | grep -qx "$1" || { echo "unknown target $1; one of: $(targets | tr '\n' ' ')" >&2; exit 2; }
}

case "${1:-}" in
  build)
    build
    ;;
  run)
    target="${2:?target}"
    known "$target"
    seconds="${3:-300}"
    shift $(( $# < 3 ? $# : 3 ))
    build >/dev/null
    mkdir -p "$out/corpus/$target" "$out/artifacts/$target"
    # New inputs go to the first directory; the committed corpus is only read.
    exec "$bins/$target" "$out/corpus/$target" "$here/corpus/$target" \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$out/artifacts/$target/" -print_final_stats=1 "$@"
    ;;
  merge)
    target="${2:?target}"
    known "$target"
    build >/dev/null
    mkdir -p "$out/corpus/$target"
    merged="$(mktemp -d)"
    trap 'rm -rf "$merged"' EXIT
    # A greedy set cover of the edges (hit counts ignored) keeps the corpus small.
    "$bins/$target" -set_cover_merge=1 -use_counters=0 "$merged" "$here/corpus/$target" \
      "$out/corpus/$target" -rss_limit_mb=2048 -timeout=10 >&2
    rm -rf "${here:?}/corpus/$target"
    mkdir -p "$here/corpus/$target"
    cp "$merged"/* "$here/corpus/$target/"
    echo "fuzz/corpus/$target: $(ls "$here/corpus/$target" | wc -l) inputs, $(cat "$here/corpus/$target"/* | wc -c) bytes"
    ;;
  list)
    targets
    ;;
  *)
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
