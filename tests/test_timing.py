"""Times a noisy host cannot fool: warm-up and timed runs sized by count and time, statistics
across fresh processes, noisy blocks measured again, and the host's load recorded."""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch

from dnnprof.config import Settings, SettingsError
from dnnprof.contract import ProcessCell
from workers.aggregate import latency_stats, process_latency
from workers.engine.host import HostLoadMeter, choose_threads
from workers.engine.timing import Timer, WarmupPolicy, settling_point, warm_up


class ScriptedTimer(Timer):
    """Returns the given run times instead of timing (the loop logic is what is under test)."""

    def __init__(self, times):
        self.times = iter(times)
        self.calls = 0

    def time(self, fn, runs):
        self.calls += runs
        return [next(self.times) for _ in range(runs)]


OPEN = {"timed_run_settles_from_s": 0.0}  # the first timed run completes the window, however short


def test_warm_up_stops_once_times_settle_and_is_bounded():
    settling = [5.0, 3.0, 1.0, 1.0, 1.01, 1.0] + [1.0] * 50
    closed = warm_up(lambda: None, ScriptedTimer(settling), WarmupPolicy(max_seconds=1e9))
    assert closed == (5, True, ())  # 1.0, 1.0, 1.01: the window of three, all warm-up
    # Where the first timed run is to complete the window (issue 29): one run fewer.
    assert warm_up(lambda: None, ScriptedTimer(settling), WarmupPolicy(max_seconds=1e9), **OPEN) == (
        4,
        True,
        (1.0, 1.0),
    )
    noisy = ScriptedTimer([1.0, 2.0] * 100)
    outcome = warm_up(lambda: None, noisy, WarmupPolicy(max_runs=7, max_seconds=1e9), **OPEN)
    assert (outcome.runs, outcome.converged, outcome.recent) == (7, False, ())


def test_warm_up_honours_min_runs_even_when_one_run_is_slow():
    """One 6 s run used to end the warm-up (10 s budget, 2 runs done); min_runs is a floor, and
    counts the timed run that completes the window."""
    slow = ScriptedTimer([6.0] * 10)
    outcome = warm_up(lambda: None, slow, WarmupPolicy(max_seconds=10.0, min_runs=3))
    assert outcome.runs == 3 and outcome.converged  # three equal runs: settled, and at least 3
    four = warm_up(lambda: None, ScriptedTimer([6.0] * 10), WarmupPolicy(max_seconds=1e9, min_runs=4), **OPEN)
    assert four == (3, True, (6.0, 6.0))  # 3 warm-up runs + the timed one: 4


def test_a_first_call_already_settled_counts_as_the_first_warm_up_run():
    """A 2.5 s batch whose cold call is as fast as the next run is run once more, not three
    times (issue 29: the cold call opens the window, the first timed run closes it); a cold call
    slowed by autotuning or a compile leaves the window as any unsettled run does."""
    steady = ScriptedTimer([2.51] + [2.5] * 10)
    assert warm_up(lambda: None, steady, WarmupPolicy(), first_call_s=2.49, **OPEN) == (1, True, (2.49, 2.51))
    assert steady.calls == 1
    autotuned = ScriptedTimer([1.0, 1.01] + [1.0] * 10)
    assert warm_up(lambda: None, autotuned, WarmupPolicy(), first_call_s=30.0, **OPEN) == (
        2,
        True,
        (1.0, 1.01),
    )
    # Without a window left open (the engine's choice for runs under a tenth of a block), the
    # cold call and two more: three runs.
    closed = warm_up(lambda: None, ScriptedTimer([2.51] + [2.5] * 10), WarmupPolicy(), first_call_s=2.49)
    assert closed == (2, True, ())


def test_the_window_is_left_open_only_for_runs_that_are_a_tenth_of_a_block():
    """Runs of 10 ms beside a threshold of 20 ms (a 0.2 s block of 10 runs): timed in blocks
    sized by time, one run is too little to save and a block to lose, so the warm-up closes its
    own window; runs of 30 ms leave it open."""

    def steady(run_s: float, first_call_s: float | None = None):
        policy = WarmupPolicy(min_seconds=0)
        timer = ScriptedTimer([run_s] * 50)
        return warm_up(lambda: None, timer, policy, first_call_s, timed_run_settles_from_s=0.02)

    assert steady(0.01) == (3, True, ())
    assert steady(0.01, first_call_s=0.01) == (2, True, ())  # with the first call: three runs
    assert steady(0.03, first_call_s=0.03) == (1, True, (0.03, 0.03))


def test_the_first_timed_run_settles_the_window_only_within_the_tolerance():
    """Hand-checked: 1.00, 1.01 and 1.02 s have a coefficient of variation of 0.8% (under 5%);
    1.00, 1.01 and 1.30 s have 12.6%, and 1.01, 1.30, 1.00 as much; 1.30, 1.00, 1.01 too; then
    1.00, 1.01, 1.00: 0.5%. So a block 1.02, ... needs no run dropped; 1.30, 1.00, 1.01, 1.00
    has its first window settle at its fourth run (three runs dropped)."""
    policy = WarmupPolicy()
    opened = warm_up(lambda: None, ScriptedTimer([1.01]), policy, first_call_s=1.0, **OPEN)
    assert settling_point(opened, [1.02, 1.0, 1.0], policy) == 0
    assert settling_point(opened, [1.30, 1.0, 1.01, 1.0], policy) == 3
    assert settling_point(opened, [1.30, 2.0, 1.30, 2.0], policy) is None
    closed = warm_up(lambda: None, ScriptedTimer([1.0, 1.0, 1.0]), policy)
    assert settling_point(closed, [99.0, 1.0], policy) == 0  # no window left open: nothing to settle
    noisy = ScriptedTimer([1.0, 2.0] * 10)
    gave_up = warm_up(lambda: None, noisy, WarmupPolicy(max_runs=5, max_seconds=1e9), **OPEN)
    assert not gave_up.converged and settling_point(gave_up, [99.0], policy) == 0  # timed, marked so


def test_warm_up_lasts_a_minimum_time_for_a_fast_model():
    fast = ScriptedTimer([0.001] * 1000)
    outcome = warm_up(lambda: None, fast, WarmupPolicy(min_seconds=0.1))
    assert outcome.runs == 100 and outcome.converged


def test_timed_runs_last_the_minimum_time_as_well_as_the_run_count():
    timer = Timer()
    times = timer.time_for(lambda: time.sleep(0.01), runs=3, min_seconds=0.15)
    assert len(times) >= 3 and sum(times) >= 0.15
    assert len(times) < 40  # sized from the mean, not run one at a time for ever
    few = timer.time_for(lambda: time.sleep(0.01), runs=3, min_seconds=0.0)
    assert len(few) == 3


def cell(process: int, per_image_ms: list[float], batch_size: int = 2, **kw) -> ProcessCell:
    return ProcessCell(
        process=process,
        batch_size=batch_size,
        status="ok",
        run_seconds=[ms * batch_size / 1000 for ms in per_image_ms],
        warmup_runs=4,
        warmup_converged=True,
        **kw,
    )


def test_statistics_of_one_process_from_known_run_times():
    runs = [5.0, 6.0, 5.5, 6.5, 7.0]  # ms per image
    stats = latency_stats([cell(0, runs)], noisy_cv=0.1)
    mean = sum(runs) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in runs) / 4)
    assert stats.mean_ms == pytest.approx(mean) and stats.median_ms == pytest.approx(6.0)
    assert stats.std_ms == pytest.approx(std) and stats.cv == pytest.approx(std / mean)
    assert stats.min_ms == pytest.approx(5.0) and stats.max_ms == pytest.approx(7.0)
    assert stats.images_per_s == pytest.approx(1000 / mean)
    assert stats.ci95_basis == "runs" and stats.processes == 1 and stats.process_cv is None
    assert (stats.ci95_low_ms, stats.ci95_high_ms) == pytest.approx(cox_interval(runs, t=2.776445), rel=1e-6)
    assert stats.noisy is True  # cv ~ 0.13
    # The sample cannot support percentiles it is too small for.
    assert stats.p90_ms is None and stats.p99_ms is None


def cox_interval(values: list[float], t: float) -> tuple[float, float]:
    """The modified Cox interval for a log-normal mean (Olsson 2005), written out from the paper:
    exp(ȳ + s²/2 ± t·√(s²/n + s⁴/(2(n−1)))), with t from a t table."""
    logs = [math.log(v) for v in values]
    n = len(logs)
    mean = sum(logs) / n
    var = sum((y - mean) ** 2 for y in logs) / (n - 1)
    half = t * math.sqrt(var / n + var**2 / (2 * (n - 1)))
    return math.exp(mean + var / 2 - half), math.exp(mean + var / 2 + half)


def test_the_interval_of_a_noisy_positive_time_stays_positive_and_holds_the_mean():
    """Seen under load (issue 29): mobilenet_v2 bs 1, three processes, 331 ms/image, Student's
    interval -1100.3 to 1762.8. Process means 30, 40 and 923 ms give 331 ms as their mean."""
    cells = [cell(0, [30.0] * 10), cell(1, [40.0] * 10), cell(2, [923.0] * 10)]
    stats = latency_stats(cells)
    assert stats.mean_ms == pytest.approx(331.0)
    student_low = 331.0 - 4.302653 * statistics.stdev([30.0, 40.0, 923.0]) / math.sqrt(3)
    assert student_low < 0  # what it used to say
    assert 0 < stats.ci95_low_ms < stats.mean_ms < stats.ci95_high_ms
    assert stats.ci95_scale == "log"


def test_percentiles_only_where_the_sample_supports_them():
    ten = latency_stats([cell(0, [1.0] * 9 + [2.0])])
    assert ten.p90_ms is not None and ten.p99_ms is None
    hundred = latency_stats([cell(0, [1.0] * 99 + [3.0])])
    assert hundred.p99_ms == pytest.approx(1.02)


def test_across_processes_the_ci_is_over_the_process_means():
    """Each process is steady on its own (cv 0), but the processes differ by 10%: the old
    within-process CI would have been zero wide."""
    cells = [cell(0, [10.0] * 10), cell(1, [11.0] * 10), cell(2, [12.0] * 10)]
    stats = latency_stats(cells, noisy_cv=0.1)
    assert stats.processes == 3 and stats.runs == 30 and stats.ci95_basis == "process_means"
    assert stats.mean_ms == pytest.approx(11.0)  # the paper's mean over every run
    assert stats.median_ms == pytest.approx(11.0)  # the median of the process medians
    # t(0.975, 2) = 4.302653; by hand: logs 2.302585, 2.397895, 2.484907, mean 2.395129,
    # s² = 0.008316, centre 2.399287, half 4.302653·√(0.008316/3 + 0.008316²/4) = 0.227239.
    assert (stats.ci95_low_ms, stats.ci95_high_ms) == pytest.approx((8.7762, 13.8257), rel=1e-4)
    assert (stats.ci95_low_ms, stats.ci95_high_ms) == pytest.approx(
        cox_interval([10, 11, 12], t=4.302653), rel=1e-6
    )
    assert stats.process_cv == pytest.approx(1 / 11)
    assert [p.mean_ms for p in stats.per_process] == pytest.approx([10.0, 11.0, 12.0])
    assert all(p.cv == 0 for p in stats.per_process)
    assert stats.warmup_converged is True


def test_process_to_process_spread_over_the_threshold_is_noisy():
    steady = latency_stats([cell(0, [10.0] * 10), cell(1, [10.5] * 10)], noisy_cv=0.1)
    assert steady.noisy is False
    apart = latency_stats([cell(0, [10.0] * 10), cell(1, [20.0] * 10)], noisy_cv=0.1)
    assert apart.noisy is True and apart.process_cv > 0.1


def test_per_process_statistics_keep_their_warm_up_and_attempts():
    from dnnprof.contract import TimingAttempt

    attempts = [TimingAttempt(runs=10, mean_ms=30.0, cv=0.9), TimingAttempt(runs=10, mean_ms=10.0, cv=0.01)]
    p = process_latency(cell(3, [10.0] * 10, attempts=attempts))
    assert p.process == 3 and p.runs == 10 and p.warmup_runs == 4 and p.attempts == attempts


def write_proc(root, *, total: int, idle: int, steal: int, own: int, running: int, load: float) -> None:
    (root / "self").mkdir(parents=True, exist_ok=True)
    user = total - idle - steal
    (root / "stat").write_text(
        f"cpu  {user} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nprocs_running {running}\n"
    )
    fields = ["S"] + ["0"] * 10 + [str(own), "0"] + ["0"] * 30  # utime is the 14th field
    (root / "self" / "stat").write_text("1234 (python) " + " ".join(fields) + "\n")
    (root / "loadavg").write_text(f"{load} 0.5 0.4 3/200 1234\n")


def test_host_load_over_a_timed_block(tmp_path):
    """Over the block: 1000 jiffies in all, 200 idle, 100 stolen, 500 ours: the other processes
    took the remaining 200, a fifth of the host."""
    meter = HostLoadMeter(proc=tmp_path)
    write_proc(tmp_path, total=10_000, idle=5_000, steal=1_000, own=2_000, running=1, load=0.2)
    meter.start()
    write_proc(tmp_path, total=11_000, idle=5_200, steal=1_100, own=2_500, running=3, load=1.5)
    load = meter.stop()
    assert load.others_cpu_share == pytest.approx(0.2)
    assert load.steal_share == pytest.approx(0.1)
    assert load.procs_running == 3 and load.loadavg_1m == pytest.approx(1.5)


def test_host_load_on_this_machine_is_read():
    meter = HostLoadMeter()
    meter.start()
    torch.randn(256, 256) @ torch.randn(256, 256)
    load = meter.stop()
    assert load.loadavg_1m is not None and load.procs_running is not None and load.procs_running >= 1


def test_measuring_threads_leave_a_core_for_the_service_where_there_are_cores_to_spare(monkeypatch):
    import workers.engine.host as host

    monkeypatch.setattr(host, "usable_cpus", lambda: [0, 1])
    assert choose_threads() == (
        2,
        "all 2 usable cores (one left idle would cost a third or more of the host)",
    )
    monkeypatch.setattr(host, "usable_cpus", lambda: list(range(8)))
    threads, why = choose_threads()
    assert threads == 7 and "less one" in why
    assert choose_threads(3)[0] == 3
    for bad in ("many", "0"):
        monkeypatch.setenv("DNNPROF_CPU_THREADS", bad)
        with pytest.raises(SettingsError, match="DNNPROF_CPU_THREADS"):
            Settings.from_env()
    monkeypatch.setenv("DNNPROF_CPU_THREADS", "3")
    assert Settings.from_env().cpu_threads == 3
