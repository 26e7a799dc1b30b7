"""Bad flags and paths of every command: one line naming the problem, exit 2, nothing written.

The cases are the reliability review's (silent wrong values, crashes, tracebacks), plus their
neighbours. They fail before any model loads, so the table runs in seconds.
"""

from __future__ import annotations

import pytest

from edit_mobile.main import main

ART = "no-such-artifact"
CASES = [
    # resolutions: 0 used to build 128 px, 1e7 allocated until the process died
    (["info", "tiny-pixart", "--resolution", "0"], "each side must be 1 to 8192"),
    (["info", "tiny-pixart", "--resolution", "0x64"], "each side must be 1 to 8192"),
    (["info", "tiny-pixart", "--resolution", "10000000"], "each side must be 1 to 8192"),
    (["info", "tiny-pixart", "--resolution", "big"], "is not R or HxW"),
    (["export", "tiny-pixart-edit", "--backend", "xnnpack", "--resolution", "0", "-o", "x"], "each side must be"),
    (["calibrate", "tiny-pixart", "--resolution", "-64", "-o", "x"], "is not R or HxW"),
    (["generate", ART, "--prompt", "p", "--size", "0x0", "-o", "x.png"], "each side must be"),
    # counts: 0 prompt tokens used to become 120
    (["calibrate", "tiny-pixart", "--prompt-tokens", "0", "-o", "x"], "use a token count from 1 to 4096"),
    (["info", "tiny-pixart", "--prompt-tokens", "1000000000"], "use a token count from 1 to 4096"),
    (["export", "tiny-pixart", "--backend", "onnx", "--prompt-tokens", "1e9", "-o", "x"], "is not a token count"),
    (["calibrate", "tiny-pixart", "--steps", "0", "-o", "x"], "use a step count from 1"),
    (["calibrate", "tiny-pixart", "--samples", "-1", "-o", "x"], "use a trajectory count"),
    (["calibrate", "tiny-pixart", "--records", "0", "-o", "x"], "use a record count"),
    (["calibrate", "tiny-pixart", "--seed", "-5", "-o", "x"], "use a seed"),
    (["export", "tiny-pixart", "--backend", "onnx", "--batch", "3", "-o", "x"], "use a batch from 1 to 2"),
    (["profile", ART, "--iters", "0"], "use a run count"),
    (["validate", ART, "--samples", "-2"], "use a sample count"),
    # threads: -1 aborted the process (SIGABRT inside ExecuTorch's threadpool)
    (["validate", ART, "--threads", "-1"], "use a thread count from 1 to 256"),
    (["profile", ART, "--threads", "0"], "use a thread count from 1 to 256"),
    (["generate", ART, "--prompt", "p", "--threads", "100000", "-o", "x.png"], "use a thread count"),
    # floats: NaN used to be accepted
    (["generate", ART, "--prompt", "p", "--guidance", "nan", "-o", "x.png"], "is not finite"),
    (["calibrate", "tiny-pixart", "--guidance", "inf", "-o", "x"], "is not finite"),
    (["calibrate", "tiny-pixart", "--heldout-fraction", "1.5", "-o", "x"], "use a fraction"),
    (["export", "tiny-pixart", "--backend", "xnnpack", "--min-psnr", "nan", "-o", "x"], "is not finite"),
    (["sensitivity", "tiny-pixart", "--calibration", "c", "--min-psnr", "-3", "-o", "x"], "use a PSNR in dB"),
    (["validate", ART, "--quantized-floor", "nan"], "is not finite"),
    (["convert", "tiny-pixart", "--eps", "nan", "-o", "x"], "is not finite"),
    (["convert", "tiny-pixart", "--fusion-reduction", "0", "-o", "x"], "use a whole number of 1 or more"),
    # names and schemes
    (["export", "tiny-pixart", "--backend", "onnx", "--onnx-opset", "999", "-o", "x"], "use an ONNX opset from 18 to 23"),
    (["export", "tiny-pixart", "--backend", "tpu", "-o", "x"], "tpu"),
    (["export", "tiny-pixart", "--backend", "xnnpack", "--quantize", "int9", "-o", "x"], "no quantization scheme 'int9'"),
    (["export", "tiny-pixart", "--backend", "vulkan", "--quantize", "int8", "-o", "x"], "--quantize is available for"),
    (["export", "tiny-pixart", "--backend", "onnx", "--passes", "nope", "-o", "x"], "unknown pass 'nope'"),
    (["convert", "no-such-model", "-o", "x"], "unknown model 'no-such-model'"),
    # output paths
    (["generate", ART, "--prompt", "p", "-o", "x.jpg"], "write a .png file"),
    (["validate", ART, "--json", "report.txt"], "write a .json file"),
    (["validate", ART, "--images", "."], "write a .png file"),
    (["validate", ART], "is not a folder"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv[:4]) for argv, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("edit-mobile") and message in lines[0], lines
    assert "Traceback" not in captured.err + captured.out
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_parses_without_torch():
    """`edit-mobile --help` must answer at once (it took 10-15 s when every subcommand's module
    imported torch and diffusers at parse time): no heavy library loads to build the parser."""
    import subprocess
    import sys

    probe = ("import sys; from edit_mobile.main import build_parser; build_parser(); "
             "heavy = [m for m in ('torch', 'diffusers', 'executorch', 'onnxruntime', 'coremltools') if m in sys.modules]; "
             "print(','.join(heavy))")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0 and completed.stdout.strip() == "", completed.stdout + completed.stderr
