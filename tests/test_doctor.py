"""`dnnprof doctor`: what a worker would detect and use, and whether it would start (0, or 2 with
the reasons), here and on the recorded Jetson trees under tests/data/ (no container, no board)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnnprof.embedded import EmbeddedRedis
from tests.helpers import dnnprof_env, run_dnnprof

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


def doctor(*args: str, **env: str):
    done = run_dnnprof("doctor", *args, env=dnnprof_env(**env), timeout=300)
    return done, (json.loads(done.stdout) if "--json" in args else done.stdout)


def test_this_host_as_a_cpu_worker_would_start_and_says_what_it_would_use(redis_url, tmp_path):
    done, report = doctor(
        "--json", "--device", "cpu", DNNPROF_REDIS_URL=redis_url, DNNPROF_DATA_DIR=str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["would_start"] and report["problems"] == []
    assert report["target"].startswith("cpu/") and report["cpu"]["emulation"] is None
    assert report["cpu"]["arch"] in ("x86_64", "aarch64") and report["jetson"] is None
    assert report["runtimes"]["eager"] == report["torch"]["torch"].split("+")[0]
    assert report["redis"]["reachable"] and report["data_dir"]["writable"]


def test_without_redis_or_a_writable_data_dir_it_exits_2_saying_why(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    done, text = doctor("--device", "cpu", DNNPROF_DATA_DIR=str(blocked / "data"))
    assert done.returncode == 2
    assert "would start    NO:" in text and "DNNPROF_REDIS_URL is not set" in text
    assert "is not writable" in text


@pytest.mark.parametrize(
    ("tree", "module", "target", "power", "rails", "input_rail", "clocks", "cpu"),
    [
        (
            "jetson_orin_nano",
            "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
            "jetson/orin-nano-8gb-15w",
            "15W",
            {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"},
            "VDD_IN",
            "off",
            "Cortex-A78AE",
        ),
        (
            "jetson_agx_orin_jp5",
            "Jetson AGX Orin Developer Kit",
            "jetson/agx-orin-32gb",
            None,  # no nvpmodel files in this tree: the mode is unknown, not guessed
            {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"},
            None,  # AGX Orin has no input rail: the sum is used
            "on",
            "Cortex-A78AE",
        ),
        (
            "jetson_nano",
            "NVIDIA Jetson Nano Developer Kit",
            "jetson/nano-4gb",
            None,
            {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"},
            "POM_5V_IN",
            None,
            "Cortex-A57",
        ),
    ],
)
def test_a_jetson_tree_reports_module_power_mode_rails_and_clocks(
    redis_url, tmp_path, tree, module, target, power, rails, input_rail, clocks, cpu
):
    env = {"DNNPROF_REDIS_URL": redis_url, "DNNPROF_DATA_DIR": str(tmp_path)}
    done, report = doctor("--json", "--root", str(DATA / tree), **env)
    jetson = report["jetson"]
    assert report["device_class"] == "jetson" and report["target"] == target
    assert (jetson["module"], jetson["power_mode"], jetson["input_rail"]) == (module, power, input_rail)
    assert set(jetson["rails_w"]) == rails and jetson["jetson_clocks"] == clocks
    assert (report["cpu"]["model"], report["cpu"]["arch"]) == (cpu, "aarch64")
    # No Tegra GPU here: a Jetson worker would not start, and says why (exit 2).
    assert done.returncode == 2 and not report["would_start"]
    assert any("--device jetson" in problem for problem in report["problems"]), report["problems"]
    text = doctor("--root", str(DATA / tree), **env)[1]
    assert f"target         {target}" in text and "power rails    " in text and "would start    NO:" in text


def test_a_gpu_worker_offers_compile_only_with_triton_a_cpu_one_with_a_c_compiler():
    # NVIDIA's Jetson torch comes without Triton (the l4t stand-in's PyPI CPU torch too):
    # deploy/smoke-arm64.sh shows the Jetson image offering eager alone under --device jetson.
    import shutil

    from workers.runtime_support import available_runtimes, installed

    triton = installed("triton") or installed("pytorch-triton")
    for device_class in ("cuda", "jetson"):
        assert ("compile" in available_runtimes(device_class)) == bool(triton)
    assert ("compile" in available_runtimes("cpu")) == bool(shutil.which("cc") or shutil.which("gcc"))


def test_the_api_on_a_workers_install_exits_2_naming_the_extra():
    # A worker's image installs no [api] extra: uvicorn absent (None in sys.modules makes its
    # import fail as a missing package's does).
    import subprocess
    import sys

    code = "import sys; sys.modules['uvicorn'] = None; from dnnprof.cli import main; sys.exit(main(['api']))"
    env = dnnprof_env(DNNPROF_REDIS_URL="redis://127.0.0.1:1/0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'dnnprof[api]'" in done.stderr and "uvicorn" in done.stderr
