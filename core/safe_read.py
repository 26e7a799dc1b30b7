"""Reading files a stranger may have made: bounded JSON, and loads that never run pickled code.

Every manifest the toolchain reads (artifact, calibration set, output record) goes through
`read_json`: a size cap, json's own scanner guarded against recursion, NaN / Infinity refused
unless the format needs them, and a walk (without recursion) bounding depth, entries and
strings. `no_pickled_code()` wraps third-party loaders (the ETRecord's) whose torch.load falls
back to full unpickling when the restricted one fails: with it the fallback is restricted too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edit_mobile.errors import UserError


@dataclass(frozen=True)
class JsonBounds:
    max_bytes: int = 16 << 20
    max_depth: int = 32
    max_items: int | None = 4096  # entries of any one list or object
    max_string: int | None = 4096
    allow_constants: bool = False  # NaN, Infinity, -Infinity (diffusers scheduler configs hold them)


def read_json(path: Path, fix: str, bounds: JsonBounds = JsonBounds(), what: str = "a manifest"):
    """The document at `path`, or a UserError ending in `fix` ("re-export the artifact")."""
    try:
        if path.stat().st_size > bounds.max_bytes:
            raise UserError(f"{path} is over {bounds.max_bytes >> 20} MiB, not {what}; {fix}")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if bounds.allow_constants else json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as err:  # json's scanner recurses once per nesting level
        raise UserError(f"{path} nests deeper than {bounds.max_depth} levels (nested too deep), not {what}; {fix}") from err
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError, huge integers
        raise UserError(f"{path} is not valid JSON ({one_line(err)}); {fix}") from err
    check_bounded(path, data, fix, bounds, what)
    return data


def check_bounded(path: Path, data, fix: str, bounds: JsonBounds, what: str) -> None:
    """No level, list, object or string beyond the bounds (walked without recursion)."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str) and bounds.max_string is not None and len(value) > bounds.max_string:
            raise UserError(f"{path} holds a string of {len(value)} characters (at most {bounds.max_string}); {fix}")
        if not isinstance(value, dict | list):
            continue
        if depth > bounds.max_depth:
            raise UserError(f"{path} nests deeper than {bounds.max_depth} levels (nested too deep), not {what}; {fix}")
        if bounds.max_items is not None and len(value) > bounds.max_items:
            raise UserError(f"{path} holds a list or object of {len(value)} entries (at most {bounds.max_items}); {fix}")
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def no_pickled_code() -> Iterator[None]:
    """Force torch.load's restricted unpickler inside the block, whatever the caller asks:
    torch.export's deserializer retries a failed restricted load with full pickle, which would
    run code from a hostile file."""
    saved = {name: os.environ.get(name) for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file a user named (`what`: "prompts file", "captions file"), or one line
    saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror}; pass a readable text file") from None


def lazy_exports(module_name: str, names: dict[str, str]):
    """A module `__getattr__` loading each public name from its module on first use (PEP 562),
    so that importing a package for `edit-mobile --help` pulls in no torch."""
    import importlib

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def is_int(value) -> bool:
    """A JSON whole number (bool is an int to Python, never to a schema)."""
    return isinstance(value, int) and not isinstance(value, bool)
