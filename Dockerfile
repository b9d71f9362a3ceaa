# syntax=docker/dockerfile:1
#
# The poolpolicy-operator image. Build: docker build -t poolpolicy-operator:0.1.0 .
#
# Two stages on the same Debian 12 Node 24 base: "build" compiles TypeScript with every
# dependency; the runtime stage gets only the production dependencies and the compiled
# dist/src. Runtime base: node:24-bookworm-slim rather than distroless, because its glibc and
# Node match the build stage exactly, `ENTRYPOINT ["node", …]` works as is (distroless's node is
# /nodejs/bin/node and it has no shell), and a shell helps when debugging a pod. The pod's
# read-only root filesystem and non-root UID limit what that shell could do.
#
# To pin the base for reproducible builds, replace the tag with tag@sha256:<digest>.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Manifests first: the dependency layer is cached until package*.json change.
COPY package.json package-lock.json ./
# Every dependency, with install scripts: the devDependency "node" fetches a Node 24 binary in
# its preinstall script, and `npm run build` puts node_modules/.bin (that binary) first on PATH.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# tsc -p tsconfig.json: outDir dist, rootDir ".", so src/main.ts becomes dist/src/main.js.
# (tsconfig also includes test/, bench/ and vitest.config.ts; .dockerignore keeps them out of
# the context, and tsc compiles whatever of its include list is present.)
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="poolpolicy-operator" \
      org.opencontainers.image.description="Kubernetes operator for PostgreSQL connection pools (PoolPolicy)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
# package.json is needed at run time too: its "type": "module" makes Node load dist/**/*.js as ESM.
COPY package.json package-lock.json ./
# Production dependencies only (--omit=dev drops typescript, vitest and the "node" npm package:
# the base image's Node 24 runs the operator). No install scripts: none of the runtime
# dependencies needs one, and it keeps third-party code from running at build time.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
# The compiled operator only. Files stay owned by root: the operator cannot modify its own code.
COPY --from=build /src/dist/src ./dist/src
# A numeric UID:GID, so that the kubelet can verify runAsNonRoot (the base image's "node" user
# is a name); the Helm chart runs the pod as the same 65532:65532. No home directory is needed.
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
# Exec form: node is PID 1 and receives SIGTERM itself (src/main.ts handles it: finishes the
# reconciles in flight, releases the Lease, exits 0).
ENTRYPOINT ["node", "dist/src/main.js"]
