"""The off-listeners an interlock runs (EnableSwitch, SprayPause share them)."""

import logging

from edge.inputs.listeners import OffListeners


def test_every_listener_runs_even_when_one_fails_and_removing_twice_is_harmless(caplog):
    ran = []

    def boom():
        ran.append("boom")
        raise RuntimeError("relay board gone")

    first = lambda: ran.append("first")  # noqa: E731
    last = lambda: ran.append("last")  # noqa: E731
    listeners = OffListeners(first)
    listeners.add(boom)
    listeners.add(last)
    with caplog.at_level(logging.ERROR):
        listeners.fire("for the test")
    assert ran == ["first", "boom", "last"]
    assert [r.getMessage() for r in caplog.records] == ["switching off for the test failed"]
    listeners.remove(boom)
    listeners.remove(boom)  # not there any more: nothing happens
    ran.clear()
    listeners.fire("again")
    assert ran == ["first", "last"]


def test_a_listener_may_remove_itself_while_firing():
    listeners = OffListeners()
    ran = []

    def once():
        ran.append(1)
        listeners.remove(once)

    listeners.add(once)
    listeners.fire("x")
    listeners.fire("x")
    assert ran == [1]
