# Production image of the render farm: supervisor, daemons and Chromium.
#   docker build -t render-farm .
#   docker build -t render-farm --build-arg WITH_GCSFUSE=true .  # bucket mounts
# See docs/deploy.md for running it.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript, then keep production dependencies only ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Compilers for native modules (better-sqlite3) when no prebuilt binary fits.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src/ src/
RUN npm run build:app \
  && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----
FROM ${NODE_IMAGE}
ARG WITH_GCSFUSE=false
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    ca-certificates chromium tini procps \
    fonts-liberation2 fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji \
  && rm -rf /var/lib/apt/lists/*
# gcsfuse comes from Google's own package repository, not Debian's.
RUN if [ "$WITH_GCSFUSE" = "true" ]; then \
    apt-get update \
    && apt-get install -y --no-install-recommends curl gnupg \
    && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
      | gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt gcsfuse-bookworm main" \
      > /etc/apt/sources.list.d/gcsfuse.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcsfuse \
    && apt-get purge -y curl gnupg && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*; \
  fi

ENV NODE_ENV=production \
  RENDER_HOST=0.0.0.0 \
  RENDER_PORT=8080 \
  CHROMIUM_PATH=/usr/bin/chromium
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
COPY bin/ bin/
COPY resource-templates/ resource-templates/
COPY static/ static/
COPY scripts/docker-entrypoint.sh scripts/mount-bucket.sh scripts/shutdown-script.sh scripts/
# `render-farm` on PATH; the image's `node` user (uid 1000) runs everything
# and owns only data/.
RUN ln -s /app/bin/render-farm.js /usr/local/bin/render-farm \
  && mkdir -p data && chown node:node data
USER node

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:' + (process.env.RENDER_PORT || 8080) + '/healthz', (res) => process.exit(res.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
# tini is PID 1: it reaps zombies (Chromium leaves some) and passes SIGTERM
# to the supervisor, which drains. The entrypoint mounts the bucket when
# asked to, then runs the command (by default the supervisor).
ENTRYPOINT ["/usr/bin/tini", "--", "scripts/docker-entrypoint.sh"]
CMD ["render-farm", "start"]
