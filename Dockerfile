# fanout: one image holding every binary (backend, aggregator, loadgen, otlp-sink).
#
#   docker build -t fanout:latest .
#   docker run --rm -p 50061:50061 fanout:latest backend --name alpha --latency 20ms
#
# Machines that reach no image registry build the same runtime image with
# scripts/build-images.sh instead (host-built binaries on a debootstrapped Debian base);
# keep the runtime stage below and the image that script generates in step.

# ---- build: the whole workspace, release, exactly the locked dependency versions ----------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && for bin in backend aggregator loadgen otlp-sink; do \
      install -m 0755 "target/release/$bin" "/out/$bin"; \
    done

# ---- runtime: slim Debian, CA certificates only, non-root ---------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 fanout \
 && useradd --uid 10001 --gid 10001 --home-dir /app --create-home --shell /usr/sbin/nologin fanout
COPY --from=builder /out/ /usr/local/bin/
# Inside a container the servers must listen on every interface, not on loopback (their
# default); the flags and the compose file can still override these.
ENV BACKEND_LISTEN=0.0.0.0:50061 \
    AGGREGATOR_LISTEN=0.0.0.0:50051
# loadgen compare writes out/compare.json and out/compare.svg here (mount a volume on /app/out).
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50061
# No entrypoint: the command names the binary (`backend`, `aggregator`, `loadgen ...`, `otlp-sink`).
CMD ["backend"]
