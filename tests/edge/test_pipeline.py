"""The loop's safety rules, driven by a scripted source and a manual clock (no sleeps)."""

import threading

import pytest

from edge.loop.actuator import Actuator
from edge.core.clock import ManualClock
from edge.decide.decider import Decider
from edge.inference import Classifier
from edge.outputs.dryrun import DryRunOutput
from edge.loop.runner import RunLoop
from edge.loop.whole_frame import WholeFrameProcessor
from tests.conftest import TOY_BUNDLE
from tests.edge.helpers import ScriptedSource


@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


def make(script, classifier, stall_timeout_s=1.0, max_on_s=10.0, **kw):
    clock = ManualClock()
    out = DryRunOutput(channels=2, clock=clock)
    src = ScriptedSource(script, clock, **kw)
    seen = []
    p = RunLoop(src, WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5),
                                         Actuator(out, max_on_s, clock), clock=clock),
                clock=clock, stall_timeout_s=stall_timeout_s,
                 on_frame=lambda r: seen.append(r.outputs))
    return p, out, seen


def test_outputs_follow_weed_frames_and_end_off(classifier):
    p, out, seen = make("SWWSW", classifier)
    summary = p.run()
    assert [o[0] for o in seen] == [False, True, True, False, True]
    assert out.state() == (False, False)
    assert summary.frames == 5 and summary.weed_frames == 3 and summary.stopped_by == "end of source"


def test_stall_switches_off_and_recovers(classifier):
    # weed, then 0.1 s polls: after 1 s without a frame everything is off; frames return.
    p, out, seen = make("WW" + "." * 15 + "W", classifier, stall_timeout_s=1.0)
    states = []
    orig = p._no_frame

    def spy():
        orig()
        states.append(out.state())

    p._no_frame = spy
    summary = p.run()
    assert states[0] == (True, True)  # 0.1 s: not stalled yet
    assert states[-1] == (False, False)  # 1.5 s: stalled -> off
    assert summary.stalls == 1
    assert seen[-1] == (True, True)  # resumed on the next weed frame
    assert out.state() == (False, False)


def test_exception_in_a_stage_leaves_everything_off(classifier):
    p, out, seen = make("WWX", classifier)
    with pytest.raises(ValueError, match="HxWx3"):
        p.run()
    assert seen[-1] == (True, True)  # it was spraying when the bad frame came
    assert out.state() == (False, False)


def test_stop_event_ends_the_loop_with_outputs_off(classifier):
    stop = threading.Event()
    p, out, seen = make("WW!WWW", classifier, on_bang=stop.set)
    p.stop = stop
    summary = p.run()
    assert summary.frames == 2 and summary.stopped_by == "stop requested"
    assert out.state() == (False, False)


def test_a_frame_read_after_the_stop_request_switches_nothing(classifier):
    """SIGTERM while the read waits: the weed frame it then returns is dropped, no valve opens after the stop."""
    stop = threading.Event()
    p, out, seen = make("SS!W", classifier, on_bang=stop.set)
    p.stop = stop
    summary = p.run()
    assert seen == [(False, False), (False, False)] and summary.frames == 2
    assert not [e for e in out.events if e[3]]  # no channel was ever switched on


def test_max_on_time_during_a_long_weed(classifier):
    p, out, seen = make("W" * 30, classifier, max_on_s=0.5)  # 50 ms per frame
    summary = p.run()
    assert summary.max_on_trips == 1
    assert seen[0] == (True, True) and seen[-1] == (False, False)


def test_stage_timings_are_logged_in_the_order_of_stages():
    from dataclasses import fields

    from edge.core.metrics import STAGES, FrameTimings

    assert tuple(f.name for f in fields(FrameTimings)) == STAGES
    assert list(FrameTimings(1, 2, 3, 4, 5, 6.00049).as_dict().items()) == list(zip(STAGES, [1, 2, 3, 4, 5, 6.0]))
