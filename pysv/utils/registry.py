"""Name → class registries for the plug-in families (encoders, losses, samplers).

A family package creates one :class:`Registry` and exposes its ``register`` decorator; a class
joins by decorating itself in any module of the package::

    @pysv.models.register("my_encoder")
    class MyEncoder(nn.Module): ...

:meth:`Registry.discover` imports every module of the package (``pkgutil``), so a new file is all
it takes (as voxceleb_trainer's ``importlib`` by name and 3D-Speaker's ``builder.py``, without
wespeaker's ``if/elif``). Hyper-parameters are the keyword arguments of the class's ``__init__``:
:meth:`Registry.hparam_names`, :meth:`Registry.default_hparams` and :meth:`Registry.resolve_hparams`
read them from the signature, so no class keeps a hand-written copy.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable, Dict, Iterable, Tuple, Type


def _plain(value: Any) -> Any:
    """Tuples as lists (what yaml.safe_dump writes and configs hold)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class Registry:
    """Classes of one family by name (plus aliases); ``skip`` = constructor arguments that are not
    hyper-parameters (e.g. a loss's ``embed_dim`` and ``num_classes``)."""

    def __init__(self, family: str, package: str, skip: Iterable[str] = ()):
        self.family, self.package = family, package
        self.skip = ("self", *skip)
        self._classes: Dict[str, type] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: str, aliases: Iterable[str] = ()) -> Callable[[type], type]:
        """Class decorator: make the class buildable as ``name`` (and its ``aliases``)."""
        def add(cls: type) -> type:
            for key in (name, *aliases):
                owner = self._classes.get(key) or self._classes.get(self._aliases.get(key, ""))
                if owner is not None and owner is not cls:
                    raise ValueError(f"{self.family} name {key!r} is taken by {owner.__module__}.{owner.__name__}")
            self._classes[name] = cls
            self._aliases.update({a: name for a in aliases})
            cls.registered_name = name
            return cls
        return add

    def discover(self) -> None:
        """Import every module of the package, so that their ``register`` decorators run."""
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> Tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._classes)

    def aliases(self) -> Dict[str, str]:
        return dict(self._aliases)

    def canonical(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{self.family} name must be a string, got {type(name).__name__}")
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._classes:
            raise ValueError(f"unknown {self.family} {name!r}; choose one of {', '.join(self.names())}")
        return key

    def get(self, name: str) -> type:
        """The class registered as ``name`` (or an alias); ``ValueError`` listing the names if none."""
        return self._classes[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(name)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True

    def _signature(self, name: str) -> Dict[str, inspect.Parameter]:
        params = inspect.signature(self.get(name).__init__).parameters
        return {k: p for k, p in params.items() if k not in self.skip
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def hparam_names(self, name: str) -> Tuple[str, ...]:
        """The hyper-parameters (keyword arguments) class ``name`` accepts."""
        return tuple(self._signature(name))

    def default_hparams(self, name: str) -> Dict[str, Any]:
        """Hyper-parameters of ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
        return {k: _plain(p.default) for k, p in self._signature(name).items()}

    def check_hparams(self, name: str, hparams: Dict[str, Any]) -> None:
        """``TypeError`` naming the hyper-parameters ``name`` does not accept."""
        allowed = self.hparam_names(name)
        unknown = sorted(k for k in hparams if k not in allowed)
        if unknown:
            raise TypeError(f"{self.family} {self.canonical(name)!r} got unknown hyper-parameter(s) "
                            f"{', '.join(map(repr, unknown))}; it accepts: {', '.join(allowed) or '(none)'}")

    def resolve_hparams(self, name: str, hparams: Dict[str, Any]) -> Dict[str, Any]:
        """Every hyper-parameter of ``name``: the given values over the signature's defaults (what
        a run records in its resolved config)."""
        self.check_hparams(name, hparams)
        out = self.default_hparams(name)
        out.update({k: _plain(v) for k, v in hparams.items()})
        return out

    def build(self, name: str, *args, **hparams) -> Any:
        """Instantiate ``name`` with positional ``args`` and checked keyword ``hparams``."""
        cls: Type = self.get(name)
        self.check_hparams(name, hparams)
        return cls(*args, **hparams)
