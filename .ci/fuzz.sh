#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time on stable Rust (`-s none`: no sanitizer).
# FUZZ_SECONDS per target (default 60). Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
for target in signature callback_parse command_parse render stream_frame; do
  echo "fuzz: $target for ${secs}s"
  # Seeds are committed under corpus/<target>; new inputs go to a scratch dir.
  scratch="$(mktemp -d)"
  cargo fuzz run -s none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 2>&1 | tail -n 3
  rm -rf "$scratch"
done
echo "fuzz: all targets ran ${secs}s without a crash"
