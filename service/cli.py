"""`convscope serve` (the API) and `convscope worker` (one job worker)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="convscope", description="Shows what a convolutional network sees.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the HTTP API on CONVSCOPE_HOST:CONVSCOPE_PORT")
    commands.add_parser("worker", help="run a job worker (PyTorch; CUDA when present)", add_help=False)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "worker":  # a process of its own: the API side never imports the workers (or torch)
        os.execv(sys.executable, [sys.executable, "-m", "workers", *rest])
    if rest:
        parser.error(f"unexpected arguments: {' '.join(rest)}")
    import uvicorn

    from core.settings import get_settings

    settings = get_settings()
    uvicorn.run("service.app:create_app", factory=True, host=bind_host(settings), port=settings.port,
                log_config=None, access_log=False)


def bind_host(settings) -> str:
    """CONVSCOPE_HOST, except that an open service (no API keys) listens on 127.0.0.1 only."""
    from service.auth import parse_keys

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not parse_keys(settings.api_keys,
                                                                                settings.api_keys_file):
        print(f"convscope: no API keys configured, so the service is open: listening on 127.0.0.1, "
              f"not {settings.host} (set CONVSCOPE_API_KEYS to serve other machines)", file=sys.stderr)
        return "127.0.0.1"
    return settings.host


if __name__ == "__main__":
    main()
