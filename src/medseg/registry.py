"""The one plugin mechanism: a name -> builder registry for every plugin kind.

Each kind keeps its registry in the module of its concern: networks
(:data:`medseg.models.MODELS`), datasets (:data:`medseg.data.base.DATASETS`), losses
(:data:`medseg.losses.LOSSES`), optimisers and learning-rate schedules
(:data:`medseg.engine.schedules.OPTIMIZERS`, :data:`~medseg.engine.schedules.SCHEDULES`),
preprocessing steps (:data:`medseg.data.transforms.preprocess.STEPS`) and evaluation protocols
(:data:`medseg.workflows.protocols.PROTOCOLS`). The config (:func:`medseg.config.validate`)
checks every name a recipe gives against these registries, so a new plugin is one decorated
function or class in one file.

Example::

    MODELS = Registry("network")

    @MODELS.register("unet")
    class UNet(nn.Module): ...

    net = MODELS.create("unet", in_channels=3)

:meth:`Registry.create` turns what a user can get wrong in a builder's arguments into one-line
:class:`~medseg.errors.ConfigError` messages: an argument the builder does not take (named, with
the closest valid one and the list of valid ones), a missing required argument, and a value the
builder's own checks refuse (a ``ValueError`` raised by medseg code, e.g. ``depth must be >= 1``).
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any, Callable, Iterator

from medseg.errors import CheckpointError, ConfigError, MedsegError, did_you_mean, unknown_name_message


class ArgumentError(ConfigError, ValueError):
    """A builder refused the value of one of its arguments.

    A :class:`~medseg.errors.ConfigError` (the CLI prints it as one line) that is also a
    ``ValueError``, so code that caught the builder's own ``ValueError`` still does.
    """


_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")


def _parameters(builder: Callable[..., Any]) -> tuple[list[str], bool] | None:
    """The keyword arguments ``builder`` takes and whether it takes ``**kwargs``; None if unknown."""
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):
        return None
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _raised_by_medseg(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is medseg code (a deliberate check)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == "medseg" or module.startswith("medseg.")


class Registry:
    """Map names to builders (classes or functions).

    Args:
        kind: what the entries are ("network", "dataset"), used in error messages.

    Raises:
        ValueError: registering a name twice.
        ConfigError: asking for an unknown name (the message lists the closest valid names).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``builder`` under ``name``."""

        def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = builder
            return builder

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        """Return the builder registered under ``name``."""
        if name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, name, self._entries))
        return self._entries[name]

    def arguments(self, name: str) -> list[str]:
        """The keyword arguments the builder of ``name`` takes, in signature order ([] if unknown)."""
        params = _parameters(self.get(name))
        return params[0] if params else []

    def _key(self, what: str | None, arg: str) -> str:
        return f"{what}.{arg}" if what else arg

    def _unknown_argument(self, name: str, arg: str, valid: list[str], what: str | None) -> str:
        where = f"{self._key(what, arg)}: " if what else ""
        listed = f" (arguments: {', '.join(valid)})" if valid else ""
        return f"{where}{self.kind} {name!r} has no argument {arg!r}{did_you_mean(arg, valid)}{listed}"

    def _check_arguments(
        self, name: str, builder: Callable[..., Any], kwargs: dict[str, Any], what: str | None
    ) -> None:
        """Refuse ``kwargs`` that do not fit the builder's signature, before calling it."""
        params = _parameters(builder)
        if params is None:
            return
        valid, var_kw = params
        if not var_kw:
            unknown = [k for k in kwargs if k not in valid]
            if unknown:
                raise ConfigError(self._unknown_argument(name, unknown[0], valid, what))
        try:
            inspect.signature(builder).bind(**kwargs)
        except TypeError as exc:
            missing = re.findall(r"'([^']+)'", str(exc)) if "missing" in str(exc) else []
            if missing:
                prefix = f"{what}: " if what else ""
                raise ConfigError(
                    f"{prefix}{self.kind} {name!r} needs argument {missing[0]!r} (arguments: {', '.join(valid)})"
                ) from exc
        except ValueError:  # a signature inspect cannot bind against: let the call decide
            pass

    def _with_argument(
        self, name: str, exc: MedsegError, kwargs: dict[str, Any], what: str | None
    ) -> MedsegError | None:
        """A weight-file error ``exc`` with the argument it is about named in front, when exactly
        one path argument's value appears in its message (``network 'cpfnet', argument
        encoder_weights: weight file '...' not found``); None to keep ``exc`` as it is."""
        if not isinstance(exc, CheckpointError):
            return None
        message = str(exc)
        hits = [
            k
            for k, v in kwargs.items()
            if isinstance(v, (str, os.PathLike)) and os.fspath(v) and os.fspath(v) in message
        ]
        if len(hits) != 1:
            return None
        where = self._key(what, hits[0]) if what else f"{self.kind} {name!r}, argument {hits[0]}"
        try:
            return type(exc)(f"{where}: {message}")
        except Exception:  # noqa: BLE001 - an error class with another constructor: keep it as it is
            return None

    def create(self, name: str, /, what: str | None = None, **kwargs: Any) -> Any:
        """Build the entry registered under ``name`` with ``kwargs``.

        Args:
            name: the registered name.
            what: the recipe key the arguments come from (e.g. "model.args"), for messages:
                ``model.args.base_channel: network 'unet' has no argument 'base_channel'; did
                you mean 'base_channels'? (arguments: ...)``. Without it the messages name the
                entry and the argument only.
            kwargs: the builder's keyword arguments.

        Raises:
            ConfigError: unknown name; an argument the builder does not take (named, with the
                closest valid one and every valid one) or a missing required one.
            ArgumentError: (a ConfigError and a ValueError) the builder's own checks refused a
                value: a ``ValueError`` raised by medseg code while building. A ``ValueError``
                from inside another library keeps its traceback (a bug, or a check to add).
            MedsegError: raised by the builder; a CheckpointError about a weight file gets the
                argument that named the file in front of its message.
        """
        builder = self.get(name)
        self._check_arguments(name, builder, kwargs, what)
        try:
            return builder(**kwargs)
        except TypeError as exc:
            found = _UNEXPECTED.search(str(exc))
            if found and found.group(1) in kwargs:  # a builder forwarding **kwargs to one that refuses it
                raise ConfigError(self._unknown_argument(name, found.group(1), self.arguments(name), what)) from exc
            raise
        except MedsegError as exc:
            named = self._with_argument(name, exc, kwargs, what)
            if named is None:
                raise
            raise named from exc
        except ValueError as exc:
            if not _raised_by_medseg(exc):
                raise
            where = f"{what}: " if what else ""
            raise ArgumentError(f"{where}{self.kind} {name!r}: {exc}") from exc

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def in_order(self) -> tuple[str, ...]:
        """Registered names in registration order (the order a module lists its entries in, e.g.
        the optimisers ``adamw, adam, sgd``), for messages that list the valid choices."""
        return tuple(self._entries)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        """``registry[name]``: the builder, as :meth:`get` (ConfigError for an unknown name)."""
        return self.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
