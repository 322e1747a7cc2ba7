"""``dnnprof doctor``: what a worker would detect and use on this machine, and whether it would
start, before anything is queued.

It runs the worker's own detection (:mod:`workers.devices`, :mod:`workers.cpuinfo`), its start
checks (:mod:`workers.preflight`), its Jetson readers (:mod:`workers.telemetry`) and its runtime
list (:mod:`workers.runtime_support`), and asks torch in a fresh interpreter as the worker does.
``root`` points the device files at a recorded tree (``tests/data/jetson_orin_nano``) instead of
``/``: a Jetson's files read on any machine.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dnnprof.config import Settings
from dnnprof.contract import DEVICE_CLASSES
from workers import devices, preflight
from workers.engine.host import choose_threads, usable_cpus
from workers.runtime_support import available_runtimes
from workers.telemetry import INPUT_RAILS, JetsonSysfs

CPUFREQ = Path("/sys/devices/system/cpu")
NO_POWER_MODE = "unknown (mount /etc/nvpmodel.conf and /var/lib/nvpmodel/status)"


def jetson_clocks_state(root: Path = devices.ROOT) -> str | None:
    """'on' where every CPU's lowest allowed clock is its highest (what NVIDIA's jetson_clocks
    script sets: each ``scaling_min_freq`` to ``cpuinfo_max_freq``), 'off' where not, None where
    cpufreq is not readable (a container without /sys/devices/system/cpu, a tree without it)."""
    states = []
    for cpufreq in sorted(devices.under(root, CPUFREQ).glob("cpu[0-9]*/cpufreq")):
        with contextlib.suppress(OSError, ValueError):
            low = int((cpufreq / "scaling_min_freq").read_text())
            states.append(low >= int((cpufreq / "cpuinfo_max_freq").read_text()))
    if not states:
        return None
    return "on" if all(states) else "off"


def jetson_facts(root: Path) -> dict:
    """The module, its L4T release, power mode, rails and clocks, as a Jetson worker reads them."""
    sysfs = JetsonSysfs(root)
    rails = sysfs.power_rails_w()
    return {
        "module": devices.device_name("jetson", root),
        "l4t_release": devices.l4t_release(devices.under(root, devices.TEGRA_RELEASE)),
        "power_mode": devices.jetson_power_mode(root=root),
        "rails_w": rails,
        "input_rail": next((name for name in INPUT_RAILS if name in rails), None),
        "gpu_load": sysfs.gpu_load_ratio(),
        "jetson_clocks": jetson_clocks_state(root),
    }


def gpu_facts() -> dict:
    driver, driver_cuda = preflight.nvml_driver()
    return {
        "nvml_gpus": devices.nvml_gpu_names(),
        "driver": driver,
        "driver_cuda": f"{driver_cuda // 1000}.{driver_cuda % 1000 // 10}" if driver_cuda else None,
    }


def torch_facts() -> tuple[dict, dict | None]:
    """(what to show, the probe for the start check) from torch in a fresh interpreter."""
    try:
        probe = preflight.probe_torch_cuda()
    except (preflight.WorkerStartError, OSError) as exc:
        return {"error": str(exc)}, None
    shown = {key: probe.get(key) for key in ("torch", "cuda", "cudnn", "available", "count")}
    return shown, probe


def redis_facts(url: str | None) -> dict:
    if not url:
        return {"url": None, "reachable": False, "why": "DNNPROF_REDIS_URL is not set"}
    import redis

    shown = _without_password(url)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return {"url": shown, "reachable": False, "why": f"{type(exc).__name__}: {exc}"}
    return {"url": shown, "reachable": True}


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def diagnose(device: str | None, settings: Settings, root: Path = devices.ROOT) -> dict:
    """Everything ``dnnprof doctor`` reports, and ``problems``: why a worker would not start
    (empty: it would)."""
    data_dir, redis_url = settings.data_dir, settings.redis_url
    problems: list[str] = []
    chosen = device or settings.worker_device or "auto"
    device_class = devices.detect_device_class(root) if chosen == "auto" else chosen
    report: dict = {
        "device_class": device_class,
        "device_class_from": "detected" if chosen == "auto" else "set",
    }
    if device_class not in DEVICE_CLASSES:
        problems.append(
            f"the device must be auto or one of {', '.join(DEVICE_CLASSES)}, got {device_class!r}"
        )
        return report | {"problems": problems, "would_start": False}
    try:
        report["target"] = devices.worker_target(
            device_class, settings.device_target, root=root, cpu_threads=settings.cpu_threads
        )
    except ValueError as exc:
        problems.append(str(exc))
    arch, emulation = devices.cpu_arch_and_emulation(root)
    threads, policy = choose_threads(settings.cpu_threads)
    report["cpu"] = {
        "arch": arch,
        "model": devices.cpu_model(devices.under(root, Path("/proc/cpuinfo"))),
        "emulation": emulation,
        "usable_cpus": len(usable_cpus()),
        "threads": threads,
        "threads_policy": policy,
    }
    report["device"] = {
        "model": devices.device_name(device_class, root),
        "memory_bytes": devices.device_memory_bytes(device_class, root),
    }
    is_jetson = devices.detect_device_class(root) == "jetson"
    report["jetson"] = jetson_facts(root) if is_jetson else None
    report["gpu"] = gpu_facts()
    report["torch"], probe = torch_facts()
    report["runtimes"] = available_runtimes(device_class)
    report["data_dir"] = {"path": str(data_dir), "writable": True}
    try:
        preflight.check_data_dir(data_dir)
    except preflight.WorkerStartError as exc:
        report["data_dir"] = {"path": str(data_dir), "writable": False, "why": str(exc)}
        problems.append(str(exc))
    if device_class in ("cuda", "jetson"):
        problems += _cuda_problems(device_class, probe, report["torch"])
    report["redis"] = redis_facts(redis_url)
    if not report["redis"]["reachable"]:
        problems.append(f"Redis: {report['redis']['why']}")
    return report | {"problems": problems, "would_start": not problems}


def _cuda_problems(device_class: str, probe: dict | None, shown: dict) -> list[str]:
    if probe is None:
        return [shown["error"]]
    try:
        preflight.check_cuda(device_class, probe)
    except preflight.WorkerStartError as exc:
        return [str(exc)]
    return []


def _gb(value: int | None) -> str:
    return f"{value / 1e9:.1f} GB" if value else "unknown"


def render(report: dict) -> str:
    """The report as lines a person reads."""
    cpu, dev, gpu, torch = (
        report.get("cpu", {}),
        report.get("device", {}),
        report.get("gpu", {}),
        report.get("torch", {}),
    )
    emulated = f"emulated by {cpu['emulation']}" if cpu.get("emulation") else "native"
    lines = [
        f"device class   {report['device_class']} ({report['device_class_from']})",
        f"target         {report.get('target', '-')}",
        f"cpu            {cpu.get('model')} [{cpu.get('arch')}, {emulated}], "
        f"{cpu.get('threads')} of {cpu.get('usable_cpus')} cpus measure ({cpu.get('threads_policy')})",
        f"device         {dev.get('model')}, {_gb(dev.get('memory_bytes'))}",
    ]
    jetson = report.get("jetson")
    if jetson is None:
        lines.append("jetson         not a Jetson (no /etc/nv_tegra_release, no Jetson device-tree model)")
    else:
        rails = (
            ", ".join(f"{name} {watts:.2f} W" for name, watts in jetson["rails_w"].items()) or "none readable"
        )
        lines += [
            f"jetson         {jetson['module']}, L4T {jetson['l4t_release'] or 'unknown'}, "
            f"power mode {jetson['power_mode'] or NO_POWER_MODE}",
            f"power rails    {rails} (input rail: {jetson['input_rail'] or 'none: the sum of the rails'})",
            f"jetson_clocks  {jetson['jetson_clocks'] or 'unknown (no cpufreq readable)'}",
        ]
    lines.append(
        f"gpu (NVML)     {', '.join(gpu.get('nvml_gpus') or []) or 'none'}"
        + (f", driver {gpu['driver']} (CUDA {gpu['driver_cuda']})" if gpu.get("driver") else "")
    )
    if "error" in torch:
        lines.append(f"torch          {torch['error']}")
    elif torch:
        lines.append(
            f"torch          {torch['torch']}, CUDA {torch['cuda'] or 'none (CPU build)'}, "
            f"cuDNN {torch['cudnn'] or 'none'}, {torch['count']} CUDA device(s) seen"
        )
    runtimes = report.get("runtimes") or {}
    lines.append(f"runtimes       {', '.join(f'{k} {v}' for k, v in runtimes.items()) or 'none (no torch)'}")
    data = report.get("data_dir", {})
    lines.append(
        f"data dir       {data.get('path')}: {'writable' if data.get('writable') else 'NOT writable'}"
    )
    redis = report.get("redis", {})
    lines.append(
        f"redis          {redis.get('url') or 'unset'}: "
        + ("reachable" if redis.get("reachable") else "NOT reachable")
    )
    if report["would_start"]:
        lines.append("would start    yes")
    else:
        lines += ["would start    NO:"] + [f"  - {problem}" for problem in report["problems"]]
    return "\n".join(lines)
