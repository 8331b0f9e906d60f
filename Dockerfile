# The single `auth` image: every role (`auth operator`, `ingest`, `stream`,
# `archive`, `api`, `batch`) is a subcommand of the one binary.
#
#   docker build -t ghcr.io/auth-dev/auth:0.1.0 .
#
# The same image as scripts/image.sh builds without Docker: stage 1 builds the
# release binary (librdkafka is compiled by its crate, which needs cmake and
# libcurl's headers), strips it and gathers only the shared libraries it links,
# Debian's CA certificates and time zones; stage 2 is that file system alone,
# run as the non-root user 10001.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev ca-certificates tzdata binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth \
    && mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/usr/share /rootfs/tmp \
    && objcopy --strip-all target/release/auth /rootfs/usr/local/bin/auth
RUN ldd /rootfs/usr/local/bin/auth | awk '/=> \// { print $3 } /^\s*\/.*ld-linux/ { print $1 }' | sort -u \
    | while read -r library; do mkdir -p "/rootfs$(dirname "$library")" && cp -L "$library" "/rootfs$library"; done \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
    && cp -r /usr/share/zoneinfo /rootfs/usr/share/ \
    && chmod 1777 /rootfs/tmp \
    && printf 'root:x:0:0:root:/:/usr/sbin/nologin\nauth:x:10001:10001:auth:/tmp:/usr/sbin/nologin\n' >/rootfs/etc/passwd \
    && printf 'root:x:0:\nauth:x:10001:\n' >/rootfs/etc/group \
    && echo 'hosts: files dns' >/rootfs/etc/nsswitch.conf

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin TZDIR=/usr/share/zoneinfo
LABEL org.opencontainers.image.title="auth" \
      org.opencontainers.image.source="https://github.com/auth-dev/auth"
USER 10001:10001
EXPOSE 8080 8088 9464
ENTRYPOINT ["/usr/local/bin/auth"]
CMD ["--help"]
