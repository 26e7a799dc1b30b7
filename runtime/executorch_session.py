"""ExecuTorch programs (.pte) and bundled programs (.bpte) in the ExecuTorch runtime.

A .pte goes through `executorch.runtime.Runtime.load_program`. A .bpte (program + its test
cases) is loaded the way ExecuTorch 1.5.1 loads bundled programs at runtime:
`_load_bundled_program_from_buffer(bytes)` -> BundledModule, then
`_load_for_executorch_from_bundled_program(bundle)` -> a module to run; the bundle itself
checks the program against its own expected outputs (`verify_result_with_bundled_expected_output`).

Both loaders verify programs with `Verification.InternalConsistency`, but the bundled one
trusts the bundle around the program (and loads it for its test cases with minimal checks), so
a bundle is handed over only once every part it trusts was checked: its tables (pte_format),
the inner program by ExecuTorch's verifier, and each test case against the method it feeds.
What a verified program means is not verified (delegates parse their own blobs, kernels trust
their arguments' types), so each program first initialises and runs once on zeros in a child
(`trial_in_child`): a program that crashes ExecuTorch costs the child, not this process.

Weights kept outside the program (the manifest's `weights` role, model.ptd: program-data
separation) are handed to every loader: a path for a program, the bytes for a bundle (kept
alive by the session: ExecuTorch reads them in place).

With `etdump=True` the program records an ETDump (per-instruction and per-delegate-op
timings) and, with a `debug_buffer_size`, every instruction's output tensors: profiling and
numerical debugging read them through the devtools Inspector.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import FileEntry, Manifest
from edit_mobile.runtime.pte_format import (
    BundledCase,
    BundledInfo,
    ProgramInfo,
    check_pte_framing,
    read_bundled_program,
    read_program_info,
)
from edit_mobile.runtime.session import Session, torch_dtype
from edit_mobile.safe_read import one_line

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
        self.weights = program_weights(manifest)
        self.bundled = self.entry.path.suffix.lower() == ".bpte"
        self.etdump = etdump
        if self.bundled:
            self._bundle_data, self._bundle_info = verified_bundle(self.entry)
            self.program_bytes = self._bundle_info.program
        else:
            check_pte_framing(self.entry.path)
            self.program_bytes = None
        self._info: ProgramInfo | None = None
        self._check_backends()
        set_threads(threads)
        trial_in_child(self.entry, self.program_bytes if self.bundled else self.entry.path, self.inputs, self.weights)
        started = time.perf_counter()
        try:
            if self.bundled:
                self._load_bundled(etdump, debug_buffer_size)
            else:
                self._load_program(etdump, debug_buffer_size)
        except RuntimeError as err:
            raise UserError(f"ExecuTorch could not load {self.entry.relative}: {one_line(err)}; re-export the artifact") from err
        self.load_seconds = time.perf_counter() - started

    def _load_program(self, etdump: bool, debug_buffer_size: int) -> None:
        from executorch.runtime import Runtime, Verification

        self._program = Runtime.get().load_program(
            self.entry.path,
            verification=Verification.InternalConsistency,
            enable_etdump=etdump,
            debug_buffer_size=debug_buffer_size,
            data_path=self.weights.path if self.weights else None,
        )
        if METHOD not in self._program.method_names:
            raise UserError(f"{self.entry.relative} has no '{METHOD}' method (it has {sorted(self._program.method_names)})")
        method = self._program.load_method(METHOD)
        self._execute = lambda inputs: method.execute(inputs)
        self._method_meta = method.metadata
        self._etdump_owner = self._program

    def _load_bundled(self, etdump: bool, debug_buffer_size: int) -> None:
        bindings = _pybindings()
        self._bundle = bindings._load_bundled_program_from_buffer(self._bundle_data)
        self._weights_data = self.weights.path.read_bytes() if self.weights else None  # read in place
        module = bindings._load_for_executorch_from_bundled_program(
            self._bundle, data_map_buffer=self._weights_data, enable_etdump=etdump, debug_buffer_size=debug_buffer_size
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
            raise UserError(f"ExecuTorch failed running {self.entry.relative}: {one_line(err)}") from err

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

    def default_threads(self) -> int:
        return thread_count()

    def planned_memory(self) -> dict:
        """ExecuTorch's memory plan: the activation arenas the program declares (weights apart)."""
        info = self.program_info()
        plan = info.methods[METHOD]
        return {
            "planned_bytes": plan.planned_bytes,
            "planned_buffers": plan.planned_buffer_bytes,
            "constant_and_delegate_bytes": info.segment_bytes,
            "instructions": plan.instructions,
            "delegate_calls": len(plan.delegates),
            "planned_note": "tensors ExecuTorch holds between instructions; a delegate's inner activations live in "
                            "its own workspace (XNNPACK's), counted in peak RSS, not here" if plan.delegates else
                            "every activation of the program",
        }

    def bundled_checks(self, atol: float) -> list[dict]:
        if not self.manifest.has("bundled_program"):
            return []
        return [vars(check) for check in verify_bundled_program(self.manifest, rtol=0.0, atol=atol)]

    @classmethod
    def operator_profile(cls, manifest: Manifest, inputs, threads: int | None, runs: int, tick=lambda: None):
        from edit_mobile.runtime.profile_executorch import executorch_operator_profile

        return executorch_operator_profile(manifest, inputs, threads, runs, tick)

    def layer_report(self, inputs, reference: Session, threshold_db: float):
        from edit_mobile.runtime.numerics_executorch import executorch_layer_report

        return executorch_layer_report(self.manifest, inputs, reference.wrapper.state_dict(), threshold_db)

    @property
    def bundled_test_cases(self) -> int:
        return self._bundle_info.test_cases.get(METHOD, 0) if self.bundled else 0


@dataclass
class BundledCheck:
    case: int
    passed: bool
    detail: str


def program_weights(manifest: Manifest) -> FileEntry | None:
    """The program's external weights (model.ptd), if it keeps them outside."""
    return manifest.file("weights") if manifest.has("weights") else None


def verify_bundled_program(manifest: Manifest, rtol: float, atol: float) -> list[BundledCheck]:
    """Run the .bpte's own test cases in the ExecuTorch runtime against its expected outputs."""
    entry = manifest.file("bundled_program")
    weights = program_weights(manifest)
    data, info = verified_bundle(entry)
    trial_in_child(entry, info.program, manifest.inputs, weights)
    bundle = _pybindings()._load_bundled_program_from_buffer(data)
    if weights is not None:
        return _verify_with_weights(bundle, info, weights, rtol, atol)
    checks = []
    for case in range(info.test_cases.get(METHOD, 0)):
        try:
            bundle.verify_result_with_bundled_expected_output(METHOD, case, rtol, atol)
            checks.append(BundledCheck(case, True, f"matches within rtol {rtol:g}, atol {atol:g}"))
        except RuntimeError as err:
            checks.append(BundledCheck(case, False, one_line(err)))
    return checks


def _verify_with_weights(bundle, info: BundledInfo, weights: FileEntry | None, rtol: float, atol: float,
                         methods: tuple[str, ...] = (METHOD,), atols: dict[str, float] | None = None) -> list[BundledCheck]:
    """ExecuTorch's own bundled check cannot be given external weights (1.5.1): run each case
    on the bundle's program with model.ptd and compare as it does, |got - expected| <= atol +
    rtol |expected| elementwise."""
    # ExecuTorch reads the weights in place: the bytes are held until the end.
    data_map = {"data_map_buffer": weights.path.read_bytes()} if weights else {}
    module = _pybindings()._load_for_executorch_from_bundled_program(bundle, **data_map)
    checks = []
    for method in methods:
        atol = (atols or {}).get(method, atol)
        for number, case in enumerate(info.suites.get(method, [])):
            outputs = module.run_method(method, [value.to_tensor() for value in case.inputs])
            worst = max(_excess(got, value.to_tensor(), rtol, atol)
                        for got, value in zip(outputs, case.expected_outputs, strict=True))
            detail = (f"matches within rtol {rtol:g}, atol {atol:g}" if worst <= 0
                      else f"differs from its expected output by {worst:.3g} beyond rtol {rtol:g}, atol {atol:g}")
            checks.append(BundledCheck(number, worst <= 0, detail if method == METHOD else f"{method}: {detail}"))
    del module
    return checks


def verify_pipeline_bundle(manifest: Manifest, relative_error: float) -> list[BundledCheck]:
    """A pipeline artifact's .bpte: every method's test case, run (with model.ptd when the
    weights are outside; the program's methods were tried in a child when the artifact was
    loaded), each held to `relative_error` of its expected outputs' peak."""
    entry = manifest.file("bundled_program")
    data = entry.path.read_bytes()
    info = read_bundled_program(entry.path, data)
    methods = tuple(manifest.pipeline["methods"])
    atols = {method: relative_error * max(float(value.to_tensor().abs().max()) for case in info.suites.get(method, [])
                                          for value in case.expected_outputs) for method in methods if info.suites.get(method)}
    bundle = _pybindings()._load_bundled_program_from_buffer(data)
    return _verify_with_weights(bundle, info, program_weights(manifest), 0.0, 0.0, methods, atols)


def _excess(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> float:
    """How far `got` strays past the tolerance at its worst element (<= 0: within; NaN fails)."""
    excess = (got.double() - expected.double()).abs() - (atol + rtol * expected.double().abs())
    return float("inf") if excess.isnan().any() else float(excess.max()) if excess.numel() else 0.0


def verified_bundle(entry: FileEntry) -> tuple[bytes, BundledInfo]:
    """The .bpte's bytes and contents, safe to hand to ExecuTorch's bundled loader."""
    data = entry.path.read_bytes()
    info = read_bundled_program(entry.path, data)
    program = _verified_program(entry, info.program)
    if METHOD in info.suites:
        _check_test_cases(entry, info.suites[METHOD], program.metadata(METHOD))
    return data, info


def _verified_program(entry: FileEntry, program_bytes: bytes):
    """The program loaded (not run) with ExecuTorch's full flatbuffer verification."""
    from executorch.runtime import Runtime, Verification

    try:
        program = Runtime.get().load_program(program_bytes, verification=Verification.InternalConsistency)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"ExecuTorch could not load {entry.relative}: {one_line(err)}; re-export the artifact") from err
    if METHOD not in program.method_names:
        raise UserError(f"{entry.relative} has no '{METHOD}' method (it has {sorted(program.method_names)}); re-export the artifact")
    return program


def _check_test_cases(entry: FileEntry, cases: list[BundledCase], meta) -> None:
    """Each bundled input and expected output is a tensor of the method's own type and shape:
    the bundled runtime copies and compares them by the method's sizes, unchecked."""
    inputs = _tensor_metas(entry, meta.num_inputs(), meta.input_tensor_meta, "input")
    outputs = _tensor_metas(entry, meta.num_outputs(), meta.output_tensor_meta, "output")
    for number, case in enumerate(cases):
        for role, values, expected in (("input", case.inputs, inputs), ("expected output", case.expected_outputs, outputs)):
            if len(values) != len(expected):
                raise UserError(
                    f"{entry.relative}: bundled test case {number} has {len(values)} {role}s but '{METHOD}' "
                    f"has {len(expected)}; re-export the artifact"
                )
            for index, (value, (sizes, dtype)) in enumerate(zip(values, expected, strict=True)):
                if (value.kind, value.sizes, value.scalar_type) != ("tensor", sizes, dtype):
                    raise UserError(
                        f"{entry.relative}: bundled test case {number} {role} {index} is a {value.kind} "
                        f"{list(value.sizes)} of type {value.scalar_type} where '{METHOD}' takes a tensor "
                        f"{list(sizes)} of type {dtype}; re-export the artifact"
                    )


def _tensor_metas(entry: FileEntry, count: int, tensor_meta, role: str) -> list[tuple[tuple[int, ...], int]]:
    try:
        infos = [tensor_meta(index) for index in range(count)]
    except IndexError as err:  # not a tensor
        raise UserError(f"{entry.relative}: '{METHOD}' has a non-tensor {role}, which edit-mobile does not run") from err
    return [(tuple(info.sizes()), int(info.dtype())) for info in infos]


# --- a trial run in a child first -------------------------------------------------------------

# A trial of a tiny program takes milliseconds; a large one's init (XNNPACK packs every weight)
# and one step, minutes at most. The environment variable overrides it (the fuzz test's tiny
# programs need seconds).
TRIAL_TIMEOUT_S = 600.0
TRIAL_TIMEOUT_VARIABLE = "EDIT_MOBILE_TRIAL_TIMEOUT_S"
# Forking this (threaded) process is sound on Linux given the precautions in `_forked`; macOS'
# frameworks are not fork-safe, so there the trial runs in a fresh interpreter.
FORK_TRIALS = sys.platform.startswith("linux")


_TRIALS: dict[tuple, int | str] = {}  # this process's trials by program content: how each ended


def trial_in_child(entry: FileEntry, program: Path | bytes, specs, weights: FileEntry | None = None,
                   method: str = METHOD) -> None:
    """Initialise `method` and run it once on zeros in a child process, before this one does.

    ExecuTorch verifies a program's flatbuffer, not what it means: XNNPACK compiles its blob
    with checks that stop short of some corruptions (a std::out_of_range, a log line of bytes
    pybind11 cannot decode: both abort; some segfault), and a kernel handed a value of the
    wrong type aborts mid-run. In a child that costs the child, and here becomes one line. A
    child that fails cleanly is let be: the load or run here then says why."""
    from executorch.runtime import Runtime, Verification

    data_path = weights.path if weights else None
    key = (*_content_key(entry, program, specs), weights.sha256 if weights else None, method)
    if key not in _TRIALS:
        try:
            loaded = Runtime.get().load_program(program, verification=Verification.InternalConsistency, data_path=data_path)
        except (RuntimeError, ValueError):
            return  # the load here refuses it, in its own words
        inputs = [torch.zeros(spec.shape, dtype=torch_dtype(spec.dtype)) for spec in specs]  # made here, not in the child
        _TRIALS[key] = (_forked(lambda: _run_once(loaded, inputs, method)) if FORK_TRIALS
                        else _fresh_interpreter(program, specs, data_path, method))
    if _TRIALS[key] not in (0, 1):
        raise UserError(
            f"ExecuTorch {_TRIALS[key]} initialising and running {entry.relative} in a trial process: "
            "the program is corrupt; re-export the artifact"
        )


def _content_key(entry: FileEntry, program: Path | bytes, specs) -> tuple:
    """The program's identity: its bytes' digest, or for a file the digest the manifest check
    just verified, with what would change if the file were replaced since."""
    if isinstance(program, bytes):
        identity = (hashlib.sha256(program).hexdigest(),)
    else:
        status = program.stat()
        identity = (entry.sha256, status.st_ino, status.st_size, status.st_mtime_ns)
    return (*identity, tuple((spec.shape, spec.dtype) for spec in specs))


def _run_once(program, inputs, method: str) -> None:
    program.load_method(method).execute(inputs)


def _forked(function) -> int | str:
    """`function` run in a forked child, quiet: 0 done, 1 raised, else how the child ended."""
    timeout = trial_timeout()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns into the parent's code, nor runs its exit handlers
        code = 1
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            torch.set_num_threads(1)  # the parent's OpenMP workers do not exist here: never wait on them
            function()
            code = 0
        finally:
            os._exit(code)
    deadline, pause, ended = time.monotonic() + timeout, 0.001, (0, 0)
    try:
        while not (ended := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    finally:
        if not ended[0]:  # past the deadline, or interrupted: the child goes too
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return _described(os.waitstatus_to_exitcode(ended[1])) if ended[0] else f"did not finish in {timeout:g} s"


TRIAL_SCRIPT = """
import json, sys, torch
from executorch.runtime import Runtime, Verification
inputs = [torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in json.loads(sys.argv[2])]
Runtime.get().load_program(sys.argv[1], verification=Verification.InternalConsistency,
                           data_path=sys.argv[4] or None).load_method(sys.argv[3]).execute(inputs)
"""


def _fresh_interpreter(program: Path | bytes, specs, data_path: Path | None, method: str) -> int | str:
    with tempfile.TemporaryDirectory(prefix="edit-mobile-trial-") as scratch:
        if isinstance(program, bytes):
            (Path(scratch) / "program.pte").write_bytes(program)
            program = Path(scratch) / "program.pte"
        shapes = json.dumps([(list(spec.shape), spec.dtype) for spec in specs])
        timeout = trial_timeout()
        try:
            result = subprocess.run([sys.executable, "-c", TRIAL_SCRIPT, str(program), shapes, method, str(data_path or "")],
                                    capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"did not finish in {timeout:g} s"
    return _described(result.returncode)


def trial_timeout() -> float:
    text = os.environ.get(TRIAL_TIMEOUT_VARIABLE)
    if text is None:
        return TRIAL_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UserError(f"{TRIAL_TIMEOUT_VARIABLE}={text!r} is not a number of seconds; unset it or set e.g. {TRIAL_TIMEOUT_S:g}")
    return seconds


def _described(code: int) -> int | str:
    """0 or 1 as they are (any other exit is a clean failure); a death by its signal's name."""
    if code >= 0:
        return min(code, 1)
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


