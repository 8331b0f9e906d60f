# The single `auth` image: every role (`auth operator`, `ingest`, `stream`,
# `archive`, `api`, `batch`) is a subcommand of the one binary.
#
#   docker build -t ghcr.io/auth-dev/auth:0.1.0 .
#
# Stage 1 builds the release binary (librdkafka is compiled by its crate, which
# needs cmake and libcurl's headers); stage 2 is a slim runtime as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth \
    && cp target/release/auth /usr/local/bin/auth

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin auth
COPY --from=build /usr/local/bin/auth /usr/local/bin/auth
USER 10001
EXPOSE 8080 8088 9464
ENTRYPOINT ["/usr/local/bin/auth"]
CMD ["--help"]
