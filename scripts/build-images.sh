#!/usr/bin/env bash
# Builds the runtime image `fanout:latest` WITHOUT any image registry, for machines whose Docker
# engine cannot pull (the Dockerfile needs rust:1-bookworm and debian:bookworm-slim; this does not):
#
#   1. builds the binaries on the host: cargo build --release --locked --workspace --bins
#   2. makes a minimal Debian bookworm base image from Debian packages (debootstrap, then
#      `docker import`) as fanout-base:bookworm, once: skipped when that image exists
#   3. builds fanout:latest FROM fanout-base:bookworm with the host-built binaries, with the same
#      user (uid 10001), layout (/usr/local/bin, WORKDIR /app) and environment as the Dockerfile
#
# Idempotent: run it again after changing the code and only steps 1 and 3 do any work.
# Needs: cargo, docker, and for step 2 root and debootstrap (installed with apt-get if missing;
# on a non-Debian host such as Ubuntu, also the debian-archive-keyring package).
# The host-built binaries must run on bookworm's glibc (2.36): build on Debian 12 or older; the
# script checks that each binary starts in the image.
#
# Environment:
#   FANOUT_IMAGE        image to build                      (default fanout:latest)
#   FANOUT_BASE_IMAGE   base image to make or reuse         (default fanout-base:bookworm)
#   FANOUT_REBUILD_BASE=1  make the base image again even if it exists
#   DEBIAN_MIRROR       mirror for debootstrap (default: the one apt on this machine uses,
#                       else http://deb.debian.org/debian)
#   SKIP_CARGO_BUILD=1  use the binaries already in target/release
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

image=${FANOUT_IMAGE:-fanout:latest}
base=${FANOUT_BASE_IMAGE:-fanout-base:bookworm}
suite=bookworm
required_bins=(backend aggregator loadgen)
optional_bins=(otlp-sink)

say() { echo "build-images: $*" >&2; }
die() { echo "build-images: ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

# ---- 1. binaries ---------------------------------------------------------------------------
if [ "${SKIP_CARGO_BUILD:-0}" = 1 ]; then
  say "step 1/3: SKIP_CARGO_BUILD=1, using the binaries in target/release"
else
  say "step 1/3: cargo build --release --locked --workspace --bins"
  cargo build --release --locked --workspace --bins
fi
bins=()
for b in "${required_bins[@]}"; do
  [ -x "target/release/$b" ] || die "target/release/$b missing after the build"
  bins+=("$b")
done
for b in "${optional_bins[@]}"; do
  if [ -x "target/release/$b" ]; then bins+=("$b"); else say "note: target/release/$b not built; the image will not have it"; fi
done

# ---- 2. base image from Debian packages -----------------------------------------------------
# The Debian mirror apt uses here: deb822 `URIs:` lines (*.sources) and one-line `deb URI SUITE`
# entries (*.list), the first that serves the main archive (not debian-security).
debian_mirror() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk '
    /^[ \t]*#/ { next }
    /^[ \t]*URIs:/ { for (i = 2; i <= NF; i++) print $i; next }
    /^[ \t]*deb[ \t]/ {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      print $i
    }' "${files[@]}" |
    grep -E '^https?://' | grep -E '/debian/?$' | head -n 1 | sed -E 's#/$##'
}

if [ "${FANOUT_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$base" >/dev/null 2>&1; then
  say "step 2/3: base image $base exists, reusing it (FANOUT_REBUILD_BASE=1 to make it again)"
else
  mirror=${DEBIAN_MIRROR:-$(debian_mirror || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  say "step 2/3: making $base: debootstrap --variant=minbase $suite from $mirror"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root: run this as root, or make $base elsewhere"
  if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    say "installing debootstrap with apt-get"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
  rootfs="$tmp/rootfs"
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" >&2 ||
    die "debootstrap failed (see above)"
  # What a container image does not need: downloaded packages, package lists, logs, docs.
  # (Docker gives every container its own /dev.)
  (
    cd "${rootfs:?}"
    rm -rf ./var/cache/apt/archives/*.deb ./var/cache/apt/*.bin ./var/lib/apt/lists/* \
      ./var/log/* ./tmp/* ./dev/* ./usr/share/doc/* ./usr/share/man/* ./usr/share/info/*
  )
  say "importing the root filesystem as $base"
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      - "$base" >/dev/null
  rm -rf "$rootfs"
fi

# ---- 3. the runtime image -------------------------------------------------------------------
ctx="$tmp/context"
mkdir -p "$ctx/bin"
for b in "${bins[@]}"; do install -m 0755 "target/release/$b" "$ctx/bin/$b"; done
# The runtime stage of the Dockerfile, on the debootstrapped base (which already has
# ca-certificates) and with binaries from the host instead of the builder stage.
cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN groupadd --gid 10001 fanout \\
 && useradd --uid 10001 --gid 10001 --home-dir /app --create-home --shell /usr/sbin/nologin fanout
COPY bin/ /usr/local/bin/
ENV BACKEND_LISTEN=0.0.0.0:50061 \\
    AGGREGATOR_LISTEN=0.0.0.0:50051
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50061
CMD ["backend"]
EOF
say "step 3/3: docker build -t $image (FROM $base; binaries: ${bins[*]})"
previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
docker build -q -t "$image" "$ctx" >/dev/null
current=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  # The image this replaces is left untagged: remove it (not when a container still uses it).
  if docker image rm "$previous" >/dev/null 2>&1; then say "removed the previous $image (${previous:7:12})"; fi
fi
# The binaries are the host's: they must run on the base's glibc (bookworm: 2.36), so build on
# bookworm or older. Check that each starts.
for b in "${required_bins[@]}"; do
  docker run --rm "$image" "$b" --version >/dev/null ||
    die "$b does not run in $image (a host newer than Debian $suite? build the Dockerfile instead)"
done
say "done: $image ($(docker image inspect -f '{{.Id}}' "$image" | cut -c1-19)) with ${bins[*]}"
