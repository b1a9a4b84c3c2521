# One image for the operator, the model server and batch jobs (different commands).
# Built by Docker on a workstation, and by buildah (--pull=never) on the local cluster
# from a debootstrap'd Debian bookworm tagged debian:bookworm-slim.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/modelworks
WORKDIR /src
# Dependencies first, in their own layer: a code or README change does not reinstall
# them. The stub package (and an empty README, which pyproject names) lets pip resolve
# ".[image]" before the real sources are copied.
COPY constraints.txt pyproject.toml ./
RUN mkdir -p operator/modelworks && echo '__version__ = "0"' > operator/modelworks/__init__.py \
 && touch README.md \
 && /opt/modelworks/bin/pip install --no-cache-dir --disable-pip-version-check \
      -c constraints.txt ".[image]"
COPY README.md ./
COPY operator ./operator
RUN /opt/modelworks/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --force-reinstall .

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/modelworks /opt/modelworks
COPY examples /app/examples
ENV PATH=/opt/modelworks/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# A numeric non-root user, so runAsNonRoot can be verified without /etc/passwd.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["modelworks"]
CMD ["run"]
