"""What the measuring processes' template imports before it forks them (workers/launch.py): the
libraries and the engine, nothing that opens a device.

Imported by the forkserver only (never by the Celery pool process, which stays torch-free). CUDA
does not survive a fork, so nothing here may initialise it: ``torch.cuda.is_available()`` is
answered from NVML (``PYTORCH_NVML_BASED_CUDA_CHECK``), which leaves the driver untouched, and
:func:`check_forkable` refuses a template that has a CUDA context or threads of its own (the
launcher then starts fresh interpreters, and says so in the worker's log).
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
# numpy's and scipy's OpenBLAS start a thread pool when loaded, and a fork keeps no threads: one
# thread each here (the timed compute is torch's own, never numpy's).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import timm  # noqa: F401 - the point of the template: imported once, not per process
import torch
import torchvision  # noqa: F401

import workers.engine.scenario
import workers.runner  # noqa: F401
from workers.cpuinfo import program_threads

# What the imports made lives as long as the process: out of the collector's sight (gc.freeze,
# meant for processes that fork), a gc.collect in a forked process (one per batch size, to free
# the last one's memory) walks only what that process made: ~0.16 s less each.
gc.freeze()

#: The template's own pid, read in each forked process: its parent, to die with (die_with_parent).
PID = os.getpid()


class TemplateNotForkableError(RuntimeError):
    """The template holds something a fork would corrupt (a CUDA context, threads)."""


def check_forkable() -> None:
    """Raise unless forking this process is safe: no CUDA context, one thread of its own. Under
    qemu-user the emulator's thread is not counted: it lives in the emulator, not in the program
    (a fork there is what every emulated program does; workers/cpuinfo.py says how it is told)."""
    if torch.cuda.is_initialized():
        raise TemplateNotForkableError("the template initialised CUDA: it cannot be forked")
    threads = len(program_threads())
    if threads > 1:
        raise TemplateNotForkableError(f"the template runs {threads} threads: forking it is unsafe")


check_forkable()
