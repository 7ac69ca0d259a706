# marketbus: one image for the publisher, the CLI and example bots.
# Every third-party package comes from requirements.lock, pinned and hash-checked; the image
# holds only the lock's runtime subset (no test tools), the same versions CI tests.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/build
ENV PATH=/opt/build/bin:$PATH
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY tools ./tools
COPY marketbus ./marketbus
COPY publisher ./publisher
COPY consumers ./consumers
COPY fake_exchange ./fake_exchange
COPY marketbus_cli ./marketbus_cli
COPY archive ./archive
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python tools/lockfile.py runtime requirements.lock > /wheels/runtime.lock

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 marketbus && install -d -o marketbus /data
COPY --from=build /wheels /wheels
RUN python -m venv /opt/marketbus \
 && /opt/marketbus/bin/pip install --no-cache-dir --no-deps --require-hashes -r /wheels/runtime.lock \
 && /opt/marketbus/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
 && /opt/marketbus/bin/pip check \
 && rm -rf /wheels
ENV PATH=/opt/marketbus/bin:$PATH
COPY examples /app/examples
WORKDIR /app
USER marketbus
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["marketbus"]
CMD ["publish"]
