"""The command-line client against the real service: progress while the job runs, a table or the
API's JSON, and the API's refusals as a non-zero exit with its message."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import dnnprof_env, run_dnnprof


def dnnprof(service, *args: str) -> subprocess.CompletedProcess:
    return run_dnnprof(*args, env=dnnprof_env(DNNPROF_URL=service.base_url))


@pytest.mark.slow  # starts the session's service
def test_profile_waits_with_progress_then_prints_the_result(service):
    # Settings no other test asks for, so the job is measured now and its progress is seen; 150
    # runs keep each batch size timing for a second or more, past the client's 0.5 s polls (with
    # 3 runs a batch size was done between two polls once processes forked from the template):
    # squeezenet1_1 took 24 ms an image on a 2-vCPU Xeon host (3.6 s a block; a CPU five times
    # faster still times each batch size for about a second, warm-up included).
    settings = ("--batch-sizes", "1,2", "--runs", "150", "--repeats", "1")
    done = dnnprof(service, "profile", "squeezenet1_1", *settings, "--wait")
    assert done.returncode == 0, done.stderr
    steps = done.stderr.splitlines()
    assert any(s.startswith("running: batch size 1") for s in steps), steps
    assert any(s.startswith("running: batch size 2") for s in steps), steps
    assert "images/s" in done.stdout and "tv:squeezenet1_1" in done.stdout

    again = dnnprof(service, "profile", "squeezenet1_1", *settings, "--json")
    record = json.loads(again.stdout)  # the stored one: same settings
    assert again.returncode == 0 and record["status"] == "succeeded"
    shown = json.loads(dnnprof(service, "show", record["id"], "--json").stdout)
    assert shown["result"]["batches"][1]["batch_size"] == 2
    listed = json.loads(dnnprof(service, "ls", "--model", "squeezenet1_1", "--json").stdout)
    assert record["id"] in [r["id"] for r in listed]
    assert record["id"] in dnnprof(service, "ls", "--model", "squeezenet1_1").stdout


@pytest.mark.slow  # starts the session's service
def test_the_apis_refusal_and_a_bad_argument_are_said(service):
    unknown = dnnprof(service, "profile", "no_such_net_at_all")
    assert unknown.returncode == 1 and "no_such_net_at_all" in unknown.stderr, unknown.stderr
    bad = dnnprof(service, "profile", "resnet18", "--batch-sizes", "0,abc")
    assert bad.returncode == 2 and "positive integers" in bad.stderr
    refused = dnnprof(service, "profile", "resnet18", "--runs", "0")
    assert refused.returncode == 1 and "runs" in refused.stderr
    missing = dnnprof(service, "show", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr
    # Issue 25: --runtime takes the contract's runtimes; one no worker here runs is the API's 422.
    unknown_runtime = dnnprof(service, "profile", "resnet18", "--runtime", "tflite")
    assert unknown_runtime.returncode == 2 and "eager" in unknown_runtime.stderr
    not_here = dnnprof(service, "profile", "resnet18", "--runtime", "tensorrt")
    assert not_here.returncode == 1 and "runtime" in not_here.stderr and "eager" in not_here.stderr


@pytest.mark.slow  # starts the session's service
def test_device_precision_and_force_reach_the_job_and_show_prints_the_table(service):
    """Issue 26: the README's flags, each seen where it lands: --device and --precision in the
    stored settings and the fingerprint, --force a second profile of equal settings (without it,
    the stored one), `show` without --json the result table, `ls` filtered and limited."""
    args = ("profile", "squeezenet1_1", "--batch-sizes", "1", "--runs", "3", "--repeats", "1")
    args += ("--device", "cpu", "--precision", "bf16")
    first = dnnprof(service, *args, "--wait", "--json")
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["settings"]["device"] == "cpu" and record["settings"]["precision"] == "bf16"
    assert record["result"]["fingerprint"]["device_class"] == "cpu"
    assert record["result"]["param_file_bytes"] < record["result"]["param_file_bytes_fp32"]  # bf16 weights
    same = json.loads(dnnprof(service, *args, "--json").stdout)
    assert same["id"] == record["id"]  # deduplicated
    forced = json.loads(dnnprof(service, *args, "--force", "--json").stdout)
    assert forced["id"] != record["id"]

    table = dnnprof(service, "show", record["id"])
    assert table.returncode == 0
    assert "95% CI of the mean" in table.stdout and "images/s" in table.stdout
    ms = record["result"]["batches"][0]["latency"]["mean_ms"]
    assert f"{ms:.3f}" in table.stdout  # the figure the API stored, as the table prints it

    listed = json.loads(
        dnnprof(service, "ls", "--device", "cpu", "--status", "succeeded", "--limit", "1", "--json").stdout
    )
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert listed[0]["settings"]["device"] == "cpu"
    jetson = json.loads(dnnprof(service, "ls", "--device", "jetson", "--limit", "100", "--json").stdout)
    assert all(r["settings"]["device"] == "jetson" for r in jetson)  # the filter applied, not ignored
    assert record["id"] not in [r["id"] for r in jetson]
