"""`edit-mobile calibrate` on the command line: bad prompt files are one clear line, exit 2."""

from __future__ import annotations

import pytest

from edit_mobile.main import main


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "has no prompts"),
        (b"# only a comment\n\n   \n# another\n", "has no prompts"),
        (b"\xff\xfe\x00bad bytes\n", "is not UTF-8"),
        (None, "cannot read prompts file"),
    ],
)
def test_bad_prompt_files_are_rejected_with_one_line(tmp_path, capsys, content, message):
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_bytes(content)
    code = main(["calibrate", "tiny-pixart", "--prompts", str(prompts), "-o", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1 and message in error and error.startswith("edit-mobile calibrate: error:")
    assert not (tmp_path / "out").exists()


def test_calibrate_command_writes_a_set_from_a_prompts_file(tmp_path, capsys):
    from edit_mobile.calibration import load_calibration, read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# mine\na lighthouse at dusk\n\nüber-detailed macro of a beetle\na red cube\n", encoding="utf-8")
    assert read_prompts(prompts) == ["a lighthouse at dusk", "über-detailed macro of a beetle", "a red cube"]
    code = main(["calibrate", "tiny-pixart", "--prompts", str(prompts), "--steps", "2", "--samples", "2",
                 "--records", "2", "--heldout-records", "2", "--guidance", "1", "-o", str(tmp_path / "set")])
    assert code == 0 and "wrote 2 calibration + 2 held-out records" in capsys.readouterr().out
    calibration = load_calibration(tmp_path / "set")
    assert calibration.manifest["prompts"]["count"] == 3
    assert set(calibration.calibration.tensors["record.branch"].tolist()) == {1}  # no guidance: conditional only


def test_default_prompt_set_is_shipped_and_varied():
    from edit_mobile.calibration import default_prompts_path, read_prompts

    prompts = read_prompts()
    assert default_prompts_path().is_file()
    assert len(prompts) >= 64 and len(set(prompts)) == len(prompts)
    lengths = sorted(len(p.split()) for p in prompts)
    assert lengths[0] <= 3 and lengths[-1] >= 30  # short and long prompts both present
