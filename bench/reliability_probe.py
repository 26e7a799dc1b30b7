"""How the command line takes bad input, as a careful user or an attacker would give it.

Every case runs `edit-mobile ...` in its own process (a crash shows as a signal, not a dead
test run) and is clean when: exit code 2, exactly one stderr line from edit-mobile (ExecuTorch's
unsilenceable C++ log lines aside), no traceback, and the files it was given unchanged, with
nothing left beside them. Prints one line a case and the totals; exit 1 if any case is unclean.

    python bench/reliability_probe.py [--only SUBSTRING]

Not a test: ~60 processes that each import torch take a few minutes on 2 cores. The fast
subset runs in the suite (tests/test_bad_inputs.py, tests/test_output_safety.py,
tests/test_hostile_files.py, tests/test_fuzz_artifacts.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_bad_inputs import CASES as FLAG_CASES  # noqa: E402

CLI = [sys.executable, "-m", "edit_mobile"]
THIRD_PARTY_LINE_PREFIXES = ("[cpuinfo", "[", "W1", "I1", "E1")  # ExecuTorch / torch C++ logs


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def run(argv: list[str], cwd: Path, timeout: float = 600) -> tuple[int, list[str], str]:
    done = subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stderr.splitlines()
             if line.strip() and not line.startswith(THIRD_PARTY_LINE_PREFIXES) and "%|" not in line]
    return done.returncode, lines, done.stderr + done.stdout


def clean(code: int, lines: list[str], output: str) -> tuple[bool, str]:
    if code < 0:
        return False, f"signal {-code}"
    if "Traceback" in output:
        return False, "traceback"
    if code != 2:
        return False, f"exit {code}"
    if len(lines) != 1 or not lines[0].startswith("edit-mobile"):
        return False, f"{len(lines)} error lines"
    return True, lines[0]


def build_fixtures(root: Path) -> dict[str, Path]:
    """A teacher folder, broken copies of it, an artifact and a user's folder of notes."""
    subprocess.run([*CLI, "convert", "tiny-pixart", "-o", str(root / "student")], check=True, capture_output=True)
    code = ("from edit_mobile.models import load_transformer; "
            f"load_transformer('tiny-pixart').save_pretrained({str(root / 'teacher')!r}, safe_serialization=True)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    subprocess.run([*CLI, "export", "tiny-pixart-edit", "--backend", "onnx", "--resolution", "64",
                    "-o", str(root / "art")], check=True, capture_output=True)
    fixtures = {"teacher": root / "teacher", "art": root / "art", "student": root / "student"}
    weights = "diffusion_pytorch_model.safetensors"
    for name, damage in (("empty-weights", lambda f: (f / weights).write_bytes(b"")),
                         ("truncated-weights", lambda f: (f / weights).write_bytes((f / weights).read_bytes()[:4096])),
                         ("pickled-weights", lambda f: ((f / weights).unlink(), (f / "diffusion_pytorch_model.bin").write_bytes(b"x"))),
                         ("10000-layers", lambda f: _edit_config(f, num_layers=10000)),
                         ("patch-0", lambda f: _edit_config(f, patch_size=0)),
                         ("negative-heads", lambda f: _edit_config(f, num_attention_heads=-4)),
                         ("wrong-class", lambda f: _edit_config(f, _class_name="UNet2DConditionModel"))):
        copy = root / name
        shutil.copytree(fixtures["teacher"], copy)
        damage(copy)
        fixtures[name] = copy
    for name, edit in (("inputs-5", lambda m: m.update(inputs=5)),
                       ("shape-float", lambda m: m["inputs"][0].update(shape=[1.5, 4, 8, 8])),
                       ("resolution-huge", lambda m: m.update(resolution=[10**7, 10**7])),
                       ("prompt-tokens-1e9", lambda m: m.update(prompt_tokens=10**9)),
                       ("path-escape", lambda m: m["files"]["program"].update(path="../../../../etc/passwd")),
                       ("schema-wrong", lambda m: m.update(schema="other"))):
        copy = root / f"art-{name}"
        shutil.copytree(fixtures["art"], copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        fixtures[f"art-{name}"] = copy
    deep = root / "art-deep-json"
    shutil.copytree(fixtures["art"], deep)
    (deep / "manifest.json").write_text("[" * 200000 + "]" * 200000)
    fixtures["art-deep-json"] = deep
    link = root / "art-symlink"
    shutil.copytree(fixtures["art"], link)
    program = json.loads((link / "manifest.json").read_text())["files"]["test_vectors"]["path"]
    (link / program).unlink()
    (link / program).symlink_to(fixtures["teacher"] / weights)
    fixtures["art-symlink"] = link
    notes = root / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("years of work")
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(notes / "holiday.png")  # a user's own PNG, not stamped
    fixtures["notes"] = notes
    return fixtures


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def cases(f: dict[str, Path]) -> list[tuple[str, list[str], list[Path]]]:
    """(name, argv, folders that must stay byte-identical)."""
    found = [(" ".join(argv[:4]), argv, []) for argv, _ in FLAG_CASES]
    for broken in ("empty-weights", "truncated-weights", "pickled-weights", "10000-layers", "patch-0",
                   "negative-heads", "wrong-class"):
        found.append((f"convert {broken}", ["convert", str(f[broken]), "-o", "out"], [f[broken]]))
        found.append((f"export {broken}", ["export", str(f[broken]), "--backend", "onnx", "-o", "out"], [f[broken]]))
    for broken in ("inputs-5", "shape-float", "resolution-huge", "prompt-tokens-1e9", "path-escape",
                   "schema-wrong", "deep-json", "symlink"):
        art = f[f"art-{broken}"]
        found.append((f"validate art {broken}", ["validate", str(art)], [art]))
        found.append((f"profile art {broken}", ["profile", str(art), "--iters", "1"], [art]))
        found.append((f"generate art {broken}", ["generate", str(art), "--prompt", "p", "-o", "x.png"], [art]))
    teacher, art, notes = f["teacher"], f["art"], f["notes"]
    found += [
        ("convert -o the teacher", ["convert", str(teacher), "-o", str(teacher)], [teacher]),
        ("convert -o inside the teacher", ["convert", str(teacher), "-o", str(teacher / "x")], [teacher]),
        ("convert -o the teacher's parent", ["convert", str(teacher), "-o", str(teacher.parent), "--force"], [teacher]),
        ("convert -o a user's folder", ["convert", "tiny-pixart", "-o", str(notes)], [notes]),
        ("calibrate -o a user's folder", ["calibrate", "tiny-pixart", "-o", str(notes)], [notes]),
        ("export -o a user's folder", ["export", "tiny-pixart", "--backend", "onnx", "-o", str(notes)], [notes]),
        ("export -o another command's output", ["export", "tiny-pixart", "--backend", "onnx", "-o", str(f["student"])], [f["student"]]),
        ("convert -o an artifact", ["convert", "tiny-pixart", "-o", str(art)], [art]),
        ("validate --json into the artifact", ["validate", str(art), "--json", str(art / "r.json")], [art]),
        ("validate --json over a user's file", ["validate", str(art), "--json", str(notes / "thesis.txt")], [notes]),
        ("generate -o over a user's file", ["generate", str(art), "--prompt", "p", "-o", str(notes / "holiday.png")], [notes]),
    ]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="edit-mobile-probe-") as scratch:
        root = Path(scratch)
        fixtures = build_fixtures(root / "fixtures")
        results = []
        for name, argv, kept in cases(fixtures):
            if args.only not in name:
                continue
            work = root / "cwd" / str(len(results))
            work.mkdir(parents=True)
            before = {path: digest(path) for path in kept}
            code, lines, output = run(argv, work)
            ok, detail = clean(code, lines, output)
            changed = [str(path.name) for path in kept if digest(path) != before[path]]
            left = sorted(p.name for p in work.iterdir())
            if changed or left:
                ok, detail = False, f"changed {changed} left {left}"
            results.append(ok)
            print(f"{'clean' if ok else 'UNCLEAN':8} {name}: {detail}", flush=True)
    print(f"\n{sum(results)} of {len(results)} bad inputs handled cleanly "
          f"(one line, exit 2, no traceback, inputs unchanged, nothing written)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
