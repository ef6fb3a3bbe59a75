# Multi-stage build: compile in the Rust image, ship only the binary, the GeoIP data and the demo
# files on a slim Debian. `docker compose up` (docker-compose.yml) builds it.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests tests
# The country table is compiled in (include_str!), the databases are read at run time.
COPY geoip geoip
RUN cargo build --release --locked --bin steerdns

FROM debian:bookworm-slim AS steerdns
RUN useradd --system --home /var/lib/steerdns --create-home steerdns
COPY --from=build /src/target/release/steerdns /usr/local/bin/steerdns
COPY geoip /opt/steerdns/geoip
COPY zones /opt/steerdns/zones
COPY demo/docker /opt/steerdns/demo
WORKDIR /opt/steerdns
USER steerdns
EXPOSE 5300/udp 5300/tcp 8053/tcp
ENTRYPOINT ["steerdns"]
CMD ["serve", "--listen", "0.0.0.0:5300"]

# The demo's client: dig and curl, nothing else.
FROM debian:bookworm-slim AS client
RUN apt-get update && apt-get install -y --no-install-recommends dnsutils curl \
    && rm -rf /var/lib/apt/lists/*
CMD ["sleep", "infinity"]
