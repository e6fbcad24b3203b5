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
SESSION_BYTES = Gauge("convscope_onnxruntime_session_bytes", "estimated bytes held by this process's ONNX Runtime "
                      "sessions (bounded by CONVSCOPE_SESSION_CACHE_BYTES)")
SESSION_BUDGET = Gauge("convscope_onnxruntime_session_budget_bytes", "the session cache's byte budget")
SESSION_EVICTIONS = Gauge("convscope_onnxruntime_session_evictions", "sessions evicted by this process since it started")
SESSION_BUILDS = Gauge("convscope_onnxruntime_session_builds", "sessions built by this process since it started")
FORWARD_BATCHES = Gauge("convscope_forward_batches", "batched ONNX Runtime runs of the forward views since start, "
                        "with the requests and images (rows) they held", ["figure"])
BLOB_CACHE_BYTES = Gauge("convscope_blob_cache_bytes", "bytes of bucket blobs cached on this machine's disk")
BLOB_FETCHES = Gauge("convscope_blob_fetches", "blobs fetched from the storage by this process")
BLOB_CORRUPT = Gauge("convscope_blob_corrupt", "blob copies found not to match their digest by this process")
WORKER_CACHE = Gauge("convscope_worker_cache", "each live worker's caches (published with its heartbeat)",
                     ["worker", "cache", "figure"])
