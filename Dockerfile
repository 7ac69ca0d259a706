# marketbus: one image for the publisher, the CLI and example bots.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY marketbus ./marketbus
COPY publisher ./publisher
COPY consumers ./consumers
COPY fake_exchange ./fake_exchange
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 marketbus
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY examples /app/examples
WORKDIR /app
USER marketbus
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["marketbus"]
CMD ["publish"]
