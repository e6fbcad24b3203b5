"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("convscope_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("convscope_http_request_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
ORT_SESSIONS = Gauge("convscope_onnxruntime_sessions", "ONNX Runtime sessions held by this process")
QUEUE_DEPTH = Gauge("convscope_queue_depth", "jobs waiting in the queue")
JOB_SECONDS = Histogram("convscope_job_seconds", "job run time by kind (finished jobs seen by the API)", ["kind"],
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
