"""A browser app for the whole job: animate a character, edit a video with Qffusion, extract poses.

  python scripts/app.py                       # then open http://127.0.0.1:7860
  python scripts/app.py --model ./sd15 --controlnet ./openpose --offline --port 8080

The models load once, before the page opens, and every run reuses them; one job runs at a time (a waiting user sees
their position). "Preview poses" draws the aligned pose sequence over the image within seconds, without the models.
Each run's files (the video, its poses.json and report.json) go to a new folder under --work-dir and can be
downloaded from the page.

The server listens on --host (default 127.0.0.1, this machine only); --host 0.0.0.0 lets other machines in, with no
access control: do it only on a network you trust.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from zeroshot.cli import ArgumentParser, add_model_arguments, run, whole_number

logger = logging.getLogger("scripts.app")


def build_parser() -> argparse.ArgumentParser:
    from zeroshot.pacm.arguments import add_cache_arguments

    parser = ArgumentParser(prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=whole_number(0, 65535), default=7860, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where each run's files are written (default: a new temporary folder)"
    )
    add_cache_arguments(parser)
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from zeroshot.errors import ZeroshotError

    _check_address(args.host, args.port)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="zeroshot-app-"))
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZeroshotError(f"Cannot create the work folder {str(work_dir)!r}: {error}") from error
    if not os.access(work_dir, os.W_OK):
        raise ZeroshotError(f"The work folder {str(work_dir)!r} is not writable; choose another --work-dir.")
    if importlib.util.find_spec("gradio") is None:
        raise ZeroshotError('The app needs Gradio: pip install -e ".[app]" (requirements-lock.txt pins it).')
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry (read when Gradio is imported)

    from zeroshot.app.models import AppModels
    from zeroshot.app.ui import build_app
    from zeroshot.pacm.arguments import pacm_cache_dir_from_args

    models = AppModels.load(
        args.model,
        args.controlnet,
        device=args.device,
        dtype=args.dtype,
        offline=args.offline,
        cache_dir=pacm_cache_dir_from_args(args),
    )
    app = build_app(models, work_dir)
    logger.info("runs are written to %s", work_dir)
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(work_dir)], inbrowser=False
    )


def _check_address(host: str, port: int) -> None:
    """Checks, before the models load, that the server will be able to listen on `host:port`."""
    import socket

    from zeroshot.errors import ZeroshotError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:  # the port is taken, or the address is not this machine's
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ZeroshotError(f"Cannot listen on {host}:{port}: {reason}; choose another --port or --host.") from error


if __name__ == "__main__":
    sys.exit(run(main))
