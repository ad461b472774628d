# galera-lb container image: a multi-stage build (compile with the Rust toolchain image, run on
# slim Debian as a non-root user).
#
#   docker build -t galera-lb .
#   docker run --rm -p 3306:3306 -e GALERA_LB_MONITOR_PASSWORD=... \
#       -v "$PWD/galera-lb.yaml:/etc/galera-lb/galera-lb.yaml:ro" galera-lb
#
# The configuration is read from /etc/galera-lb/galera-lb.yaml (override with --config or the
# GALERA_LB_CONFIG environment variable). galera-lb handles SIGTERM itself as PID 1: it stops
# accepting, drains open connections for limits.shutdown_grace, then exits 0.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 galera-lb \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin galera-lb
COPY --from=build /src/target/release/galera-lb /usr/local/bin/galera-lb
COPY config/docker.yaml /etc/galera-lb/galera-lb.yaml
# Numeric, so that orchestrators can check it is not root without reading /etc/passwd.
USER 10001:10001
# 3306: the MySQL listener. 8011 (glbd control) and 9104 (admin HTTP) are reserved for the
# control and admin ports, which bind to loopback unless configured otherwise.
EXPOSE 3306 8011 9104
ENTRYPOINT ["/usr/local/bin/galera-lb"]
CMD ["--config", "/etc/galera-lb/galera-lb.yaml"]
