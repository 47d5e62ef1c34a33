"""The recorded command: portable paths (relative to the checkout), and back again."""

from __future__ import annotations

from pathlib import Path

from train.provenance import command_line, portable_path, recorded_args


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "work" / "weed-detector"
    (root / "models").mkdir(parents=True)
    (root / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    return root


def test_absolute_paths_become_relative_to_the_checkout(tmp_path):
    root = _checkout(tmp_path)
    data = tmp_path / "work" / "shared" / "data"
    cmd = command_line(["train", "--data", str(data), "--roles", f"{data}/classes.csv", "--out", str(root / "models"),
                        "--name", "x", "--background", "auto", "--epochs", "3"], cwd=root)
    assert cmd == ("weed-train train --data ../shared/data --roles ../shared/data/classes.csv --out models "
                   "--name x --background auto --epochs 3")
    assert str(tmp_path) not in cmd


def test_relative_paths_from_the_checkout_root_stay_as_given(tmp_path):
    root = _checkout(tmp_path)
    argv = ["train", "--data", "../shared/data", "--out", "models", "--csv=./list.csv"]
    assert command_line(argv, cwd=root) == "weed-train " + " ".join(argv)


def test_from_a_sub_folder_paths_are_relative_to_the_checkout_root_and_read_back(tmp_path):
    root = _checkout(tmp_path)
    sub = root / "models"
    cmd = command_line(["threshold", "--model", "plant-seedlings-mnv2", "--data=../../shared/data", "--out", "."],
                       cwd=sub)
    assert cmd == "weed-train threshold --model plant-seedlings-mnv2 --data=../shared/data --out models"
    assert recorded_args(cmd, cwd=sub) == ["weed-train", "threshold", "--model", "plant-seedlings-mnv2",
                                           "--data=../../shared/data", "--out", "."]
    assert recorded_args(cmd, cwd=root)[1:] == cmd.split()[1:]


def test_outside_a_checkout_paths_are_relative_to_the_working_directory(tmp_path):
    cwd = tmp_path / "run"
    cwd.mkdir()
    assert command_line(["train", "--data", str(tmp_path / "photos")], cwd=cwd) == "weed-train train --data ../photos"
    assert portable_path(tmp_path / "photos" / "groups.csv", cwd=cwd) == "../photos/groups.csv"


def test_quoting_is_kept(tmp_path):
    root = _checkout(tmp_path)
    cmd = command_line(["train", "--data", str(root / "my photos"), "--description", "a b"], cwd=root)
    assert cmd == "weed-train train --data 'my photos' --description 'a b'"
    assert recorded_args(cmd, cwd=root) == ["weed-train", "train", "--data", "my photos", "--description", "a b"]
