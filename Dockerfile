# One image for every inferq process: api, worker, flower, migrate.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV HF_HUB_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    INFERQ_MODEL_DIR=/models \
    INFERQ_API_HOST=0.0.0.0 \
    INFERQ_FLOWER_HOST=0.0.0.0

# torch first, from the CPU index: anything that pulls torch later must not fetch a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN pip install -e . \
 && inferq models assemble

EXPOSE 8000 5555 9101
CMD ["inferq", "api"]
