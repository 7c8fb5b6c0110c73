"""ssp_jax.paths on the local file system (the gs:// side is in test_gcs_paths.py)."""

import os

from etils import epath

from ssp_jax.paths import LocalStaging, as_path, copy_tree, is_local, open_text


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = as_path("gs://bucket/run") / "metrics.jsonl"
    assert os.fspath(url) == "gs://bucket/run/metrics.jsonl"
    assert os.fspath(as_path("run")) == str(tmp_path / "run")
    assert is_local("runs/x") and is_local(tmp_path) and not is_local("gs://bucket/x")


def test_open_text_keeps_line_endings_and_drops_a_bom(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbfgoal\r\n\"two\r\nlines\"\r\n")
    assert open_text(epath.Path(tmp_path / "a.csv")).read() == 'goal\r\n"two\r\nlines"\r\n'


def test_copy_tree_copies_nested_files_and_overwrites(tmp_path):
    src, dst = epath.Path(tmp_path / "src"), epath.Path(tmp_path / "dst")
    (src / "tb").mkdir(parents=True)
    (src / "m.jsonl").write_text("new")
    (src / "tb" / "events").write_text("e")
    dst.mkdir()
    (dst / "m.jsonl").write_text("old")
    copy_tree(src, dst)
    assert (dst / "m.jsonl").read_text() == "new" and (dst / "tb" / "events").read_text() == "e"


def test_local_staging_of_a_local_folder_is_the_folder_itself(tmp_path):
    staging = LocalStaging(epath.Path(tmp_path / "run"))
    assert staging.local == staging.target and staging.local.is_dir()
    staging.close()
    assert staging.local.is_dir()
