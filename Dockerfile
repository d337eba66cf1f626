FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system ruapi && chown -R ruapi /app
USER ruapi
EXPOSE 8000
CMD ["uvicorn", "ruapi.asgi:application", "--host=0.0.0.0", "--port=8000", "--loop=uvloop", "--http=ruapi.server:GuardedHttpToolsProtocol"]
