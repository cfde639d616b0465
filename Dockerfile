FROM python:3.11-slim
RUN useradd --system --home /srv/stepup stepup
WORKDIR /srv/stepup
COPY pyproject.toml README.md ./
COPY stepup ./stepup
COPY templates ./templates
COPY static ./static
# Editable install keeps templates/ and static/ beside the package, where stepup finds them.
RUN pip install --no-cache-dir -e . && chown -R stepup /srv/stepup
USER stepup
EXPOSE 8000
CMD ["stepup", "serve", "--config", "/etc/stepup/policy.toml", "--host", "0.0.0.0"]
