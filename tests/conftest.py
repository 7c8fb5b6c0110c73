"""Test-wide environment: offline Hugging Face, 8 fake CPU devices for sharding tests, and one
XLA compilation cache for the session, its pytest-xdist workers (they inherit the variable from
the controller, which loads this file first) and every process they start."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
# Many tests start `python -m ssp_jax.main` and friends on the tiny config, and each process would
# compile the same programs again; they share a persistent cache that lives as long as the run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssp-jax-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Path of ../shared/data (real benchmark files); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_global_mesh_between_tests():
    """A Trainer sets its mesh globally (`jax.set_mesh`); clear it so the next test starts on
    the default device context."""
    yield
    import jax

    jax.set_mesh(None)
