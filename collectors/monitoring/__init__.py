"""Health, status and metrics: read-only views of the pipeline for the API, admin and Prometheus."""
