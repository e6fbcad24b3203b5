"""The worker process's start-up: ROAD's imputation and UMAP's numba kernels are compiled in the background."""

from __future__ import annotations

import logging


def test_the_warm_up_at_worker_start_runs_without_error(caplog):
    from workers import main

    with caplog.at_level(logging.INFO, logger="convscope.worker"):
        thread = main.warm_up_in_background()
        assert thread is not None and thread.daemon  # never holds up the worker's exit
        thread.join(timeout=600)
        assert not thread.is_alive()
    assert "ROAD imputation warmed up" in caplog.text and "UMAP warmed up" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_umap_learn_only_the_imputation_is_warmed(monkeypatch, caplog):
    from workers import main

    monkeypatch.setattr(main, "umap_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="convscope.worker"):
        main.warm_up_in_background().join(timeout=600)
    assert "ROAD imputation warmed up" in caplog.text and "UMAP" not in caplog.text
