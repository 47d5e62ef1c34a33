"""Field types shared by the config sections and the bundle manifest.

Every number a user writes is finite and in a documented range, checked in one place: the
pydantic models. A float field is ``Finite`` (``inf``, ``-inf`` and ``nan`` are refused by
name) and carries explicit ``ge=`` / ``le=`` bounds, e.g.::

    stall_timeout_s: Finite = Field(default=1.0, ge=0.05, le=60)

Integer fields carry both bounds too (``1e300`` is refused as out of range). The ranges are
documented beside every key in ``deploy/config.example.toml``; ``tests/edge/test_config.py``
checks, from the models' fields, that every numeric key has both bounds, that its range is
written there, and that ``inf``, ``nan``, ``1e300`` and the values just outside the range
are refused with exit 3 naming the key.

``Printable`` is a string that holds no control character (a bundle's name and labels are
printed in every log line). ``PathText`` is a file name, device or URL: no NUL byte (no system
call takes one; it was a traceback where the file was opened).

``QUIET`` as a validation context (``Config.model_validate(data, context=QUIET)``) silences the
warnings validators give about accepted-but-odd keys (a check of values already warned about).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

Finite = Annotated[float, Field(allow_inf_nan=False)]
QUIET: dict[str, Any] = {"quiet": True}


def quiet(info: ValidationInfo) -> bool:
    """The validation runs with ``context=QUIET``: no warnings."""
    return bool((info.context or {}).get("quiet"))


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("holds a control character (a newline, tab or terminal escape); use plain text")
    return text


Printable = Annotated[str, AfterValidator(_printable)]


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("holds a NUL byte (\\u0000), which no file name, device or URL can; write the path as it is")
    return text


PathText = Annotated[str, AfterValidator(_no_nul)]


def as_tuple(value: Any) -> Any:
    """A TOML array (a list) for a tuple field of a strict model (strict takes only a tuple)."""
    return tuple(value) if isinstance(value, list) else value


# The weed threshold the live view may set (and save): 0 would spray everything (and then latch every valve off at
# max on-time), 1 nothing. Values outside go in [decision] threshold, on purpose.
TUNABLE_THRESHOLD = (0.05, 0.95)


def tunable_threshold_problem(value: object) -> str | None:
    """Why ``value`` cannot be the live view's threshold (None: it can)."""
    lo, hi = TUNABLE_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        return f"threshold {value!r} is not a probability from {lo:g} to {hi:g}"
    return None
