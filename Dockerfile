# syntax=docker/dockerfile:1
# The usersync operator image:
#   docker build -t usersync:0.1.0 .
# The Helm chart and deploy/ run it as `usersync run ...` with a numeric non-root
# user and a read-only root filesystem.

# The crate's rust-version (Cargo.toml); a test keeps the two in step.
ARG RUST_VERSION=1.94

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads: a change to tests, charts or docs rebuilds nothing.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep downloaded crates and compiled dependencies between builds;
# the binary is copied out because the target directory is a mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin usersync \
    && install -D -m 0755 target/release/usersync /out/usersync

# glibc, CA certificates and time zones; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usersync /usr/local/bin/usersync
# Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/usersync"]
CMD ["run"]
