"""The finished profiles' ETags an API process remembers (``service.caching.FinishedETags``), on
a clock the test moves: forgotten when the profile is deleted here, after ``ttl_s`` otherwise
(a delete through another process), and bounded, least recently served first."""

from __future__ import annotations

from service.caching import FinishedETags


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_etag_is_served_until_its_ttl_or_a_delete_here():
    clock = Clock()
    etags = FinishedETags(size=10, ttl_s=5.0, clock=clock)
    etags.remember("a", '"1"')
    etags.remember("b", '"2"')
    clock.now += 4.9
    assert etags.get("a") == '"1"' and etags.get("b") == '"2"'
    etags.forget("b")  # deleted through this process: at once
    assert etags.get("b") is None
    clock.now += 0.1  # 5 s after it was served: the store is asked again
    assert etags.get("a") is None
    etags.remember("a", '"1"')  # served again: another 5 s
    clock.now += 4.9
    assert etags.get("a") == '"1"'
    assert etags.get("never") is None


def test_the_least_recently_served_go_first_past_the_bound():
    etags = FinishedETags(size=3, ttl_s=60.0, clock=Clock())
    for name in "abc":
        etags.remember(name, f'"{name}"')
    etags.remember("a", '"a"')  # served again: the most recent now
    etags.remember("d", '"d"')
    assert [etags.get(n) for n in "abcd"] == ['"a"', None, '"c"', '"d"']
