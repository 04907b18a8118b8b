# hybrid-router: the ext_proc router (also the feed server and the emulated upstreams
# of docker-compose.yml, which run the same image with another command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Build context: the project's sources only; setup.py compiles protos/ during the build.
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY router ./router
COPY simulator ./simulator
COPY policies ./policies
# aiohttp: the emulated edge nodes and cloud pools (router.emulate) of the compose demo.
RUN pip install . "aiohttp>=3.9" \
    && useradd --system --uid 10001 --home-dir /var/lib/hybrid-router router \
    && mkdir -p /var/lib/hybrid-router && chown router /var/lib/hybrid-router

USER router
# 50051: ext_proc gRPC (Envoy's hybrid_router cluster); 9464: Prometheus /metrics.
EXPOSE 50051 9464
ENTRYPOINT ["hybrid-router"]
CMD ["serve", "--policy", "/etc/hybrid-router/policy.yaml", \
     "--grpc", "0.0.0.0:50051", "--metrics", "0.0.0.0:9464"]
