"""Every number a command takes is checked where it is parsed, in one place.

The `type=` functions here raise `argparse.ArgumentTypeError`, which the parser turns into one
line and exit 2. They import nothing heavy, so `edit-mobile --help` stays quick. The
resolution rule lives here too, and edit_mobile.models uses it, so the command line and the
Python API refuse the same sizes.
"""

from __future__ import annotations

import argparse
import math
import re

from edit_mobile.errors import UserError

# Bounds that keep a typo from allocating until the machine dies: 8192 px is twice the
# largest size the EDiT paper reports (4096^2); 4096 prompt tokens is 8x SD3's longest prompt.
MAX_PIXELS_PER_SIDE = 8192
MAX_PROMPT_TOKENS = 4096
MAX_THREADS = 256


def parse_resolution(text: str | int) -> tuple[int, int]:
    """'1024' -> (1024, 1024); '768x1024' -> (768, 1024) as (height, width) in pixels."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(text))
    if not match:
        raise UserError(f"resolution {text!r} is not R or HxW in pixels, e.g. 1024 or 768x1024")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if not (0 < height <= MAX_PIXELS_PER_SIDE and 0 < width <= MAX_PIXELS_PER_SIDE):
        raise UserError(f"resolution {text!r}: each side must be 1 to {MAX_PIXELS_PER_SIDE} pixels, e.g. 512 or 768x1024")
    return height, width


def check_prompt_tokens(tokens: int) -> int:
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 0 < tokens <= MAX_PROMPT_TOKENS:
        raise UserError(f"prompt tokens {tokens!r} must be a whole number from 1 to {MAX_PROMPT_TOKENS}")
    return tokens


# --- argparse types --------------------------------------------------------------------------


def resolution(text: str) -> tuple[int, int]:
    try:
        return parse_resolution(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def int_range(low: int, high: int | None = None, what: str = "a whole number"):
    """A type accepting whole numbers in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} ({_int_bound(low, high)})") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {what} {_int_bound(low, high)}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _int_bound(low: int, high: int | None) -> str:
    return f"from {low} to {high}" if high is not None else f"of {low} or more"


def float_range(low: float | None = None, high: float | None = None, what: str = "a number"):
    """A type accepting finite floats in [low, high] (NaN and inf never pass)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite: use {what}")
        if (low is not None and value < low) or (high is not None and value > high):
            bound = " to ".join(str(b) for b in (low, high) if b is not None)
            relation = "from " + bound if low is not None and high is not None else (f">= {low}" if low is not None else f"<= {high}")
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: use {what} {relation}")
        return value

    parse.__name__ = what
    return parse


positive_int = int_range(1, what="a whole number")
count = int_range(0, what="a whole number")
seed = int_range(0, 2**63 - 1, what="a seed")
threads = int_range(1, MAX_THREADS, what="a thread count")
prompt_tokens = int_range(1, MAX_PROMPT_TOKENS, what="a token count")
steps = int_range(1, 1000, what="a step count")
psnr_db = float_range(0.0, 200.0, what="a PSNR in dB")
guidance = float_range(0.0, 100.0, what="a guidance scale")
fraction = float_range(0.0, 1.0, what="a fraction")


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage and the error on two lines; we print the error alone, with the
    command it belongs to and a pointer to --help, and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_output_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace the output even if edit-mobile did not write it (never an input)")
