"""The configuration reference, generated from the schema: every key of an experiment file with its
type, default and meaning, including the keys of every registered workload, strategy and channel
part (the docs build inserts it into ``docs/reference/config.md``)."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from channels import Dispatch
from fedsim.config.experiment import ExperimentConfig


def type_text(annotation: Any) -> str:
    """A readable type: ``int``, ``float | None``, ``"a" | "b"``, ``list[[int, int]]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_text(a) for a in args)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (list, tuple, dict):
        inner = ", ".join(type_text(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, dict) and "name" in value:
        return f'`"{value["name"]}"`'
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def _doc(model: type[BaseModel]) -> str:
    text = (model.__doc__ or "").strip()
    return " ".join(text.split()) if text and not text.startswith("!!!") else ""


def rows(model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Table rows ``| key | type | default | meaning |`` for the fields of ``model``; the keys of a
    nested table follow as ``prefix.table.key``."""
    out = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        sub = _submodel(field)
        if sub is not None:
            out += rows(sub, f"{prefix}{name}.")
            continue
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{prefix}{name}` | {type_text(field.annotation)} | {default_text(field)} | {desc} |")
    return out


def table(model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    return ["| key | type | default | meaning |", "|---|---|---|---|", *rows(model, prefix, skip)]


def _dispatch(field: FieldInfo) -> Dispatch | None:
    return next((m for m in field.metadata if isinstance(m, Dispatch)), None)


def _submodel(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def registered_parts(key: str, dispatch: Dispatch, level: int) -> list[str]:
    """A subsection per registered name of a field that names a part, with the part's own keys."""
    out = []
    for name in dispatch.registry.names():
        model = dispatch.model_for({"name": name})
        out += ["", f"{'#' * level} `{key}`: `{name}`", ""]
        if _doc(model):
            out += [_doc(model), ""]
        extra = [n for n in model.model_fields if n != "name"]
        out += table(model, f"{key}.", skip=("name",)) if extra else ["No parameters besides `name`."]
    return out


def section(model: type[BaseModel], prefix: str, level: int) -> list[str]:
    """The keys of ``model`` (a section), then its sub-sections and named parts."""
    plain = [n for n, f in model.model_fields.items() if _submodel(f) is None and _dispatch(f) is None]
    out = [_doc(model), ""] if _doc(model) else []
    if plain:
        out += table(model, prefix, skip=tuple(n for n in model.model_fields if n not in plain))
    for name, field in model.model_fields.items():
        sub, disp = _submodel(field), _dispatch(field)
        key = f"{prefix}{name}"
        if disp is not None:
            kind = disp.registry.kind
            out += ["", f"{'#' * level} `{key}`", "",
                    f"A {kind}: its name, or a table with `name` and the {kind}'s own keys "
                    f"({', '.join(f'`{n}`' for n in disp.registry.names())}).", *registered_parts(key, disp, level + 1)]
        elif sub is not None:
            out += ["", f"{'#' * level} `[{key}]`", "", *section(sub, key + ".", level + 1)]
    return out


def config_reference() -> str:
    """The whole reference as Markdown (headings from level 2)."""
    return "\n".join(["## Top level", "", *section(ExperimentConfig, "", 2)]) + "\n"
