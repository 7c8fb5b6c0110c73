"""Multi-process start-up (`jax.distributed.initialize` from the environment) and the
agreement on when to stop after a preemption notice.

On TPU pods and under SLURM JAX finds the coordinator itself; elsewhere set
SSP_COORDINATOR (host:port), SSP_NUM_PROCESSES and SSP_PROCESS_ID. A single process
with none of these set runs without the distributed runtime.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def initialize() -> None:
    """Joins the multi-process job described by the environment, if any."""
    coordinator = os.environ.get("SSP_COORDINATOR")
    if coordinator:
        num = int(os.environ["SSP_NUM_PROCESSES"])
        pid = int(os.environ["SSP_PROCESS_ID"])
        bind = os.environ.get("SSP_COORDINATOR_BIND", coordinator if pid == 0 else None)
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                                   process_id=pid, coordinator_bind_address=bind)
    elif "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
    elif "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()
    else:
        return
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one (a max over processes).
    A collective: every process must call it at the same point of the program."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.int32(flag)).max())


class Preemption:
    """SIGTERM sets a local flag; `agreed()`, called by every process at each step boundary,
    tells all of them to stop there as soon as any one has seen the signal. Without the
    agreement, processes would stop at different steps and one would wait in the checkpoint
    collective while another waits in the train step."""

    def __init__(self) -> None:
        self.seen = False  # SIGTERM reached this process
        self.requested = False  # some process saw SIGTERM: all stop at this step boundary
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: saving a checkpoint at the next step boundary")
        self.seen = True

    def agreed(self) -> bool:
        self.requested = self.requested or any_process(self.seen)
        return self.requested

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
