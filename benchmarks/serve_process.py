"""Starts `python -m ssp_jax.serve` on a free loopback port for the benchmark scripts and waits
until it answers `GET /v1/models`."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import httpx2

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log: pathlib.Path | None = None,
                 timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """Serves with `args` (e.g. `["--model", "tiny-random"]`) on 127.0.0.1; the server's output
    goes to `log` (discarded when None). Returns the process and its base url (`.../v1`); exits
    with a message if the server dies or does not answer within `timeout_s` (a cold start
    compiles)."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ssp_jax.serve", *args, "--host", "127.0.0.1",
             "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            out.close()
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}"
                             + (f"; see {log}" if log else ""))
        try:
            if httpx2.get(f"{url}/models", timeout=2).status_code == 200:
                return process, url
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"no answer from {url} within {timeout_s:.0f} s"
                     + (f"; see {log}" if log else ""))
