# One image for the API and the workers. torch from PyPI is a CUDA build: workers use the GPU
# when the container is given one, and fall back to the CPU otherwise.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CONVSCOPE_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY service service
COPY workers workers
COPY models models
COPY openapi openapi
RUN pip install --no-cache-dir .
RUN useradd --system --uid 10001 convscope && mkdir -p /data && chown convscope /data
USER convscope
EXPOSE 8000
CMD ["convscope", "serve"]
