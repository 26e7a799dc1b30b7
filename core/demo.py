"""`make demo`: the whole flow on a built-in tiny preset, in a few minutes on 2 cores.

Stages run in data-flow order; each prints what it made. The output folder is demo_out/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edit_mobile.main import main as cli


def run(argv: list[str]) -> None:
    print(f"\n$ edit-mobile {' '.join(argv)}", flush=True)
    code = cli(argv)
    if code != 0:
        raise SystemExit(f"demo stopped: `edit-mobile {' '.join(argv)}` exited {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edit_mobile.demo", description=__doc__)
    parser.add_argument("--model", default="tiny-pixart", help="teacher preset (default tiny-pixart)")
    parser.add_argument("-o", "--output", default="demo_out", help="folder for everything made")
    args = parser.parse_args(argv)
    out = Path(args.output)
    student = out / "student"
    run(["convert", args.model, "-o", str(student)])
    run(["info", str(student), "--resolution", "128", "512", "1024"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
