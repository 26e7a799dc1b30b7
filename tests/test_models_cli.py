"""`edit-mobile convert` / `info`, and one-line errors with exit code 2."""

import json

import pytest

from edit_mobile.main import main


def test_convert_writes_a_loadable_student_folder(tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["convert", "tiny-sd3", "-o", str(out), "--mm-normalizer", "exact"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["_class_name"] == "SD3MMEDiTTransformer2DModel"
    assert config["edit_config"]["mm_normalizer"] == "exact"
    assert main(["info", str(out), "--resolution", "128", "256x128"]) == 0
    table = capsys.readouterr().out
    assert "teacher" in table and "EDiT" in table and "256x128" in table


def test_info_reports_the_edit_speedup_at_high_resolution(capsys):
    assert main(["info", "pixart-sigma-xl-1024", "--resolution", "2048"]) == 0
    edit_row = next(line for line in capsys.readouterr().out.splitlines() if "EDiT" in line)
    assert float(edit_row.split()[-1].rstrip("x")) > 2.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "no-such-model"], "unknown model 'no-such-model'"),
        (["info", "tiny-pixart", "--resolution", "100"], "not divisible by 32"),
        (["info", "tiny-pixart", "--resolution", "big"], "is not R or HxW"),
        (["convert", "tiny-pixart-edit", "-o", "{tmp}/x"], "already an EDiT"),
        (["convert", "tiny-pixart", "-o", "{tmp}/x", "--fusion-reduction", "3"], "does not divide width"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_folder_that_is_not_a_transformer(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    assert main(["convert", str(model), "-o", str(tmp_path / "x")]) == 2
    assert "not a transformer of a known family" in capsys.readouterr().err


def test_pickled_weights_are_refused(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"_class_name": "PixArtTransformer2DModel"}))
    (model / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    assert main(["convert", str(model), "-o", str(tmp_path / "x")]) == 2
    assert "safetensors" in capsys.readouterr().err
