"""Reading what an ExecuTorch .pte / .bpte file declares, without running it.

The runtime checks a program's framing before handing it to the C++ loader (a clear line
instead of a loader status code), and reads the memory plan ExecuTorch computed at export:
`ExecutionPlan.non_const_buffer_sizes` in schema/program.fbs (buffer 0 is reserved), which the
pybindings' MethodMeta does not expose. Fields are read by their index in the schema tables.

Every read is bounds-checked first (`FlatBuffer`): a corrupt or hostile file is refused with
"X is corrupt at offset N", never over-read, looped over or allocated for. A bundled program is
checked whole (bundled_program_schema.fbs): ExecuTorch's bundled loader trusts its buffer
without a flatbuffers verifier, so anything it would dereference is checked here.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edit_mobile.errors import UserError

PTE_IDENTIFIER_PREFIX = b"ET"  # b"ET12" for schema 12; the number moves with ExecuTorch
BPTE_IDENTIFIER = b"BP08"
EXTENDED_HEADER_MAGIC = b"eh00"
EXTENDED_HEADER_END = 40  # magic, length, program_size, segment_base_offset, segment_data_size

# Field indices in program.fbs (flatbuffers vtable slot = 4 + 2 * index).
PROGRAM_EXECUTION_PLAN = 1
PLAN_NAME, PLAN_CHAINS, PLAN_DELEGATES, PLAN_NON_CONST_BUFFER_SIZES = 0, 5, 7, 8
CHAIN_INSTRUCTIONS = 2
DELEGATE_ID = 0
# bundled_program_schema.fbs
BUNDLED_SUITES, BUNDLED_PROGRAM = 1, 2
SUITE_METHOD_NAME, SUITE_TEST_CASES = 0, 1
CASE_INPUTS, CASE_EXPECTED_OUTPUTS = 0, 1
VALUE_TYPE, VALUE_VAL = 0, 1  # a union field takes two slots: its type, then its table
TENSOR_SCALAR_TYPE, TENSOR_SIZES, TENSOR_DATA, TENSOR_DIM_ORDER = 0, 1, 2, 3
VALUE_KINDS = {1: "tensor", 2: "int", 3: "bool", 4: "double"}  # ValueUnion; 0 is NONE
MAX_TENSOR_DIMS = 16  # bundled_program.cpp kMaxDim: more aborts the runtime
# ScalarType (scalar_type.fbs) -> bytes per element, for the types a bundled tensor may hold.
SCALAR_TYPE_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}
TORCH_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool", 15: "bfloat16"}  # by name: torch loads only when a tensor is made
MAX_TABLES = 1_000_000  # as flatbuffers' Verifier: shared offsets cannot multiply the work


class FlatBuffer:
    """Bounds-checked reads of one flatbuffer (bytes or an mmap), named `name` in errors.

    Offsets, vtables, vector lengths and strings are checked against the buffer, and
    alignment as flatbuffers' Verifier checks it, before anything is read through them."""

    def __init__(self, data, name: str, size: int | None = None):
        self.data = data
        self.size = len(data) if size is None else min(size, len(data))
        self.name = name
        self._tables_left = MAX_TABLES

    def corrupt(self, offset: int) -> UserError:
        return UserError(f"{self.name} is corrupt at offset {offset}; re-export the artifact")

    def check(self, offset: int, length: int, align: int = 1) -> None:
        if offset < 0 or length < 0 or offset + length > self.size or offset % align:
            raise self.corrupt(offset)

    def scalar(self, offset: int, fmt: str):
        size = struct.calcsize(fmt)
        self.check(offset, size, size)
        return struct.unpack_from(fmt, self.data, offset)[0]

    def root(self) -> Table:
        return self.table_at(self.scalar(0, "<I"))

    def table_at(self, position: int) -> Table:
        self._tables_left -= 1
        if self._tables_left < 0:
            raise self.corrupt(position)
        vtable = position - self.scalar(position, "<i")
        if not 0 <= vtable < self.size:
            raise self.corrupt(position)
        vtable_size, object_size = self.scalar(vtable, "<H"), self.scalar(vtable + 2, "<H")
        if vtable_size < 4 or vtable_size % 2:
            raise self.corrupt(vtable)
        self.check(vtable, vtable_size, 2)
        if object_size < 4:
            raise self.corrupt(position)
        self.check(position, object_size)
        return Table(self, position, vtable, vtable_size, object_size)


@dataclass(frozen=True)
class Table:
    buffer: FlatBuffer
    position: int
    vtable: int
    vtable_size: int
    object_size: int

    def _field(self, index: int, size: int) -> int | None:
        """Where field `index` lies (inside this table), or None when it is absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_size:
            return None
        relative = self.buffer.scalar(self.vtable + slot, "<H")
        if not relative:
            return None
        if relative + size > self.object_size:
            raise self.buffer.corrupt(self.position + relative)
        return self.position + relative

    def scalar(self, index: int, fmt: str, default=0):
        place = self._field(index, struct.calcsize(fmt))
        return default if place is None else self.buffer.scalar(place, fmt)

    def _target(self, index: int) -> int | None:
        place = self._field(index, 4)
        return None if place is None else place + self.buffer.scalar(place, "<I")

    def table(self, index: int) -> Table | None:
        target = self._target(index)
        return None if target is None else self.buffer.table_at(target)

    def vector(self, index: int, element_size: int) -> tuple[int, int] | None:
        """(first element's offset, count) of a vector field, all of it inside the buffer."""
        target = self._target(index)
        if target is None:
            return None
        count = self.buffer.scalar(target, "<I")
        self.buffer.check(target + 4, count * element_size, min(element_size, 8))
        return target + 4, count

    def count(self, index: int, element_size: int) -> int:
        """How many elements a vector field holds (0 when absent), all inside the buffer."""
        return (self.vector(index, element_size) or (0, 0))[1]

    def tables(self, index: int) -> list[Table]:
        start, count = self.vector(index, 4) or (0, 0)
        return [self.buffer.table_at(start + 4 * i + self.buffer.scalar(start + 4 * i, "<I")) for i in range(count)]

    def string(self, index: int) -> str | None:
        place = self.vector(index, 1)
        if place is None:
            return None
        start, length = place
        self.buffer.check(start + length, 1)
        if self.buffer.data[start + length] != 0:  # the runtime reads it as a C string
            raise self.buffer.corrupt(start + length)
        try:
            return bytes(self.buffer.data[start : start + length]).decode()
        except UnicodeDecodeError as err:
            raise self.buffer.corrupt(start) from err

    def int64s(self, index: int) -> list[int]:
        start, count = self.vector(index, 8) or (0, 0)
        return list(struct.unpack_from(f"<{count}q", self.buffer.data, start))

    def int32s(self, index: int) -> list[int]:
        start, count = self.vector(index, 4) or (0, 0)
        return list(struct.unpack_from(f"<{count}i", self.buffer.data, start))

    def required(self, value):
        """A field the runtime dereferences without a null check must be there."""
        if value is None:
            raise self.buffer.corrupt(self.position)
        return value


# --- programs (.pte) ------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Framing:
    flatbuffer_bytes: int
    segment_base: int  # 0: no segments


def check_pte_framing(path: str | os.PathLike, data=None) -> Framing:
    """Refuse a file that is not an ExecuTorch program or is shorter than its header says."""
    path = Path(path)
    head = bytes(data[:EXTENDED_HEADER_END]) if data is not None else _read_head(path)
    size = len(data) if data is not None else path.stat().st_size
    if len(head) < 8 or head[4:6] != PTE_IDENTIFIER_PREFIX:
        raise UserError(f"{path.name} is not an ExecuTorch program (no ET file identifier); re-export the artifact")
    if head[8:12] != EXTENDED_HEADER_MAGIC:
        return Framing(size, 0)
    if len(head) < 32:
        raise _truncated(path, size, 32)
    header_length = int.from_bytes(head[12:16], "little")
    program_size = int.from_bytes(head[16:24], "little")
    segment_base = int.from_bytes(head[24:32], "little")
    segment_size = int.from_bytes(head[32:40], "little") if header_length > 24 and len(head) >= 40 else 0
    expected = max(program_size, segment_base + segment_size)
    if size < expected:
        raise _truncated(path, size, expected)
    if program_size < EXTENDED_HEADER_END or (segment_base and segment_base < program_size):
        raise UserError(f"{path.name} is corrupt at offset 16 (its header's sizes disagree); re-export the artifact")
    return Framing(program_size, segment_base)


def read_program_info(path: str | os.PathLike | None = None, data=None) -> ProgramInfo:
    """The memory plan and delegates of every method of a .pte (path or bytes)."""
    if data is None:
        # Mapped, not read: a program's weights can be gigabytes and only the head is parsed.
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise UserError(f"{Path(path).name} is empty; re-export the artifact")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return read_program_info(path, data=mapped)
    framing = check_pte_framing(path or "program", data)
    # The flatbuffer is the file's head: its offsets may not reach into the segments.
    buffer = FlatBuffer(data, Path(path).name if path else "program", size=framing.flatbuffer_bytes)
    methods = {}
    for plan in buffer.root().tables(PROGRAM_EXECUTION_PLAN):
        method = _method_plan(plan)
        methods[method.name] = method
    segment_bytes = len(data) - framing.segment_base if framing.segment_base else 0
    return ProgramInfo(len(data), framing.flatbuffer_bytes, segment_bytes, methods)


def _method_plan(plan: Table) -> MethodPlan:
    sizes = plan.int64s(PLAN_NON_CONST_BUFFER_SIZES)
    instructions = sum(chain.count(CHAIN_INSTRUCTIONS, 4) for chain in plan.tables(PLAN_CHAINS))  # [Instruction]
    delegates = [delegate.string(DELEGATE_ID) or "" for delegate in plan.tables(PLAN_DELEGATES)]
    return MethodPlan(plan.string(PLAN_NAME) or "", sizes[1:], instructions, delegates)


# --- bundled programs (.bpte) -------------------------------------------------------------------

@dataclass(frozen=True)
class BundledValue:
    kind: str  # tensor, int, bool or double
    scalar_type: int | None = None  # ExecuTorch ScalarType code (tensors)
    sizes: tuple[int, ...] = ()
    data: bytes = field(default=b"", repr=False)  # a tensor's elements, in its dim order
    dim_order: tuple[int, ...] = ()

    def to_tensor(self):
        """The tensor, as a torch tensor of the shape `sizes` (the elements copied out)."""
        import torch

        dtype = getattr(torch, TORCH_DTYPES[self.scalar_type])
        stored = [self.sizes[d] for d in self.dim_order]
        flat = torch.frombuffer(bytearray(self.data), dtype=dtype) if self.data else torch.empty(0, dtype=dtype)
        return flat.reshape(stored).permute(*[self.dim_order.index(d) for d in range(len(self.sizes))]).contiguous()


@dataclass(frozen=True)
class BundledCase:
    inputs: tuple[BundledValue, ...]
    expected_outputs: tuple[BundledValue, ...]


@dataclass
class BundledInfo:
    program: bytes
    suites: dict[str, list[BundledCase]]  # method name -> its test cases

    @property
    def test_cases(self) -> dict[str, int]:
        """Method name -> how many test cases the bundle holds for it."""
        return {name: len(cases) for name, cases in self.suites.items()}


def read_bundled_program(path: str | os.PathLike, data: bytes | None = None) -> BundledInfo:
    """The program inside a .bpte (path, or its bytes) and its test cases, every table checked."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    if len(data) < 8 or data[4:8] != BPTE_IDENTIFIER:
        raise UserError(f"{path.name} is not an ExecuTorch bundled program (no BP08 identifier); re-export it")
    buffer = FlatBuffer(data, path.name)
    root = buffer.root()
    start, length = root.required(root.vector(BUNDLED_PROGRAM, 1))
    suites: dict[str, list[BundledCase]] = {}
    for suite in _required_tables(root, BUNDLED_SUITES):
        name = suite.required(suite.string(SUITE_METHOD_NAME))
        cases = [_bundled_case(case) for case in _required_tables(suite, SUITE_TEST_CASES)]
        suites.setdefault(name, cases)  # the runtime takes a method's first suite
    program = data[start : start + length]
    check_pte_framing(path, program)
    return BundledInfo(program, suites)


def _required_tables(table: Table, index: int) -> list[Table]:
    table.required(table.vector(index, 4))
    return table.tables(index)


def _bundled_case(case: Table) -> BundledCase:
    inputs = tuple(_bundled_value(value) for value in _required_tables(case, CASE_INPUTS))
    outputs = tuple(_bundled_value(value) for value in _required_tables(case, CASE_EXPECTED_OUTPUTS))
    return BundledCase(inputs, outputs)


def _bundled_value(value: Table) -> BundledValue:
    kind = VALUE_KINDS.get(value.scalar(VALUE_TYPE, "<B"))
    val = value.table(VALUE_VAL)
    if kind is None or val is None:
        raise value.buffer.corrupt(value.position)
    if kind == "int":
        val.scalar(0, "<q")
    elif kind == "bool":
        val.scalar(0, "<B")
    elif kind == "double":
        val.scalar(0, "<d")
    else:
        return _bundled_tensor(val)
    return BundledValue(kind)


def _bundled_tensor(tensor: Table) -> BundledValue:
    """A tensor the runtime can wrap: known type, sane rank, data and dim order to match."""
    corrupt = tensor.buffer.corrupt(tensor.position)
    scalar_type = tensor.scalar(TENSOR_SCALAR_TYPE, "<b")
    tensor.required(tensor.vector(TENSOR_SIZES, 4))
    sizes = tensor.int32s(TENSOR_SIZES)
    data_start, data_bytes = tensor.required(tensor.vector(TENSOR_DATA, 1))
    start, dims = tensor.required(tensor.vector(TENSOR_DIM_ORDER, 1))
    if scalar_type not in SCALAR_TYPE_BYTES or len(sizes) > MAX_TENSOR_DIMS or min(sizes, default=0) < 0:
        raise corrupt
    if dims != len(sizes) or sorted(tensor.buffer.data[start : start + dims]) != list(range(dims)):
        raise corrupt  # dim_order_to_stride aborts the runtime on anything but a permutation
    elements = 1
    for size in sizes:
        elements *= size
    size = elements * SCALAR_TYPE_BYTES[scalar_type]
    if size > data_bytes:
        raise corrupt
    data = bytes(tensor.buffer.data[data_start : data_start + size])
    dim_order = tuple(tensor.buffer.data[start : start + dims])
    return BundledValue("tensor", scalar_type, tuple(sizes), data, dim_order)


def _truncated(path: Path, size: int, expected: int) -> UserError:
    return UserError(
        f"{path.name} is truncated: {size} bytes where its header declares {expected}; "
        "copy the artifact again or re-export it"
    )


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(EXTENDED_HEADER_END)
