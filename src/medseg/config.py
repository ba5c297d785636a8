"""Recipes: YAML files (``configs/<dataset>/<network>.yaml``) -> one typed :class:`Config`.

A recipe holds only what differs from the defaults below. ``--set key=value`` overrides any
key by its dotted path (``--set optim.lr=3e-4 --set data.patch_size=96``); values are parsed as
YAML (``true``, ``1e-4``, ``[0.9, 0.95]``). An unknown key, in a file or an override, raises
:class:`~medseg.errors.ConfigError` naming the key and the closest valid ones.

Free-form sections: ``model.args`` (passed to the network builder) and ``data.args`` (passed to
the dataset builder); their keys are checked by those builders.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medseg.atomic import write_text_atomic
from medseg.errors import ConfigError, closest, did_you_mean


@dataclass
class ModelConfig:
    """Which network, and its keyword arguments (see ``medseg models``)."""

    name: str = "unet"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset, validation split and training patches.

    ``val_fraction`` of the training images (at least one; whole patients where the dataset
    groups images by patient) is carved out as the validation set with ``seed``, unless
    ``val_split`` names a split of the dataset to validate on instead (ROSSA's "val"); the test
    split is never used for model selection.
    """

    dataset: str = "synthetic_vessels"
    root: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.2
    val_split: str | None = None
    patch_size: int = 64
    samples_per_epoch: int = 64
    foreground_prob: float = 0.0
    augment: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0


@dataclass
class TrainConfig:
    """Trainer settings (Lightning does the loop).

    ``precision``: "auto" gives bf16/16-mixed on a GPU and 32-true on the CPU; any Lightning
    precision string is accepted. ``devices``/``num_nodes``/``strategy`` set multi-GPU and
    multi-node DDP (``strategy: ddp``).

    ``gradient_clip_algorithm``: "norm" or "value" (PraNet clamps every gradient to +-0.5).
    ``freeze_offsets_steps`` / ``freeze_encoder_steps``: the DSConv offset branches / the
    ImageNet encoder (parameters under ``encoder.``) get no updates for the first N optimiser
    steps. ``gradient_checkpointing``: recompute encoder activations in the backward pass
    (networks with an ``encoder`` that supports it). ``multiscale``: scale factors of the
    training batch (PraNet: [0.75, 1, 1.25]), each rounded to a multiple of
    ``multiscale_divisor`` px; the losses at the scales are averaged into one step.
    ``trainable``: parameter-name prefixes that train (empty: all); the others are frozen and
    their modules kept in eval mode. ``stages``: a list of stages run one after another, each a
    mapping of overrides of this recipe (``name``, ``max_epochs``, ``lr``, ``trainable``,
    ``augment``, ``loss``, ``batch_size``, ``patch_size``, ``samples_per_epoch``,
    ``freeze_encoder_steps``); stage k starts from the best weights of stage k-1.
    """

    max_epochs: int = 20
    max_steps: int = -1
    batch_size: int = 8
    accumulate_grad_batches: int = 1
    precision: str = "auto"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    val_every_n_epochs: int = 1
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    progress_bar: bool = True
    #: A NaN or infinite training loss: "stop" (an error naming the step and the last good
    #: checkpoint) or "skip" (no optimiser step for that batch, training goes on).
    nonfinite_loss: str = "stop"
    freeze_offsets_steps: int = 0
    gradient_clip_algorithm: str = "norm"
    freeze_encoder_steps: int = 0
    gradient_checkpointing: bool = False
    multiscale: list[float] = field(default_factory=list)
    multiscale_divisor: int = 32
    trainable: list[str] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class OptimConfig:
    """Optimiser: "adamw" (Loshchilov & Hutter, ICLR 2019), "adam" (coupled L2 weight decay, as
    torch.optim.Adam: PraNet, OCTA-Net) or "sgd" (``momentum``, ``nesterov``: CPFNet,
    H-DenseUNet)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped per optimiser step unless ``plateau``.

    name: "cosine" (linear warm-up over ``warmup_steps`` then cosine to ``min_lr_ratio * lr``),
    "onecycle" (Smith & Topin 2019; ``pct_start``), "poly" ((1 - t/T) ** ``power`` after warm-up,
    DeepLab), "plateau" (ReduceLROnPlateau on validation Dice, ``factor``, ``patience`` in
    validation rounds) or "constant".
    """

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    power: float = 0.9
    pct_start: float = 0.3
    factor: float = 0.5
    patience: int = 5


@dataclass
class LossConfig:
    """Training loss (see :mod:`medseg.losses`).

    name: "bce" (mean BCE, the DSCNet released code), "bce_dice" (BCE + ``dice_weight`` * soft
    Dice), "continuity" (BCE + ``alpha`` * L1 between Sobel gradients of prediction and target),
    "cldice" (soft Dice + ``alpha`` * soft clDice, Shit et al. CVPR 2021, MONAI's
    SoftDiceclDiceLoss, ``cldice_iters`` skeleton iterations), "structure" (PraNet's weighted
    BCE + weighted IoU), "ce_dice" (cross-entropy with ``class_weights`` + ``dice_weight`` *
    multi-class soft Dice, background included when ``include_background``; CPFNet,
    H-DenseUNet), "mse" or "mse_dice" (on probabilities; OCTA-Net), "bce_tcloss" or
    "bce_dice_tcloss" (BCE, or BCE + ``dice_weight`` * soft Dice, + ``topo_weight`` * DSCNet's
    persistent-homology TCLoss, reconstructed from the paper, on tiles of ``topo_patch`` px, 0:
    the whole patch; :mod:`medseg.losses.tcloss`). ``fov_only`` restricts binary losses to FOV
    pixels.

    Several outputs (deep supervision, extra heads; see ``forward_outputs`` in
    :mod:`medseg.models`): ``outputs`` maps output name -> weight (default {"out": 1}),
    ``targets`` output name -> "mask" (default), "centerline" or "boundary" (a band of
    ``boundary_width`` px on each side of the mask's edges), ``output_losses`` output name ->
    loss name where one output needs another loss than ``name``.
    """

    name: str = "bce_dice"
    dice_weight: float = 1.0
    alpha: float = 0.5
    cldice_iters: int = 3
    fov_only: bool = False
    class_weights: list[float] = field(default_factory=list)
    include_background: bool = True
    outputs: dict[str, float] = field(default_factory=lambda: {"out": 1.0})
    targets: dict[str, str] = field(default_factory=dict)
    output_losses: dict[str, str] = field(default_factory=dict)
    boundary_width: int = 1
    topo_weight: float = 1.0
    topo_patch: int = 0


@dataclass
class EvalConfig:
    """Evaluation: the protocol, inference (whole image or MONAI sliding window, TTA) and figures.

    ``protocol``: "auto" (the dataset's own: vessel for fundus data, octa for OCTA, polyp for
    colonoscopy, volume for NIfTI/DICOM volumes) or a name of
    :data:`medseg.workflows.protocols.PROTOCOLS`. ``inference``: "auto" (whole image for
    networks without extent-dependent normalisation, else sliding window), "whole" or
    "sliding". ``roi_size`` of 0 means "the training patch size". ``mode``: "gaussian" or
    "constant" blending. ``tta``: test-time augmentation names or sets (see
    :func:`medseg.inference.parse_tta`; empty = none). ``batch_size``: images per forward pass
    (0: automatic, by image size; :class:`medseg.inference.Predictor`).
    ``nsd_tolerance_mm``: the volume protocol's surface-Dice tolerance (mm).
    ``centerline_tolerance``: the octa protocol's tolerance kernel (pixels; 1 = none, 3 for
    centerline-level ground truth as OCTA-Net does for ROSE-1 DVC and ROSE-2).
    ``class_names``: names of the classes of label-map data, background first (default: the
    MSD ``dataset.json`` labels, else "0", "1", ...).
    ``split`` is evaluated after training when ``after_train`` is true and the dataset has it.
    ``kernel_figure`` draws the sampled positions of a DSConv (networks that have one).
    """

    protocol: str = "auto"
    inference: str = "auto"
    tta: list = field(default_factory=list)
    batch_size: int = 0
    nsd_tolerance_mm: float = 1.0
    centerline_tolerance: int = 1
    class_names: list = field(default_factory=list)
    threshold: float = 0.5
    roi_size: int = 0
    overlap: float = 0.5
    mode: str = "gaussian"
    sw_batch_size: int = 4
    split: str = "test"
    after_train: bool = True
    figures: bool = True
    kernel_figure: bool = True


@dataclass
class Config:
    """A whole recipe. ``seed`` seeds everything (weights, validation split, patches)."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: The paper's numbers for this recipe (free form; shown beside ours in reports):
    #: ``{source, table, protocol, values: {metric: value}, selected_on_test, notes}``.
    paper: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-serialisable; tuples become lists)."""
        return _plain(dataclasses.asdict(self))


_FREE_FORM = {"paper", "model.args", "data.args", "data.augment", "loss.outputs", "loss.targets", "loss.output_losses"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(obj: Any, updates: dict[str, Any], prefix: str, source: str, replace: str = "") -> None:
    """Write ``updates`` into dataclass ``obj`` in place, checking every key.

    A free-form mapping (``model.args``, ...) is merged key by key, except the one named by
    ``replace``, which is replaced whole (``--set model.args={...}`` replaces,
    ``--set model.args.kernel_size=3`` merges).
    """
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: section {prefix.rstrip('.') or '<top>'} must be a mapping, got {updates!r}")
    valid = {f.name: f for f in fields(obj)}
    for key, value in updates.items():
        path = prefix + str(key)
        if key not in valid:
            near = closest(str(key), valid)
            hint = f"; did you mean {', '.join(prefix + n for n in near)}?" if near else ""
            raise ConfigError(
                f"{source}: unknown config key {path!r}{hint} Valid keys here: {', '.join(sorted(valid))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path + ".", source, replace)
        elif path in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path} must be a mapping, got {value!r}")
            merged = {} if path == replace else dict(current)
            merged.update(value)
            setattr(obj, key, merged)
        else:
            setattr(obj, key, _coerce(value, current, path, source))


def _coerce(value: Any, current: Any, path: str, source: str) -> Any:
    """Check ``value`` against the type of the default ``current``; ints are accepted for floats."""
    if current is None or value is None:
        return _number(value) if isinstance(value, str) else value
    if isinstance(value, str) and isinstance(current, (int, float)) and not isinstance(current, bool):
        value = _number(value)  # PyYAML reads "1e-4" (no dot) as a string
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {path} must be true or false, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if path == "train.devices":
            return value
        raise ConfigError(f"{source}: {path} must be an integer, got {value!r}")
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise ConfigError(f"{source}: {path} must be a list of {len(current)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: {path} must be a string, got {value!r}")
    if isinstance(current, float) and not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {path} must be a number, got {value!r}")
    return value


def _number(text: str) -> Any:
    """``"1e-4"`` -> 1e-4, ``"3"`` -> 3; other strings unchanged."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"a.b=value"`` into ``("a.b", parsed_value)`` (value parsed as YAML).

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. optim.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: missing file, YAML syntax error (with the line), or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build_config(
    base: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    source: str = "config",
) -> Config:
    """Defaults <- ``base`` (a recipe dict) <- ``overrides`` (``key=value`` strings), checked.

    Raises:
        ConfigError: unknown key (with the closest valid keys) or a value of the wrong type.
    """
    cfg = Config()
    _merge(cfg, base or {}, "", source)
    for text in overrides or []:
        key, value = parse_override(text)
        _merge(cfg, _nest(key, value), "", f"--set {text}", replace=key)
    validate(cfg)
    return cfg


#: The built-in default recipe (``medseg train`` with no ``--config``): a small U-Net on the
#: synthetic vessel dataset, sized to train, evaluate and draw its figures in under 3 minutes on
#: 2 CPU cores.
DEFAULT_RECIPE: dict[str, Any] = {
    "seed": 0,
    "model": {"name": "unet", "args": {"base_channels": 16, "depth": 3}},
    "data": {"dataset": "synthetic_vessels", "patch_size": 64, "samples_per_epoch": 128},
    "train": {"max_epochs": 40, "batch_size": 8, "val_every_n_epochs": 2},
    "optim": {"lr": 3e-3},
    "schedule": {"name": "cosine", "warmup_steps": 10},
    "loss": {"name": "bce_dice", "dice_weight": 1.0},
    "eval": {"roi_size": 64},
}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a recipe file (or :data:`DEFAULT_RECIPE` when ``path`` is None) and apply overrides."""
    base = read_yaml(path) if path is not None else DEFAULT_RECIPE
    return build_config(base, overrides, source=str(path) if path is not None else "default recipe")


def validate(cfg: Config) -> None:
    """Range checks that no type check catches, run on every recipe before anything is built.

    Every message names the dotted key, the allowed range or values (with the closest valid name
    where a name is involved) and the value found, e.g. ``optim.lr must be > 0, got 0.0``. The
    stages of ``train.stages`` are checked here too (``train.stages[1].lr must be > 0``), so a
    bad later stage is refused before the first one trains. Names that only a registry knows
    are checked where cheap: ``eval.protocol`` against
    :data:`medseg.workflows.protocols.PROTOCOLS` (imported here, lazily: that module imports no
    config), and, only when the recipe sets them, ``eval.tta`` against :mod:`medseg.inference`'s
    transforms, ``data.augment`` against :class:`medseg.data.AugmentConfig` and
    ``data.args.preprocess`` with :func:`medseg.data.transforms.preprocess.parse_steps` (so a typo there is
    refused before the data check reads a file). Network and dataset names and their other
    arguments are checked by their registries when they are built.

    Raises:
        ConfigError: the first key whose value is out of range, naming it.
    """
    d, t, o, s, lo, e = cfg.data, cfg.train, cfg.optim, cfg.schedule, cfg.loss, cfg.eval

    def need(ok: bool, key: str, allowed: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")

    def choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise ConfigError(_choice_msg(key, value, choices))

    # seed and model
    need(_is_int(cfg.seed) and 0 <= cfg.seed < 2**32, "seed", "an integer in [0, 2**32)", cfg.seed)
    need(
        isinstance(cfg.model.name, str) and bool(cfg.model.name),
        "model.name",
        "a network name (medseg models)",
        cfg.model.name,
    )
    # data
    if _is_int(d.root):  # YAML reads --data-root 2024 as a number; the folder is named by its digits
        d.root = str(d.root)
    need(d.root is None or isinstance(d.root, (str, os.PathLike)), "data.root", "a folder path", d.root)
    need(d.val_split is None or isinstance(d.val_split, str), "data.val_split", "a split name", d.val_split)
    need(0.0 < d.val_fraction < 1.0, "data.val_fraction", "in (0, 1)", d.val_fraction)
    need(d.patch_size > 0, "data.patch_size", "> 0 (pixels)", d.patch_size)
    need(d.samples_per_epoch > 0, "data.samples_per_epoch", "> 0", d.samples_per_epoch)
    need(0.0 <= d.foreground_prob <= 1.0, "data.foreground_prob", "in [0, 1]", d.foreground_prob)
    need(d.num_workers >= 0, "data.num_workers", ">= 0 (0: load in the main process)", d.num_workers)
    # train
    need(t.batch_size > 0, "train.batch_size", "> 0", t.batch_size)
    need(t.accumulate_grad_batches > 0, "train.accumulate_grad_batches", "> 0", t.accumulate_grad_batches)
    need(t.max_steps == -1 or t.max_steps >= 1, "train.max_steps", ">= 1, or -1 for no step limit", t.max_steps)
    need(
        t.max_epochs >= 1 or (t.max_epochs == -1 and t.max_steps >= 1),
        "train.max_epochs",
        ">= 1, or -1 for no epoch limit when train.max_steps is set",
        t.max_epochs,
    )
    need(t.val_every_n_epochs >= 1, "train.val_every_n_epochs", ">= 1", t.val_every_n_epochs)
    need(t.log_every_n_steps >= 1, "train.log_every_n_steps", ">= 1", t.log_every_n_steps)
    need(t.num_nodes >= 1, "train.num_nodes", ">= 1", t.num_nodes)
    need(
        _devices_ok(t.devices),
        "train.devices",
        'a number of devices >= 1, -1 (all), "auto", or a list of device indices',
        t.devices,
    )
    choice("train.accelerator", t.accelerator, ACCELERATORS)
    choice("train.precision", t.precision, PRECISIONS)
    need(
        t.gradient_clip_val is None or (_is_number(t.gradient_clip_val) and t.gradient_clip_val >= 0),
        "train.gradient_clip_val",
        "a number >= 0 or null (no clipping)",
        t.gradient_clip_val,
    )
    choice("train.gradient_clip_algorithm", t.gradient_clip_algorithm, ("norm", "value"))
    choice("train.nonfinite_loss", t.nonfinite_loss, ("stop", "skip"))
    need(t.freeze_offsets_steps >= 0, "train.freeze_offsets_steps", ">= 0", t.freeze_offsets_steps)
    need(t.freeze_encoder_steps >= 0, "train.freeze_encoder_steps", ">= 0", t.freeze_encoder_steps)
    need(
        isinstance(t.multiscale, list) and all(_is_number(x) and x > 0 for x in t.multiscale),
        "train.multiscale",
        "a list of positive scale factors",
        t.multiscale,
    )
    need(t.multiscale_divisor > 0, "train.multiscale_divisor", "> 0", t.multiscale_divisor)
    need(
        isinstance(t.trainable, list) and all(isinstance(x, str) and x for x in t.trainable),
        "train.trainable",
        "a list of parameter-name prefixes",
        t.trainable,
    )
    # plugin names, checked against their registries (lazily: those modules sit above the config)
    from medseg.engine.schedules import OPTIMIZERS, SCHEDULES
    from medseg.losses import list_losses

    losses = list_losses()
    # optim
    choice("optim.name", o.name, OPTIMIZERS.in_order())
    need(o.lr > 0, "optim.lr", "> 0", o.lr)
    need(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    need(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", "two numbers in [0, 1)", list(o.betas))
    need(o.momentum >= 0, "optim.momentum", ">= 0", o.momentum)
    need(
        not (o.name == "sgd" and o.nesterov and o.momentum <= 0),
        "optim.momentum",
        "> 0 with optim.nesterov: true",
        o.momentum,
    )
    # schedule
    choice("schedule.name", s.name, SCHEDULES.in_order())
    need(s.warmup_steps >= 0, "schedule.warmup_steps", ">= 0", s.warmup_steps)
    need(0.0 <= s.min_lr_ratio <= 1.0, "schedule.min_lr_ratio", "in [0, 1]", s.min_lr_ratio)
    need(s.power > 0, "schedule.power", "> 0", s.power)
    need(0.0 < s.pct_start < 1.0, "schedule.pct_start", "in (0, 1)", s.pct_start)
    need(0.0 < s.factor < 1.0, "schedule.factor", "in (0, 1)", s.factor)
    need(s.patience >= 0, "schedule.patience", ">= 0 (validation rounds)", s.patience)
    # loss
    choice("loss.name", lo.name, losses)
    need(lo.dice_weight >= 0, "loss.dice_weight", ">= 0", lo.dice_weight)
    need(lo.alpha >= 0, "loss.alpha", ">= 0", lo.alpha)
    need(lo.cldice_iters >= 1, "loss.cldice_iters", ">= 1", lo.cldice_iters)
    need(
        isinstance(lo.class_weights, list) and all(_is_number(w) and w >= 0 for w in lo.class_weights),
        "loss.class_weights",
        "a list of weights >= 0, one per class (empty: equal)",
        lo.class_weights,
    )
    need(lo.boundary_width > 0, "loss.boundary_width", "> 0 (pixels)", lo.boundary_width)
    need(lo.topo_weight >= 0, "loss.topo_weight", ">= 0", lo.topo_weight)
    need(lo.topo_patch == 0 or lo.topo_patch >= 2, "loss.topo_patch", "0 (whole patch) or >= 2 (pixels)", lo.topo_patch)
    need(
        bool(lo.outputs) and all(_is_number(w) and w >= 0 for w in lo.outputs.values()),
        "loss.outputs",
        "a mapping of output names to weights >= 0",
        lo.outputs,
    )
    for out, name in lo.output_losses.items():
        choice(f"loss.output_losses.{out}", name, losses)
    for out, target in lo.targets.items():
        choice(f"loss.targets.{out}", target, TARGETS)
    # eval
    from medseg.workflows.protocols import PROTOCOLS  # lazily: the workflows sit above the config

    choice("eval.protocol", e.protocol, ("auto", *PROTOCOLS.names()))
    choice("eval.inference", e.inference, ("auto", "whole", "sliding"))
    choice("eval.mode", e.mode, ("gaussian", "constant"))
    need(0.0 < e.threshold < 1.0, "eval.threshold", "in (0, 1)", e.threshold)
    need(0.0 <= e.overlap < 1.0, "eval.overlap", "in [0, 1)", e.overlap)
    need(e.batch_size >= 0, "eval.batch_size", ">= 0 (0: automatic)", e.batch_size)
    need(e.roi_size >= 0, "eval.roi_size", ">= 0 (0: the training patch size)", e.roi_size)
    need(e.sw_batch_size >= 1, "eval.sw_batch_size", ">= 1", e.sw_batch_size)
    need(e.nsd_tolerance_mm > 0, "eval.nsd_tolerance_mm", "> 0 (mm)", e.nsd_tolerance_mm)
    need(
        e.centerline_tolerance >= 1 and e.centerline_tolerance % 2 == 1,
        "eval.centerline_tolerance",
        "an odd kernel size >= 1 (pixels)",
        e.centerline_tolerance,
    )
    need(
        isinstance(e.class_names, list) and all(isinstance(c, (str, int)) for c in e.class_names),
        "eval.class_names",
        "a list of class names, background first",
        e.class_names,
    )
    _check_tta(e.tta)
    _check_stages(t.stages)
    # free-form options whose parsers are cheap to run now, before any data is read
    if d.augment:
        _check_augment("data.augment", d.augment)
    for i, stage in enumerate(t.stages):
        if stage.get("augment"):
            _check_augment(f"train.stages[{i}].augment", stage["augment"])
    if "preprocess" in d.args:
        from medseg.data.transforms.preprocess import parse_steps  # lazily: the data layer sits above the config

        _prefixed("data.args.preprocess", parse_steps, d.args["preprocess"])


TARGETS = ("mask", "centerline", "boundary")
#: ``train.accelerator`` values (Lightning's registered accelerators, "gpu" its alias of cuda).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
#: ``train.precision`` values: "auto" and Lightning 2's precision strings.
PRECISIONS = (
    "auto",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "32",
    "16",
    "bf16",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)
STAGE_KEYS = (
    "name",
    "max_epochs",
    "max_steps",
    "lr",
    "trainable",
    "augment",
    "loss",
    "batch_size",
    "patch_size",
    "samples_per_epoch",
    "freeze_encoder_steps",
    "val_every_n_epochs",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _devices_ok(devices: Any) -> bool:
    """Lightning's ``devices``: N >= 1, -1, "auto", "N", "0,1", or a list of indices."""
    if _is_int(devices):
        return devices >= 1 or devices == -1
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return True
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return bool(parts) and all(p.isdigit() for p in parts)
    if isinstance(devices, (list, tuple)):
        return bool(devices) and all(_is_int(i) and i >= 0 for i in devices)
    return False


def _prefixed(key: str, check: Any, value: Any) -> None:
    """Run ``check(value)``; a ConfigError it raises is raised again with ``key: `` in front."""
    try:
        check(value)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _check_augment(key: str, augment: Any) -> None:
    """``data.augment`` (or a stage's ``augment``): the options :class:`medseg.data.AugmentConfig` takes."""
    from medseg.data.transforms import AugmentConfig  # lazily: the data layer sits above the config

    _prefixed(key, AugmentConfig.from_dict, augment)


def _check_tta(tta: Any) -> None:
    """``eval.tta``: empty/"none", true, a set or transform name, "a,b" or a list of names."""
    if tta in (None, False, "", "none", []) or tta is True:
        return
    if isinstance(tta, str):
        items = [x.strip() for x in tta.split(",") if x.strip()]
    elif isinstance(tta, (list, tuple)) and all(isinstance(x, str) for x in tta):
        items = [x.strip() for x in tta]
    else:
        raise ConfigError(f"eval.tta must be a list of test-time augmentation names, got {tta!r}")
    from medseg.inference import parse_tta

    try:
        parse_tta(items)  # the one parser of TTA specs; only the key is added here
    except ConfigError as exc:
        raise ConfigError(f"eval.tta: {exc}") from None


#: Each stage key's check: (test, allowed values) for :func:`_check_stages`.
_STAGE_VALUES: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) != "", "a non-empty name"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_steps": (lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 for no step limit"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trainable": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
        "a list of parameter-name prefixes",
    ),
    "augment": (lambda v: isinstance(v, dict), "a mapping of augment options"),
    "loss": (lambda v: isinstance(v, dict), "a mapping of loss keys"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "patch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (pixels)"),
    "samples_per_epoch": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "freeze_encoder_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "val_every_n_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}


def _check_stages(stages: Any) -> None:
    """``train.stages``: a list of mappings of known keys with values in range, each named by index."""
    if not isinstance(stages, list):
        raise ConfigError(f"train.stages must be a list of stages (mappings of overrides), got {stages!r}")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ConfigError(f"train.stages[{i}] must be a mapping of overrides, got {stage!r}")
        unknown = [k for k in stage if k not in STAGE_KEYS]
        if unknown:
            raise ConfigError(
                f"train.stages[{i}]: unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), STAGE_KEYS)} "
                f"Valid keys: {', '.join(STAGE_KEYS)}"
            )
        for key, value in stage.items():
            test, allowed = _STAGE_VALUES[key]
            if isinstance(value, str) and key != "name":
                value = _number(value)  # PyYAML reads 1e-4 (no dot) as a string
            if not test(value):
                raise ConfigError(f"train.stages[{i}].{key} must be {allowed}, got {stage[key]!r}")
        loss = stage.get("loss", {})
        if "name" in loss:
            from medseg.losses import list_losses  # lazily, as in validate()

            if loss["name"] not in list_losses():
                raise ConfigError(_choice_msg(f"train.stages[{i}].loss.name", loss["name"], list_losses()))


def _choice_msg(key: str, value: Any, choices: tuple[str, ...]) -> str:
    hint = did_you_mean(str(value), choices)
    return f"{key} {value!r} is not one of {', '.join(choices)}{hint}"


def write_yaml_atomic(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as YAML to ``path`` atomically (see :mod:`medseg.atomic`)."""
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
