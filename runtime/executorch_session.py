"""ExecuTorch programs (.pte) and bundled programs (.bpte) in the ExecuTorch runtime.

A .pte goes through `executorch.runtime.Runtime.load_program`. A .bpte (program + its test
cases) is loaded the way ExecuTorch 1.5.1 loads bundled programs at runtime:
`_load_bundled_program_from_buffer(bytes)` -> BundledModule, then
`_load_for_executorch_from_bundled_program(bundle)` -> a module to run; the bundle itself
checks the program against its own expected outputs (`verify_result_with_bundled_expected_output`).

With `etdump=True` the program records an ETDump (per-instruction and per-delegate-op
timings) and, with a `debug_buffer_size`, every instruction's output tensors: profiling and
numerical debugging read them through the devtools Inspector.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.pte_format import (
    ProgramInfo,
    check_pte_framing,
    read_bundled_program,
    read_program_info,
)
from edit_mobile.runtime.session import Session

METHOD = "forward"


def _pybindings():
    import executorch.extension.pybindings.portable_lib as portable_lib

    return portable_lib


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's shared threadpool (XNNPACK runs on it); None leaves the default."""
    if threads:
        _pybindings()._unsafe_reset_threadpool(int(threads))


def thread_count() -> int:
    return int(_pybindings()._threadpool_get_thread_count())


class ExecuTorchSession(Session):
    runtime = "executorch"

    def __init__(
        self,
        manifest: Manifest,
        role: str = "program",
        threads: int | None = None,
        etdump: bool = False,
        debug_buffer_size: int = 0,
    ):
        super().__init__(manifest)
        self.entry = manifest.file(role)
        self.bundled = self.entry.path.suffix.lower() == ".bpte"
        self.etdump = etdump
        if self.bundled:
            self._bundle_info = read_bundled_program(self.entry.path)
            self.program_bytes = self._bundle_info.program
        else:
            check_pte_framing(self.entry.path)
            self.program_bytes = None
        self._info: ProgramInfo | None = None
        self._check_backends()
        set_threads(threads)
        started = time.perf_counter()
        try:
            if self.bundled:
                self._load_bundled(etdump, debug_buffer_size)
            else:
                self._load_program(etdump, debug_buffer_size)
        except RuntimeError as err:
            raise UserError(f"ExecuTorch could not load {self.entry.relative}: {_one_line(err)}; re-export the artifact") from err
        self.load_seconds = time.perf_counter() - started

    def _load_program(self, etdump: bool, debug_buffer_size: int) -> None:
        from executorch.runtime import Runtime, Verification

        self._program = Runtime.get().load_program(
            self.entry.path,
            verification=Verification.InternalConsistency,
            enable_etdump=etdump,
            debug_buffer_size=debug_buffer_size,
        )
        if METHOD not in self._program.method_names:
            raise UserError(f"{self.entry.relative} has no '{METHOD}' method (it has {sorted(self._program.method_names)})")
        method = self._program.load_method(METHOD)
        self._execute = lambda inputs: method.execute(inputs)
        self._method_meta = method.metadata
        self._etdump_owner = self._program

    def _load_bundled(self, etdump: bool, debug_buffer_size: int) -> None:
        bindings = _pybindings()
        self._bundle = bindings._load_bundled_program_from_buffer(self.entry.path.read_bytes())
        module = bindings._load_for_executorch_from_bundled_program(
            self._bundle, enable_etdump=etdump, debug_buffer_size=debug_buffer_size
        )
        self._execute = lambda inputs: module.run_method(METHOD, inputs)
        self._method_meta = module.method_meta(METHOD)
        self._etdump_owner = module

    def _check_backends(self) -> None:
        """A program delegating to a backend this runtime lacks fails here, by name."""
        from executorch.runtime import Runtime

        registry = Runtime.get().backend_registry
        needed = sorted(set(self.program_info().methods[METHOD].delegates if METHOD in self.program_info().methods else [])
                        | set(self.manifest.delegates))
        missing = [name for name in needed if not registry.is_available(name)]
        if missing:
            available = ", ".join(registry.registered_backend_names) or "none"
            raise UserError(
                f"{self.entry.relative} delegates to {', '.join(missing)}, which this ExecuTorch runtime lacks "
                f"(it has {available}); run it on a device whose runtime has that backend"
            )

    def program_info(self) -> ProgramInfo:
        if self._info is None:
            if self.program_bytes is not None:
                self._info = read_program_info(self.entry.path, data=self.program_bytes)
            else:
                self._info = read_program_info(self.entry.path)
        return self._info

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list:
        try:
            return list(self._execute(list(inputs)))
        except RuntimeError as err:
            raise UserError(f"ExecuTorch failed running {self.entry.relative}: {_one_line(err)}") from err

    def write_etdump(self, etdump_path: str | Path, debug_buffer_path: str | Path | None = None) -> None:
        """Write what the runs so far recorded (needs etdump=True at load)."""
        if not self.etdump:
            raise UserError("this session records no ETDump; load it with etdump=True")
        if debug_buffer_path is not None:
            self._etdump_owner.write_etdump_result_to_file(str(etdump_path), str(debug_buffer_path))
            return
        # The Program binding always writes a debug buffer file; without one requested it is dropped.
        with tempfile.TemporaryDirectory(prefix="edit-mobile-debug-") as scratch:
            self._etdump_owner.write_etdump_result_to_file(str(etdump_path), str(Path(scratch) / "debug.bin"))

    @property
    def bundled_test_cases(self) -> int:
        return self._bundle_info.test_cases.get(METHOD, 0) if self.bundled else 0


@dataclass
class BundledCheck:
    case: int
    passed: bool
    detail: str


def verify_bundled_program(manifest: Manifest, rtol: float, atol: float) -> list[BundledCheck]:
    """Run the .bpte's own test cases in the ExecuTorch runtime against its expected outputs."""
    entry = manifest.file("bundled_program")
    info = read_bundled_program(entry.path)
    bundle = _pybindings()._load_bundled_program_from_buffer(entry.path.read_bytes())
    checks = []
    for case in range(info.test_cases.get(METHOD, 0)):
        try:
            bundle.verify_result_with_bundled_expected_output(METHOD, case, rtol, atol)
            checks.append(BundledCheck(case, True, f"matches within rtol {rtol:g}, atol {atol:g}"))
        except RuntimeError as err:
            checks.append(BundledCheck(case, False, _one_line(err)))
    return checks


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
