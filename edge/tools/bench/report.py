"""The benchmark document: its JSON schema, the Markdown tables, and ``--compare``.

``SCHEMA`` is the one description of the JSON file; ``docs/benchmark.md`` documents every
field in it and ``validate`` checks a document against it (the tests do, and
``--compare`` does before reading a file). Bump ``SCHEMA_VERSION`` on any change that
renames, removes or retypes a field; adding a field keeps the version (wrap it in
``Added``: files written before it lack it and stay valid).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from edge.tools.bench.stats import SUMMARY_KEYS, ratio
from edge.core.errors import ConfigError
from edge.core.files import FileRefused, read_regular
from edge.core.metrics import STAGES
from edge.core.text import one_line

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Opt:
    """The value may also be null."""

    inner: Any


@dataclass(frozen=True)
class Added:
    """A field added after the first files of this schema version: it may be missing (older
    files) or null."""

    inner: Any


@dataclass(frozen=True)
class ListOf:
    inner: Any
    length: Optional[int] = None


@dataclass(frozen=True)
class AtLeast0:
    """A number that is never negative: every time, rate, ratio, speed and size in the file
    (``--compare`` would otherwise read a hand-edited -3 ms as the faster run)."""

    inner: Any = (int, float)


NUM = AtLeast0()
SUMMARY = {k: (int if k == "n" else Opt(NUM)) for k in SUMMARY_KEYS}

MACHINE = {
    "hostname": str,
    "cpu_model": str,
    "board": Opt(str),
    "arch": str,
    "cores_logical": int,
    "cores_usable": int,
    "cpu_governor": Opt(str),
    "os": str,
    "python": str,
    "numpy": str,
    "opencv": str,
    "loadavg_start": Opt(ListOf(NUM, 3)),
    "loadavg_end": Opt(ListOf(NUM, 3)),
}

SETTINGS = {
    "source": {"kind": str, "path": Opt(str), "index": int, "width": Opt(int), "height": Opt(int),
               "fps": Opt(NUM), "seed": int},
    "source_description": str,
    "frames": Opt(int),
    "seconds": Opt(NUM),
    "warmup": int,
    "config": Opt(str),
    "baseline": bool,
    "timeout_s": NUM,
}

MODEL = {
    "bundle": str,
    "dir": str,
    "variant": str,
    "file": str,
    "size_bytes": int,
    "sha256": str,
    "input": str,
    "backbone": str,
    "untrained_demo": bool,
}

SPRAY = {
    "lanes": int,
    "tile_rows": int,
    "tiles_per_frame": int,
    "classify": str,
    "invokes_per_frame": Opt(NUM),
    "gate": Added(str),
    "gated_tiles_per_frame": Added(NUM),
    "gate_ms": Added(SUMMARY),
    "speed_kmh": NUM,
    "speed_note": str,
    "planned": int,
    "late": int,
    "missed": int,
    "switch_delay_p95_ms": Opt(NUM),
    "latency_ms": NUM,
    "frame_period_ms": Opt(NUM),
    "max_speed_kmh": NUM,
    "landing_kmh": Opt(NUM),
    "coverage_kmh": Opt(NUM),
    "limited_by": str,
    "max_speed_line": str,
}

WEB = {  # edge-bench --web-client (edge.tools.bench.webload)
    "frames_without": int,
    "frames_with": int,
    "e2e_p50_without_ms": Opt(NUM),
    "e2e_p50_with_ms": Opt(NUM),
    "e2e_p95_without_ms": Opt(NUM),
    "e2e_p95_with_ms": Opt(NUM),
    "p95_ratio": Opt(NUM),
    "stream_fps": NUM,
    "stream_width": int,
    "jpeg_quality": int,
    "encode_ms_p50": Opt(NUM),
    "encode_ms_p95": Opt(NUM),
    "jpegs_encoded": int,
    "jpegs_received": int,
    "bytes_received": int,
    "client_connects": int,
    "block_frames": int,
}

RUN = {
    "id": str,
    "role": str,
    "ok": bool,
    "error": Opt(str),
    "exit_code": int,
    "model": Opt(MODEL),
    "runtime": Opt({"name": str, "version": str, "delegate": str}),
    "threads": int,
    "warmup_frames": int,
    "frames": int,
    "duration_s": Opt(NUM),
    "fps": Opt(NUM),
    "dropped": int,
    "stopped_by": Opt(str),
    "weed_frames": int,
    "spray_frames": int,
    "stages_ms": {s: SUMMARY for s in STAGES},
    "raw_invoke_ms": SUMMARY,
    "e2e_over_invoke_p50": Opt(NUM),
    "vs_naive": Opt({"baseline_id": str, "p50": Opt(NUM), "p95": Opt(NUM)}),
    "peak_rss_mib": Opt(NUM),
    "peak_rss_source": Opt(str),
    "ru_maxrss_mib": Opt(NUM),
    "loadavg_start": Opt(ListOf(NUM, 3)),
    "loadavg_end": Opt(ListOf(NUM, 3)),
    "pid": Opt(int),
    "mode": Added(str),
    "stage_names": Added(dict),
    "spray": Added(SPRAY),
    "scoring": Added(str),
    "reference": Added({"bundle": str, "dir": str, "file": str, "sha256": str, "input": str, "invoke_ms": SUMMARY}),
    "e2e_p95_over_reference_invoke_p50": Added(NUM),
    "web": Added(WEB),
}

SCHEMA = {
    "schema_version": int,
    "tool": str,
    "tool_version": str,
    "created_utc": str,
    "command": str,
    "machine": MACHINE,
    "settings": SETTINGS,
    "runs": ListOf(RUN),
}


# -- validation ------------------------------------------------------------------------
def _type_ok(value: Any, t: Any) -> bool:
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool) and bool not in ts:
        return False  # True is an int to Python, not to a reader of the schema
    if isinstance(value, float) and not math.isfinite(value):
        return False  # NaN/Infinity are not JSON
    return isinstance(value, ts)


def _check(value: Any, schema: Any, path: str, problems: list[str]) -> None:
    if isinstance(schema, (Opt, Added)):
        if value is not None:
            _check(value, schema.inner, path, problems)
        return
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        if schema.length is not None and len(value) != schema.length:
            problems.append(f"{path}: expected {schema.length} items, got {len(value)}")
        for i, v in enumerate(value):
            _check(v, schema.inner, f"{path}[{i}]", problems)
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for k, sub in schema.items():
            if k not in value:
                if not isinstance(sub, Added):
                    problems.append(f"{path}.{k}: missing")
            else:
                _check(value[k], sub, f"{path}.{k}", problems)
        return
    if isinstance(schema, AtLeast0):
        if _type_ok(value, schema.inner) and value < 0:
            problems.append(f"{path}: expected a number >= 0, got {value!r}")
            return
        schema = schema.inner
    if not _type_ok(value, schema):
        names = "/".join(x.__name__ for x in (schema if isinstance(schema, tuple) else (schema,)))
        problems.append(f"{path}: expected {names}, got {type(value).__name__} {value!r}")


def validate(doc: Any) -> list[str]:
    """Problems of ``doc`` against ``SCHEMA`` (empty list: valid). Extra keys are allowed."""
    problems: list[str] = []
    _check(doc, SCHEMA, "$", problems)
    return problems


def schema_paths(schema: Any = SCHEMA, prefix: str = "") -> list[str]:
    """Every field path of the schema, e.g. ``runs[].stages_ms.end_to_end.p50``."""
    out: list[str] = []
    if isinstance(schema, (Opt, Added, AtLeast0)):
        return schema_paths(schema.inner, prefix)
    if isinstance(schema, ListOf):
        return schema_paths(schema.inner, prefix + "[]")
    if isinstance(schema, dict):
        for k, sub in schema.items():
            p = f"{prefix}.{k}" if prefix else k
            out.append(p)
            out.extend(schema_paths(sub, p))
    return out


# -- the document ----------------------------------------------------------------------
def build_document(runs: list[dict], machine: dict, settings: dict, command: str) -> dict:
    from edge import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "edge-bench",
        "tool_version": __version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),  # wall time, for humans
        "command": command,
        "machine": machine,
        "settings": settings,
        "runs": runs,
    }


def write_json(doc: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")


MAX_DOCUMENT_BYTES = 256 << 20  # an edge-bench result: a few MB with every run's frames


def load_document(path: str | Path) -> dict:
    """Read and validate a benchmark JSON file; ``ConfigError`` naming the problem otherwise."""
    p = Path(path)
    try:
        doc = json.loads(read_regular(p, MAX_DOCUMENT_BYTES).decode("utf-8"))
    except FileRefused as e:
        if e.missing:
            raise ConfigError(f"benchmark file {p} not found", "give two JSON files written by edge-bench --json") from None
        raise ConfigError(f"benchmark file {p} {e}", "give a file written by edge-bench --json") from None
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested too deeply, a 5000-digit integer
        raise ConfigError(f"benchmark file {p} is not readable JSON ({e or 'nested too deeply'})",
                          "give a file written by edge-bench --json") from None
    if not isinstance(doc, dict) or doc.get("tool") != "edge-bench":
        raise ConfigError(f"{p} is not an edge-bench result", "give a file written by edge-bench --json")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{p} has schema_version {doc.get('schema_version')!r}; this edge-bench reads {SCHEMA_VERSION}",
                          "compare files written by the same edge-bench version (or re-run the older benchmark)")
    problems = validate(doc)
    if problems:
        raise ConfigError(f"{p} does not match the edge-bench schema: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                          "the file was edited or truncated; re-run edge-bench")
    return doc


# -- Markdown --------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and abs(x) < 0.1 and x != 0:
        return f"{x:.3f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _x(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}×"


def run_label(r: dict) -> str:
    m = r.get("model") or {}
    variant = m.get("variant", "?")
    if r["role"] == "naive_baseline":
        return f"naive loop ({variant}, 1 thread)"
    label = f"pipeline {variant}, {r['threads']} thread{'s' if r['threads'] != 1 else ''}"
    sp = r.get("spray")
    if r.get("mode") == "lanes" and sp:
        label += f", {sp['lanes']} lanes × {sp['tile_rows']} tiles ({sp['classify']})"
    elif r.get("mode") == "lanes":
        label += ", lanes"
    return label


def _lanes(r: dict) -> bool:
    return r.get("mode") == "lanes"


def _machine_line(doc: dict) -> str:
    m = doc["machine"]
    board = f"{m['board']}, " if m.get("board") else ""
    rts = sorted({f"{r['runtime']['name']} {r['runtime']['version']}" for r in doc["runs"] if r.get("runtime")})
    return (f"{board}{m['cpu_model']} ({m['cores_usable']}/{m['cores_logical']} cores usable), {m['os']}, "
            f"Python {m['python']}, {', '.join(rts) or 'no runtime'}")


def _load_line(doc: dict) -> str:
    a, b = doc["machine"].get("loadavg_start"), doc["machine"].get("loadavg_end")
    if not a or not b:
        return "load average: not available"
    return f"load average (1/5/15 min): {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f} before, {b[0]:.2f}/{b[1]:.2f}/{b[2]:.2f} after"


def markdown(doc: dict) -> str:
    """The tables ``edge-bench`` prints: a summary per run, then p50/p95 per stage."""
    s = doc["settings"]
    length = f"{s['frames']} frames" if s["frames"] is not None else ""
    if s["seconds"] is not None:
        length += (" or " if length else "") + f"{s['seconds']:g} s"
    models: dict[str, dict[str, str]] = {}
    for r in doc["runs"]:
        if r.get("model"):
            m = r["model"]
            models.setdefault(m["bundle"], {})[m["variant"]] = f"{m['file']} {_size(m['size_bytes'])} sha256 {m['sha256'][:12]}…"
    lines = [
        f"### edge-bench {doc['created_utc']}",
        "",
        f"- machine: {_machine_line(doc)}",
        f"- frames: {s['source_description']}; {length} measured per run after {s['warmup']} warm-up frames",
        "- models: " + "; ".join(f"{b}: " + ", ".join(f"{v} = {t}" for v, t in sorted(vs.items()))
                                 for b, vs in sorted(models.items())),
        f"- {_load_line(doc)}",
        f"- command: `{doc['command']}`",
        "",
        "| run | fps | e2e p50 ms | e2e p95 | e2e p99 | e2e max | e2e mean | invoke p50 | e2e/invoke | "
        "vs naive p50 | vs naive p95 | peak RSS MiB | dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        if not r["ok"]:
            lines.append(f"| {r['id']} | failed: {r['error']} |" + " |" * 11)
            continue
        e = r["stages_ms"]["end_to_end"]
        vs = r.get("vs_naive") or {}
        lines.append(
            f"| {run_label(r)} | {_f(r['fps'], 1)} | {_f(e['p50'])} | {_f(e['p95'])} | {_f(e['p99'])} | {_f(e['max'])} | "
            f"{_f(e['mean'])} | {_f(r['raw_invoke_ms']['p50'])} | {_x(r['e2e_over_invoke_p50'])} | "
            f"{_x(vs.get('p50'))} | {_x(vs.get('p95'))} | {_f(r['peak_rss_mib'], 0)} | {r['dropped']} |")
    frame_runs = [r for r in doc["runs"] if r["ok"] and not _lanes(r)]
    lanes = [r for r in doc["runs"] if r["ok"] and _lanes(r)]
    if frame_runs or not lanes:
        lines += [
            "",
            "Per stage, p50 / p95 ms (capture_wait = reading the frame: decode for files, waiting for a live frame):",
            "",
            "| run | " + " | ".join(STAGES) + " |",
            "|---|" + "---:|" * len(STAGES),
        ]
    for r in frame_runs:
        cells = [f"{_f(r['stages_ms'][st]['p50'])} / {_f(r['stages_ms'][st]['p95'])}" for st in STAGES]
        lines.append(f"| {run_label(r)} | " + " | ".join(cells) + " |")
    if lanes:
        names = lanes[0].get("stage_names") or {}
        lines += [
            "",
            "Per-lane runs (`[spray]` in the config: edge-run's per-lane processor), per stage, p50 / p95 ms:",
            "",
            "| run | " + " | ".join(names.get(st, st) for st in STAGES) + " |",
            "|---|" + "---:|" * len(STAGES),
        ]
        for r in lanes:
            cells = [f"{_f(r['stages_ms'][st]['p50'])} / {_f(r['stages_ms'][st]['p95'])}" for st in STAGES]
            lines.append(f"| {run_label(r)} | " + " | ".join(cells) + " |")
        lines += ["", "Per-lane runs, from the measured latency (end-to-end p95 + the scheduler's switching p95):", ""]
        for r in lanes:
            sp = r.get("spray") or {}
            if sp:
                gate = ""
                if sp.get("gated_tiles_per_frame") is not None:  # files before the vegetation gate lack it
                    gate = (f", {sp['gated_tiles_per_frame']} of {sp['tiles_per_frame']} tiles bare (vegetation gate "
                            f"{_f(sp['gate_ms']['p50'])} / {_f(sp['gate_ms']['p95'])} ms, in preprocess)")
                lines.append(f"- {run_label(r)}: {sp['max_speed_line']} ({sp['invokes_per_frame']} invoke(s) per "
                             f"frame{gate}; {sp['speed_note']})")
        refs = [r for r in lanes if r.get("reference")]
        if refs:
            lines += ["", "Per-lane speed: end-to-end p95 / the p50 of one invoke of the reference model "
                          f"({refs[0]['reference']['bundle']}, {refs[0]['reference']['input']}, measured in each run's "
                          "process after it):", "",
                      "| run | e2e p50 ms | e2e p95 ms | reference invoke p50 ms | e2e p95 / reference p50 |",
                      "|---|---:|---:|---:|---:|"]
            for r in refs:
                e = r["stages_ms"]["end_to_end"]
                lines.append(f"| {run_label(r)} | {_f(e['p50'])} | {_f(e['p95'])} | "
                             f"{_f(r['reference']['invoke_ms']['p50'])} | {_x(r['e2e_p95_over_reference_invoke_p50'])} |")
        lines += ["", "The frame-rate bound of a file or generated source is the processing rate, not a camera's. "
                  "vs naive is not given for per-lane runs (the naive loop classifies one whole frame); their "
                  "invoke p50 is the invoke(s) of all of a frame's tiles."]
    webs = [r for r in doc["runs"] if r["ok"] and r.get("web")]
    if webs:
        lines += ["", "Live view (`--web-client`: one client reading the stream, every other block of frames of the "
                  "same run):", "",
                  "| run | frames without / with | e2e p50 without / with ms | e2e p95 without / with ms | "
                  "p95 ratio | stream cap | overlay + JPEG p50 / p95 ms | JPEGs encoded / received |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for r in webs:
            w = r["web"]
            lines.append(f"| {run_label(r)} | {w['frames_without']} / {w['frames_with']} | "
                         f"{_f(w['e2e_p50_without_ms'])} / {_f(w['e2e_p50_with_ms'])} | "
                         f"{_f(w['e2e_p95_without_ms'])} / {_f(w['e2e_p95_with_ms'])} | {_x(w['p95_ratio'])} | "
                         f"{w['stream_fps']:g} fps, {w['stream_width']} px, q{w['jpeg_quality']} | "
                         f"{_f(w.get('encode_ms_p50'))} / {_f(w.get('encode_ms_p95'))} | "
                         f"{w['jpegs_encoded']} / {w['jpegs_received']} |")
    lines += ["", "vs naive: our end-to-end percentile / the naive loop's (below 1× = faster). "
              "e2e/invoke: our end-to-end p50 / the bare interpreter invoke p50 (1× = no overhead at all)."]
    return "\n".join(lines) + "\n"


def _key(r: dict) -> tuple:
    m = r.get("model") or {}
    return (m.get("bundle", r["id"]), r["role"], m.get("variant", ""), r["threads"], r.get("mode", "frame"),
            _scoring(r))


def _scoring(r: dict) -> str:
    """The --scoring a run was asked for (tiles, frame@S; "" = the config's): the end of its id (``runs.run_id``),
    not what it did at run time (a tiles run batched on one machine and one by one on another is the same run)."""
    _, sep, tail = r["id"].rpartition(f"/t{r['threads']}")
    return tail.lstrip("/") if sep else ""


def _runs_by_key(doc: dict, name: str) -> dict[tuple, dict]:
    """A file's successful runs by what they measured; two of the same in one file cannot be matched."""
    out: dict[tuple, dict] = {}
    for r in doc["runs"]:
        if not r["ok"]:
            continue
        k = _key(r)
        if k in out:
            raise ConfigError(f"{name} holds two runs of {k[0]}: {run_label(r)} ({out[k]['id']} and {r['id']})",
                              "compare files written by edge-bench --json as they are (not merged or edited)")
        out[k] = r
    return out


def compare_markdown(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Side by side: runs matched by bundle, role, variant and threads; B/A ratios."""
    ra, rb = _runs_by_key(a, name_a), _runs_by_key(b, name_b)
    keys = list(ra) + [k for k in rb if k not in ra]
    lines = [
        f"### edge-bench compare: A = {name_a}, B = {name_b}",
        "",
        f"- A ({a['created_utc']}): {_machine_line(a)}; {a['settings']['source_description']}; {_load_line(a)}",
        f"- B ({b['created_utc']}): {_machine_line(b)}; {b['settings']['source_description']}; {_load_line(b)}",
        "",
        "| run | A fps | B fps | A e2e p50 ms | B e2e p50 | B/A p50 | A e2e p95 | B e2e p95 | B/A p95 | "
        "A invoke p50 | B invoke p50 | A RSS MiB | B RSS MiB | same model |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for k in keys:
        x, y = ra.get(k), rb.get(k)
        any_r = x or y
        label = f"{k[0]}: {run_label(any_r)}"

        def g(r, *path):
            if r is None:
                return None
            for p in path:
                r = r[p]
            return r

        same = "—" if not (x and y) else ("yes" if x["model"]["sha256"] == y["model"]["sha256"] else "no")
        lines.append(
            f"| {label} | {_f(g(x, 'fps'), 1)} | {_f(g(y, 'fps'), 1)} | "
            f"{_f(g(x, 'stages_ms', 'end_to_end', 'p50'))} | {_f(g(y, 'stages_ms', 'end_to_end', 'p50'))} | "
            f"{_x(ratio(g(y, 'stages_ms', 'end_to_end', 'p50'), g(x, 'stages_ms', 'end_to_end', 'p50')))} | "
            f"{_f(g(x, 'stages_ms', 'end_to_end', 'p95'))} | {_f(g(y, 'stages_ms', 'end_to_end', 'p95'))} | "
            f"{_x(ratio(g(y, 'stages_ms', 'end_to_end', 'p95'), g(x, 'stages_ms', 'end_to_end', 'p95')))} | "
            f"{_f(g(x, 'raw_invoke_ms', 'p50'))} | {_f(g(y, 'raw_invoke_ms', 'p50'))} | "
            f"{_f(g(x, 'peak_rss_mib'), 0)} | {_f(g(y, 'peak_rss_mib'), 0)} | {same} |")
    failed = [f"- failed in {side}: {one_line(r['id'] or run_label(r))}: "
              f"{one_line(str(r.get('error') or 'no error recorded'))}"
              for side, doc in (("A", a), ("B", b)) for r in doc["runs"] if not r["ok"]]
    lines += ["", "B/A below 1× = B is faster. Runs present in one file only (or failed) show — for the other."]
    lines += ["", *failed] if failed else []
    return "\n".join(lines) + "\n"


def compare_files(path_a: str | Path, path_b: str | Path) -> str:
    return compare_markdown(load_document(path_a), load_document(path_b), str(path_a), str(path_b))
