"""Outputs appear whole or not at all, and never over anything the user made.

Every command that writes follows one rule (`check_output_dir`, `check_output_file`): the
output path may be new, an empty folder, or an earlier output of the same command, recognised
by the record `.edit-mobile-output.json` that `atomic_output_dir` leaves in every folder it
writes (command kind + the files it wrote), or by edit-mobile's own stamp in a PNG / JSON file.
Anything else is refused in one line unless the user passes `--force`; inputs, folders holding
an input, the current folder and its parents are refused even then.

Writes go to a staging folder beside the target (named with the writer's PID, so the next run
can remove what a killed run left), are fsynced, and are swapped in under a lock, so that two
writers finishing together leave one complete result and neither raises.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from edit_mobile.errors import UserError

OUTPUT_RECORD = ".edit-mobile-output.json"
OUTPUT_SCHEMA = "edit-mobile/output"
PNG_STAMP_KEY = "Software"  # PNG tEXt chunk that marks a PNG as ours
STAMP_PREFIX = "edit-mobile"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- the rule --------------------------------------------------------------------------------


def check_output_dir(target: str | os.PathLike, kind: str, inputs: Iterable = (), force: bool = False) -> Path:
    """Refuse an output folder that is not new, empty or an earlier `kind` output. Returns it
    absolute. Checked under the swap lock: a writer mid-swap must not look like a foreign folder."""
    target = _absolute(target)
    if not target.parent.is_dir():
        return _check_output_dir(target, kind, list(inputs), force)
    with _swap_lock(target.parent):
        return _check_output_dir(target, kind, list(inputs), force)


def _check_output_dir(target: Path, kind: str, inputs: list, force: bool) -> Path:
    _refuse_protected(target, inputs, "folder")
    if not target.exists() and not target.is_symlink():
        _check_writable_parent(target)
        return target
    if target.is_symlink() or not target.is_dir():
        if force and not target.is_symlink():
            return target
        raise UserError(f"{target} is a file or link, not a folder; pass a new folder with -o")
    if force or not any(target.iterdir()):
        return target
    record = read_output_record(target)
    if record is None:
        raise UserError(f"{target} is a folder edit-mobile did not write; pass a new or empty folder with -o, "
                        "or --force to replace it")
    if record["kind"] != kind:
        raise UserError(f"{target} holds the output of `edit-mobile {record['kind']}`, not of `{kind}`; "
                        "pass another folder with -o, or --force to replace it")
    foreign = sorted(set(_relative_files(target)) - set(record["files"]) - {OUTPUT_RECORD})
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise UserError(f"{target} holds files edit-mobile did not write ({shown}); move them out, "
                        "pass another folder with -o, or --force to replace it")
    return target


def check_output_file(path: str | os.PathLike, inputs: Iterable = (), force: bool = False) -> Path:
    """Refuse an output file that exists and is not one edit-mobile wrote (PNG / JSON stamp)."""
    path = _absolute(path)
    _refuse_protected(path, inputs, "file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a file path")
    if path.exists() and not force and not _stamped_by_us(path):
        raise UserError(f"{path} exists and edit-mobile did not write it; pass another path, or --force to replace it")
    if not path.exists():
        _check_writable_parent(path)
    return path


def read_output_record(folder: Path) -> dict | None:
    """The record of an earlier output in `folder`, or None if it has none (or a bad one)."""
    try:
        record = json.loads((folder / OUTPUT_RECORD).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("schema") != OUTPUT_SCHEMA:
        return None
    if not isinstance(record.get("kind"), str) or not isinstance(record.get("files"), list):
        return None
    return record


def _refuse_protected(target: Path, inputs: Iterable, what: str) -> None:
    """Inputs and the folders around the user's work are never an output, --force or not."""
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        source = Path(item).resolve()
        resolved = target.resolve()
        if resolved == source or source in resolved.parents:
            where = "is" if resolved == source else "is inside"
            raise UserError(f"-o {target} {where} the input {item}; inputs are never written: pass another {what}")
        if resolved in source.parents:
            raise UserError(f"-o {target} contains the input {item}; inputs are never written: pass another {what}")
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise UserError(f"-o {target} is the current folder, a parent of it or the home folder; "
                        f"pass a new {what} inside it")


def _check_writable_parent(target: Path) -> None:
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write under {ancestor}; choose a writable output path with -o")


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _stamped_by_us(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    if head.startswith(PNG_SIGNATURE):
        return f"{PNG_STAMP_KEY}\x00{STAMP_PREFIX}".encode() in head
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and str(data.get("created_by", "")).startswith(STAMP_PREFIX)


# --- writing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, kind: str, inputs: Iterable = (),
                      force: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `target`; when the block succeeds it replaces `target`.

    On any exception (SIGINT and SIGTERM included) the staging folder is removed and `target`
    is left as it was. The rule is checked on entry and again at the swap."""
    inputs = list(inputs)
    target = _absolute(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        check_output_dir(target, kind, inputs, force)
        remove_stale_partials(parent, target.name)
        staging = Path(tempfile.mkdtemp(prefix=_partial_prefix(target.name), suffix=".partial", dir=parent))
    except OSError as err:
        raise UserError(f"cannot write to {parent}: {err.strerror}; choose a writable output folder with -o") from err
    try:
        yield staging
        _write_output_record(staging, kind)
        _fsync_tree(staging)
        with _swap_lock(parent):
            _check_output_dir(target, kind, inputs, force)  # another writer may have finished first
            _swap_in(staging, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_file(path: str | os.PathLike, data: bytes, inputs: Iterable = (), force: bool = False) -> Path:
    """Write `data` to `path` whole or not at all, under the output rule."""
    path = check_output_file(path, inputs, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path.parent, path.name)
        handle, partial = tempfile.mkstemp(prefix=_partial_prefix(path.name), suffix=".partial", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, path)
        _fsync_dir(path.parent)
    except OSError as err:
        with contextlib.suppress(NameError, OSError):
            os.unlink(partial)
        raise UserError(f"cannot write {path}: {err.strerror}; choose a writable path") from err
    return path


def png_bytes(image, command: str) -> bytes:
    """A PIL image as PNG bytes stamped as edit-mobile's, so a later run may replace it."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_STAMP_KEY, f"{STAMP_PREFIX} {command}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _write_output_record(staging: Path, kind: str) -> None:
    from edit_mobile import __version__

    record = {"schema": OUTPUT_SCHEMA, "kind": kind, "created_by": f"edit-mobile {__version__} {kind}",
              "files": _relative_files(staging)}
    (staging / OUTPUT_RECORD).write_text(json.dumps(record, indent=1) + "\n")


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.replace(staging, target)
        return
    # Two renames keep a complete folder at `target` at every moment but one.
    trash = Path(tempfile.mkdtemp(prefix=_partial_prefix(target.name), suffix=".old", dir=target.parent))
    os.replace(target, trash / "previous")
    os.replace(staging, target)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _swap_lock(parent: Path) -> Iterator[None]:
    """Serialise swaps between processes writing into `parent`: an flock on the folder itself
    (nothing left beside the user's files; released when a killed writer dies)."""
    descriptor = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _partial_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def remove_stale_partials(parent: Path, name: str) -> None:
    """Remove staging left by writers that no longer run (a SIGKILL leaves it behind)."""
    prefix = f".{name}."
    for leftover in parent.glob(f"{glob_escape(prefix)}*"):
        if leftover.suffix not in (".partial", ".old"):
            continue
        pid = leftover.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):  # file systems that cannot sync folders
            raise
    finally:
        os.close(descriptor)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
