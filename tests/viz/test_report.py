"""Tests of medseg.viz.report: static HTML reports and run comparisons, on synthetic run dirs.

No training: every run directory is written by hand following the run-directory contract
(config.yaml, train_summary.json, eval/<split>/metrics.json, per_image.csv / per_case.csv,
figures/*.png). The browser tests render the report in headless Chromium and are skipped when
no Chromium is installed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from medseg.errors import DataError, MedsegError
from medseg.viz import compare_runs, format_comparison, write_comparison, write_report

# --------------------------------------------------------------------------------------------
# a tiny DOM from html.parser
# --------------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag=None):
        for c in self.children:
            if isinstance(c, Node):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)

    def find(self, tag=None, **attrs):
        for n in self.iter(tag):
            if all(
                (n.attrs.get(k.rstrip("_")) or "").split().count(v) if k == "class_" else n.attrs.get(k) == v
                for k, v in attrs.items()
            ):
                yield n

    def first(self, tag=None, **attrs):
        return next(self.find(tag, **attrs), None)


class DOM(HTMLParser):
    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.cur = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(path):
    return DOM(Path(path).read_text(encoding="utf-8")).root


def table(root, table_id):
    """(header texts, rows of cell texts) of the table with ``id=table_id``."""
    t = root.first("table", id=table_id)
    assert t is not None, f"no table id={table_id!r}"
    head = [th.text().strip() for th in t.first("thead").iter("th")]
    rows = [
        [c.text().strip() for c in tr.children if isinstance(c, Node) and c.tag in ("td", "th")]
        for tr in t.first("tbody").iter("tr")
    ]
    return head, rows


def row_by_label(rows, label):
    found = [r for r in rows if r[0] == label]
    assert found, f"no row {label!r} in {[r[0] for r in rows]}"
    return found[0]


# --------------------------------------------------------------------------------------------
# synthetic run directories
# --------------------------------------------------------------------------------------------

VESSEL_KEYS = (
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "accuracy",
    "precision",
    "mcc",
    "auc_roc",
    "auc_pr",
    "cldice",
    "betti0_error",
    "betti1_error",
    "euler_error",
)
VESSEL_IDS = ("01_test", "02_test", "03 test")  # one id with a space: its file name is URL-quoted
VESSEL_FOV_DICE = {"01_test": 0.80, "02_test": 0.85, "03 test": 0.75}


def png(path, size=(240, 60), colour=(30, 90, 160)):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):  # some structure, so a screenshot is not one colour
        for y in range(size[1]):
            im.putpixel((x, y), (250, 250, 250))
    im.save(path)
    return path


def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def vessel_block(offset):
    block = {k: round(0.5 + 0.03 * i + offset, 4) for i, k in enumerate(VESSEL_KEYS)}
    block["dice"] = round(0.8123 + offset, 4)
    block["auc_pr"] = None  # undefined values are null
    block["betti0_error"] = 3.5 + offset
    return block


def vessel_metrics(**extra):
    return {
        "protocol": "vessel",
        "dataset": "drive",
        "split": "test",
        "network": "dscnet",
        "checkpoint": "runs/x/checkpoints/best.ckpt",
        "n_images": len(VESSEL_IDS),
        "threshold": 0.5,
        "fov": {"per_image_mean": vessel_block(0.0), "pooled": vessel_block(0.01)},
        "whole_image": {"per_image_mean": vessel_block(0.02), "pooled": vessel_block(0.03)},
        "inference": {"method": "MONAI sliding_window_inference", "roi_size": [64, 64], "overlap": 0.25},
        "conventions": {"binarisation": "pred = prob >= 0.5", "undefined_values": "None (JSON null)"},
        **extra,
    }


def vessel_rows():
    rows = []
    for cid in VESSEL_IDS:
        row = {"id": cid}
        for region in ("fov", "whole_image"):
            for k in VESSEL_KEYS:
                row[f"{region}_{k}"] = 0.6
        row["fov_dice"] = VESSEL_FOV_DICE[cid]
        row["fov_auc_pr"] = None  # written as an empty cell
        row["fov_tp"] = 1000 + int(100 * VESSEL_FOV_DICE[cid])
        rows.append(row)
    return rows


PAPER = {
    "source": "Qi et al., ICCV 2023 (DSCNet)",
    "table": "Table 1",
    "protocol": "DRIVE test, FOV, per-image mean",
    "values": {"dice": 0.8258, "auc_roc": 0.9817, "hd95": 12.5},
    "selected_on_test": True,
    "notes": "numbers as printed <script>alert(1)</script>",
}


@pytest.fixture
def vessel_run(tmp_path):
    run = tmp_path / "dscnet_drive"
    cfg = {
        "model": {"name": "dscnet", "channels": 16},
        "data": {"dataset": "drive"},
        "eval": {"protocol": "vessel", "split": "test"},
        "paper": PAPER,
    }
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run / "train_summary.json").write_text(
        json.dumps(
            {
                "network": "dscnet",
                "dataset": "drive",
                "parameters": 1234567,
                "steps": 400,
                "train_seconds": 3725.4,
                "best_val_dice": 0.801,
            }
        )
    )
    png(run / "figures" / "curves.png", (300, 200), (200, 60, 60))
    ev = run / "eval" / "test"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps(vessel_metrics(), indent=1))
    write_csv(ev / "per_image.csv", vessel_rows())
    for i, cid in enumerate(VESSEL_IDS):
        png(ev / "figures" / f"{cid}_panel.png", (240, 60), (40 * i, 120, 90))
    png(ev / "figures" / "curves.png", (300, 200), (200, 60, 60))
    png(ev / "figures" / "01_test_dsconv_kernels.png", (120, 120), (90, 40, 140))
    png(ev / "figures" / "01_test_dsconv_kernels_zoom.png", (120, 120), (140, 40, 90))
    return run


POLYP_MEAN = {
    "mdice": 0.8976,
    "miou": 0.8401,
    "max_dice": 0.91,
    "wfbeta": 0.881,
    "s_alpha": 0.915,
    "e_phi_mean": 0.944,
    "e_phi_max": 0.951,
    "e_phi_adaptive": 0.93,
    "mae": 0.0301,
    "dice_at_05": 0.8899,
    "iou_at_05": 0.8312,
}


@pytest.fixture
def polyp_run(tmp_path):
    run = tmp_path / "pranet_kvasir"
    ev = run / "eval" / "test"
    ev.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "pranet"}, "data": {"dataset": "kvasir"}}))
    (ev / "metrics.json").write_text(
        json.dumps(
            {
                "protocol": "polyp",
                "dataset": "kvasir",
                "split": "test",
                "network": "pranet",
                "n_images": 2,
                "mean": POLYP_MEAN,
                "conventions": {"thresholds": "256 uniform thresholds"},
            }
        )
    )
    write_csv(
        ev / "per_image.csv", [{"id": "cju0", "mdice": 0.91, "mae": 0.02}, {"id": "cju1", "mdice": 0.88, "mae": 0.04}]
    )
    return run


def volume_metrics():
    per = lambda d, h, n: {"dice": d, "hd95": h, "hd95_pooled": h + 1.0, "nsd": n}  # noqa: E731
    return {
        "protocol": "volume",
        "dataset": "msd_spleen",
        "split": "test",
        "network": "unet3d",
        "n_cases": 2,
        "classes": ["spleen", "tumour"],
        "nsd_tolerance_mm": 2.0,
        "mean": {
            "spleen": per(0.9512, 3.25, 0.97),
            "tumour": per(0.61, 14.5, 0.55),
            "foreground_mean": per(0.7806, 8.875, 0.76),
        },
        "std": {"spleen": per(0.01, 0.5, 0.02), "tumour": per(0.2, 4.0, 0.1), "foreground_mean": per(0.1, 2.0, 0.05)},
        "undefined": {"spleen": {"hd95": 0}, "tumour": {"hd95": 1}},
        "conventions": {"spacing": "from the NIfTI header"},
    }


@pytest.fixture
def volume_run(tmp_path):
    run = tmp_path / "unet3d_spleen"
    ev = run / "eval" / "test"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps(volume_metrics()))
    write_csv(
        ev / "per_case.csv",
        [
            {"id": "spleen_2", "spleen_dice": 0.95, "spleen_hd95": 3.0},
            {"id": "spleen_9", "spleen_dice": 0.9524, "spleen_hd95": ""},
        ],
    )
    (run / "train_summary.json").write_text(json.dumps({"parameters": 4800000}))
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "unet3d"},
                "data": {"dataset": "msd_spleen"},
                "paper": {"source": "nnU-Net", "values": {"dice": 0.75, "hd95": 10.0}, "selected_on_test": False},
            }
        )
    )
    return run


@pytest.fixture
def predictions_out(tmp_path):
    """The folder ``medseg evaluate --predictions DIR -o OUT`` writes: no run around it."""
    out = tmp_path / "nnunet_preds_eval"
    out.mkdir()
    m = vessel_metrics(predictions="/data/nnunet/preds")
    del m["network"], m["checkpoint"], m["inference"]
    (out / "metrics.json").write_text(json.dumps(m))
    write_csv(out / "per_image.csv", vessel_rows())
    png(out / "figures" / "01_test_panel.png")
    return out


# --------------------------------------------------------------------------------------------
# write_report
# --------------------------------------------------------------------------------------------


def image_srcs(root):
    return [img.attrs["src"] for img in root.iter("img")]


def assert_images_exist(root, page):
    srcs = image_srcs(root)
    for src in srcs:
        assert not urllib.parse.urlsplit(src).scheme, f"{src} is not a relative path"
        assert not src.startswith("/"), src
        assert (page.parent / urllib.parse.unquote(src)).is_file(), f"{src} does not exist next to {page}"
    return srcs


def test_vessel_report(vessel_run):
    page = write_report(vessel_run)
    assert page == vessel_run / "report.html"
    text = page.read_text(encoding="utf-8")
    root = parse(page)
    assert root.first("title").text() == "dscnet on drive (test)"
    assert "dscnet on drive (test)" in root.first("h1").text()

    # the protocol's full table: rows = metrics, 4 columns
    head, rows = table(root, "metrics-table")
    assert head == ["metric", "FOV per-image mean", "FOV pooled", "whole image per-image mean", "whole image pooled"]
    assert [r[0] for r in rows] == list(VESSEL_KEYS)
    assert row_by_label(rows, "dice")[1:] == ["0.8123", "0.8223", "0.8323", "0.8423"]
    assert row_by_label(rows, "auc_pr")[1] == "-"
    assert row_by_label(rows, "betti0_error")[1] == "3.5000"
    assert "retinal vessels: FOV and whole image" in text  # the protocol's description
    conventions = root.first("details")
    assert "Conventions" in conventions.text() and "pred = prob &gt;= 0.5" in text

    # ours vs the paper
    head, rows = table(root, "paper-table")
    assert head == ["metric", "ours", "paper", "difference"]
    assert row_by_label(rows, "dice") == ["dice", "0.8123", "0.8258", "-0.0135"]
    assert root.first("table", id="paper-table").first("td", class_="neg").text() == "-0.0135"
    auc = row_by_label(rows, "auc_roc")
    assert auc[2] == "0.9817" and auc[3] == f"{vessel_block(0)['auc_roc'] - 0.9817:+.4f}"
    assert row_by_label(rows, "hd95 (mm)")[1:] == ["not measured", "12.5000", "-"]
    paper = root.first("section", id="paper")
    for s in ("Qi et al., ICCV 2023 (DSCNet)", "Table 1", "DRIVE test, FOV, per-image mean"):
        assert s in paper.text()
    warning = root.first("div", class_="warning")
    assert warning is not None and "selected on the test set" in warning.text()
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    # per-image table, sortable
    table_node = root.first("table", id="per-image")
    assert "sortable" in table_node.attrs["class"].split()
    head, rows = table(root, "per-image")
    assert head[0] == "id" and "fov_dice" in head and "fov_tp" in head
    assert [r[0] for r in rows] == list(VESSEL_IDS)
    col = head.index("fov_dice")
    assert [r[col] for r in rows] == ["0.8000", "0.8500", "0.7500"]
    assert rows[0][head.index("fov_auc_pr")] == "-"
    assert rows[0][head.index("fov_tp")] == "1080"
    assert "sortTable" in text and "addEventListener('click'" in text

    # figures: relative, lazy, existing
    srcs = assert_images_exist(root, page)
    for cid in VESSEL_IDS:
        assert urllib.parse.quote(f"eval/test/figures/{cid}_panel.png") in srcs
    assert "eval/test/figures/03%20test_panel.png" in srcs
    assert "figures/curves.png" in srcs  # the run's training curves
    assert "eval/test/figures/curves.png" not in srcs  # the same plot is not shown twice
    assert "eval/test/figures/01_test_dsconv_kernels.png" in srcs
    assert "eval/test/figures/01_test_dsconv_kernels_zoom.png" in srcs
    assert all(img.attrs.get("loading") == "lazy" for img in root.iter("img"))
    assert root.first("img", src="figures/curves.png").attrs["width"] == "300"
    assert root.first("figure", id="panel-03%20test") is not None
    assert root.first("a", href="#panel-03%20test") is not None  # the id cell links to its panel

    # recipe, summary, no network resources
    recipe = root.first("section", id="recipe")
    assert recipe.first("details") is not None and "channels: 16" in recipe.first("pre").text()
    summary = root.first("section", id="summary").text()
    assert "1,234,567" in summary and "3725.4 s (1:02:05)" in summary
    for bad in ("http://", "https://", "//cdn", "@import", "<link"):
        assert bad not in text


def test_report_split_and_out(vessel_run, tmp_path):
    val = vessel_run / "eval" / "val"
    val.mkdir()
    (val / "metrics.json").write_text(json.dumps(vessel_metrics(split="val")))
    # several splits: "test" by default
    assert parse(write_report(vessel_run)).first("title").text().endswith("(test)")
    other = tmp_path / "elsewhere" / "val.html"
    page = write_report(vessel_run, split="val", out=other)
    assert page == other and other.is_file()
    root = parse(other)
    assert root.first("title").text().endswith("(val)")
    assert root.first("table", id="per-image") is None  # no per_image.csv for val: a note
    assert "no per-image table" in root.first("section", id="per-image-section").text()
    assert "no panels" in root.first("section", id="panels").text()
    srcs = assert_images_exist(root, other)
    assert srcs == ["../dscnet_drive/figures/curves.png"]
    with pytest.raises(DataError, match="split 'train'"):
        write_report(vessel_run, split="train")


def test_ambiguous_and_missing(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(DataError, match="empty_run") as info:
        write_report(empty)
    assert isinstance(info.value, MedsegError) and "metrics.json" in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        write_report(tmp_path / "nope")
    for s in ("a", "b"):
        (empty / "eval" / s).mkdir(parents=True)
        (empty / "eval" / s / "metrics.json").write_text(json.dumps(vessel_metrics(split=s)))
    with pytest.raises(DataError, match="several splits"):
        write_report(empty)
    assert write_report(empty, split="b").is_file()
    (empty / "eval" / "a" / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        write_report(empty, split="a")
    assert not (empty / "report.html.tmp").exists()


def test_polyp_report_without_figures(polyp_run):
    root = parse(write_report(polyp_run))
    head, rows = table(root, "metrics-table")
    assert head == ["metric", "mean"]
    assert [r[0] for r in rows] == list(POLYP_MEAN)
    assert row_by_label(rows, "mdice")[1] == "0.8976" and row_by_label(rows, "mae")[1] == "0.0301"
    assert "PraNet toolbox" in root.first("p", class_="protocol").text()
    assert root.first("section", id="paper") is None and root.first("table", id="paper-table") is None
    head, rows = table(root, "per-image")
    assert head == ["id", "mdice", "mae"] and rows[1] == ["cju1", "0.8800", "0.0400"]
    notes = [p.text() for p in root.find("p", class_="note")]
    assert any("no panels" in n for n in notes)
    assert any("no training curves" in n for n in notes)
    assert any("no training summary" in n for n in notes)
    assert list(root.iter("img")) == []


def test_volume_report(volume_run):
    root = parse(write_report(volume_run))
    head, rows = table(root, "metrics-table")
    assert head == ["class", "dice", "hd95 (mm)", "hd95_pooled (mm)", "nsd (τ = 2 mm)", "undefined (cases)"]
    assert [r[0] for r in rows] == ["spleen", "tumour", "foreground mean"]
    assert row_by_label(rows, "spleen")[1:5] == [
        "0.9512 ± 0.0100",
        "3.2500 ± 0.5000",
        "4.2500 ± 1.5000",
        "0.9700 ± 0.0200",
    ]
    assert row_by_label(rows, "tumour")[5] == "hd95: 1"
    assert row_by_label(rows, "foreground mean")[1] == "0.7806 ± 0.1000"
    section = root.first("section", id="per-image-section")
    assert section.first("h2").text() == "Per case"
    head, rows = table(root, "per-image")
    assert head == ["id", "spleen_dice", "spleen_hd95"] and rows[1] == ["spleen_9", "0.9524", "-"]
    assert "4,800,000" in root.first("section", id="summary").text()
    assert "2 cases" in root.first("header").text()
    cards = [c.first("div", class_="k").text() for c in root.find("div", class_="card")]
    assert cards[:4] == ["dice", "hd95 (mm)", "hd95_pooled (mm)", "nsd"]  # foreground means first
    # paper numbers; a lower distance is better: both differences are in our favour
    head, rows = table(root, "paper-table")
    assert row_by_label(rows, "dice")[1:] == ["0.7806", "0.7500", "+0.0306"]
    assert row_by_label(rows, "hd95 (mm)")[1:] == ["8.8750", "10.0000", "-1.1250"]
    diffs = [tr.first("td", class_="pos") for tr in root.first("table", id="paper-table").first("tbody").iter("tr")]
    assert all(d is not None for d in diffs)
    assert root.first("div", class_="warning") is None  # selected_on_test: false


def test_octa_and_multiclass_reports(tmp_path):
    octa = tmp_path / "octanet_rose"
    (octa / "eval" / "test").mkdir(parents=True)
    keys = ("auc_roc", "accuracy", "sensitivity", "specificity", "fdr", "gmean", "kappa", "iou", "dice")
    (octa / "eval" / "test" / "metrics.json").write_text(
        json.dumps(
            {
                "protocol": "octa",
                "dataset": "rose1",
                "split": "test",
                "network": "octanet",
                "tolerance": 2,
                "mean": {k: 0.7 + 0.01 * i for i, k in enumerate(keys)},
                "std": {k: 0.05 for k in keys},
            }
        )
    )
    head, rows = table(parse(write_report(octa)), "metrics-table")
    assert head == ["metric", "mean ± std"] and row_by_label(rows, "dice")[1] == "0.7800 ± 0.0500"

    mc = tmp_path / "unet_acdc"
    (mc / "eval" / "test").mkdir(parents=True)
    level = {
        "bg": {"dice": 0.99, "iou": 0.98, "n_cases": 4},
        "lv": {"dice": 0.9, "iou": 0.82, "n_cases": 4},
        "rv": {"dice": 0.8, "iou": 0.7, "n_cases": 3},
        "mean": {"dice": 0.85, "iou": 0.76},
    }
    (mc / "eval" / "test" / "metrics.json").write_text(
        json.dumps(
            {
                "protocol": "multiclass",
                "dataset": "acdc",
                "split": "test",
                "network": "unet",
                "n_images": 4,
                "n_volumes": 2,
                "classes": ["bg", "lv", "rv"],
                "per_image": level,
                "per_volume": level,
                "pooled": level,
            }
        )
    )
    head, rows = table(parse(write_report(mc)), "metrics-table")
    assert head[:3] == ["class", "per-image dice", "per-image iou"] and len(head) == 7
    assert row_by_label(rows, "mean (foreground)")[1:3] == ["0.8500", "0.7600"]


def test_unknown_protocol_and_malformed_blocks(tmp_path):
    run = tmp_path / "odd"
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "metrics.json").write_text(
        json.dumps({"protocol": "brand_new", "dataset": "x", "split": "test", "scores": {"dice": 0.5}})
    )
    (run / "config.yaml").write_text("model: [unclosed\n")
    (run / "train_summary.json").write_text("[1, 2]")
    root = parse(write_report(run))
    head, rows = table(root, "metrics-table")
    assert rows == [["scores.dice", "0.5000"]]
    text = root.text()
    assert "unknown protocol" in text and "not valid YAML" in text and "does not hold a JSON object" in text
    # a vessel metrics.json without its fov block: a note, not an exception
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps({"protocol": "vessel", "dataset": "x"}))
    assert "no headline numbers" in parse(write_report(run)).text()


def test_predictions_folder_report(predictions_out):
    page = write_report(predictions_out)
    assert page == predictions_out / "report.html"
    root = parse(page)
    assert root.first("title").text() == "predictions on drive (test)"
    assert "/data/nnunet/preds" in root.first("section", id="summary").text()
    assert "outside a medseg run" in root.text()
    assert "no recipe" in root.first("section", id="recipe").text()
    assert assert_images_exist(root, page) == ["figures/01_test_panel.png"]
    head, rows = table(root, "metrics-table")
    assert row_by_label(rows, "dice")[1] == "0.8123"


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def test_compare_runs(vessel_run, polyp_run, volume_run, predictions_out):
    rows = compare_runs([vessel_run, polyp_run, volume_run, predictions_out])
    assert [r["run"] for r in rows] == ["dscnet_drive", "pranet_kvasir", "unet3d_spleen", "nnunet_preds_eval"]
    assert [r["protocol"] for r in rows] == ["vessel", "polyp", "volume", "vessel"]
    assert [r["network"] for r in rows] == ["dscnet", "pranet", "unet3d", None]
    assert [r["parameters"] for r in rows] == [1234567, None, 4800000, None]
    keys = list(rows[0])
    assert keys[:5] == ["run", "network", "dataset", "protocol", "parameters"]
    assert all(list(r) == keys for r in rows)  # the union of columns, same order everywhere
    assert rows[0]["dice"] == 0.8123 and rows[0]["mdice"] is None
    assert rows[1]["mdice"] == 0.8976 and rows[1]["dice"] is None
    assert rows[2]["dice"] == 0.7806 and rows[2]["spleen_hd95"] == 3.25 and rows[0]["spleen_hd95"] is None

    (vessel_run / "eval" / "val").mkdir()
    (vessel_run / "eval" / "val" / "metrics.json").write_text(json.dumps(vessel_metrics(split="val")))
    assert compare_runs([vessel_run], split="val")[0]["run"] == "dscnet_drive"
    with pytest.raises(DataError, match="pranet_kvasir") as info:
        compare_runs([vessel_run, polyp_run], split="val")
    assert "split 'val'" in str(info.value)
    with pytest.raises(DataError, match="missing_run"):
        compare_runs([vessel_run.parent / "missing_run"])


def test_format_comparison(vessel_run, polyp_run):
    rows = compare_runs([vessel_run, polyp_run])
    text = format_comparison(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:5] == ["run", "network", "dataset", "protocol", "parameters"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "1,234,567" in lines[2] and "0.8123" in lines[2]
    assert lines[3].split()[:5] == ["pranet_kvasir", "pranet", "kvasir", "polyp", "-"]
    assert "0.8976" in lines[3]
    # aligned: every column starts at the same offset on every line
    start = lines[0].index("parameters")
    end = start + len("parameters")
    assert lines[2][:end].endswith("1,234,567") and lines[3][end - 1] == "-"
    assert format_comparison([]) == "(no runs)"


def test_write_comparison(vessel_run, volume_run, tmp_path):
    rows = compare_runs([vessel_run, volume_run])
    csv_path, html_path = write_comparison(rows, tmp_path / "out" / "cmp.v1")
    assert csv_path == tmp_path / "out" / "cmp.v1.csv" and html_path == tmp_path / "out" / "cmp.v1.html"
    with open(csv_path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == list(rows[0])
    assert got[0]["run"] == "dscnet_drive" and got[0]["parameters"] == "1234567" and float(got[0]["dice"]) == 0.8123
    assert got[0]["spleen_dice"] == "" and got[1]["cldice"] == ""
    root = parse(html_path)
    head, trs = table(root, "comparison")
    assert head[:5] == ["run", "network", "dataset", "protocol", "parameters"] and "hd95 (mm)" in head
    assert trs[0][:5] == ["dscnet_drive", "dscnet", "drive", "vessel", "1,234,567"]
    assert trs[1][head.index("dice")] == "0.7806" and trs[1][head.index("cldice")] == "-"
    assert "sortable" in root.first("table", id="comparison").attrs["class"]
    text = html_path.read_text()
    assert "http://" not in text and "https://" not in text
    assert root.first("a", href="cmp.v1.csv") is not None


# --------------------------------------------------------------------------------------------
# in a real browser
# --------------------------------------------------------------------------------------------


def chromium():
    for c in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if c and os.access(c, os.X_OK):
            return c
    pytest.skip(
        "no Chromium found (/usr/bin/chromium or chromium on PATH): the browser checks of the "
        "report are skipped; apt-get install chromium to run them"
    )


def run_chromium(tmp_path, *args):
    exe = chromium()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=5000",
    ]
    proc = subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_in_browser(vessel_run, tmp_path):
    page = write_report(vessel_run)
    url = page.resolve().as_uri()

    # rendered DOM, sorted on load by ?sort=-fov_dice
    root = DOM(run_chromium(tmp_path, "--dump-dom", url + "?sort=-fov_dice")).root
    body = root.first("body")
    assert body is not None
    imgs = list(root.iter("img"))
    assert len(imgs) == len(VESSEL_IDS) + 3  # panels, curves, two kernel figures
    assert body.attrs.get("data-images-ok") == f"{len(imgs)}/{len(imgs)}"
    assert body.attrs.get("data-images-loaded") == "true"
    for tid in ("metrics-table", "paper-table", "per-image"):
        assert root.first("table", id=tid) is not None
    head, rows = table(root, "per-image")
    assert [r[0] for r in rows] == ["02_test", "01_test", "03 test"]
    th = root.first("table", id="per-image").first("th", **{"data-key": "fov_dice"})
    assert th.attrs.get("aria-sort") == "descending"

    # real clicks on a header: the page's own handler, first ascending then descending
    clicked = page.with_name("report_click.html")
    clicks = (
        "<script>var th=document.querySelector('#per-image th[data-key=fov_tp]');th.click();"
        "document.body.setAttribute('data-after-one',Array.prototype.map.call("
        "document.querySelectorAll('#per-image tbody tr'),"
        "function(r){return r.cells[0].textContent;}).join('|'));"
        "th.click();</script></body>"
    )
    clicked.write_text(page.read_text(encoding="utf-8").replace("</body>", clicks))
    root = DOM(run_chromium(tmp_path, "--dump-dom", clicked.resolve().as_uri())).root
    assert root.first("body").attrs.get("data-after-one") == "03 test|01_test|02_test"
    _, rows = table(root, "per-image")
    assert [r[0] for r in rows] == ["02_test", "01_test", "03 test"]
    clicked.unlink()

    # a screenshot of the whole report
    shot = vessel_run / "report.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


def test_comparison_in_browser(vessel_run, polyp_run, tmp_path):
    _, html_path = write_comparison(compare_runs([vessel_run, polyp_run]), tmp_path / "cmp")
    root = DOM(run_chromium(tmp_path, "--dump-dom", html_path.resolve().as_uri() + "?sort=-parameters")).root
    head, rows = table(root, "comparison")
    assert [r[0] for r in rows] == ["dscnet_drive", "pranet_kvasir"]
    root = DOM(run_chromium(tmp_path, "--dump-dom", html_path.resolve().as_uri() + "?sort=run")).root
    assert [r[0] for r in table(root, "comparison")[1]] == ["dscnet_drive", "pranet_kvasir"]
    root = DOM(run_chromium(tmp_path, "--dump-dom", html_path.resolve().as_uri() + "?sort=-run")).root
    assert [r[0] for r in table(root, "comparison")[1]] == ["pranet_kvasir", "dscnet_drive"]
