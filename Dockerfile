# hybrid-router: the ext_proc router (also the feed server and the emulated upstreams
# of docker-compose.yml, which run the same image with another command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Build context: the project's sources only; setup.py compiles protos/ during the build.
COPY pyproject.toml setup.py README.md requirements.lock ./
COPY protos ./protos
COPY router ./router
COPY simulator ./simulator
COPY policies ./policies
# The lock's versions as constraints (its hashes dropped: with them pip would want every
# locked test tool too); PIP_CONSTRAINT also pins the build's own isolated environment.
RUN sed -e '/--hash=/d' -e 's/ \\$//' requirements.lock > /tmp/constraints.txt \
    && PIP_CONSTRAINT=/tmp/constraints.txt pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/hybrid-router router \
    && mkdir -p /var/lib/hybrid-router && chown router /var/lib/hybrid-router

USER router
# 50051: ext_proc gRPC (Envoy's hybrid_router cluster); 50052: the router's ADS (xDS),
# which hands the whole fleet to whoever asks, so it has a port of its own for Envoy alone;
# 9464: Prometheus /metrics. None is ever published to the host or beyond
# (docs/operations.md, "Never expose").
EXPOSE 50051 50052 9464
ENTRYPOINT ["hybrid-router"]
# Listen addresses are explicit. By default all three are on loopback: the sidecar case, where
# Envoy shares the container's network namespace (a Kubernetes pod, `--network container:`).
# When Envoy runs in another container, pass that container network's address of this one
# (docker-compose.yml: --grpc 172.30.0.3:50051 --metrics 172.30.0.3:9464
# --xds 172.30.2.3:50052), not 0.0.0.0; give Envoy the same with `envoy-config --xds`.
CMD ["serve", "--policy", "/etc/hybrid-router/policy.yaml", \
     "--grpc", "127.0.0.1:50051", "--metrics", "127.0.0.1:9464", "--xds", "127.0.0.1:50052"]
