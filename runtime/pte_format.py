"""Reading what an ExecuTorch .pte / .bpte file declares, without running it.

The runtime checks a program's framing before handing it to the C++ loader (a clear line
instead of a loader status code), and reads the memory plan ExecuTorch computed at export:
`ExecutionPlan.non_const_buffer_sizes` in schema/program.fbs (buffer 0 is reserved), which the
pybindings' MethodMeta does not expose. Fields are read by their index in the schema tables.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

from edit_mobile.errors import UserError

PTE_IDENTIFIER_PREFIX = b"ET"  # b"ET12" for schema 12; the number moves with ExecuTorch
BPTE_IDENTIFIER = b"BP08"
EXTENDED_HEADER_MAGIC = b"eh00"

# Field indices in program.fbs (flatbuffers vtable slot = 4 + 2 * index).
PROGRAM_EXECUTION_PLAN = 1
PLAN_NAME, PLAN_CHAINS, PLAN_DELEGATES, PLAN_NON_CONST_BUFFER_SIZES = 0, 5, 7, 8
CHAIN_INSTRUCTIONS = 2
DELEGATE_ID = 0
# bundled_program_schema.fbs
BUNDLED_SUITES, BUNDLED_PROGRAM = 1, 2
SUITE_METHOD_NAME, SUITE_TEST_CASES = 0, 1


@dataclass
class MethodPlan:
    name: str
    planned_buffer_bytes: list[int]  # memory-planned arenas, buffer 0 (reserved) dropped
    instructions: int
    delegates: list[str] = field(default_factory=list)

    @property
    def planned_bytes(self) -> int:
        return sum(self.planned_buffer_bytes)


@dataclass
class ProgramInfo:
    file_bytes: int
    flatbuffer_bytes: int
    segment_bytes: int  # constant / delegate data stored after the flatbuffer
    methods: dict[str, MethodPlan]


def check_pte_framing(path: str | os.PathLike, data: bytes | None = None) -> None:
    """Refuse a file that is not an ExecuTorch program or is shorter than its header says."""
    path = Path(path)
    head = data[:64] if data is not None else _read_head(path)
    size = len(data) if data is not None else path.stat().st_size
    if len(head) < 8 or not head[4:6] == PTE_IDENTIFIER_PREFIX:
        raise UserError(f"{path.name} is not an ExecuTorch program (no ET file identifier); re-export the artifact")
    if head[8:12] == EXTENDED_HEADER_MAGIC and len(head) >= 32:
        program_size = int.from_bytes(head[16:24], "little")
        segment_base = int.from_bytes(head[24:32], "little")
        segment_size = int.from_bytes(head[32:40], "little") if int.from_bytes(head[12:16], "little") > 24 else 0
        expected = max(program_size, segment_base + segment_size)
        if size < expected:
            raise UserError(
                f"{path.name} is truncated: {size} bytes where its header declares {expected}; "
                "copy the artifact again or re-export it"
            )


def read_program_info(path: str | os.PathLike | None = None, data: bytes | None = None) -> ProgramInfo:
    """The memory plan and delegates of every method of a .pte (path or bytes)."""
    if data is None:
        # Mapped, not read: a program's weights can be gigabytes and only the head is parsed.
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return read_program_info(path, data=mapped)
    from flatbuffers.table import Table

    check_pte_framing(path or "program", data)
    root = Table(data, int.from_bytes(data[0:4], "little"))
    methods = {}
    for plan in _tables(root, PROGRAM_EXECUTION_PLAN):
        name = _string(plan, PLAN_NAME)
        sizes = _int64s(plan, PLAN_NON_CONST_BUFFER_SIZES)
        instructions = sum(_vector_length(chain, CHAIN_INSTRUCTIONS) for chain in _tables(plan, PLAN_CHAINS))
        delegates = [_string(delegate, DELEGATE_ID) for delegate in _tables(plan, PLAN_DELEGATES)]
        methods[name] = MethodPlan(name, sizes[1:], instructions, delegates)
    program_size, segment_bytes = len(data), 0
    if data[8:12] == EXTENDED_HEADER_MAGIC:
        program_size = int.from_bytes(data[16:24], "little")
        segment_base = int.from_bytes(data[24:32], "little")
        segment_bytes = len(data) - segment_base if segment_base else 0
    return ProgramInfo(len(data), program_size, segment_bytes, methods)


@dataclass
class BundledInfo:
    program: bytes
    test_cases: dict[str, int]  # method name -> bundled test cases


def read_bundled_program(path: str | os.PathLike) -> BundledInfo:
    """The program inside a .bpte and how many test cases it bundles per method."""
    from flatbuffers.table import Table

    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != BPTE_IDENTIFIER:
        raise UserError(f"{path.name} is not an ExecuTorch bundled program (no BP08 identifier); re-export it")
    root = Table(bytearray(data), int.from_bytes(data[0:4], "little"))
    start, length = _vector(root, BUNDLED_PROGRAM)
    if start is None or start + length > len(data):
        raise UserError(f"{path.name} is truncated: its program runs past the end of the file; re-export it")
    cases = {_string(suite, SUITE_METHOD_NAME): _vector_length(suite, SUITE_TEST_CASES) for suite in _tables(root, BUNDLED_SUITES)}
    program = bytes(data[start : start + length])
    check_pte_framing(path, program)
    return BundledInfo(program, cases)


# --- flatbuffers helpers: a table's field by schema index ---------------------------------

def _offset(table, index: int) -> int:
    return table.Offset(4 + 2 * index)


def _vector(table, index: int) -> tuple[int | None, int]:
    offset = _offset(table, index)
    if not offset:
        return None, 0
    return table.Vector(offset), table.VectorLen(offset)


def _vector_length(table, index: int) -> int:
    return _vector(table, index)[1]


def _tables(table, index: int):
    from flatbuffers.table import Table

    start, length = _vector(table, index)
    for i in range(length):
        yield Table(table.Bytes, table.Indirect(start + 4 * i))


def _int64s(table, index: int) -> list[int]:
    start, length = _vector(table, index)
    return [int.from_bytes(table.Bytes[start + 8 * i : start + 8 * i + 8], "little", signed=True) for i in range(length)]


def _string(table, index: int) -> str:
    offset = _offset(table, index)
    return table.String(offset + table.Pos).decode() if offset else ""


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(64)
