"""The `edit-mobile` command line: one subcommand per stage, each owned by its package."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import warnings

from edit_mobile import __version__
from edit_mobile.cli_args import OneLineParser
from edit_mobile.errors import UserError

# Each module defines `register(subparsers)`; its handlers import heavy libraries lazily
# so that `--help` stays quick. Order follows the data flow.
COMMAND_MODULES = (
    "edit_mobile.models.cli",
    "edit_mobile.calibration.cli",
    "edit_mobile.export.cli",
    "edit_mobile.export.quantization.cli",
    "edit_mobile.runtime.cli",
    "edit_mobile.distill.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="edit-mobile",
        description="Turn diffusion transformers into EDiT / MM-EDiT and put them on phones.",
    )
    parser.add_argument("--version", action="version", version=f"edit-mobile {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show the INFO log lines of torch, ExecuTorch, coremltools, ONNX (default: warnings only)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


# Deprecation notices from inside torch / ExecuTorch / coremltools / diffusers that a user
# cannot act on (the test suite filters the same list, see tests/conftest.py).
THIRD_PARTY_NOTICES = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Function _TORCH_OPS_REGISTRY.__contains__ is deprecated",
    r".*is deprecated. Use files\(\) instead",
    r"`torch.jit.script_method` is deprecated",
    r"This API is experimental",
    r"__array__ implementation doesn't accept a copy keyword",
)


def quiet_third_party_notices() -> None:
    for message in THIRD_PARTY_NOTICES:
        warnings.filterwarnings("ignore", message=message)


# Libraries that log progress at INFO, some through handlers of their own (torch, diffusers).
# Loggers set quieter still (edit_mobile/__init__.py: torchao, ...) stay so.
THIRD_PARTY_LOGGERS = ("executorch", "torch", "coremltools", "onnx", "onnxscript", "onnx_ir",
                       "onnxruntime", "diffusers", "transformers")


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes (tests swap it; torch logs at exit)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_LOG_HANDLER = _StderrHandler()
_LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def configure_logging(verbose: bool) -> None:
    """Warnings only, unless --verbose (then INFO). The level is held on our root handler too:
    ExecuTorch's Vulkan modules set the root logger to INFO when imported (some 100 lines an
    export), and basicConfig calls made by later imports find this handler and do nothing."""
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    _LOG_HANDLER.setLevel(level)
    if _LOG_HANDLER not in root.handlers:
        root.addHandler(_LOG_HANDLER)
    root.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if verbose or logger.level < level:
            logger.setLevel(level)


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every `with` block cleans up."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_notices()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a bad flag (one line, code 2)
        return int(done.code or 0)
    configure_logging(args.verbose)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"edit-mobile {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
