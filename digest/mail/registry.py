"""Find a mail backend by name: built-ins, the ``digest.backends`` entry points, module:Class."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from digest.errors import ConfigError
from digest.mail.base import BaseBackend

if TYPE_CHECKING:
    from digest.config import Settings

ENTRY_POINT_GROUP = "digest.backends"

#: Built-in backends; a plugin cannot take over these names.
BUILTIN_BACKENDS = {
    "console": "digest.mail.console:ConsoleBackend",
    "file": "digest.mail.file:FileBackend",
    "memory": "digest.mail.memory:MemoryBackend",
    "smtp": "digest.mail.smtp:SMTPBackend",
}


def backend_names() -> list[str]:
    """Every name ``backend`` may take: the built-ins, then installed plugins."""
    plugins = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return list(BUILTIN_BACKENDS) + [name for name in plugins if name not in BUILTIN_BACKENDS]


def backend_class(name: str) -> type[BaseBackend]:
    """The backend class for a built-in name, an entry-point name or a ``module:Class`` path."""
    if name in BUILTIN_BACKENDS:
        return _import(BUILTIN_BACKENDS[name], name)
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"mail backend {name!r} (entry point {ep.value!r}) could not be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return _check(loaded, name)
    if ":" in name:
        return _import(name, name)
    raise ConfigError(
        f"unknown mail backend {name!r}: use one of {', '.join(backend_names())}, "
        "or a module:Class path — check DIGEST_BACKEND"
    )


def get_backend(settings: Settings, **overrides: Any) -> BaseBackend:
    """A backend for ``settings.backend``, configured from settings and ``overrides``."""
    return backend_class(settings.backend).from_settings(settings, **overrides)


def _import(path: str, name: str) -> type[BaseBackend]:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"mail backend {name!r} is not a module:Class path")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"mail backend {name!r}: cannot import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        loaded = functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise ConfigError(
            f"mail backend {name!r}: module {module_name!r} has no {attribute!r}"
        ) from None
    return _check(loaded, name)


def _check(loaded: object, name: str) -> type[BaseBackend]:
    if not (isinstance(loaded, type) and issubclass(loaded, BaseBackend)):
        raise ConfigError(
            f"mail backend {name!r} is {loaded!r}, not a subclass of "
            "digest.mail.base.BaseBackend"
        )
    return loaded
