"""``medseg reproduce``: run a list of recipes to their results and set the papers' numbers beside ours.

For each recipe (``configs/<dataset>/<network>[_cpu].yaml``, named without the extension, e.g.
``drive/dscnet_cpu``) it trains and evaluates with the recipe's protocol
(:func:`medseg.workflows.train.train`) into ``OUT/<dataset>-<network>[_cpu]/``, then writes, after
every recipe (so an interrupted list keeps what it finished):

* ``OUT/reproduction.json``: :data:`SCHEMA` (JSON Schema, checked with ``jsonschema`` on write);
  one entry per recipe: network, parameters, dataset, split, protocol, our headline metrics
  (:func:`medseg.workflows.protocols.headline`), the recipe's ``paper:`` block (source, table,
  protocol, values, selected_on_test), training steps, train / evaluation / wall seconds, and
  the hardware (processor, usable cores, threads, measured float32 matmul FLOP/s, torch, device);
* ``OUT/reproduction.md``: the table in Markdown, ours beside the paper's;
* ``OUT/reproduction.html`` and ``.csv``: the same rows, sortable
  (:func:`medseg.viz.report.write_comparison`).

A recipe whose run already finished (``train_summary.json`` and its evaluation's
``metrics.json``) is kept, not retrained; an unfinished one is continued with ``resume=True``
(``--resume``) or refused before anything trains. A run whose recipe has changed since (any key
but the data's location, a ``--max-steps`` stop and the ``paper:`` block) is refused before
anything trains, naming the keys, so a table never mixes an old recipe's numbers with a new one's. A recipe whose dataset folder is absent under
``data_root`` is skipped with one line, and one whose training or evaluation fails with a
medseg error (bad data, say) is recorded as failed with the message; the others still run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from medseg.atomic import write_text_atomic
from medseg.errors import ConfigError, MedsegError
from medseg.rundir import RunDir

#: Environment variable naming the recipes folder (default: the source checkout's ``configs/``).
CONFIGS_ENV = "MEDSEG_CONFIGS"

#: JSON Schema of ``reproduction.json``.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["medseg_version", "hardware", "recipes"],
    "$defs": {
        "hardware": {
            "type": "object",
            "required": ["processor", "usable_cores", "threads", "matmul_flops_per_s", "torch", "device"],
            "properties": {
                "processor": {"type": "string"},
                "usable_cores": {"type": "integer", "minimum": 1},
                "threads": {"type": "integer", "minimum": 1},
                "matmul_flops_per_s": {"type": "number", "minimum": 0},
                "torch": {"type": "string"},
                "device": {"type": "string"},
            },
        },
    },
    "properties": {
        "medseg_version": {"type": "string"},
        "hardware": {"$ref": "#/$defs/hardware"},
        "recipes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["recipe", "status"],
                "properties": {
                    "recipe": {"type": "string"},
                    "status": {"enum": ["trained", "kept", "skipped", "failed"]},
                    "reason": {"type": "string"},
                    "run": {"type": "string"},
                    "network": {"type": "string"},
                    "parameters": {"type": ["integer", "null"]},
                    "dataset": {"type": "string"},
                    "split": {"type": "string"},
                    "protocol": {"type": "string"},
                    "ours": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                    "paper": {"type": "object"},
                    "steps": {"type": ["integer", "null"]},
                    "train_seconds": {"type": ["number", "null"]},
                    "eval_seconds": {"type": ["number", "null"]},
                    "wall_seconds": {"type": ["number", "null"]},
                    "resumed": {"type": "boolean"},
                    "hardware": {"$ref": "#/$defs/hardware"},
                },
                "allOf": [
                    {
                        "if": {"properties": {"status": {"enum": ["trained", "kept"]}}},
                        "then": {
                            "required": [
                                "network",
                                "parameters",
                                "dataset",
                                "split",
                                "protocol",
                                "ours",
                                "paper",
                                "steps",
                                "train_seconds",
                                "run",
                            ]
                        },
                    }
                ],
            },
        },
    },
}


def recipes_dir() -> Path:
    """The folder of recipe files: ``$MEDSEG_CONFIGS``, else the source checkout's ``configs/``,
    else ``./configs``.

    Raises:
        ConfigError: none of them exists.
    """
    candidates = [Path(os.environ[CONFIGS_ENV])] if os.environ.get(CONFIGS_ENV) else []
    candidates += [Path(__file__).resolve().parents[3] / "configs", Path("configs")]
    for c in candidates:
        if c.is_dir():
            return c
    raise ConfigError(
        f"no recipes folder: looked in {', '.join(map(str, candidates))}; pass --configs DIR or set ${CONFIGS_ENV}"
    )


def list_recipes(
    configs: Path, names: str | Sequence[str] | None = None, all_cpu: bool = False, all_recipes: bool = False
) -> list[str]:
    """Recipe names (``<dataset>/<file stem>``) to run.

    Args:
        configs: the recipes folder.
        names: a comma-separated string or a list of names (``drive/dscnet_cpu``; a ``.yaml``
            ending is accepted).
        all_cpu: every ``*_cpu.yaml``; all_recipes: every recipe (GPU scale too).

    Raises:
        ConfigError: no selection, or a name without a recipe file (the closest names suggested).
    """
    known = sorted(str(p.relative_to(configs).with_suffix("")) for p in configs.glob("*/*.yaml"))
    if all_recipes:
        return known
    if all_cpu:
        return [n for n in known if n.endswith("_cpu")]
    if not names:
        raise ConfigError("medseg reproduce: name the recipes (--recipes drive/dscnet_cpu,...), or --all-cpu, or --all")
    wanted = [n.strip().removesuffix(".yaml") for n in (names.split(",") if isinstance(names, str) else names)]
    from medseg.errors import did_you_mean

    for n in wanted:
        if n and n not in known:
            raise ConfigError(f"--recipes: no recipe {n!r} in {configs}{did_you_mean(n, known)}")
    return [n for n in wanted if n]


def _keys(overrides: Sequence[str]) -> set[str]:
    return {o.split("=", 1)[0].strip() for o in overrides}


def _dataset_folder(cfg) -> str:
    """The usual folder name of the recipe's dataset (``DRIVE``), or "" for generated data."""
    from medseg.data import DATASETS, list_datasets
    from medseg.data.files import FileDataset

    list_datasets()  # imports every dataset module, so each is registered
    cls = DATASETS.get(cfg.data.dataset)
    return cls.folder if isinstance(cls, type) and issubclass(cls, FileDataset) else ""


def _dataset_absent(cfg, folder: str, data_root: Path | None) -> str | None:
    """Why the recipe's dataset (usual folder name ``folder``, "" if generated) cannot be found
    (None: it is there, or generated)."""
    if not folder or cfg.data.root is not None:
        return None
    if data_root is None:
        return f"no --data-root given for {folder}"
    if not (data_root / folder).is_dir():
        return f"dataset {cfg.data.dataset} absent: no folder {data_root / folder}"
    return None


#: Keys whose value may differ between a recipe and its earlier run without making that run stale:
#: where the data lives on this machine, ``--max-steps`` (a stop, not the recipe) and the ``paper:``
#: block (read from the recipe as it is now).
_MAY_DIFFER = ("data.root", "train.max_steps", "paper")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def _stale_keys(cfg, run: Path) -> list[str]:
    """The keys in which the recipe ``cfg`` differs from the config its run in ``run`` trained
    with (``run/config.yaml``; none if absent), :data:`_MAY_DIFFER` aside."""
    import yaml

    saved = RunDir(run).config
    if not saved.is_file():
        return []
    old, new = _flat(yaml.safe_load(saved.read_text()) or {}), _flat(cfg.to_dict())
    return sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and not any(k == m or k.startswith(m + ".") for m in _MAY_DIFFER)
    )


def _finished(run: Path, split: str) -> dict | None:
    """The metrics.json content of ``run``'s evaluation of ``split`` when the run trained to its
    end and was evaluated, else None."""
    rd = RunDir(run)
    metrics = rd.evaluation(split).metrics
    if rd.summary.is_file() and metrics.is_file():
        return json.loads(metrics.read_text())
    return None


#: The file in each run directory that records how ``medseg reproduce`` finished it
#: (:attr:`medseg.rundir.RunDir.reproduce_record`).
RUN_RECORD = RunDir(".").reproduce_record.name


def _entry(recipe: str, run: Path, cfg, metrics: dict, status: str) -> dict[str, Any]:
    """One recipe's row: the run's summary and metrics, with the wall time and hardware of the
    invocation that finished it (``RUN_RECORD``; absent for runs finished before it existed)."""
    from medseg.workflows.protocols import headline

    rd = RunDir(run)
    summary = json.loads(rd.summary.read_text())
    record = json.loads(rd.reproduce_record.read_text()) if rd.reproduce_record.is_file() else {}
    timing = metrics.get("timing_s") or {}
    entry = {
        "recipe": recipe,
        "status": status,
        "run": str(run),
        "network": cfg.model.name,
        "parameters": summary.get("parameters"),
        "dataset": cfg.data.dataset,
        "split": cfg.eval.split,
        "protocol": metrics.get("protocol", "vessel"),
        "ours": headline(metrics),
        "paper": dict(cfg.paper or {}),
        "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "eval_seconds": round(sum(v for v in timing.values() if isinstance(v, (int, float))), 3) if timing else None,
        "wall_seconds": record.get("wall_seconds"),
    }
    for key in ("resumed", "hardware"):
        if key in record:
            entry[key] = record[key]
    return entry


def _record_run(run: Path, recipe: str, wall: float, resumed: bool) -> None:
    """Write ``run/RUN_RECORD``: the recipe, this invocation's wall seconds (train + evaluation;
    for a resumed run only the part after the resume), whether it resumed, and the hardware
    measured now, on the machine that finished the run."""
    from medseg.machine import describe

    record = {
        "recipe": recipe,
        "wall_seconds": round(wall, 1),
        "resumed": resumed,
        "hardware": describe(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(RunDir(run).reproduce_record, json.dumps(record, indent=2) + "\n")


def reproduce(
    recipes: Sequence[str],
    out: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    resume: bool = False,
    configs: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate each recipe in turn; write ``reproduction.json`` / ``.md`` / ``.html``.

    Args:
        recipes: names as :func:`list_recipes` returns them.
        out: the folder holding one run directory per recipe and the results files.
        data_root: the folder holding every dataset under its usual folder name
            (``../shared/data``: ``DRIVE/``, ``Kvasir-SEG/``, ...).
        resume: continue unfinished runs (finished ones are always kept).
        configs: the recipes folder (default :func:`recipes_dir`).
        overrides: ``KEY=VALUE`` overrides applied to every recipe (tests shorten runs with them).
        log: where progress lines go.

    Returns:
        The reproduction.json content (:data:`SCHEMA`).

    Raises:
        ConfigError: a bad recipe or override; an unfinished run without ``resume`` (checked for
            every recipe before the first one trains).
    """
    from medseg import __version__
    from medseg.config import load_config
    from medseg.workflows.train import train

    out = Path(out)
    configs = Path(configs) if configs is not None else recipes_dir()
    root = Path(data_root).expanduser() if data_root is not None else None
    plan = []
    for name in recipes:
        path = configs / f"{name}.yaml"
        cfg = load_config(path, list(overrides))
        folder = _dataset_folder(cfg)
        absent = _dataset_absent(cfg, folder, root)
        if absent is None and root is not None and folder and "data.root" not in _keys(overrides):
            cfg = load_config(path, [*overrides, f"data.root={root / folder}"])
        run = out / name.replace("/", "-")
        if absent is None and (stale := _stale_keys(cfg, run)):
            shown = ", ".join(stale[:6]) + (f" and {len(stale) - 6} more" if len(stale) > 6 else "")
            raise ConfigError(
                f"{run} was trained with another version of {name} (differs in {shown}); remove "
                "that run directory to retrain it, or pass --out for a new list (nothing was trained)"
            )
        if (
            absent is None
            and not resume
            and _finished(run, cfg.eval.split) is None
            and RunDir(run).checkpoints.is_dir()
        ):
            raise ConfigError(
                f"{run} holds an unfinished run of {name}; pass --resume to continue it (nothing was trained)"
            )
        plan.append((name, cfg, run, absent))

    from medseg.machine import describe

    doc: dict[str, Any] = {"medseg_version": __version__, "hardware": describe(), "recipes": []}
    for i, (name, cfg, run, absent) in enumerate(plan, 1):
        head = f"medseg reproduce [{i}/{len(plan)}] {name}"
        if absent is not None:
            log(f"{head}: skipped ({absent})")
            doc["recipes"].append({"recipe": name, "status": "skipped", "reason": absent})
        elif (metrics := _finished(run, cfg.eval.split)) is not None:
            log(f"{head}: finished earlier, kept ({run})")
            doc["recipes"].append(_entry(name, run, cfg, metrics, "kept"))
        else:
            log(f"{head}: training {cfg.model.name} on {cfg.data.dataset} -> {run}")
            t0 = time.perf_counter()
            started = RunDir(run).config.is_file()  # an earlier, unfinished attempt: continue it
            try:
                summary = train(cfg, run, resume=started, evaluate_after=True, show_progress=False)
            except MedsegError as exc:  # one recipe's bad data or config does not stop the others
                log(f"{head}: failed: {exc}")
                doc["recipes"].append({"recipe": name, "status": "failed", "reason": str(exc)})
            else:
                _record_run(run, name, time.perf_counter() - t0, started)
                doc["recipes"].append(_entry(name, run, cfg, summary["eval"], "trained"))
        write_results(doc, out)
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Check ``doc`` against :data:`SCHEMA` (``jsonschema``).

    Raises:
        ConfigError: the document does not match; the message gives the path and the problem.
    """
    import jsonschema

    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"reproduction.json at {where}: {exc.message}") from None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _gflops(entry: dict[str, Any], doc: dict[str, Any]) -> str:
    hw = entry.get("hardware") or doc["hardware"]
    return f"{hw['matmul_flops_per_s'] / 1e9:.0f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The recipes of a reproduction.json as a Markdown table: recipe, network, parameters,
    data / split, protocol, our headline numbers, the paper's values (``*`` after a paper that
    selected on the test set), steps, train and evaluation seconds and the float32 matmul GFLOP/s
    of the machine that ran each recipe; skipped and failed recipes with their reason."""
    hw = doc["hardware"]
    lines = [
        f"Hardware: {hw['processor']}, {hw['usable_cores']} usable cores, {hw['threads']} threads, float32 "
        f"matmul {hw['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s (measured by this invocation; the GFLOP/s "
        f"column is each run's own), torch {hw['torch']}, {hw['device']}.",
        "",
        "| recipe | network | parameters | data (split) | protocol | ours | paper | steps | train s | eval s "
        "| GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["recipes"]:
        if r["status"] in ("skipped", "failed"):
            lines.append(f"| {r['recipe']} | {r['status']}: {r.get('reason', '')} | | | | | | | | | |")
            continue
        paper = r.get("paper") or {}
        values = paper.get("values") or {}
        shown = [k for k in values if k in r["ours"]] or list(r["ours"])[:4]
        ours = ", ".join(f"{k} {_fmt(r['ours'].get(k))}" for k in shown)
        theirs = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()) or "none published"
        if paper.get("selected_on_test"):
            theirs += " *"
        lines.append(
            f"| {r['recipe']} | {r['network']} | {_fmt(r['parameters'])} | {r['dataset']} ({r['split']}) | "
            f"{r['protocol']} | {ours} | {theirs} | {_fmt(r['steps'])} | {_seconds(r['train_seconds'])} | "
            f"{_seconds(r.get('eval_seconds'))} | {_gflops(r, doc)} |"
        )
    lines += ["", "`*`: the paper selected its checkpoint on the test set."]
    return "\n".join(lines) + "\n"


#: Which headline key is "Dice" and which "IoU" in each protocol's comparison table.
_DICE_IOU = {
    "vessel": ("dice", "iou"),
    "octa": ("dice", "iou"),
    "polyp": ("mdice", "miou"),
    "volume": ("dice", None),
    "multiclass": ("dice", "iou"),
}


def comparison_tables(doc: dict[str, Any]) -> str:
    """Per dataset, the networks side by side with the same budget: network, recipe, Dice, IoU,
    parameters, train minutes (the tutorials' comparison tables), best Dice first.

    Dice and IoU are each protocol's headline ones: vessel FOV per-image mean, polyp mDice / mIoU
    over 256 thresholds, OCTA per-image Otsu mean, volume foreground mean; "-" where the protocol
    has no IoU.
    """
    by_data: dict[str, list[dict[str, Any]]] = {}
    for r in doc["recipes"]:
        if r["status"] in ("trained", "kept"):
            by_data.setdefault(r["dataset"], []).append(r)
    parts = []
    for dataset, rows in by_data.items():
        dice_key, iou_key = _DICE_IOU.get(rows[0]["protocol"], ("dice", "iou"))
        rows = sorted(rows, key=lambda r: -(r["ours"].get(dice_key) or 0.0))
        parts += [
            f"{dataset} ({rows[0]['protocol']} protocol, {rows[0]['split']} split):",
            "",
            "| network | recipe | Dice | IoU | parameters | train min |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            iou = _fmt(r["ours"].get(iou_key)) if iou_key else "-"
            minutes = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f}"
            parts.append(
                f"| {r['network']} | {r['recipe']} | {_fmt(r['ours'].get(dice_key))} | {iou} | "
                f"{_fmt(r['parameters'])} | {minutes} |"
            )
        parts.append("")
    return "\n".join(parts)


#: The markers around a README section generated from a results file (:func:`rewrite_section`).
README_BEGIN = "<!-- generated from {name} by `{command}`: begin -->"
README_END = "<!-- generated from {name} by `{command}`: end -->"

#: What writes the README section of a reproduction file (the markers name it).
README_COMMAND = "medseg reproduce --readme"


def readme_section(doc: dict[str, Any]) -> str:
    """The README's results section for a reproduction.json: :func:`markdown_table` then
    :func:`comparison_tables`."""
    return markdown_table(doc) + "\n" + comparison_tables(doc)


def rewrite_section(readme: str | os.PathLike, name: str, command: str, body: str) -> bool:
    """Replace what lies between the markers :data:`README_BEGIN` and :data:`README_END` (for the
    results file ``name`` and the ``command`` that writes it) in ``readme`` with ``body``,
    atomically.

    Returns:
        True if the README changed.

    Raises:
        ConfigError: the README lacks either marker (the message names the lines to add).
    """
    readme = Path(readme)
    begin, end = README_BEGIN.format(name=name, command=command), README_END.format(name=name, command=command)
    text = readme.read_text()
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        raise ConfigError(f"{readme}: no section for {name}; add the lines\n{begin}\n{end}")
    head, rest = text.split(begin, 1)
    new = f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}"
    if new == text:
        return False
    write_text_atomic(readme, new)
    return True


def update_readme(readme: str | os.PathLike, results: str | os.PathLike) -> bool:
    """Rewrite the README section generated from the reproduction file ``results`` with its
    :func:`readme_section` (:func:`rewrite_section`).

    Returns:
        True if the README changed.

    Raises:
        ConfigError: the results file does not validate, or the README lacks either marker.
    """
    results = Path(results)
    doc = json.loads(results.read_text())
    validate(doc)
    return rewrite_section(readme, results.name, README_COMMAND, readme_section(doc))


def write_results(doc: dict[str, Any], out: str | os.PathLike) -> None:
    """Validate ``doc`` and write ``reproduction.json``, ``.md``, ``.csv`` and ``.html`` in ``out``,
    atomically."""
    from medseg.viz.report import write_comparison

    validate(doc)
    out = Path(out)
    write_text_atomic(out / "reproduction.json", json.dumps(doc, indent=2) + "\n")
    write_text_atomic(out / "reproduction.md", markdown_table(doc) + "\n" + comparison_tables(doc))
    rows = []
    for r in doc["recipes"]:
        row = {
            "run": r["recipe"],
            "status": r["status"],
            "network": r.get("network"),
            "dataset": r.get("dataset"),
            "protocol": r.get("protocol"),
            "parameters": r.get("parameters"),
        }
        row.update(r.get("ours") or {})
        row.update({f"paper {k}": v for k, v in ((r.get("paper") or {}).get("values") or {}).items()})
        row.update({"steps": r.get("steps"), "train s": r.get("train_seconds")})
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    write_comparison([{k: row.get(k) for k in keys} for row in rows], out / "reproduction")


__all__ = [
    "RUN_RECORD",
    "SCHEMA",
    "comparison_tables",
    "list_recipes",
    "markdown_table",
    "readme_section",
    "recipes_dir",
    "reproduce",
    "update_readme",
    "validate",
    "write_results",
]
