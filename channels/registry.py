"""Named registries of pluggable parts, and the pydantic glue that lets a config name them.

A :class:`Registry` maps a name to a class. Built-in entries are ``"module:attribute"`` strings,
imported on first use, so naming a part costs nothing until it is used. Third-party packages add
entries through a Python entry-point group; code adds them with :meth:`Registry.register`.

A config field declared with :func:`component` accepts the part's name (``fading = "rayleigh"``)
or a table with the name and the part's own parameters (``fading = {name = "rician", k = 4.0}``),
and validates the table with the part's ``Params`` model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny, ValidationError, model_serializer
from pydantic_core import PydanticCustomError

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no registry entry carries."""


class Registry(Generic[T]):
    """Name -> class, filled from built-ins, an entry-point group and :meth:`register`.

    Args:
        kind: what the entries are, for messages ("fading law", "workload").
        builtins: name -> ``"module:attribute"`` (imported lazily) or the object itself.
        group: the entry-point group third-party packages register under (None: none).
    """

    def __init__(self, kind: str, builtins: Mapping[str, str | T], group: str | None = None) -> None:
        self.kind = kind
        self._specs: dict[str, str | T] = dict(builtins)
        self._loaded: dict[str, T] = {}
        self._group = group
        self._scanned = group is None

    def register(self, name: str, obj: T | None = None) -> Any:
        """Add ``obj`` under ``name`` (also usable as a class decorator: ``@REG.register("x")``)."""

        def add(o: T) -> T:
            self._specs[name] = o
            self._loaded[name] = o
            return o

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a registration made for a test or a notebook experiment)."""
        self._specs.pop(name, None)
        self._loaded.pop(name, None)

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self._group):
            self._specs.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._scan()
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._specs

    def get(self, name: str) -> T:
        """The entry called ``name``; :class:`UnknownName` (a ValueError) lists the known ones."""
        if name not in self._specs:
            self._scan()
        if name not in self._specs:
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        if name not in self._loaded:
            spec = self._specs[name]
            self._loaded[name] = _load(spec, self.kind, name) if isinstance(spec, str) else spec
        return self._loaded[name]


def params_model(registry: Registry[Any], name: Any) -> Any:
    """``registry.get(name)`` inside a config validator: an unknown name becomes a validation
    error located at the table's ``name`` key, so the message reads ``strategy.name: unknown ...``."""
    try:
        return registry.get(name)
    except UnknownName as exc:
        error = PydanticCustomError("unknown_name", "{message}", {"message": str(exc)})
        raise ValidationError.from_exception_data(registry.kind, [
            {"type": error, "loc": ("name",), "input": name}]) from None


def _load(spec: str, kind: str, name: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UnknownName(f"{kind} {name!r} is registered as {spec!r} but cannot be loaded: {exc}") from None
    return obj


class ComponentParams(BaseModel):
    """Parameters of one registered part: its ``name`` plus whatever the part declares.

    A part without parameters serialises to its bare name, so a resolved config reads
    ``fading = "rayleigh"``, not a one-key table."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str

    @model_serializer(mode="wrap")
    def _bare_name(self, handler: Callable[[Any], Any]) -> Any:
        data = handler(self)
        return data["name"] if isinstance(data, dict) and set(data) == {"name"} else data


def parse_component(registry: Registry[Any], value: Any) -> ComponentParams:
    """``value`` (a name, a table with ``name``, or params) as the named part's ``Params``."""
    if isinstance(value, ComponentParams):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"expected a {registry.kind} name ({', '.join(registry.names())}) or a table with a "
                         "'name' key")
    return params_model(registry, value["name"]).Params.model_validate(value)


class Dispatch:
    """Field metadata saying which model validates a table of that field, given the table (used
    by error messages and the generated config reference)."""

    def __init__(self, model_for: Callable[[dict[str, Any]], type[BaseModel]], registry: Registry[Any]) -> None:
        self.model_for = model_for
        self.registry = registry


def component(registry: Registry[Any]) -> Any:
    """The annotation of a config field that names a part of ``registry`` (see the module docstring)."""
    return Annotated[SerializeAsAny[ComponentParams], BeforeValidator(lambda v: parse_component(registry, v)),
                     Dispatch(lambda node: registry.get(node["name"]).Params, registry)]
