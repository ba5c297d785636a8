"""Every recipe names its evaluation protocol and carries the paper's numbers in our metric keys.

For each ``configs/<dataset>/<network>[_cpu].yaml``: it loads; ``eval.protocol`` is written out
(not "auto"), registered and the one of the dataset's community; the OCTA and volume tolerances
are the ones the labels call for; the top-level ``paper:`` block has the fields reports show, and
its ``values`` use headline keys of that protocol with fractions in [0, 1]. A full recipe and its
``_cpu`` variant reproduce the same paper, so they carry the same block. No data is read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from medseg.config import load_config, read_yaml
from medseg.workflows.protocols import PROTOCOLS, get_protocol

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*/*.yaml"))
IDS = [f"{p.parent.name}/{p.stem}" for p in CONFIGS]

#: Dataset (``data.dataset``) -> the protocol of its community.
DATASET_PROTOCOL = {
    "drive": "vessel",
    "chase_db1": "vessel",
    "stare": "vessel",
    "rossa": "octa",
    "octa500": "octa",
    "rose1": "octa",
    "rose2": "octa",
    "kvasir_seg": "polyp",
    "cvc_clinicdb": "polyp",
    "msd": "volume",
}
#: OCTA tolerance kernel (pixels) by dataset: 3 for centerline-level ground truth (OCTA-Net's
#: "DCC & ROSE-2: kernel_size=(3, 3)"), 1 for pixel-level labels. ROSE-1 mixes both (SVC
#: pixel-level, DVC centerline-level), so its recipes are not pinned here.
OCTA_TOLERANCE = {"rossa": 1, "octa500": 1, "rose2": 3}
PAPER_FIELDS = ("source", "table", "protocol", "selected_on_test", "notes")
VOLUME_CLASS_KEY = re.compile(r"^(anterior|posterior)_(dice|hd95|nsd)$")
VOLUME_MEAN_KEYS = {"dice", "hd95", "hd95_pooled", "nsd"}


def _is_distance(key: str) -> bool:
    """Distances in mm (HD95 family): any non-negative value."""
    return "hd95" in key


def _is_count(key: str) -> bool:
    """Topology errors (|beta_k(P) - beta_k(G)|, |chi(P) - chi(G)|): non-negative counts."""
    return key.endswith("_error")


def _allowed_key(protocol: str, key: str) -> bool:
    if protocol == "volume":
        return bool(VOLUME_CLASS_KEY.match(key)) or key in VOLUME_MEAN_KEYS
    return key in get_protocol(protocol).headline_keys


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_recipe_names_its_protocol(path):
    cfg = load_config(path)
    raw_eval = read_yaml(path).get("eval") or {}
    assert "protocol" in raw_eval, f"{path.name}: eval.protocol must be written out, not left to 'auto'"
    protocol = cfg.eval.protocol
    assert protocol in PROTOCOLS, f"{path.name}: eval.protocol {protocol!r} is not registered ({PROTOCOLS.names()})"
    dataset = cfg.data.dataset
    assert dataset in DATASET_PROTOCOL, f"{path.name}: add dataset {dataset!r} to DATASET_PROTOCOL"
    assert protocol == DATASET_PROTOCOL[dataset], (
        f"{path.name}: dataset {dataset} is scored by the {DATASET_PROTOCOL[dataset]} protocol, not {protocol}"
    )
    if protocol == "octa" and dataset in OCTA_TOLERANCE:
        assert cfg.eval.centerline_tolerance == OCTA_TOLERANCE[dataset], (
            f"{path.name}: {dataset} needs eval.centerline_tolerance {OCTA_TOLERANCE[dataset]}"
        )
    if protocol == "volume":
        assert "nsd_tolerance_mm" in raw_eval, f"{path.name}: eval.nsd_tolerance_mm must be written out"
        assert cfg.eval.nsd_tolerance_mm == 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_recipe_paper_block(path):
    cfg = load_config(path)
    paper = cfg.paper
    assert isinstance(paper, dict) and paper, f"{path.name}: no top-level paper: block"
    missing = [k for k in PAPER_FIELDS if k not in paper]
    assert not missing, f"{path.name}: paper block lacks {missing}"
    unknown = set(paper) - {*PAPER_FIELDS, "values"}
    assert not unknown, f"{path.name}: paper block has unknown fields {sorted(unknown)}"
    for k in ("source", "table", "protocol", "notes"):
        assert isinstance(paper[k], str) and paper[k].strip(), f"{path.name}: paper.{k} must be a non-empty string"
    # null: the sources do not say how the paper picked its checkpoint
    assert paper["selected_on_test"] in (True, False, None), (
        f"{path.name}: paper.selected_on_test must be a bool or null"
    )
    values = paper.get("values")
    if values is None:
        return  # no published number: notes say why
    assert isinstance(values, dict) and values, f"{path.name}: paper.values must be a non-empty mapping (or omitted)"
    protocol = cfg.eval.protocol
    for key, value in values.items():
        assert _allowed_key(protocol, str(key)), (
            f"{path.name}: paper.values key {key!r} is not a headline key of the {protocol} protocol"
        )
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (
            f"{path.name}: paper.values.{key} must be a number, got {value!r}"
        )
        if _is_distance(str(key)) or _is_count(str(key)):
            assert value >= 0, f"{path.name}: paper.values.{key} must be >= 0"
        else:
            assert 0.0 <= value <= 1.0, f"{path.name}: paper.values.{key} = {value} is not a fraction (percent?)"


PAIRS = sorted({(p.parent, p.stem.removesuffix("_cpu")) for p in CONFIGS})


@pytest.mark.parametrize("folder,stem", PAIRS, ids=[f"{f.name}/{s}" for f, s in PAIRS])
def test_cpu_variant_has_the_same_paper(folder, stem):
    full, cpu = folder / f"{stem}.yaml", folder / f"{stem}_cpu.yaml"
    if not (full.is_file() and cpu.is_file()):
        pytest.skip(f"{folder.name}/{stem}: no full/_cpu pair")
    a, b = load_config(full), load_config(cpu)
    assert a.paper == b.paper, f"{folder.name}: {full.name} and {cpu.name} carry different paper blocks"
    assert a.eval.protocol == b.eval.protocol
    assert a.eval.centerline_tolerance == b.eval.centerline_tolerance
    assert a.eval.nsd_tolerance_mm == b.eval.nsd_tolerance_mm
