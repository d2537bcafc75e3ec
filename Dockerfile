# syntax=docker/dockerfile:1
# Strait: a static-enough binary on a slim Debian, running as a non-root user.
# librdkafka, OpenSSL, zlib and zstd are built from source and linked in by rdkafka's
# build (see Cargo.toml), so the runtime image needs only CA certificates.

FROM rust:1.95.0-slim-bookworm AS build
# librdkafka's configure/make, and perl for the vendored OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strait \
 && cp target/release/strait /usr/local/bin/strait

FROM debian:12.12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin strait
COPY --from=build /usr/local/bin/strait /usr/local/bin/strait
COPY config/ /etc/strait/examples/
USER 10001:10001
EXPOSE 9644
ENTRYPOINT ["/usr/local/bin/strait"]
CMD ["run", "--config", "/etc/strait/strait.toml"]
