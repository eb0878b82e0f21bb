# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/planfix-notifier notifier \
 && mkdir -p /var/lib/planfix-notifier && chown notifier /var/lib/planfix-notifier
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /var/lib/planfix-notifier
VOLUME ["/var/lib/planfix-notifier"]
ENTRYPOINT ["planfix-notifier"]
CMD ["run", "--config", "/etc/planfix-notifier/config.toml"]
