"""The measuring process: ``python -m workers.runner PROFILE_ID OUTCOME_PATH``.

Started fresh (never forked) for every profile by the Celery task, so the memory it reports
includes its own CUDA context and nothing carries over from the previous model. It reads the job
from the store, reports progress there, and writes a :class:`Outcome` to ``OUTCOME_PATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback

import msgspec

from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ProfileResult, Progress
from dnnprof.store import ConflictError, ProfileStore


class Outcome(msgspec.Struct, kw_only=True):
    result: ProfileResult | None = None
    error: str | None = None


def die_with_parent() -> None:
    """Ask Linux to kill us if the Celery pool process that started us dies (hard time limit,
    SIGKILL), so no orphan keeps measuring on the GPU."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def measure(profile_id: str, store: ProfileStore, settings: Settings) -> Outcome:
    from workers.engine.scenario import ScenarioConfig, run_profile

    record = store.get(profile_id)
    if record is None:
        return Outcome(error="the profile was deleted before it was measured")

    def on_progress(progress: Progress) -> None:
        def change(rec):
            rec.progress = progress
            return rec

        with contextlib.suppress(ConflictError, KeyError):
            store.update(profile_id, change, allowed_from=("running",))

    config = ScenarioConfig(
        device_class=record.settings.device,
        memory_limit_mb=settings.memory_limit_mb,
        imagenet_val=settings.imagenet_val,
    )
    tag = record.settings.model.partition(".")[2]  # "timm:resnet50.a1_in1k": pretrained tag
    result = run_profile(record.model, record.settings, config, on_progress=on_progress, tag=tag or None)
    return Outcome(result=result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    profile_id, outcome_path = argv
    die_with_parent()
    settings = Settings.from_env()
    if settings.weights_dir is not None:  # where torch.hub and the Hugging Face hub cache weights
        os.environ.setdefault("TORCH_HOME", str(settings.weights_dir))
        os.environ.setdefault("HF_HOME", str(settings.weights_dir / "huggingface"))
    store = ProfileStore.from_url(require_redis_url(settings))
    try:
        outcome = measure(profile_id, store, settings)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a readable reason
        traceback.print_exc()
        outcome = Outcome(error=f"{type(exc).__name__}: {exc}".strip()[:2000])
    try:
        payload = msgspec.json.encode(outcome)
    except (TypeError, ValueError) as exc:
        outcome = Outcome(error=f"could not encode the result: {exc}")
        payload = msgspec.json.encode(outcome)
    with open(outcome_path, "wb") as fh:
        fh.write(payload)
    return 0 if outcome.error is None else 3


if __name__ == "__main__":
    raise SystemExit(main())
