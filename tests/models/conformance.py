"""Conformance tests every registered network passes (the contract of :mod:`medseg.models.contract`).

Besides behaviour (forward/backward at several sizes, batch independence, export, seeds,
parameter counts), the tests assert the contract: ``spatial_dims``, ``in_channels``,
``out_channels``, ``size_divisor``, ``output_activation`` and ``forward_outputs`` are declared
with the right types (:func:`medseg.models.contract.check_contract`); the main output has
``out_channels`` channels; ``forward_outputs(x)["out"]`` equals ``forward(x)``; and sizes that
are not multiples of ``size_divisor`` are refused with the message of the one size check
(:func:`medseg.models.contract.check_spatial_size`).

Volume networks (``spatial_dims`` 3, input (N, C, D, H, W)) use the same base with
``spatial_dims = 3`` and (D, H, W) size tuples; every test applies to them. Two adapt, one
applies to volumes only:

- ``test_onnx_dynamic_batch``: :func:`medseg.export.export_onnx` takes only an (N, C, H, W)
  ``input_shape`` today, so for a volume network the test exports with the same exporter and
  settings it uses (``torch.onnx.export``, ``dynamo=False``, opset ``onnx_opset``, symbolic
  batch axis) and checks the file with medseg's :func:`medseg.export.check_onnx` (batches 1
  and 2), which is rank-agnostic.
- ``test_sizes_not_divisible_are_refused_by_the_one_check`` perturbs every side in turn (H by
  d/2 and W by 1 for images, as before; D by d/2, H and W by 1 for volumes).
- ``test_volume_networks_refuse_an_image_batch`` (volumes only; skipped for images, whose
  rank check is each network's own and U-Net has none): a 4-D input raises ValueError saying
  a volume (N, C, D, H, W) is expected. ``tests/models/test_contract.py`` fails when a registered
network has no subclass of :class:`ModelConformance`.

A network's test file subclasses :class:`ModelConformance` once, as ``TestConformance<Name>``
(pytest collects the subclass; the base class has no ``Test`` prefix and is not collected on its
own), and sets the class attributes below. Example (about 10 lines; a volume network adds ``spatial_dims = 3`` and 3-tuples)::

    from conformance import ModelConformance

    class TestConformanceDSCNet(ModelConformance):
        name = "dscnet"
        kwargs = {"n_basic_layer": 4, "kernel_size": 3}   # light config for the behaviour tests
        in_channels = 1
        sizes = [(64, 64), (48, 80)]                      # must work; include a non-square one
        bad_sizes = [(70, 64), (64, 36)]                  # must raise ValueError naming 70 / 36
        expected_params = {"default": 2_094_169}
        param_kwargs = {"default": {}}
        allowed_unused = ("conv*x.dsc_conv_y.*", "conv*y.dsc_conv_x.*")
        export = "torchscript"

(``tests/`` is on ``sys.path`` when pytest runs, as pytest's default "prepend" import mode puts
the test file's folder there, so ``from conformance import ModelConformance`` works.)

Class attributes:

- ``name``: the registered name (``medseg.models.create_model(name, ...)``).
- ``kwargs``: keyword arguments for ``create_model`` in the behavioural tests, on top of
  ``in_channels=in_channels`` (``kwargs`` wins); use a light configuration for heavy networks.
- ``in_channels``: input channels of the test inputs (default 3).
- ``spatial_dims``: 2 (images, (N, C, H, W); the default) or 3 (volumes, (N, C, D, H, W)); must
  equal the network's ``spatial_dims``.
- ``sizes``: (H, W) sizes ((D, H, W) for volumes) that must work; the first is used by the
  single-size tests (default ``[(64, 64), (64, 96)]``).
- ``bad_sizes``: (H, W) / (D, H, W) sizes for which ``forward`` must raise ``ValueError`` whose
  message names the offending number (at least one side that is not a side of any entry of
  ``sizes``; if all are, any); those that are not multiples of ``size_divisor`` must get the
  message of :func:`medseg.models.contract.check_spatial_size`. Default ``[]`` (the network
  takes any size).
- ``batch``: batch size of the test inputs (default 2).
- ``expected_params``: description -> exact ``sum(p.numel() for p in model.parameters())``.
- ``param_kwargs``: description -> ``create_model`` kwargs for that count (used as given, no
  ``in_channels`` added). Networks are built on the ``meta`` device when they can be (no memory,
  instant), else on CPU.
- ``allowed_unused``: ``fnmatch`` patterns of parameter names that may get no gradient (modules
  the original allocates but never uses, kept for state-dict parity). Each pattern must match at
  least one parameter of the behavioural configuration.
- ``onnx_rtol``: bound on the ONNX relative error ``max|ort - torch| / max|torch|`` (1e-4).
- ``onnx_opset``: opset of the volume networks' ONNX export (17, as :func:`medseg.export.export_onnx`).
- ``export``: "torchscript" (``torch.jit.script`` or, failing that, ``torch.jit.trace``) or
  "torch.export" (``torch.export.export``): the format the network must export to and reload.
- ``tolerance``: eval-mode batch-versus-one-by-one bound, relative to the output scale:
  ``max|batch - single| <= tolerance * max(1, max|single|)`` (1e-5).

Every test builds its network with fixed seeds (``torch.manual_seed``) and fixed random inputs,
so failures reproduce.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, ClassVar

import pytest
import torch
import torch.nn as nn

from medseg.models import count_parameters, create_model
from medseg.models.contract import check_contract, check_spatial_size

__all__ = ["ModelConformance", "make_input", "build"]


def make_input(n: int, c: int, *spatial: int, seed: int = 0) -> torch.Tensor:
    """A fixed (N, C, *spatial) float32 input, standard normal, from ``seed``: (N, C, H, W) for
    ``spatial`` = (H, W), (N, C, D, H, W) for (D, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, *spatial, generator=g)


def build(name: str, kwargs: dict[str, Any], seed: int = 0) -> nn.Module:
    """``create_model(name, **kwargs)`` with ``torch.manual_seed(seed)`` set first."""
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


def _scale(t: torch.Tensor) -> float:
    return max(1.0, float(t.detach().abs().max()))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def size_error_parts(size: tuple[int, ...], size_divisor: int) -> list[str]:
    """The parts of the one size check's message for an input of spatial ``size`` ((H, W) or
    (D, H, W)) that every network's message holds, whatever its name, reason and note: "needs H
    and W (D, H and W) divisible by d, i.e. multiples of d" and "; input HxW (DxHxW) has ...
    multiple of d." (:func:`check_spatial_size`)."""
    with pytest.raises(ValueError) as info:
        check_spatial_size(list(size), size_divisor, "")
    head, tail = str(info.value).split("; input ", 1)
    return [head.strip(), "; input " + tail]


def assert_size_error(msg: str, size: tuple[int, ...], size_divisor: int, name: str) -> None:
    """AssertionError unless ``msg`` is the one size check's message for spatial ``size``."""
    missing = [part for part in size_error_parts(size, size_divisor) if part not in msg]
    assert not missing, (
        f"{name}: the ValueError for size {size} is not the one size check's "
        f"(medseg.models.contract.check_input_size); missing {missing} in {msg!r}"
    )


class ModelConformance:
    """Base class of the per-network conformance tests; see the module docstring.

    For volume networks (``spatial_dims = 3``) no test is skipped: ``test_onnx_dynamic_batch``
    is adapted (exported with ``torch.onnx.export`` directly at opset ``onnx_opset``, since
    :func:`medseg.export.export_onnx` takes (N, C, H, W) only, and checked with
    :func:`medseg.export.check_onnx`), the size tests perturb D, H and W, and
    ``test_volume_networks_refuse_an_image_batch`` runs (it is skipped for 2D networks only).
    """

    name: ClassVar[str] = ""
    kwargs: ClassVar[dict[str, Any]] = {}
    in_channels: ClassVar[int] = 3
    spatial_dims: ClassVar[int] = 2
    sizes: ClassVar[list[tuple[int, ...]]] = [(64, 64), (64, 96)]
    bad_sizes: ClassVar[list[tuple[int, ...]]] = []
    batch: ClassVar[int] = 2
    expected_params: ClassVar[dict[str, int]] = {}
    param_kwargs: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    allowed_unused: ClassVar[tuple[str, ...]] = ()
    onnx_rtol: ClassVar[float] = 1e-4
    onnx_opset: ClassVar[int] = 17
    export: ClassVar[str] = "torchscript"
    tolerance: ClassVar[float] = 1e-5

    # -- helpers ---------------------------------------------------------------------------------

    def model_kwargs(self) -> dict[str, Any]:
        """``create_model`` kwargs of the behavioural tests: ``in_channels`` + ``kwargs``."""
        return {"in_channels": self.in_channels, **self.kwargs}

    def make_model(self, seed: int = 0, eval_mode: bool = True) -> nn.Module:
        """The behavioural configuration, seeded, in eval (default) or training mode."""
        model = build(self.name, self.model_kwargs(), seed)
        return model.eval() if eval_mode else model.train()

    def make_x(self, n: int | None = None, size: tuple[int, ...] | None = None, seed: int = 0):
        """(n or ``batch``, ``in_channels``, *size) float32, ``size`` default ``sizes[0]``."""
        spatial = size or self.sizes[0]
        return make_input(self.batch if n is None else n, self.in_channels, *spatial, seed=seed)

    @staticmethod
    def outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forward_outputs(x)``: every network has it (``{"out": forward(x)}`` for one output)."""
        return model.forward_outputs(x)

    # -- the tests -------------------------------------------------------------------------------

    def test_declares_the_contract(self):
        model = self.make_model()
        check_contract(model)  # TypeError naming what is missing
        built = self.model_kwargs().get("in_channels")
        if built is not None:
            assert model.in_channels == built, (
                f"{self.name}: built with in_channels={built}, declares {model.in_channels}"
            )
        assert model.spatial_dims == self.spatial_dims, (
            f"{self.name}: declares spatial_dims {model.spatial_dims}, its conformance test {self.spatial_dims}"
        )
        ranks = [s for s in self.sizes + self.bad_sizes if len(s) != self.spatial_dims]
        assert not ranks, f"{self.name}: sizes {ranks} do not have {self.spatial_dims} sides"
        d = model.size_divisor
        wrong = [s for s in self.sizes if any(side % d for side in s)]
        assert not wrong, f"{self.name}: sizes {wrong} are not multiples of size_divisor {d}"

    def test_forward_and_backward(self):
        model = self.make_model(eval_mode=False)
        params = dict(model.named_parameters())
        for pattern in self.allowed_unused:
            assert any(fnmatch.fnmatchcase(n, pattern) for n in params), (
                f"allowed_unused pattern {pattern!r} matches no parameter of {self.name}"
            )
        for i, size in enumerate(self.sizes):
            model.zero_grad(set_to_none=True)
            x = self.make_x(size=size, seed=i)
            outs = self.outputs(model, x)
            assert isinstance(outs, dict) and "out" in outs, f"{self.name}: no 'out' output"
            main = outs["out"]
            rank = self.spatial_dims + 2
            assert main.dim() == rank and main.shape[0] == self.batch and main.shape[2:] == size, (
                f"{self.name}: main output {tuple(main.shape)} for input {tuple(x.shape)}"
            )
            assert main.shape[1] == model.out_channels, (
                f"{self.name}: main output has {main.shape[1]} channels, out_channels is {model.out_channels}"
            )
            assert main.dtype == torch.float32, f"{self.name}: main output dtype {main.dtype}"
            g = torch.Generator().manual_seed(100 + i)
            loss = x.new_zeros(())
            for key, value in outs.items():
                assert value.shape[0] == self.batch and value.shape[2:] == size, (
                    f"{self.name}: output {key!r} has shape {tuple(value.shape)}, input {size}"
                )
                assert torch.isfinite(value).all(), f"{self.name}: output {key!r} not finite"
                target = torch.rand(value.shape, generator=g)
                loss = loss + ((value - target) ** 2).mean()
            loss.backward()
            no_grad = [
                n
                for n, p in params.items()
                if p.requires_grad
                and p.grad is None
                and not any(fnmatch.fnmatchcase(n, pat) for pat in self.allowed_unused)
            ]
            assert not no_grad, f"{self.name}: parameters without gradient at {size}: {no_grad}"
            grads = [p.grad for p in params.values() if p.grad is not None]
            bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
            assert not bad, f"{self.name}: non-finite gradients in {bad}"
            assert any(bool(gr.abs().sum() > 0) for gr in grads), f"{self.name}: all gradients are 0"

    def test_output_shape_in_eval_for_every_size(self):
        model = self.make_model()
        with torch.no_grad():
            for size in self.sizes:
                y = model(self.make_x(size=size))
                assert y.shape[0] == self.batch and y.shape[2:] == size, (
                    f"{self.name}: output {tuple(y.shape)} for input size {size}"
                )
                assert y.shape[1] == model.out_channels, (
                    f"{self.name}: {y.shape[1]} output channels, out_channels {model.out_channels}"
                )
                assert torch.isfinite(y).all(), f"{self.name}: non-finite output at {size}"

    def test_bad_sizes_raise_value_error_naming_the_size(self):
        if not self.bad_sizes:
            pytest.skip(f"{self.name} takes any input size (no bad_sizes)")
        model = self.make_model()
        good = {d for s in self.sizes for d in s}
        for size in self.bad_sizes:
            with pytest.raises(ValueError) as info, torch.no_grad():
                model(self.make_x(n=1, size=size))
            msg = str(info.value)
            named = [d for d in size if re.search(rf"(?<!\d){d}(?!\d)", msg)]
            offending = [d for d in size if d not in good] or list(size)
            assert any(d in offending for d in named), (
                f"{self.name}: ValueError for size {size} does not name {offending}: {msg!r}"
            )
            d = model.size_divisor
            if any(side % d for side in size):
                assert_size_error(msg, size, d, self.name)

    def test_sizes_not_divisible_are_refused_by_the_one_check(self):
        model = self.make_model()
        d = model.size_divisor
        if d == 1:
            pytest.skip(f"{self.name} takes any input size (size_divisor 1)")
        base = self.sizes[0]
        # images: (H + d/2, W), (H, W + 1); volumes: (D + d/2, H, W), (D, H + 1, W), (D, H, W + 1)
        for i in range(len(base)):
            size = tuple(side + (d // 2 if i == 0 else 1) * (j == i) for j, side in enumerate(base))
            with pytest.raises(ValueError) as info, torch.no_grad():
                model(self.make_x(n=1, size=size))
            assert_size_error(str(info.value), size, d, self.name)

    def test_volume_networks_refuse_an_image_batch(self):
        if self.spatial_dims != 3:
            pytest.skip(f"{self.name} is a 2D network (the rank check is each 2D network's own)")
        model = self.make_model()
        image = make_input(1, self.in_channels, *self.sizes[0][1:])
        with pytest.raises(ValueError, match=r"expects a volume \(N, C, D, H, W\), got shape") as info:
            with torch.no_grad():
                model(image)
        assert f"({', '.join(str(s) for s in image.shape)})" in str(info.value), str(info.value)

    def test_eval_batch_equals_samples_one_by_one(self):
        # DSCNet's original S3_DSConv.py (github.com/YaoleiQi/DSCNet, 2-D) read sample 0's features for every sample.
        model = self.make_model()
        x = make_input(max(self.batch, 2), self.in_channels, *self.sizes[0], seed=3)
        with torch.no_grad():
            together = model(x)
            alone = torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])
        err = _max_diff(together, alone)
        assert err <= self.tolerance * _scale(alone), f"{self.name}: batch output differs from one-by-one by {err:.3g}"

    def test_forward_outputs_matches_forward(self):
        model = self.make_model()
        x = self.make_x()
        with torch.no_grad():
            outs = model.forward_outputs(x)
            main = model(x)
        assert isinstance(outs, dict) and "out" in outs, f"keys: {list(outs)}"
        assert all(isinstance(k, str) for k in outs), f"non-string keys: {list(outs)}"
        assert torch.equal(outs["out"], main), (
            f"{self.name}: forward_outputs(x)['out'] differs from forward(x) by {_max_diff(outs['out'], main):.3g}"
        )
        for key, value in outs.items():
            assert value.shape[0] == x.shape[0] and value.shape[2:] == x.shape[2:], (
                key,
                tuple(value.shape),
            )

    def test_output_activation(self):
        model = self.make_model()
        activation = model.output_activation
        assert activation in ("auto", "none"), activation
        if activation == "none":
            with torch.no_grad():
                for key, value in self.outputs(model, self.make_x()).items():
                    lo, hi = float(value.min()), float(value.max())
                    assert 0.0 <= lo and hi <= 1.0, f"{key}: values in [{lo}, {hi}], not [0, 1]"

    def test_safetensors_round_trip(self, tmp_path):
        from safetensors.torch import save_file

        from medseg.models.weights import load_strict, read_state_dict

        model = self.make_model(seed=0)
        # clone: safetensors refuses tensors that share memory (tied weights)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        path = tmp_path / "weights.safetensors"
        save_file(state, str(path))
        fresh = self.make_model(seed=1)
        x = self.make_x()
        with torch.no_grad():
            before = fresh(x)
            load_strict(fresh, read_state_dict(path), str(path), self.name)
            fresh.eval()
            err = _max_diff(fresh(x), model(x))
            assert err == 0, f"{self.name}: output after the safetensors round trip differs by {err:.3g}"
        assert _max_diff(before, model(x).detach()) > 0, "seed 1 built the same weights as seed 0"

    def test_seeds(self):
        a, b, c = self.make_model(seed=0), self.make_model(seed=0), self.make_model(seed=1)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb), "same seed, different state-dict keys"
        differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not differ, f"same seed, different tensors: {differ[:10]}"
        x = self.make_x()
        with torch.no_grad():
            ya, yb, yc = a(x), b(x), c(x)
        assert torch.equal(ya, yb), f"same seed, outputs differ by {_max_diff(ya, yb):.3g}"
        assert _max_diff(ya, yc) > 1e-6 * _scale(ya), "different seeds gave the same output"

    def test_export_and_reload(self, tmp_path):
        from medseg.export import export_program, export_torchscript

        model = self.make_model()
        x = self.make_x()
        with torch.no_grad():
            ref = model(x)
        if self.export == "torchscript":
            result = export_torchscript(model, tmp_path / "model.pt", example=x)
            loaded = torch.jit.load(str(result.path))
            with torch.no_grad():
                got = loaded(x)
        elif self.export == "torch.export":
            program = export_program(model, x, path=tmp_path / "model.pt2")
            loaded = torch.export.load(str(tmp_path / "model.pt2"))
            with torch.no_grad():
                got = loaded.module()(x)
                err = _max_diff(program.module()(x), ref)
                assert err <= 1e-5 * _scale(ref), f"{self.name}: exported program differs by {err:.3g}"
        else:
            raise AssertionError(f"export must be 'torchscript' or 'torch.export', got {self.export!r}")
        err = _max_diff(got, ref)
        assert err <= 1e-5 * _scale(ref), f"{self.name}: {self.export} output differs by {err:.3g}"

    def test_onnx_dynamic_batch(self, tmp_path):
        from medseg.export import check_onnx, export_onnx

        model = self.make_model()
        shape = (1, self.in_channels, *self.sizes[0])
        if self.spatial_dims == 2:
            path = export_onnx(model, tmp_path / "model.onnx", input_shape=shape)
        else:  # export_onnx takes (N, C, H, W) only: the same exporter and settings, by hand
            from medseg.export._common import quiet_deprecations
            from medseg.export.onnx_export import INPUT_NAME, OUTPUT_NAME

            path = tmp_path / "model.onnx"
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            with torch.no_grad(), quiet_deprecations():
                torch.onnx.export(
                    model,
                    (make_input(*shape),),
                    str(path),
                    dynamo=False,
                    opset_version=self.onnx_opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=axes,
                    do_constant_folding=True,
                )
        report = check_onnx(model, path, x=self.make_x(n=1), rtol=self.onnx_rtol)
        assert report["batches"] == [1, 2], f"{self.name}: ONNX check ran batches {report['batches']}"
        assert report["rel_error"] <= self.onnx_rtol, f"{self.name}: ONNX check {report}"

    def test_parameter_counts(self):
        if not self.expected_params:
            pytest.fail(f"{self.name}: set expected_params (description -> exact count)")
        counts = {}
        for desc in self.expected_params:
            kwargs = self.param_kwargs[desc]
            try:
                with torch.device("meta"):
                    model = create_model(self.name, **kwargs)
            except Exception:  # noqa: BLE001 - some constructors need real tensors
                model = create_model(self.name, **kwargs)
            counts[desc] = count_parameters(model)
        assert counts == self.expected_params, (
            f"{self.name}: parameter counts {counts}, expected {self.expected_params}"
        )
