"""The clean-tree check (conftest.py, clean_tree.py) sees what a run leaves in a checkout, and only that."""

import subprocess

import clean_tree


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_new_files_edits_and_removals_made_during_a_run_are_reported_and_earlier_edits_are_not(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    for name in ("kept.py", "edited.py", "removed.py", "dirty.py"):
        (tmp_path / name).write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    (tmp_path / "dirty.py").write_text("x = 2\n")  # the developer's own edit, before the run
    before = clean_tree.snapshot(tmp_path)
    assert clean_tree.changes(before, clean_tree.snapshot(tmp_path)) == []

    (tmp_path / "vae.safetensors").symlink_to("vae.safetensors")  # what once landed in the repository
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "video.mp4").write_bytes(b"\0")
    (tmp_path / "edited.py").write_text("x = 3\n")
    (tmp_path / "removed.py").unlink()
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "ignored.txt").write_text("ignored")
    assert clean_tree.changes(before, clean_tree.snapshot(tmp_path)) == [
        " M edited.py", "?? out/video.mp4", " D removed.py", "?? vae.safetensors"]

    (tmp_path / "dirty.py").write_text("x = 4\n")  # edited again during the run: that counts
    assert " M dirty.py" in clean_tree.changes(before, clean_tree.snapshot(tmp_path))


def test_outside_a_git_checkout_there_is_nothing_to_compare(tmp_path):
    assert clean_tree.snapshot(tmp_path) is None
