# syntax=docker/dockerfile:1
#
# authvault: multi-stage image.
#   docker build -t authvault .
#   docker run -p 8080:8080 -v authvault-data:/app/data authvault
#
# With no AUTHVAULT_DATABASE_URL the embedded SQLite store is used at /app/data/authvault.db
# (the default sqlite://./data/authvault.db, relative to WORKDIR /app), and development secrets
# are generated into /app/data on first start. Keep /app/data on a volume. For production set
# AUTHVAULT_JWT_SECRET and AUTHVAULT_ENCRYPTION_KEYS (see docker-compose.yml and .env.example).

ARG RUST_VERSION=1

############################################################################################
# Build stage
############################################################################################
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /build

# 1. Dependencies only: a dummy lib + bin against the real manifest and lock file, so this
#    layer is rebuilt only when Cargo.toml or Cargo.lock change. (rusqlite's bundled SQLite
#    needs a C compiler: gcc and libc6-dev ship with the rust slim image.)
COPY Cargo.toml Cargo.lock ./
# Build flags (the portable Poly1305 backend, see the file).
COPY .cargo ./.cargo
# The manifest names the benchmark programs as examples; cargo wants their files present.
COPY bench/*.rs ./bench/
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src \
       target/release/authvault* \
       target/release/libauthvault* \
       target/release/deps/authvault-* \
       target/release/deps/libauthvault-* \
       target/release/.fingerprint/authvault-*

# 2. The crate itself. migrations/, assets/ and templates/ must be present: the SQLite schema,
#    the API reference page's scripts and the built-in mail templates are embedded with
#    include_str!/include_bytes!.
COPY migrations ./migrations
COPY assets ./assets
COPY templates ./templates
COPY src ./src
# COPY keeps the context's mtimes, which may be older than the dummy build: touch so that
# cargo never mistakes the dummy artifacts for fresh ones.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/authvault --help >/dev/null

############################################################################################
# Runtime stage
############################################################################################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to MongoDB Atlas, SMTP, GitHub, Google and Together AI.
# curl: only for the HEALTHCHECK below (the slim image has neither curl nor wget).
# Versions are not pinned on purpose: a rebuild picks up Debian stable's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 authvault \
    && useradd --system --uid 10001 --gid authvault --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin authvault

WORKDIR /app
# Created and chowned before VOLUME so that a fresh named volume inherits the owner and mode.
RUN mkdir -p /app/data \
    && chown authvault:authvault /app/data \
    && chmod 0700 /app/data

COPY --from=build /build/target/release/authvault /usr/local/bin/authvault

ENV AUTHVAULT_LISTEN=0.0.0.0:8080
VOLUME ["/app/data"]
EXPOSE 8080

# Numeric, so that Kubernetes' runAsNonRoot can verify it (10001 = authvault).
USER 10001:10001

# The port follows AUTHVAULT_LISTEN (the part after the last ':'), so overriding the listen
# address at run time does not break the health check. /healthz never touches the database;
# /readyz does. Shell form on purpose: the shell expands the variable at run time.
# hadolint ignore=DL3025
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD port="${AUTHVAULT_LISTEN##*:}"; \
        curl -fsS --max-time 4 -o /dev/null "http://127.0.0.1:${port:-8080}/healthz" || exit 1

# The server handles SIGTERM itself: it stops accepting, finishes in-flight requests (up to 10 s)
# and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/authvault"]
CMD ["serve"]
