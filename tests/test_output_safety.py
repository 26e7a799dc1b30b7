"""Nothing the user made is lost: every -o case of the reliability review, byte for byte.

Each refused command must leave the user's files exactly as they were (compared by content),
exit 2 with one line, and write nothing beside them. Concurrency: writers racing into one target
all succeed and leave one complete output; SIGTERM cleans up like SIGINT; staging left by a
SIGKILLed writer is removed by the next run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edit_mobile.fileio import OUTPUT_RECORD, atomic_output_dir
from edit_mobile.main import main


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    return err[0]


@pytest.fixture
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notes.txt").write_text("three weeks of notes")
    (folder / "manifest.json").write_text(json.dumps({"mine": True}))  # not an artifact of ours
    return folder


def test_convert_into_the_current_folder_is_refused(user_folder, capsys, monkeypatch):
    before = snapshot(user_folder)
    monkeypatch.chdir(user_folder)
    assert "current folder" in refused(["convert", "tiny-pixart", "-o", "."], capsys)
    assert "current folder" in refused(["convert", "tiny-pixart", "-o", ".", "--force"], capsys)
    assert snapshot(user_folder) == before


def test_a_folder_edit_mobile_did_not_write_is_refused_by_every_command(user_folder, tmp_path, capsys):
    before = snapshot(user_folder)
    out = str(user_folder)
    for argv in (["convert", "tiny-pixart", "-o", out],
                 ["calibrate", "tiny-pixart", "--samples", "1", "-o", out],
                 ["sensitivity", "tiny-pixart", "--calibration", str(tmp_path / "none"), "-o", out],
                 ["export", "tiny-pixart", "--backend", "onnx", "-o", out]):
        line = refused(argv, capsys)
        assert "did not write" in line and "--force" in line, line
    assert snapshot(user_folder) == before
    assert sorted(p.name for p in user_folder.parent.iterdir()) == ["work"]  # no staging left


def test_convert_never_writes_over_its_input(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["convert", "tiny-pixart", "-o", str(tmp_path / "student")]) == 0
    from edit_mobile.models import load_transformer

    load_transformer("tiny-pixart").save_pretrained(teacher, safe_serialization=True)
    before = snapshot(teacher)
    for out in (teacher, teacher / "inside", tmp_path):
        line = refused(["convert", str(teacher), "-o", str(out), "--force"], capsys)
        assert "inputs are never written" in line
    assert snapshot(teacher) == before


def test_a_reexport_keeps_the_users_files_or_refuses(tmp_path, capsys):
    art = tmp_path / "art"
    export = ["export", "tiny-pixart-edit", "--backend", "onnx", "--resolution", "64", "-o", str(art)]
    assert main(export) == 0
    record = json.loads((art / OUTPUT_RECORD).read_text())
    assert record["kind"] == "export" and "manifest.json" in record["files"]
    assert main(export) == 0  # an earlier output of the same command is replaced
    (art / "my-results.csv").write_text("step,ms\n1,20\n")
    before = snapshot(art)
    assert "my-results.csv" in refused(export, capsys)
    assert "not of `convert`" in refused(["convert", "tiny-pixart", "-o", str(art)], capsys)
    assert snapshot(art) == before


def test_report_files_replace_only_our_own(tmp_path, capsys):
    art = tmp_path / "art"
    assert main(["export", "tiny-pixart-edit", "--backend", "onnx", "--resolution", "64", "-o", str(art)]) == 0
    theirs = tmp_path / "report.json"
    theirs.write_text('{"keep": 1}')
    validate = ["validate", str(art), "--samples", "0"]
    assert "did not write" in refused([*validate, "--json", str(theirs)], capsys)
    assert theirs.read_text() == '{"keep": 1}'
    assert "write a .png file" in refused([*validate, "--images", str(tmp_path)], capsys)
    assert "inputs are never written" in refused([*validate, "--json", str(art / "r.json")], capsys)
    ours = tmp_path / "ours.json"
    assert main([*validate, "--json", str(ours)]) == 0
    assert main([*validate, "--json", str(ours)]) == 0  # our own report is replaced
    assert json.loads(ours.read_text())["created_by"].startswith("edit-mobile")


def _race_writer(target: str, writer: int, rounds: int) -> None:
    for round_ in range(rounds):
        with atomic_output_dir(target, "race") as staging:
            for index in range(5):
                (staging / f"part{index}.txt").write_text(f"{writer}:{round_}")


def test_writers_racing_into_one_target_all_succeed_and_leave_one_whole_output(tmp_path):
    target = tmp_path / "out"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_race_writer, args=(str(target), w, 15)) for w in range(8)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    assert [process.exitcode for process in writers] == [0] * len(writers)
    contents = {path.read_text() for path in target.glob("part*.txt")}
    assert len(list(target.glob("part*.txt"))) == 5 and len(contents) == 1  # one writer's whole output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no trash, no lock file


SIGTERM_DRIVER = """
import signal, sys, time
from edit_mobile.fileio import atomic_output_dir
from edit_mobile.main import Terminated, _raise_terminated
signal.signal(signal.SIGTERM, _raise_terminated)
try:
    with atomic_output_dir(sys.argv[1], "test") as staging:
        (staging / "half.bin").write_bytes(b"x" * 1000)
        print("staged", flush=True)
        time.sleep(60)
except Terminated:
    sys.exit(143)
"""


def test_sigterm_cleans_up_like_sigint(tmp_path):
    target = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_DRIVER, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "staged"
    assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 143
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_writer_is_removed_by_the_next_run(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    stale = tmp_path / f".out.{dead.pid}.abc.partial"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    alive = tmp_path / f".out.{os.getpid()}.xyz.partial"  # a writer still running: kept
    alive.mkdir()
    with atomic_output_dir(tmp_path / "out", "test") as staging:
        (staging / "whole.txt").write_text("done")
    assert not stale.exists() and alive.exists() and (tmp_path / "out" / "whole.txt").is_file()


def test_an_interrupted_write_leaves_the_earlier_output_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target, "test") as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(target, "test") as staging:
        (staging / "a.txt").write_text("second")
        time.sleep(0)
        raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
