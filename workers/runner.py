"""The measuring process: ``python -m workers.runner PROFILE_ID OUTCOME_PATH [--process P]``.

Started by the Celery task once per repeat, forked from a template that has imported the libraries
but never touched a device, or as a fresh interpreter (:mod:`workers.launch`), so each measures with
its own allocator state and autotuning (the variance between processes is what repeats show), and
the memory it reports includes its own CUDA context. It reads the job from the store,
stores each finished batch size there the moment it is done (a writer thread that rides out a
Redis outage with retries, while measuring goes on), and writes everything it measured to
``OUTCOME_PATH`` as well, so the job has it even if the store was away at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import queue
import sys
import threading
import time
import traceback

import msgspec

from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import FlopCount, LayerProfile, ProcessCell, ProcessStatic, Progress
from dnnprof.process import PARENT_PID_ENV, die_with_parent, measuring_name, name_this_process
from dnnprof.store import ConflictError, ProfileStore, RecordGone, with_retries
from workers.launch import seconds_since_launch
from workers.records import ProcessOutcome

log = logging.getLogger("dnnprof.runner")


class StoreWriter(threading.Thread):
    """Writes progress and measured cells to the store from a queue, retrying with back-off while
    Redis is away, so the measuring loop never waits on the store. Progress is only the newest
    (older progress is dropped); cells are all kept, in order."""

    def __init__(self, store: ProfileStore, profile_id: str, max_backoff_s: float = 5.0) -> None:
        super().__init__(name="dnnprof-store-writer", daemon=True)
        self.store = store
        self.profile_id = profile_id
        self.max_backoff_s = max_backoff_s
        self.items: queue.Queue = queue.Queue()
        self.done = threading.Event()

    def put(self, item: object) -> None:
        self.items.put(item)

    def run(self) -> None:
        while True:
            item = self.items.get()
            if item is None:
                self.done.set()
                return
            if isinstance(item, Progress) and self._newer_progress_waiting():
                continue
            self._write_until_done(item)

    def _newer_progress_waiting(self) -> bool:
        with self.items.mutex:
            return any(isinstance(i, Progress) for i in self.items.queue)

    def _write_until_done(self, item: object) -> None:
        backoff = 0.1
        while True:
            try:
                self._write(item)
                return
            except (ConflictError, RecordGone):
                return  # the job was cancelled or deleted: nothing to report to
            except Exception as exc:  # noqa: BLE001 - Redis away: keep the item, try again
                log.warning("store write failed (%s); retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _write(self, item: object) -> None:
        if isinstance(item, Progress):

            def change(rec):
                rec.progress = item
                return rec

            self.store.update(self.profile_id, change, allowed_from=("running",))
        else:
            self.store.put_part(self.profile_id, item)  # type: ignore[arg-type]

    def close(self, timeout_s: float) -> bool:
        """Flush what is queued (within ``timeout_s``); False if the store never came back."""
        self.items.put(None)
        return self.done.wait(timeout_s)


class StoreSink:
    """The scenario's sink in the service: every part to the store (through the writer) and to
    the outcome; progress counted over the whole profile (every process's cells)."""

    def __init__(
        self, writer: StoreWriter, outcome: ProcessOutcome, already_done: int, total: int, processes: int
    ) -> None:
        self.writer = writer
        self.outcome = outcome
        self.already_done = already_done
        self.total = total
        self.processes = processes

    def progress(self, progress: Progress) -> None:
        progress.batches_done += self.already_done
        progress.batches_total = self.total
        progress.processes = self.processes
        self.writer.put(progress)

    def static(self, static: ProcessStatic) -> None:
        self.outcome.add(static)
        self.writer.put(static)

    def cell(self, cell: ProcessCell) -> None:
        self.outcome.add(cell)
        self.writer.put(cell)

    def layers(self, profile: LayerProfile) -> None:
        self.writer.put(profile)  # stored apart from the parts and the record (store.put_part)


class StoreFlopCache:
    """The engine's FLOP cache in the store (one count per model, input size and counting
    method): a store that does not answer is a miss, never a failure."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    def get(self, model: str, input_size: int, version: int) -> FlopCount | None:
        with contextlib.suppress(Exception):
            return self.store.cached_flops(model, input_size, version)
        return None

    def put(self, model: str, input_size: int, version: int, flops: FlopCount) -> None:
        with contextlib.suppress(Exception):
            self.store.cache_flops(model, input_size, version, flops)


def measure(
    profile_id: str, process: int, store: ProfileStore, settings: Settings, outcome: ProcessOutcome
) -> None:
    from workers.engine.scenario import ProcessPlan, ScenarioConfig, measure_process
    from workers.engine.uploaded import load_upload

    gc.freeze()  # the imports live as long as this process: no gc.collect walks them (template.py)

    def read(action, what: str):  # a Redis pause at the start must not fail the job either
        return with_retries(action, until_s=settings.store_retry_s, what=what, log=log.warning)

    record = read(lambda: store.get(profile_id), "reading the job")
    if record is None:
        outcome.error = "the profile was deleted before it was measured"
        return
    s = record.settings
    stored = read(lambda: store.parts(profile_id), "reading what was measured before")
    # Done by this process on an earlier delivery, or settled by another (out of memory, failed).
    skip = {c.batch_size for c in stored.cells if c.process == process or c.status != "ok"}
    flops = stored.statics[0].flops if stored.statics else None

    writer = StoreWriter(store, profile_id)
    writer.start()
    sink = StoreSink(writer, outcome, len(stored.cells), len(s.batch_sizes) * s.repeats, processes=s.repeats)
    config = ScenarioConfig(
        device_class=s.device,
        memory_limit_mb=settings.memory_limit_mb,
        cpu_threads=settings.cpu_threads,
        imagenet_val=settings.imagenet_val,
        imagenet_labels=settings.imagenet_val_labels,
        weights_offline=settings.weights_offline,
        cache_dir=settings.data_dir / "runtimes",
        quiet_wait_s=settings.quiet_wait_s,
    )
    tag = s.model.partition(".")[2]  # "timm:resnet50.a1_in1k": pretrained tag
    plan = ProcessPlan(
        process=process,
        skip=frozenset(skip),
        flops=flops,
        flop_cache=StoreFlopCache(store),
        accuracy=process == 0,
        layers=s.layers_batch_sizes if process == 0 else (),
    )
    try:
        start_s = seconds_since_launch()  # the interpreter's start or the fork, imports, the job read
        uploaded = record.model.source == "upload"  # an uploaded ONNX file (issue 42), from the store
        model = load_upload(store, record.model, settings.data_dir) if uploaded else None
        end = measure_process(record.model, s, config, plan, sink, model=model, tag=tag or None)
        end.phases = {"start": start_s, **end.phases}
        outcome.add(end)
        writer.put(end)
    finally:
        if not writer.close(timeout_s=30):
            log.warning("the store did not come back: the outcome file carries what was measured")


def main(argv: list[str] | None = None) -> int:
    # CUDA numbers GPUs fastest first unless told otherwise; NVML by PCI bus. One order for both.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    parser = argparse.ArgumentParser(prog="python -m workers.runner")
    parser.add_argument("profile_id")
    parser.add_argument("outcome_path")
    parser.add_argument("--process", type=int, default=0, help="which repeat (0-based) this process is")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # Killed with the pool process that started it (time limit, SIGKILL).
    die_with_parent(int(os.environ.get(PARENT_PID_ENV) or os.getppid()))
    name_this_process(measuring_name(args.profile_id))  # `pgrep dm-<id>`, forked or not
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    if settings.weights_dir is not None:  # where torch.hub and the Hugging Face hub cache weights
        os.environ.setdefault("TORCH_HOME", str(settings.weights_dir))
        os.environ.setdefault("HF_HOME", str(settings.weights_dir / "huggingface"))
    store = ProfileStore.from_url(require_redis_url(settings))
    outcome = ProcessOutcome()
    try:
        measure(args.profile_id, args.process, store, settings, outcome)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a readable reason
        traceback.print_exc()
        outcome.error = f"{type(exc).__name__}: {exc}".strip()[:2000]
    try:
        payload = msgspec.json.encode(outcome)
    except (TypeError, ValueError) as exc:
        payload = msgspec.json.encode(ProcessOutcome(error=f"could not encode the result: {exc}"))
    with open(args.outcome_path, "wb") as fh:
        fh.write(payload)
    return 0 if outcome.error is None else 3


if __name__ == "__main__":
    raise SystemExit(main())
