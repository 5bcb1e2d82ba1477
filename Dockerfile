# syntax=docker/dockerfile:1
# Build: docker build --build-arg AUTHGATE_GIT_COMMIT=$(git rev-parse --short=12 HEAD) \
#          --build-arg AUTHGATE_VERSION=0.1.0 -t authgate .
# Run:   docker run -p 8080:8080 -v authgate-data:/data -e BASE_URL=https://auth.example.com authgate
# Stop:  after SIGTERM the server usually exits within 2 s, but may take up to about 30 s in the
#        worst case; give it more than Docker's default 10 s (docker stop -t 30, or
#        stop_grace_period: 30s in Compose).
# Lint:  scripts/check-packaging.sh runs hadolint on this file.

ARG AUTHGATE_VERSION=0.1.0
ARG AUTHGATE_GIT_COMMIT=unknown

FROM rust:1.95-bookworm AS build
ARG AUTHGATE_GIT_COMMIT
# build.rs bakes this into `authgate --version` (.git is not in the build context).
ENV AUTHGATE_GIT_COMMIT=${AUTHGATE_GIT_COMMIT}
WORKDIR /src
COPY . .
# Only crates.io is fetched. The caches keep the registry and the build between builds;
# the binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin authgate \
 && install -D -m 0755 target/release/authgate /out/authgate \
 && install -d -o 1000 -g 1000 -m 0700 /out/data

# glibc, libgcc, CA certificates and no shell. The :nonroot tag's own user is 65532; this
# image runs as 1000 (USER below), which owns /data. For reproducible builds pin the digest:
# gcr.io/distroless/cc-debian12:nonroot@sha256:...
FROM gcr.io/distroless/cc-debian12:nonroot
ARG AUTHGATE_VERSION
ARG AUTHGATE_GIT_COMMIT
LABEL org.opencontainers.image.title="AuthGate" \
      org.opencontainers.image.description="OAuth 2.0 device authorization grant (RFC 8628) server" \
      org.opencontainers.image.version="${AUTHGATE_VERSION}" \
      org.opencontainers.image.revision="${AUTHGATE_GIT_COMMIT}" \
      org.opencontainers.image.source="https://example.invalid/authgate" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/authgate /usr/local/bin/authgate
COPY --from=build --chown=1000:1000 /out/data /data
USER 1000:1000
WORKDIR /data
ENV SERVER_ADDR=:8080 \
    DATABASE_PATH=/data/authgate.redb
VOLUME ["/data"]
EXPOSE 8080
# `authgate healthcheck` GETs /health on SERVER_ADDR's port over loopback: exit 0 on 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/authgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["server"]
