FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The runtime lock alone (no test or dev tools); pip refuses any file whose sha256 is not in it.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: \
    -r requirements/runtime.txt
COPY . .
# Static files are part of the image: every container (web, worker, beat) serves the same set.
RUN STATIC_ROOT=/app/staticfiles python manage.py collectstatic --no-input -v0 \
    && useradd --system ruapi && chown -R ruapi /app
USER ruapi
EXPOSE 8000
CMD ["uvicorn", "ruapi.asgi:application", "--host=0.0.0.0", "--port=8000", "--loop=uvloop", "--http=ruapi.server:GuardedHttpToolsProtocol"]
