"""A plain name -> builder registry, shared by models and datasets.

Example::

    MODELS = Registry("network")

    @MODELS.register("unet")
    class UNet(nn.Module): ...

    net = MODELS.create("unet", in_channels=3)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from medseg.errors import ConfigError, unknown_name_message


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

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the entry registered under ``name`` with ``kwargs``.

        Raises:
            ConfigError: unknown name, or a keyword the builder does not take.
        """
        builder = self.get(name)
        try:
            return builder(**kwargs)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc) or "got an unexpected" in str(exc):
                raise ConfigError(f"{self.kind} {name!r}: {exc}") from exc
            raise

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
