# planfix-notifier in a container; docker-compose.yml beside this file runs it
# with its config and secrets (compose `secrets:` land in /run/secrets, so the
# config says token_file = "/run/secrets/planfix_token"):
#   docker compose up -d
# Or by hand, the secrets mounted read-only the same way:
#   docker build -t planfix-notifier .
#   docker run -d --name planfix-notifier \
#     -v planfix-state:/var/lib/planfix-notifier \
#     -v /srv/planfix/config.toml:/etc/planfix-notifier/config.toml:ro \
#     -v /srv/planfix/secrets:/run/secrets:ro \
#     planfix-notifier
# SIGTERM (docker stop) drains pending alerts for up to alerts.shutdown_drain_s.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgresql]'

FROM python:3.11-slim
ARG UID=10001
RUN useradd --system --uid "${UID}" --user-group --home-dir /var/lib/planfix-notifier \
        --shell /usr/sbin/nologin notifier \
    && mkdir -p /var/lib/planfix-notifier /etc/planfix-notifier \
    && chown notifier:notifier /var/lib/planfix-notifier \
    && chmod 0700 /var/lib/planfix-notifier
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
ENV PLANFIX_NOTIFIER_CONFIG=/etc/planfix-notifier/config.toml \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/planfix-notifier
VOLUME ["/var/lib/planfix-notifier"]
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=5)"]
ENTRYPOINT ["planfix-notifier"]
CMD ["run"]
