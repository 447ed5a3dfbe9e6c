# One image for every headwater service; the command picks the service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY shared shared
COPY services services
COPY cli cli
RUN pip install --no-cache-dir .
USER 65534:65534
ENTRYPOINT ["headwater", "serve"]
CMD ["registry"]
