# One image for the operator, the model server and batch jobs (different commands).
# Built by Docker on a workstation, and by buildah (--pull=never) on the local cluster
# from a debootstrap'd Debian bookworm tagged debian:bookworm-slim.
FROM debian:bookworm-slim AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/modelworks
WORKDIR /deps
# Dependencies first, in their own layer: a code or README change does not reinstall
# them. The stub package (and an empty README, which pyproject names) lets pip resolve
# ".[image]" before the real sources are copied; the stub is uninstalled again, so this
# venv holds the dependencies only.
COPY constraints.txt pyproject.toml ./
# hack/image.sh mounts uv and its wheel cache at /opt/uv and /opt/uv-cache (seconds on a
# machine that ran hack/bootstrap.sh), and the host's CA bundle with pip's configuration;
# elsewhere pip installs the same pins.
RUN mkdir -p operator/modelworks && echo '__version__ = "0"' > operator/modelworks/__init__.py \
 && touch README.md \
 && if [ -x /opt/uv/uv ]; then \
      if [ -f /root/.config/pip/ca-certificates.crt ]; then \
        export SSL_CERT_FILE=/root/.config/pip/ca-certificates.crt; \
      fi; \
      UV_CACHE_DIR=/opt/uv-cache UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
        /opt/uv/uv pip install -q --compile-bytecode --python /opt/modelworks/bin/python \
          -c constraints.txt ".[image]"; \
    else \
      /opt/modelworks/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c constraints.txt ".[image]"; \
    fi \
 && /opt/modelworks/bin/pip uninstall -y --disable-pip-version-check modelworks \
 && cd / && rm -rf /deps

# A clean source tree: setuptools' build/ of the stub would otherwise shadow the real modules.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The package alone, into a tree /out that mirrors / (its modules, dist-info and the
# `modelworks` script, whose interpreter is the venv's): the final image adds it as a
# layer of a few hundred KB on top of the unchanged dependency layer.
RUN /opt/modelworks/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      --root /out .

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/*
# ~1 GB that changes only with constraints.txt or pyproject.toml: the layer cache, the node's
# containerd and a registry keep it between code changes.
COPY --from=deps /opt/modelworks /opt/modelworks
COPY examples /app/examples
COPY --from=build /out/ /
ENV PATH=/opt/modelworks/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# A numeric non-root user, so runAsNonRoot can be verified without /etc/passwd.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["modelworks"]
CMD ["run"]
