"""report.md and the manifest's metrics summary, from the run's metrics document."""

from __future__ import annotations

from typing import TYPE_CHECKING

from train import robustness
from train.augment import describe_recorded
from train.evaluate import confusion_text, pct, per_class_table, rate_str, summary_lines, sweep_table

if TYPE_CHECKING:
    from train.evaluate import GateResult
    from train.fit import FitConfig
    from train.runs import DataConfig, ExportConfig


def _short(m: dict) -> dict:
    return {
        "species_accuracy": round(m["species_accuracy"], 4),
        "crop_vs_weed_accuracy": round(m["crop_vs_weed_accuracy"], 4),
        "weed_miss_rate": None if m["weed_miss"]["rate"] is None else round(m["weed_miss"]["rate"], 4),
        "weed_miss_ci95": [round(v, 4) for v in m["weed_miss"]["ci95"]],
        "crop_sprayed_rate": None if m["crop_sprayed"]["rate"] is None else round(m["crop_sprayed"]["rate"], 4),
        "crop_sprayed_ci95": [round(v, 4) for v in m["crop_sprayed"]["ci95"]],
        "background_fired_rate": m["background"]["fired"]["rate"],
        "background_photos": m["n_background"],
        "plant_photos": m["n_plant_photos"],
    }


def summary_metrics(evals: dict, main: str, gate: GateResult) -> dict:
    """The compact metrics stored in manifest.json (the full set is in metrics.json)."""
    out = {
        "split": "test (held out by similarity group)",
        "threshold_chosen_on": "validation",
        "quant_gate_passed": gate.passed,
    }
    for q, e in evals.items():
        out[q] = _short(e["test"]) | {"size_bytes": e["size_bytes"], "threshold": e["threshold"]}
        lat = e.get("latency", {}).get("2_threads")
        if lat:
            out[q]["invoke_p50_ms_2_threads"] = round(lat["p50_ms"], 3)
    out["main"] = main
    return out


def render(doc: dict, ec: ExportConfig, fc: FitConfig, dc: DataConfig) -> str:
    """report.md of a bundle, from its metrics document and the run's settings."""
    sections = (
        _title(doc, ec),
        _reproduce(doc["training"]),
        _test_result(doc),
        _per_class(doc),
        _confusion_matrix(doc),
        _robustness(doc["robustness"]),
        _other_conditions(doc.get(robustness.CONDITIONS["other"].key)),
        _threshold_sweep(doc),
        _data(doc),
        _model_and_training(doc, fc, dc),
        _caveats(),
        _licence(ec),
    )
    return "\n".join(line for section in sections for line in section)


def _title(doc: dict, ec: ExportConfig) -> list[str]:
    return [f"# {ec.name}: training report", "", doc.get("description", ""), ""]


def _reproduce(t: dict) -> list[str]:
    soup = t.get("soup")
    if soup:  # train.soup: each parent's command, then the soup's
        return [
            "## Reproduce",
            "",
            f"A weight soup: the mean of the weights of {len(soup['parents'])} bundles, each made by its command "
            "(in a checkout of its own, or with a --name of its own), then averaged:",
            "",
            "```sh",
            *(p["command"] + "   # " + p["bundle"] for p in soup["parents"]),
            soup["command"],
            "```",
            "",
            f"Seed {t['seed']}; averaged {t['started']}. The first command's split and recipe are the bundle's "
            "`training.command`.",
            "",
        ]
    return [
        "## Reproduce",
        "",
        "```sh",
        t["command"],
        "```",
        "",
        f"Seed {t['seed']}; started {t['started']}; {t['seconds']} s of training on this machine. "
        "The same command gives the same metrics within noise (the bytes of the model may differ).",
        "",
    ]


def _main_test(doc: dict) -> dict:
    """The main model's test metrics."""
    return doc["models"][doc["main_model"]]["test"]


def _test_result(doc: dict) -> list[str]:
    main = doc["main_model"]
    e = doc["models"][main]
    lines = [
        f"## Result on the test split ({main} model, the one `edge-run` loads)",
        "",
        "Test photos are held out by similarity group (near-identical frames never straddle splits); "
        f"the operating threshold {e['threshold']:.2f} on the summed weed probability was chosen on the "
        "validation split only"
        + (f" ({e['threshold_rule']})." if e.get("threshold_rule") else ".")
        + " The manifest's `rule` records it"
        + (f", with a crop veto at crop probability {e['test']['crop_veto']:.2f}."
           if e["test"].get("crop_veto") is not None else ", without a crop veto (`edge.decide.rule`)."),
        "",
    ]
    lines += _threshold_rechosen(doc["training"])
    lines += _rule_choice(e.get("rule_choice"))
    lines += [f"- {s}" for s in summary_lines(e["test"])]
    lines += ["", *_models_table(doc["models"]), ""]
    lines += _gate(doc["gate"])
    return lines


def _rule_choice(choice: dict | None) -> list[str]:
    """The chosen rule on each validation row (``train.rulechoice``): what it was chosen on, with its limits."""
    if not choice:
        return []

    def cell(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    lines = ["The rule on each validation row it was chosen on "
             f"({'limits met' if choice['met'] else '**limits NOT met**'}; crop sprayed at most "
             f"{100 * choice['limits']['clean']:g} % clean, {100 * choice['limits']['perturbed']:g} % perturbed):", "",
             "| validation row | weed miss | crop sprayed | background fired |", "|---|---:|---:|---:|"]
    for name, r in choice["rows"].items():
        lines.append(f"| {name} | {cell(r['weed_miss'])} | {cell(r['crop_sprayed'])} | {cell(r['background_fired'])} |")
    return lines + [""]


def _threshold_rechosen(t: dict) -> list[str]:
    """The `weed-train threshold` command that re-chose the threshold, if one did."""
    r = t.get("rethreshold")
    if not r:
        return []
    return [f"The threshold was re-chosen after training (was {r['previous']:.2f}) by:", "", "```sh",
            r["command"], "```", ""]


def _models_table(evals: dict) -> list[str]:
    lines = [
        "| model | file | size | species acc. | crop-vs-weed acc. | weed miss | crop sprayed | background fired | threshold | invoke p50 (1 / 2 threads) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q, e in evals.items():
        tm = e["test"]
        lat = e.get("latency", {})
        l1 = lat.get("1_thread", {}).get("p50_ms")
        l2 = lat.get("2_threads", {}).get("p50_ms")
        lines.append(
            f"| {q} | {e['file']} | {e['size_bytes'] / 1e6:.2f} MB | {pct(tm['species_accuracy'])} | "
            f"{pct(tm['crop_vs_weed_accuracy'])} | {rate_str(tm['weed_miss'])} | {rate_str(tm['crop_sprayed'])} | "
            f"{rate_str(tm['background']['fired'])} | {e['threshold']:.2f} | "
            f"{'n/a' if l1 is None else f'{l1:.2f}'} / {'n/a' if l2 is None else f'{l2:.2f}'} ms |"
        )
    return lines


def _gate(g: dict) -> list[str]:
    return [
        f"Quantisation gate: **{'passed' if g['passed'] else 'FAILED'}** — {g['message']}."
        + ("" if g["passed"] else (" Shipped anyway (--allow-quant-drop)." if g["allowed"] else
                                   " The float32 model is the bundle's main model; int8 is kept as a variant.")),
        "",
        "Latency is LiteRT `invoke()` only (XNNPACK, this 2-core x86 machine), measured through the edge runtime.",
        "",
    ]


def _per_class(doc: dict) -> list[str]:
    return ["## Per class (test)", "", per_class_table(_main_test(doc)), ""]


def _confusion_matrix(doc: dict) -> list[str]:
    return [
        "## Confusion matrix (test; rows true, columns predicted)",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "```",
        confusion_text(_main_test(doc)["confusion_matrix"], doc["labels"]),
        "```",
        "",
    ]


def _robustness(rob: dict) -> list[str]:
    return [
        "## Robustness (test split under camera conditions)",
        "",
        robustness.describe(rob) + " The worst line is the worst value of each column over the perturbed rows "
        "(the clean row is the reference); with this few photos a row's rates carry wide intervals "
        "(see metrics.json → `robustness`).",
        "",
        robustness.table(rob),
        "",
        f"![robustness]({robustness.PNG})",
        "",
    ]


def _other_conditions(rob: dict | None) -> list[str]:
    if not rob:  # a bundle written before the other conditions were scored
        return []
    return [
        "## Other camera conditions (test split)",
        "",
        "Conditions the robustness suite does not name and the rule was not chosen on (saturation, haze, another "
        "soil, chromatic aberration, low light at speed, harsh sun, strong defocus, row noise, a plant larger than "
        "the view: docs/training.md, *Other camera conditions*), the same photos at the same rule "
        "(metrics.json → `robustness_other`).",
        "",
        robustness.table(rob),
        "",
        f"![other camera conditions]({robustness.CONDITIONS['other'].key}.png)",
        "",
    ]


def _threshold_sweep(doc: dict) -> list[str]:
    e = doc["models"][doc["main_model"]]
    refit = any(n.startswith("refit:") for n in doc["training"]["notes"])
    return [
        "## Threshold sweep",
        "",
        ("Validation, scored by the split model before the refit (where the threshold is chosen):"
         if refit else "Validation (where the threshold is chosen):"),
        "",
        sweep_table(e["val"]["sweep"], e["threshold"]),
        "",
        "Test (for information only; never used to choose):",
        "",
        sweep_table(e["test"]["sweep"], e["threshold"]),
        "",
    ]


def _data(doc: dict) -> list[str]:
    t, roles = doc["training"], doc["roles"]
    lines = [
        "## Data",
        "",
        f"- source: `{t['data']}`; groups: `{t['groups']}`; corrupt/unreadable files skipped: {t['corrupt_skipped']}",
        f"- roles: weeds {', '.join(roles['weed'])}; crops {', '.join(roles['crop'])}; "
        f"background {', '.join(roles['background']) or 'none'}",
        "- class weights (balanced, used in the loss): "
        + ", ".join(f"{k} {v:.2f}" for k, v in t["class_weights"].items()),
        f"- int8 calibration: {t['representative_images']} training images",
        "",
        "| class | train | val | test |",
        "|---|---:|---:|---:|",
    ]
    c = t["counts"]
    lines += [f"| {lab} | {c['train'][lab]} | {c['val'][lab]} | {c['test'][lab]} |" for lab in doc["labels"]]
    return lines + [""]


def _model_and_training(doc: dict, fc: FitConfig, dc: DataConfig) -> list[str]:
    return [
        "## Model and training",
        "",
        f"- backbone `{fc.backbone}`, weights `{_weights_source(doc)}`, input {fc.input_size}x{fc.input_size} uint8 RGB "
        f"({dc.resize}); preprocessing in the graph",
        f"- mode `{fc.mode}`: head {fc.head_epochs} epochs at {fc.head_lr:g}, then {fc.epochs} epochs at {fc.lr:g} "
        f"(cosine), unfreeze {'all' if fc.unfreeze < 0 else fc.unfreeze} layers, "
        f"BatchNorm {'trained' if fc.train_batchnorm else 'frozen'}; "
        f"label smoothing {fc.label_smoothing}{_group_loss(fc)}, dropout {fc.dropout}, AdamW weight decay {fc.weight_decay:g}, "
        f"batch {fc.batch_size}, early stopping on val loss (patience {fc.patience}) with best-epoch restore",
        f"- augmentation (training batches only): {describe_recorded(doc['training']['fit']['augment'])}",
        *[f"- {n}" for n in doc["training"]["notes"]],
        "",
    ]


def _group_loss(fc: FitConfig) -> str:
    return f", plus {fc.group_loss:g} x the weed/crop/background cross-entropy" if fc.group_loss else ""


def _caveats() -> list[str]:
    return [
        "## Caveats",
        "",
        "- Greenhouse trays on gravel photographed top-down, 150x150 px: a new field, camera, soil or growth stage "
        "will score lower than this split. Re-measure on your own photos (`weed-train evaluate`).",
        "- black-grass and loose silky-bent look alike (and resemble young wheat); the data has known label noise there.",
        "- The background class is cut from gravel/tray regions of these photos; real bare soil may differ.",
        "",
    ]


def _licence(ec: ExportConfig) -> list[str]:
    return [
        "## Licence and attribution",
        "",
        f"- data: {ec.licence}. {ec.attribution}",
        "- pretrained weights: see the manifest's `weights_source`.",
        "",
    ]


def _weights_source(doc: dict) -> str:
    return doc.get("weights_source", "") or doc["training"].get("weights_source", "")
