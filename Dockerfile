# The ToolGym server as a container. It starts sandboxes on the host's Docker engine, so run it
# with the engine's socket mounted (see the README: that grants root-equivalent access to the host).
#   docker build -t toolgym-server .                                  # where a registry answers
#   docker build -t toolgym-server --build-arg BASE=toolgym-base:bookworm .   # offline
ARG BASE=python:3.11-slim
FROM ${BASE}
# The offline Debian base has python3 but no pip or venv; some dependencies (pycosat, via
# reasoning-gym) build from source. Take what is missing from Debian's archive.
RUN set -e; need=""; \
    python3 -c "import ensurepip" 2>/dev/null || need="$need python3-venv python3-pip python3-dev"; \
    command -v gcc >/dev/null 2>&1 || need="$need gcc libc6-dev"; \
    if [ -n "$need" ]; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends $need ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# Networks that intercept HTTPS: their CA certificates, if any were put in deploy/ca/.
COPY deploy/ca/ /usr/local/share/ca-certificates/toolgym/
RUN (update-ca-certificates >/dev/null 2>&1 || true)
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# Dependencies first, read from pyproject.toml, in a layer that survives source changes.
COPY pyproject.toml /src/
RUN python3 -m venv /opt/toolgym \
    && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['server'] + p['optional-dependencies']['postgres']))" \
> /tmp/requirements.txt \
    && /opt/toolgym/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md /src/
COPY toolgym /src/toolgym
COPY server /src/server
COPY client /src/client
COPY envs /src/envs
COPY taskgen /src/taskgen
RUN /opt/toolgym/bin/pip install --no-cache-dir --no-deps /src && rm -rf /src
ENV PATH=/opt/toolgym/bin:$PATH \
    TOOLGYM_HOST=0.0.0.0 \
    TOOLGYM_DB_PATH=/data/toolgym.db \
    TOOLGYM_BACKEND=docker
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["toolgym", "serve"]
