# t5serve CPU image: build the binary, then a slim runtime with ONNX Runtime from the PyPI wheel
# and the bundled model.   docker build -t t5serve . && docker run -p 8080:8080 t5serve
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip unzip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/setup_ort.sh scripts/setup_ort.sh
RUN scripts/setup_ort.sh
COPY Cargo.toml Cargo.lock build.rs openapi.yaml ./
COPY .cargo .cargo
COPY src src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home t5serve
COPY --from=build /src/target/release/t5serve /usr/local/bin/t5serve
COPY --from=build /src/.ort/libonnxruntime.so.1.31.1 /opt/onnxruntime/libonnxruntime.so.1.31.1
COPY models/t5-numbers /opt/t5serve/models/default
COPY config/default.toml /etc/t5serve/config.toml
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    T5SERVE_CONFIG=/etc/t5serve/config.toml \
    T5SERVE_MODEL=/opt/t5serve/models/default \
    T5SERVE_HOST=0.0.0.0 \
    T5SERVE_PORT=8080
USER t5serve
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS "http://127.0.0.1:${T5SERVE_PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/t5serve", "serve"]
