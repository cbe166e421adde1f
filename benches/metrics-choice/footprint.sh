#!/usr/bin/env bash
# Counts the crates (name + version, normal and build dependencies, not dev) that each candidate
# adds to a project that already has tonic 0.14 (fanout's features) + tokio + hyper.
# Only resolves the dependency graph (`cargo tree`); builds nothing.
set -euo pipefail
cd "$(dirname "$0")"
tree() {
  cargo tree --locked --no-default-features --features "$1" -e normal,build --prefix none --format '{p}' \
    | sed -e 's/ (\*)//' -e 's/ (proc-macro)//' -e 's/ (\/.*)//' | grep -v '^metrics-choice ' | grep -v '^$' | sort -u
}
tmp=$(mktemp -d)
tree baseline > "$tmp/base"
echo "baseline (tonic + tokio + hyper): $(wc -l < "$tmp/base") crates"
for f in prometheus-client prometheus-tikv metrics-rs; do
  tree "baseline,$f" > "$tmp/$f"
  new=$(comm -23 "$tmp/$f" "$tmp/base")
  echo "$f: +$(printf '%s\n' "$new" | grep -c .) crates: $(printf '%s\n' "$new" | tr '\n' ' ')"
done
rm -r "$tmp"
