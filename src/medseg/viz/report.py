"""Static HTML reports of a run, and side-by-side comparisons of several runs.

* :func:`write_report`: ``RUN/report.html``, one self-contained page per evaluation: recipe,
  the protocol's full metrics table, the paper's numbers beside ours, a sortable per-image
  table, every panel, the training curves and the DSConv kernel figures.
* :func:`compare_runs`: one row of headline numbers per run (with parameter counts).
* :func:`format_comparison`: those rows as an aligned plain-text table for the terminal.
* :func:`write_comparison`: those rows as ``<prefix>.csv`` and a sortable ``<prefix>.html``.

The pages open from disk with no server and no network: CSS and the small vanilla script that
sorts tables are inline, images are ``<img>`` elements with paths relative to the page, and
nothing is fetched from elsewhere (no CDN, no web fonts). Every text is escaped with
:func:`html.escape`. Files are written atomically (:func:`medseg.atomic.write_text_atomic`).

The run-directory layout read here is the one :mod:`medseg.engine.train` and
``medseg evaluate`` write::

    RUN/config.yaml                 resolved recipe; optional top-level ``paper:`` block
    RUN/train_summary.json          parameters, steps, train_seconds, best_val_dice, ...
    RUN/figures/curves.png          training curves
    RUN/eval/<split>/metrics.json   the protocol's numbers (see medseg.workflows.protocols)
    RUN/eval/<split>/per_image.csv  or per_case.csv (volume protocol); first column ``id``
    RUN/eval/<split>/figures/       <id>_panel.png, curves.png, <id>_dsconv_kernels[_zoom].png

An evaluation of another tool's predictions (``medseg evaluate --predictions DIR -o OUT``) has
no run around it: OUT itself holds metrics.json, the per-case CSV and figures/.

The ``paper:`` block of config.yaml::

    paper:
      source: "Qi et al., ICCV 2023"
      table: "Table 2"
      protocol: "FOV, per-image mean, threshold 0.5"
      values: {dice: 0.8258, auc_roc: 0.9817}   # keys of medseg.workflows.protocols.headline
      selected_on_test: true                      # the paper picked its numbers on the test set
      notes: "..."
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import urllib.parse
from html import escape
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from medseg.atomic import write_text_atomic
from medseg.errors import DataError, MedsegError
from medseg.rundir import EvalDir, RunDir

__all__ = ["compare_runs", "format_comparison", "write_comparison", "write_report"]

PER_CASE_FILES = ("per_image.csv", "per_case.csv")
FIXED_COMPARISON_COLUMNS = ("run", "network", "dataset", "protocol", "parameters")
NUM_CLASS = ' class="num"'


# --------------------------------------------------------------------------------------------
# locating and reading an evaluation
# --------------------------------------------------------------------------------------------


def _find_eval_dir(run_dir: Path, split: str | None) -> Path:
    """The folder holding metrics.json for ``run_dir`` (see :func:`write_report`)."""
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist")
    rd = RunDir(run_dir)
    eval_root = rd.eval_root
    if split is not None and (ev := rd.evaluation(split)).metrics.is_file():
        return ev.root
    if EvalDir(run_dir).metrics.is_file():  # an evaluation of --predictions: no run around it
        return run_dir
    splits = sorted(p.parent.name for p in eval_root.glob("*/metrics.json")) if eval_root.is_dir() else []
    if split is not None:
        found = f"; evaluated splits: {', '.join(splits)}" if splits else ""
        raise DataError(
            f"{run_dir} has no evaluation of split {split!r} ({eval_root / split / 'metrics.json'} is "
            f"missing){found}; run `medseg evaluate {run_dir} --split {split}` first"
        )
    if not splits:
        raise DataError(
            f"{run_dir} holds no evaluation: neither {run_dir / 'metrics.json'} nor "
            f"{eval_root}/<split>/metrics.json exists; run `medseg evaluate` first"
        )
    if len(splits) == 1:
        return eval_root / splits[0]
    if "test" in splits:
        return eval_root / "test"
    raise DataError(f"{run_dir} holds evaluations of several splits ({', '.join(splits)}); choose one with split=")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} does not hold a JSON object")
    return data


def _read_optional_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return _read_json(path)
    except DataError as exc:
        notes.append(str(exc))
        return None


def _read_config(path: Path, notes: list[str]) -> tuple[str | None, dict[str, Any]]:
    """(text, parsed mapping) of config.yaml; (None, {}) when absent; a note when unreadable."""
    if not path.is_file():
        return None, {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(f"cannot read {path}: {exc}")
        return None, {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        notes.append(f"{path} is not valid YAML ({exc.__class__.__name__}); shown as text only")
        return text, {}
    return text, data if isinstance(data, dict) else {}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [dict(r) for r in reader]
        return list(reader.fieldnames or []), rows


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _protocol_name(metrics: dict[str, Any]) -> str:
    # the same inference as medseg.workflows.protocols.headline for files without "protocol"
    return str(metrics.get("protocol") or ("multiclass" if "per_volume" in metrics else "vessel"))


def _headline(metrics: dict[str, Any]) -> tuple[dict[str, float | None], str | None]:
    """(headline numbers, None) or ({}, why not) for metrics of an unknown or malformed protocol."""
    from medseg.workflows.protocols import headline

    try:
        return dict(headline(metrics)), None
    except MedsegError as exc:
        return {}, str(exc)
    except (KeyError, TypeError, AttributeError) as exc:
        return {}, f"metrics.json lacks the {_protocol_name(metrics)} protocol's block {exc}"


def _description(name: str) -> str | None:
    from medseg.workflows.protocols import PROTOCOLS, get_protocol

    return get_protocol(name).description if name in PROTOCOLS else None


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    """``value`` as an int or float, or None (None, NaN, empty, "None", non-numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return None
        return None if math.isnan(f) else f
    return None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "none", "nan", "null")


def _fmt(value: Any) -> str:
    """Display text: floats with 4 decimals, ints as they are, "-" for None/NaN."""
    if _is_missing(value):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    if isinstance(value, str):
        n = _number(value)
        if n is None:
            return value
        return _fmt(n)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _fmt_count(value: Any) -> str:
    n = _number(value)
    if n is None:
        return "-"
    return f"{int(n):,}" if float(n).is_integer() else _fmt(n)


def _sort_value(value: Any) -> str:
    """The ``data-v`` attribute the sorting script compares: the raw number, or "" for missing."""
    if _is_missing(value):
        return ""
    n = _number(value)
    if n is not None:
        return repr(n) if isinstance(n, float) else str(n)
    return str(value)


def _is_distance(key: str) -> bool:
    k = key.lower()
    return "hd95" in k or k.endswith("_mm") or k in ("hd", "assd", "asd") or k.endswith(("_hd", "_assd", "_asd"))


def _lower_is_better(key: str) -> bool:
    k = key.lower()
    return _is_distance(k) or "error" in k or k in ("mae", "fdr") or k.endswith(("_mae", "_fdr"))


def _label(key: str) -> str:
    return f"{key} (mm)" if _is_distance(key) else key


def _text(value: Any) -> str:
    """Any JSON value as one line of text (strings as they are)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _fmt(value)
    return json.dumps(value, ensure_ascii=False)


def _duration(seconds: Any) -> str:
    s = _number(seconds)
    if s is None:
        return _fmt(seconds)
    whole = int(round(float(s)))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return f"{float(s):.1f} s ({h}:{m:02d}:{sec:02d})"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num_td(value: Any, text: str | None = None, cls: str = "num") -> str:
    shown = _fmt(value) if text is None else text
    return f'<td class="{cls}" data-v="{_e(_sort_value(value))}">{_e(shown)}</td>'


# --------------------------------------------------------------------------------------------
# page scaffolding (inline CSS and script, no external resource)
# --------------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d8dde6;--zebra:#f5f7fa;--accent:#1f5fa8;--head:#eef2f7;
--warn-bg:#fff4e5;--warn-line:#e8a33d;--note:#6b7280}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:#fff}
header.top{background:linear-gradient(90deg,#17375e,#1f5fa8);color:#fff;padding:22px 32px 18px}
header.top h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:.2px}
header.top .sub{margin:0;opacity:.88;font-size:14px}
nav.toc{background:var(--head);border-bottom:1px solid var(--line);padding:8px 32px;font-size:14px}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:16px;white-space:nowrap}
nav.toc a:hover{text-decoration:underline}
main{max-width:1400px;margin:0 auto;padding:8px 32px 40px}
section{margin-top:26px}
h2{font-size:20px;margin:0 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:16px 0 8px}
p{margin:6px 0}
.note{color:var(--note);font-style:italic;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:12px 48px;align-items:flex-start}
.row h3{margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0 4px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:130px;background:#fbfcfe}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.4px}
.card .v{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;font-size:14px;margin:6px 0}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--head);font-weight:600;border-bottom:2px solid #c3cad6;white-space:nowrap}
tbody tr:nth-child(even){background:var(--zebra)}
tbody tr:hover{background:#e8f0fb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.headline,th.headline{background:rgba(31,95,168,.07)}
td.pos{color:#11734b}td.neg{color:#b3261e}
table.kv th{background:none;border-bottom:1px solid var(--line);color:var(--muted);font-weight:500;white-space:nowrap}
table.sortable thead th{cursor:pointer;user-select:none;position:relative;padding-right:20px}
table.sortable thead th::after{content:"\\2195";position:absolute;right:6px;color:#9aa3b2;font-size:12px}
table.sortable thead th[aria-sort=ascending]::after{content:"\\25B2";color:var(--accent)}
table.sortable thead th[aria-sort=descending]::after{content:"\\25BC";color:var(--accent)}
.scroll{overflow:auto;max-height:640px;width:fit-content;max-width:100%;border:1px solid var(--line);border-radius:6px}
.scroll table{margin:0}
.scroll thead th{position:sticky;top:0;z-index:1}
.protocol{background:var(--head);border-left:4px solid var(--accent);padding:8px 12px;margin:8px 0 10px}
.warning{background:var(--warn-bg);border:1px solid var(--warn-line);border-left:6px solid var(--warn-line);
padding:10px 14px;border-radius:4px;margin:10px 0}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent);font-weight:500}
pre{background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:12px;overflow:auto;
font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;max-height:600px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:16px}
.grid.wide{grid-template-columns:repeat(auto-fill,minmax(min(100%,860px),1fr))}
.grid.narrow{grid-template-columns:repeat(auto-fill,minmax(min(100%,380px),1fr))}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
figure img{display:block;width:100%;height:auto;image-rendering:auto}
figcaption{font-size:13px;color:var(--muted);margin-top:6px;word-break:break-all}
figure:target{outline:3px solid var(--accent)}
a{color:var(--accent)}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:36px;padding-top:10px}
@media print{nav.toc{display:none}.scroll{max-height:none;overflow:visible}}
"""

# Sorting: a click on any header of a table.sortable sorts its rows by that column (numbers by
# value, empty cells last, then text), a second click reverses. ``?sort=COL`` (``?sort=-COL``
# descending) sorts on load. After load, <body> gets data-images-ok="k/n" and
# data-images-loaded="true" once every <img> is complete with a non-zero natural width
# ("false" if some never load).
_JS = """
(function(){
  function val(cell){var v=cell.getAttribute('data-v');return v===null?cell.textContent.trim():v;}
  function isNum(s){return s!==''&&!isNaN(Number(s));}
  function sortTable(table,col,desc){
    var body=table.tBodies[0];if(!body)return;
    var rows=Array.prototype.slice.call(body.rows);
    var vals=rows.map(function(r){return r.cells[col]?val(r.cells[col]):'';});
    var numeric=vals.every(function(v){return v===''||isNum(v);});
    var idx=rows.map(function(r,i){return i;});
    idx.sort(function(a,b){
      var x=vals[a],y=vals[b];
      if(x===''||y===''){return (x==='')-(y==='')||a-b;}
      var c=numeric?Number(x)-Number(y):x.localeCompare(y,undefined,{numeric:true});
      return (desc?-c:c)||a-b;
    });
    idx.forEach(function(i){body.appendChild(rows[i]);});
    var ths=table.tHead.rows[0].cells;
    for(var i=0;i<ths.length;i++){ths[i].setAttribute('aria-sort',i===col?(desc?'descending':'ascending'):'none');}
  }
  var tables=document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables,function(table){
    if(!table.tHead)return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
      th.tabIndex=0;th.title='click to sort';
      function go(){sortTable(table,col,th.getAttribute('aria-sort')==='ascending');}
      th.addEventListener('click',go);
      th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();go();}});
    });
  });
  var want=null;try{want=new URLSearchParams(location.search).get('sort');}catch(e){}
  if(want){
    var desc=want.charAt(0)==='-',name=desc?want.slice(1):want;
    Array.prototype.forEach.call(tables,function(table){
      if(!table.tHead)return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
        if((th.getAttribute('data-key')||th.textContent.trim())===name){sortTable(table,col,desc);}
      });
    });
  }
  function check(tries){
    var imgs=Array.prototype.slice.call(document.images);
    var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
    document.body.setAttribute('data-images-ok',ok+'/'+imgs.length);
    if(ok===imgs.length){document.body.setAttribute('data-images-loaded','true');}
    else if(tries>0){setTimeout(function(){check(tries-1);},100);}
    else{document.body.setAttribute('data-images-loaded','false');}
  }
  window.addEventListener('load',function(){check(50);});
})();
"""


def _page(title: str, subtitle: str, toc: Sequence[tuple[str, str]], body: str) -> str:
    from medseg import __version__

    nav = "".join(f'<a href="#{_e(anchor)}">{_e(text)}</a>' for anchor, text in toc)
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="medseg {_e(__version__)}">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="top"><h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p></header>\n'
        + (f'<nav class="toc">{nav}</nav>\n' if toc else "")
        + f"<main>\n{body}\n<footer>written by medseg {_e(__version__)} on {_e(stamp)}; a static page: "
        "no server, no network.</footer>\n</main>\n"
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _kv_table(items: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    rows = "".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in items)
    return f'<table class="{cls}"><tbody>{rows}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(
    headers: Sequence[str],
    rows: Sequence[str],
    table_id: str | None = None,
    cls: str = "data",
    num_from: int = 1,
    header_cls: Sequence[str] | None = None,
) -> str:
    """A table; ``rows`` are ready ``<tr>`` strings; headers from index ``num_from`` right-aligned."""
    ths = []
    for i, h in enumerate(headers):
        classes = ["num"] if i >= num_from else []
        if header_cls and header_cls[i]:
            classes.append(header_cls[i])
        c = f' class="{" ".join(classes)}"' if classes else ""
        ths.append(f'<th scope="col"{c} data-key="{_e(h)}">{_e(h)}</th>')
    tid = f' id="{_e(table_id)}"' if table_id else ""
    return f'<table{tid} class="{cls}"><thead><tr>{"".join(ths)}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# --------------------------------------------------------------------------------------------
# the protocol-specific metrics tables
# --------------------------------------------------------------------------------------------


def _ordered_keys(blocks: Iterable[Any]) -> list[str]:
    keys: list[str] = []
    for block in blocks:
        if isinstance(block, dict):
            keys.extend(k for k in block if k not in keys)
    return keys


def _vessel_table(m: dict[str, Any]) -> str:
    cols = [
        ("FOV per-image mean", ("fov", "per_image_mean")),
        ("FOV pooled", ("fov", "pooled")),
        ("whole image per-image mean", ("whole_image", "per_image_mean")),
        ("whole image pooled", ("whole_image", "pooled")),
    ]
    blocks = [_get(m, *path) for _, path in cols]
    keys = _ordered_keys(blocks)
    rows = []
    for k in keys:
        cells = "".join(_num_td(_get(b, k), cls="num headline" if i == 0 else "num") for i, b in enumerate(blocks))
        rows.append(f'<tr><th scope="row">{_e(_label(k))}</th>{cells}</tr>')
    headers = ["metric"] + [c for c, _ in cols]
    return _table(headers, rows, "metrics-table", header_cls=["", "headline", "", "", ""])


def _pm(mean: Any, std: Any) -> str:
    if _is_missing(mean):
        return "-"
    return f"{_fmt(mean)} ± {_fmt(std)}" if not _is_missing(std) else _fmt(mean)


def _octa_table(m: dict[str, Any]) -> str:
    mean, std = m.get("mean") or {}, m.get("std") or {}
    rows = [
        f'<tr><th scope="row">{_e(_label(k))}</th>{_num_td(mean.get(k), _pm(mean.get(k), _get(std, k)))}</tr>'
        for k in _ordered_keys([mean, std])
    ]
    return _table(["metric", "mean ± std"], rows, "metrics-table")


def _polyp_table(m: dict[str, Any]) -> str:
    mean = m.get("mean") or {}
    rows = [f'<tr><th scope="row">{_e(_label(k))}</th>{_num_td(v)}</tr>' for k, v in mean.items()]
    return _table(["metric", "mean"], rows, "metrics-table")


def _volume_table(m: dict[str, Any]) -> str:
    mean, std, undefined = m.get("mean") or {}, m.get("std") or {}, m.get("undefined") or {}
    names = [c for c in (m.get("classes") or []) if c in mean]
    names += [c for c in mean if c not in names and c != "foreground_mean"]
    if "foreground_mean" in mean:
        names.append("foreground_mean")
    metric_keys = _ordered_keys(mean.get(n) for n in names)
    tol = m.get("nsd_tolerance_mm")
    headers = ["class"]
    for k in metric_keys:
        if k == "nsd" and tol is not None:
            t = _number(tol)
            headers.append(f"nsd (τ = {t:g} mm)" if t is not None else f"nsd (τ = {_text(tol)})")
        else:
            headers.append(_label(k))
    show_undefined = any(isinstance(v, dict) and any(_number(c) for c in v.values()) for v in undefined.values())
    if show_undefined:
        headers.append("undefined (cases)")
    rows = []
    for n in names:
        cells = "".join(_num_td(_get(mean, n, k), _pm(_get(mean, n, k), _get(std, n, k))) for k in metric_keys)
        if show_undefined:
            u = undefined.get(n) or {}
            text = ", ".join(f"{k}: {v}" for k, v in u.items() if _number(v)) if isinstance(u, dict) else _text(u)
            cells += f"<td>{_e(text or '-')}</td>"
        label = "foreground mean" if n == "foreground_mean" else n
        cls = ' class="headline"' if n == "foreground_mean" else ""
        rows.append(f'<tr{cls}><th scope="row">{_e(label)}</th>{cells}</tr>')
    return _table(headers, rows, "metrics-table")


def _multiclass_table(m: dict[str, Any]) -> str:
    levels = [(lv, m[lv]) for lv in ("per_image", "per_volume", "pooled") if isinstance(m.get(lv), dict)]
    names = [c for c in (m.get("classes") or []) if any(c in b for _, b in levels)]
    names += [c for c in _ordered_keys(b for _, b in levels) if c not in names and c != "mean"]
    names.append("mean")
    headers = ["class"]
    for lv, _ in levels:
        headers += [f"{lv.replace('_', '-')} dice", f"{lv.replace('_', '-')} iou"]
    rows = []
    for n in names:
        cells = "".join(_num_td(_get(b, n, "dice")) + _num_td(_get(b, n, "iou")) for _, b in levels)
        label = "mean (foreground)" if n == "mean" else n
        rows.append(f'<tr><th scope="row">{_e(label)}</th>{cells}</tr>')
    return _table(headers, rows, "metrics-table")


def _flatten_numbers(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _flatten_numbers(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
    elif _number(obj) is not None or obj is None:
        out.append((prefix.rstrip("."), obj))
    return out


_SKIP_GENERIC = {
    "conventions",
    "inference",
    "n_images",
    "n_cases",
    "n_volumes",
    "split",
    "dataset",
    "network",
    "protocol",
    "checkpoint",
    "predictions",
    "classes",
}


def _generic_table(m: dict[str, Any]) -> str:
    rows = []
    for key, value in m.items():
        if key in _SKIP_GENERIC:
            continue
        for k, v in _flatten_numbers(value, f"{key}." if isinstance(value, dict) else key):
            rows.append(f'<tr><th scope="row">{_e(k)}</th>{_num_td(v)}</tr>')
    return _table(["metric", "value"], rows, "metrics-table")


_TABLES = {
    "vessel": _vessel_table,
    "octa": _octa_table,
    "polyp": _polyp_table,
    "volume": _volume_table,
    "multiclass": _multiclass_table,
}


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _img(src: Path, page_dir: Path, alt: str, caption: str, anchor: str | None = None) -> str:
    rel = Path(os.path.relpath(src, page_dir)).as_posix()
    href = urllib.parse.quote(rel)
    size = ""
    try:
        from PIL import Image

        with Image.open(src) as im:
            size = f' width="{im.width}" height="{im.height}"'
    except Exception:  # noqa: BLE001 - an unreadable figure still gets its <img> (the browser says why)
        pass
    fid = f' id="{_e(anchor)}"' if anchor else ""
    return (
        f'<figure{fid}><a href="{_e(href)}"><img src="{_e(href)}" alt="{_e(alt)}" loading="lazy"{size}></a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _metrics_section(m: dict[str, Any], name: str, head: dict[str, float | None], head_err: str | None) -> str:
    parts = ['<section id="metrics"><h2>Metrics</h2>']
    desc = _description(name)
    if desc:
        parts.append(f'<p class="protocol"><strong>{_e(name)}</strong> protocol: {_e(desc)}</p>')
    else:
        parts.append(_note(f"unknown protocol {name!r}: the numbers below are listed as found in metrics.json"))
    if head:
        from medseg.workflows.protocols import PROTOCOLS

        main_keys = PROTOCOLS.get(name).headline_keys if name in PROTOCOLS else ()
        # the protocol's own keys first (volume: foreground means before the per-class numbers)
        keys = [k for k in main_keys if k in head] + [k for k in head if k not in main_keys]
        cards = [(k, head[k]) for k in keys if not _is_missing(head[k])][:6]
        if cards:
            parts.append(
                '<div class="cards">'
                + "".join(
                    f'<div class="card"><div class="k">{_e(_label(k))}</div><div class="v">{_e(_fmt(v))}</div></div>'
                    for k, v in cards
                )
                + "</div>"
            )
    elif head_err:
        parts.append(_note(f"no headline numbers: {head_err}"))
    try:
        parts.append(_TABLES.get(name, _generic_table)(m))
    except Exception as exc:  # noqa: BLE001 - a malformed block must not lose the rest of the page
        parts.append(
            _note(
                f"the {name} metrics table could not be drawn ({exc.__class__.__name__}: {exc}); all numbers as found:"
            )
        )
        parts.append(_generic_table(m))
    if name == "vessel":
        parts.append(_note("headline column: FOV per-image mean (the numbers the comparison table uses)"))
    conv = m.get("conventions")
    if isinstance(conv, dict) and conv:
        parts.append(
            "<details><summary>Conventions</summary>" + _kv_table((k, _text(v)) for k, v in conv.items()) + "</details>"
        )
    else:
        parts.append(_note("metrics.json states no conventions"))
    inf = m.get("inference")
    if isinstance(inf, dict) and inf:
        parts.append(
            "<details><summary>Inference</summary>" + _kv_table((k, _text(v)) for k, v in inf.items()) + "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _paper_section(paper: Any, head: dict[str, float | None], name: str) -> str:
    parts = ['<section id="paper"><h2>Ours vs the paper</h2>']
    if not isinstance(paper, dict):
        parts.append(_note("the recipe's paper: block is not a mapping; skipped"))
        return "".join(parts) + "</section>"
    meta = [(k, paper.get(k)) for k in ("source", "table", "protocol") if paper.get(k) not in (None, "")]
    meta.append(("our protocol", f"{name}: {_description(name) or 'unknown protocol'}"))
    parts.append(_kv_table((k, _text(v)) for k, v in meta))
    if paper.get("selected_on_test") is True:
        parts.append(
            '<div class="warning" role="alert"><strong>Warning: selected on the test set.</strong> '
            "The paper's numbers were chosen on the test split (e.g. the best epoch or threshold by test "
            "score), so they are optimistically biased; medseg selects its checkpoint on the validation "
            "split and measures the test split once.</div>"
        )
    values = paper.get("values")
    rows = []
    percent_like = []
    if isinstance(values, dict) and values:
        for key, pv in values.items():
            key = str(key)
            ours = head.get(key)
            p, o = _number(pv), _number(ours)
            diff = None if p is None or o is None else float(o) - float(p)
            if p is not None and o is not None and not _is_distance(key) and p > 1.5 and o <= 1.0:
                percent_like.append(key)
            better = None if diff is None or diff == 0 else (diff < 0 if _lower_is_better(key) else diff > 0)
            dcls = "num" if better is None else ("num pos" if better else "num neg")
            dtext = "-" if diff is None else f"{diff:+.4f}"
            ours_td = _num_td(ours) if key in head else '<td class="num" data-v="">not measured</td>'
            rows.append(
                f'<tr><th scope="row">{_e(_label(key))}</th>{ours_td}{_num_td(pv)}{_num_td(diff, dtext, dcls)}</tr>'
            )
        parts.append(_table(["metric", "ours", "paper", "difference"], rows, "paper-table"))
        parts.append(
            _note(
                "difference = ours - paper (fractions 0..1, distances in mm); green where ours is "
                "better, red where worse (lower is better for distances and errors)"
            )
        )
        if percent_like:
            parts.append(
                _note(
                    f"paper values of {', '.join(percent_like)} look like percentages; "
                    "the recipe should give fractions 0..1"
                )
            )
    else:
        parts.append(_note("the paper: block gives no values"))
    if paper.get("notes"):
        parts.append(f"<p><strong>Notes:</strong> {_e(_text(paper['notes']))}</p>")
    parts.append("</section>")
    return "".join(parts)


def _per_case_section(
    eval_dir: Path, name: str, panels: dict[str, Path], notes: list[str]
) -> tuple[str, list[str], str]:
    """(section html, case ids in table order, section title)."""
    from medseg.workflows.protocols import PROTOCOLS

    preferred = PROTOCOLS.get(name).per_file if name in PROTOCOLS else PER_CASE_FILES[0]
    candidates = [preferred] + [f for f in PER_CASE_FILES if f != preferred]
    path = next((eval_dir / f for f in candidates if (eval_dir / f).is_file()), None)
    title = "Per case" if path is not None and path.name == "per_case.csv" else "Per image"
    parts = [f'<section id="per-image-section"><h2>{title}</h2>']
    if path is None:
        parts.append(_note(f"no per-image table ({' or '.join(candidates)} not found in {eval_dir})"))
        return "".join(parts) + "</section>", [], title
    try:
        fields, rows = _read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        notes.append(f"cannot read {path}: {exc}")
        parts.append(_note(f"{path.name} could not be read ({exc})"))
        return "".join(parts) + "</section>", [], title
    if not fields:
        parts.append(_note(f"{path.name} is empty"))
        return "".join(parts) + "</section>", [], title
    numeric = [
        all(_is_missing(r.get(f)) or _number(r.get(f)) is not None for r in rows) and i > 0
        for i, f in enumerate(fields)
    ]
    body, ids = [], []
    for r in rows:
        cells = []
        for i, f in enumerate(fields):
            v = r.get(f)
            if i == 0:
                cid = v or ""
                ids.append(cid)
                if cid in panels:
                    link = _e(f"#panel-{urllib.parse.quote(cid)}")
                    cells.append(f'<td data-v="{_e(cid)}"><a href="{link}">{_e(cid)}</a></td>')
                else:
                    cells.append(f'<td data-v="{_e(cid)}">{_e(cid)}</td>')
            elif numeric[i]:
                cells.append(_num_td(v))
            else:
                cells.append(f'<td data-v="{_e(_sort_value(v))}">{_e(_fmt(v) if _is_missing(v) else v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    heads = []
    for i, f in enumerate(fields):
        c = ' class="num"' if numeric[i] else ""
        heads.append(f'<th scope="col"{c} data-key="{_e(f)}">{_e(f)}</th>')
    parts.append(
        f"<p>{len(rows)} rows from <code>{_e(path.name)}</code>; click a column header to sort (again to reverse).</p>"
    )
    parts.append(
        f'<div class="scroll"><table id="per-image" class="data sortable"><thead><tr>{"".join(heads)}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    parts.append("</section>")
    return "".join(parts), ids, title


def _figure_files(fig_dir: Path) -> list[Path]:
    if not fig_dir.is_dir():
        return []
    exts = {".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp"}
    return sorted(
        p for p in fig_dir.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
    )


def _strip(name: str, suffix: str) -> str | None:
    return name[: -len(suffix)] if name.endswith(suffix) else None


# --------------------------------------------------------------------------------------------
# write_report
# --------------------------------------------------------------------------------------------


def write_report(run_dir: str | os.PathLike, split: str | None = None, out: str | os.PathLike | None = None) -> Path:
    """Write a static HTML report of one evaluation and return its path.

    Reads:
        The evaluation: ``run_dir/eval/<split>/`` (with ``split=None``: the only evaluated split,
        or "test" when there are several), or ``run_dir`` itself when it holds metrics.json (an
        evaluation of another tool's predictions, ``medseg evaluate --predictions DIR -o OUT``).
        From it: metrics.json, per_image.csv or per_case.csv, figures/*.png. From the run, when
        there is one: config.yaml (shown, and its ``paper:`` block), train_summary.json,
        figures/curves.png.

    Writes:
        ``out``, by default ``run_dir/report.html``, atomically. The page holds: a title
        (network, dataset, split); a summary (run, checkpoint or predictions, image count,
        training summary); the metrics table of the protocol with its description, conventions
        and inference settings; the paper's numbers beside ours (metric, ours, paper,
        difference, with a warning when the paper selected them on the test set); the per-image
        table (``id="per-image"``, sortable by clicking a header, or on load with ``?sort=COL``
        / ``?sort=-COL``); every panel, the training curves and the DSConv kernel figures as
        ``<img>`` with paths relative to the page; the recipe in a ``<details>``. Missing pieces
        are skipped with a short note. No external resource is referenced.

    Raises:
        DataError: ``run_dir`` does not exist, holds no metrics.json (the message names the
            folder), holds several evaluated splits and ``split`` is None without a "test" one,
            or its metrics.json is not a readable JSON object.
    """
    run_dir = Path(run_dir)
    eval_dir = _find_eval_dir(run_dir, split)
    ev, rd = EvalDir(eval_dir), RunDir(run_dir)
    metrics = _read_json(ev.metrics)
    is_run = eval_dir != run_dir  # False: a --predictions evaluation, no run around it
    out_path = Path(out) if out is not None else rd.report()
    page_dir = out_path.resolve().parent
    notes: list[str] = []

    cfg_text, cfg = _read_config(rd.config, notes)
    summary = _read_optional_json(rd.summary, notes) or {}
    name = _protocol_name(metrics)
    head, head_err = _headline(metrics)

    network = metrics.get("network") or summary.get("network") or _get(cfg, "model", "name")
    dataset = metrics.get("dataset") or summary.get("dataset") or _get(cfg, "data", "dataset") or "unknown dataset"
    split_name = metrics.get("split") or (eval_dir.name if is_run else split) or "?"
    if network:
        title = f"{network} on {dataset} ({split_name})"
    else:
        title = f"predictions on {dataset} ({split_name})"
    n = metrics.get("n_images", metrics.get("n_cases"))
    unit = "cases" if "n_cases" in metrics and "n_images" not in metrics else "images"
    subtitle = f"{name} protocol" + (f" · {n} {unit}" if n is not None else "") + f" · {run_dir.resolve().name}"

    # --- figures -------------------------------------------------------------------------------
    figs = _figure_files(ev.figures)
    panels: dict[str, Path] = {}
    kernels: list[Path] = []
    curves: list[Path] = []
    others: list[Path] = []
    for p in figs:
        pid = _strip(p.stem, "_panel")
        if pid is not None:
            panels[pid] = p
        elif p.stem.endswith(("_dsconv_kernels", "_dsconv_kernels_zoom")):
            kernels.append(p)
        elif p.stem == "curves":
            curves.append(p)
        else:
            others.append(p)
    run_curves = rd.curves
    if is_run and run_curves.is_file():
        curves = [run_curves]  # the training curves; eval/<split>/figures/curves.png is the same plot

    # --- body ----------------------------------------------------------------------------------
    sections: list[str] = []
    toc: list[tuple[str, str]] = [("summary", "Summary"), ("metrics", "Metrics")]

    info: list[tuple[str, Any]] = [
        ("network", network or "-"),
        ("dataset", dataset),
        ("split", split_name),
        ("protocol", name),
    ]
    if n is not None:
        info.append((f"{unit}", n))
    for key in ("threshold", "tolerance", "nsd_tolerance_mm"):
        if key in metrics:
            t = _number(metrics[key])
            info.append((key, f"{t:g}" if t is not None else _text(metrics[key])))
    if metrics.get("classes"):
        info.append(("classes", ", ".join(map(str, metrics["classes"]))))
    if metrics.get("checkpoint"):
        info.append(("checkpoint", metrics["checkpoint"]))
    if metrics.get("predictions"):
        info.append(("predictions", metrics["predictions"]))
    if eval_protocol := _get(cfg, "eval", "protocol"):
        info.append(("recipe eval.protocol", _text(eval_protocol)))
    info.append(("evaluation folder", str(eval_dir)))
    parts = [
        '<section id="summary"><h2>Summary</h2><div class="row"><div><h3>Evaluation</h3>',
        _kv_table((k, v) for k, v in info),
        "</div>",
    ]
    if summary:
        rows = []
        for k, v in summary.items():
            if k == "parameters":
                rows.append((k, _fmt_count(v)))
            elif k.endswith("seconds"):
                rows.append((k, _duration(v)))
            elif k not in ("network", "dataset"):
                rows.append((k, _text(v)))
        if rows:
            parts.append("<div><h3>Training</h3>" + _kv_table(rows) + "</div>")
    elif is_run:
        parts.append("<div>" + _note("no training summary (train_summary.json not found)") + "</div>")
    else:
        parts.append(
            "<div>"
            + _note(
                "an evaluation of predictions made outside a medseg run: no recipe, no "
                "training summary, no training curves"
            )
            + "</div>"
        )
    parts.append("</div></section>")
    sections.append("".join(parts))

    sections.append(_metrics_section(metrics, name, head, head_err))

    if "paper" in cfg:
        toc.append(("paper", "Paper"))
        sections.append(_paper_section(cfg["paper"], head, name))

    per_case_html, ids, per_case_title = _per_case_section(eval_dir, name, panels, notes)
    toc.append(("per-image-section", per_case_title))
    sections.append(per_case_html)

    toc.append(("panels", "Panels"))
    order = [i for i in ids if i in panels] + [i for i in panels if i not in ids]
    if order:
        grid = "".join(
            _img(
                panels[i],
                page_dir,
                f"panel of {i}",
                f"{i}: image | ground truth | probability | TP (green) / FP (red) / FN (blue)",
                anchor=f"panel-{urllib.parse.quote(i)}",
            )
            for i in order
        )
        sections.append(f'<section id="panels"><h2>Panels</h2><div class="grid">{grid}</div></section>')
    else:
        sections.append(
            '<section id="panels"><h2>Panels</h2>'
            + _note("no panels (figures/ holds no <id>_panel.png)")
            + "</section>"
        )

    toc.append(("curves", "Training curves"))
    if curves:
        grid = "".join(
            _img(p, page_dir, "training curves", str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else p.name)
            for p in curves
        )
        sections.append(f'<section id="curves"><h2>Training curves</h2><div class="grid wide">{grid}</div></section>')
    else:
        sections.append(
            '<section id="curves"><h2>Training curves</h2>'
            + _note("no training curves (figures/curves.png not found)")
            + "</section>"
        )

    if kernels:
        toc.append(("kernels", "DSConv kernels"))
        grid = "".join(
            _img(
                p,
                page_dir,
                p.stem.replace("_", " "),
                ("zoomed window: " if p.stem.endswith("_zoom") else "") + f"sampled DSConv kernel positions, {p.name}",
            )
            for p in kernels
        )
        sections.append(f'<section id="kernels"><h2>DSConv kernels</h2><div class="grid narrow">{grid}</div></section>')

    if others:
        toc.append(("other-figures", "Other figures"))
        grid = "".join(_img(p, page_dir, p.stem, p.name) for p in others)
        sections.append(
            f'<section id="other-figures"><h2>Other figures</h2><div class="grid narrow">{grid}</div></section>'
        )

    toc.append(("recipe", "Recipe"))
    if cfg_text is not None:
        sections.append(
            '<section id="recipe"><h2>Recipe</h2><details><summary>config.yaml (resolved recipe)</summary>'
            f"<pre>{_e(cfg_text)}</pre></details></section>"
        )
    else:
        sections.append(
            '<section id="recipe"><h2>Recipe</h2>' + _note("no recipe (config.yaml not found)") + "</section>"
        )

    if notes:
        sections.append(
            '<section id="notes"><h2>Notes</h2><ul>' + "".join(f"<li>{_e(t)}</li>" for t in notes) + "</ul></section>"
        )

    html_text = _page(title, subtitle, toc, "\n".join(sections))
    return write_text_atomic(out_path, html_text)


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def _run_name(run_dir: Path) -> str:
    return run_dir.name or run_dir.resolve().name


def compare_runs(run_dirs: Iterable[str | os.PathLike], split: str = "test") -> list[dict[str, Any]]:
    """One row of headline numbers per run, for a side-by-side table.

    Reads:
        Per run: ``RUN/eval/<split>/metrics.json`` (or ``RUN/metrics.json`` for an evaluation of
        predictions), ``RUN/train_summary.json`` (parameters) and ``RUN/config.yaml`` (network
        and dataset names when metrics.json lacks them).

    Returns:
        A list of dicts with the keys ``run`` (folder name), ``network``, ``dataset``,
        ``protocol``, ``parameters`` (int from train_summary.json, else None), then the headline
        numbers of :func:`medseg.workflows.protocols.headline`. Every row has the same keys: the
        union over the runs in first-seen order (runs of different protocols can be compared),
        None where a run has no such number. Writes nothing.

    Raises:
        DataError: a run folder does not exist or has no evaluation of ``split`` (the message
            names the run), or its metrics.json is unreadable.
        medseg.errors.ConfigError: a metrics.json names an unknown protocol.
    """
    from medseg.workflows.protocols import headline

    rows: list[dict[str, Any]] = []
    for rd in run_dirs:
        run_dir = Path(rd)
        path = RunDir(run_dir).evaluation(split).metrics
        if not path.is_file():
            if EvalDir(run_dir).metrics.is_file():
                path = EvalDir(run_dir).metrics
            elif not run_dir.is_dir():
                raise DataError(f"run {run_dir} does not exist")
            else:
                raise DataError(
                    f"run {run_dir} has no evaluation of split {split!r} ({path} is missing); "
                    f"run `medseg evaluate {run_dir} --split {split}` first"
                )
        metrics = _read_json(path)
        ignored: list[str] = []
        summary = _read_optional_json(RunDir(run_dir).summary, ignored) or {}
        _, cfg = _read_config(RunDir(run_dir).config, ignored)
        try:
            numbers = headline(metrics)
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path} lacks the {_protocol_name(metrics)} protocol's block {exc}") from exc
        params = _number(summary.get("parameters"))
        row: dict[str, Any] = {
            "run": _run_name(run_dir),
            "network": metrics.get("network") or summary.get("network") or _get(cfg, "model", "name"),
            "dataset": metrics.get("dataset") or summary.get("dataset") or _get(cfg, "data", "dataset"),
            "protocol": _protocol_name(metrics),
            "parameters": int(params) if params is not None else None,
        }
        for k, v in numbers.items():
            row.setdefault(k, v)
        rows.append(row)
    columns = _columns(rows)
    return [{c: r.get(c) for c in columns} for r in rows]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return cols


def _cell_text(key: str, value: Any) -> str:
    if _is_missing(value):
        return "-"
    if key == "parameters":
        return _fmt_count(value)
    return _fmt(value)


def format_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_runs` as an aligned plain-text table for the terminal.

    Columns are the union of the rows' keys; floats with 4 decimals, ``parameters`` with
    thousands separators, "-" for None; numbers right-aligned, text left-aligned. Reads and
    writes nothing; returns ``"(no runs)"`` for no rows.
    """
    if not rows:
        return "(no runs)"
    cols = _columns(rows)
    cells = [[_cell_text(c, r.get(c)) for c in cols] for r in rows]
    numeric = [
        all(_is_missing(r.get(c)) or _number(r.get(c)) is not None for r in rows)
        and c not in ("run", "network", "dataset", "protocol")
        for c in cols
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _csv_value(value: Any) -> Any:
    return "" if _is_missing(value) else value


def write_comparison(rows: Sequence[dict[str, Any]], out_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write the rows of :func:`compare_runs` as ``<out_prefix>.csv`` and ``<out_prefix>.html``.

    Writes (atomically, parent folders created): the CSV with one header line (the union of the
    rows' keys) and the raw values (full float precision, empty for None); the HTML, a static
    page with the same table (``id="comparison"``; 4 decimals, thousands separators, "-" for
    None) sortable by clicking a header (or on load with ``?sort=COL`` / ``?sort=-COL``), inline
    CSS and script only. ``out_prefix`` is used as given plus the suffix (``runs/cmp`` ->
    ``runs/cmp.csv``, ``runs/cmp.html``). Returns ``(csv_path, html_path)``.

    Raises:
        OSError: the files cannot be written.
    """
    prefix = os.fspath(out_prefix)
    csv_path, html_path = Path(prefix + ".csv"), Path(prefix + ".html")
    cols = _columns(rows)
    buf = io.StringIO()
    if cols:
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for r in rows:
            writer.writerow([_csv_value(r.get(c)) for c in cols])
    write_text_atomic(csv_path, buf.getvalue())

    text_cols = ("run", "network", "dataset", "protocol")
    body_rows = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if c in text_cols or (_number(v) is None and not _is_missing(v)):
                cells.append(f'<td data-v="{_e(_sort_value(v))}">{_e(_cell_text(c, v))}</td>')
            else:
                cells.append(_num_td(v, _cell_text(c, v)))
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    heads = "".join(
        f'<th scope="col"{"" if c in text_cols else NUM_CLASS} data-key="{_e(c)}">{_e(_label(c))}</th>' for c in cols
    )
    protocols = sorted({str(r.get("protocol")) for r in rows if r.get("protocol")})
    descs = "".join(
        f"<li><strong>{_e(p)}</strong>: {_e(_description(p) or 'unknown protocol')}</li>" for p in protocols
    )
    body = (
        '<section id="comparison-section"><h2>Runs</h2>'
        + (
            f'<div class="scroll"><table id="comparison" class="data sortable"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(body_rows)}</tbody></table></div>"
            if cols
            else _note("no runs")
        )
        + "<p>Click a column header to sort (again to reverse). Headline numbers as "
        "<code>medseg.workflows.protocols.headline</code> gives them; distances in mm.</p>"
        + (f"<h3>Protocols</h3><ul>{descs}</ul>" if descs else "")
        + f'<p>CSV: <a href="{_e(urllib.parse.quote(csv_path.name))}">{_e(csv_path.name)}</a></p></section>'
    )
    n = len(rows)
    write_text_atomic(
        html_path,
        _page(
            "medseg comparison",
            f"{n} run{'s' if n != 1 else ''}" + (f" · {', '.join(protocols)}" if protocols else ""),
            [],
            body,
        ),
    )
    return csv_path, html_path
