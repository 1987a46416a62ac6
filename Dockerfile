# The operator image: a wheel built from this tree and the dependencies pinned in uv.lock,
# installed into a virtual environment that is all the final stage copies.
FROM python:3.11.14-slim-bookworm AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV=/usr/local/bin/uv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY operator ./operator
COPY hack/install-venv.sh ./hack/
RUN bash hack/install-venv.sh /opt/venv

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SIDECAR_OPERATOR_LOG_FORMAT=json
USER 65532:65532
ENTRYPOINT ["sidecar-operator", "run"]
