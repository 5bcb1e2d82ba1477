# syntax=docker/dockerfile:1
# Build: docker build --build-arg AUTHGATE_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t authgate .
# Run:   docker run -p 8080:8080 -v authgate-data:/data authgate

FROM rust:1.95-bookworm AS build
ARG AUTHGATE_GIT_COMMIT=unknown
ENV AUTHGATE_GIT_COMMIT=${AUTHGATE_GIT_COMMIT}
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin authgate \
 && install -D -m 0755 target/release/authgate /out/authgate \
 && install -d -o 1000 -g 1000 /out/data

FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/authgate /usr/local/bin/authgate
COPY --from=build --chown=1000:1000 /out/data /data
USER 1000:1000
ENV SERVER_ADDR=:8080 \
    DATABASE_PATH=/data/authgate.redb
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["server"]
