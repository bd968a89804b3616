# One image with every govbus program (router, adapter, command line, agency tool, demo sources) and the
# examples; docker-compose.yml runs each as its own service.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/govbus target/release/govbus-router target/release/govbus-adapter \
       target/release/govbus-agency \
       target/release/govbus-demo-sources /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
WORKDIR /opt/govbus
COPY router/examples router/examples
COPY adapters/examples adapters/examples
COPY scripts/demo-setup scripts/demo-setup
# Keys, account files and adapter state live in the `state` volume, never in the image.
VOLUME /state
