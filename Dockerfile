# driftwarden's container image, in two flavours built from one Dockerfile:
#
#   docker build --target runtime -t driftwarden .   # Kubernetes CronJob / Jobs, CLI: non-root
#   docker build -t driftwarden-action .              # the container Action (docker/action.yml): last stage
#
# The build stage compiles a release binary against the committed Cargo.lock; the runtime stage is
# Debian slim with only CA certificates and libssl (git2's HTTPS transport links OpenSSL), the
# binary, and the default policy library at /usr/share/driftwarden/policies. It runs as the
# unprivileged user 65532 and needs nothing writable but /tmp (the Git cache goes to
# XDG_CACHE_HOME=/tmp/driftwarden-cache), so it works under a read-only root filesystem.
#
# The last stage, `action`, is what GitHub builds for docker/action.yml's `runs.image: ../Dockerfile`
# (it always builds the final stage). GitHub requires Docker actions to run as the image's root user: the runner
# mounts the workspace and the file-command files ($GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY) owned by
# its own user, and another non-root user cannot write them. Kubernetes uses the `runtime` stage,
# and deploy/ enforces runAsNonRoot whatever image it is given.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# Debian's apt packages are not pinned to versions: security updates replace them within a release,
# so a pinned version stops building once superseded; the Debian release itself is pinned above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev cmake make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Manifests first, so the dependency graph is validated before the sources change the layer.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches benches
COPY fixtures/demo fixtures/demo
COPY policies policies
COPY src src
# The commit `driftwarden version` and the reports name (build.rs): the image has no .git, so the
# release workflow passes it; without it the binary says `unknown`.
ARG DRIFTWARDEN_BUILD_COMMIT=""
ARG SOURCE_DATE_EPOCH=""
RUN cargo build --release --locked --bin driftwarden \
 && install -D -m 0755 target/release/driftwarden /out/driftwarden

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# apt packages follow the pinned Debian release, as in the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 driftwarden \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/driftwarden --create-home \
      --shell /usr/sbin/nologin driftwarden
COPY --from=build /out/driftwarden /usr/local/bin/driftwarden
COPY policies /usr/share/driftwarden/policies
ENV XDG_CACHE_HOME=/tmp/driftwarden-cache
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/driftwarden"]
CMD ["--help"]

FROM runtime AS action
# GitHub Docker actions must run as root (see the header); no WORKDIR: the runner sets the
# workspace as the working directory. docker/action.yml passes `github-action` and the inputs as args.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/usr/local/bin/driftwarden"]
