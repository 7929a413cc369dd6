# wsingest: multi-stage build, small runtime image.
#   docker build -t wsingest .
#   docker run -p 8765:8765 wsingest serve --influx-url http://influxdb:8086
# Any `serve` keeps the image's config (/etc/wsingest/wsingest.toml, via
# WSINGEST_CONFIG): listen 0.0.0.0:8765, anonymous devices, state in
# /var/lib/wsingest; flags and WSINGEST_* variables override single keys.
# docker-compose.yml runs it with InfluxDB, Grafana, Mosquitto and the generator.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY docs/simulate.md ./docs/simulate.md
# The simulator's profiles are built into the binary as its defaults.
COPY devices ./devices
COPY proto ./proto
# Cache the registry and the target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wsingest \
    && cp target/release/wsingest /usr/local/bin/wsingest

FROM debian:bookworm-slim
# CA roots for https:// InfluxDB and mqtts:// brokers; nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/wsingest --create-home wsingest
COPY --from=build /usr/local/bin/wsingest /usr/local/bin/wsingest
COPY devices /usr/share/wsingest/devices
COPY deploy/wsingest.toml /etc/wsingest/wsingest.toml
ENV WSINGEST_CONFIG=/etc/wsingest/wsingest.toml
USER wsingest
WORKDIR /var/lib/wsingest
EXPOSE 8765
ENTRYPOINT ["/usr/local/bin/wsingest"]
CMD ["serve", "--config", "/etc/wsingest/wsingest.toml"]
