"""Validation errors as lines a user can act on: the key path, what is wrong, what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from channels import Dispatch, UnknownName
from fedsim.config.experiment import ExperimentConfig


def format_errors(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line per error of ``exc``, raised while validating ``data`` as an ExperimentConfig."""
    lines = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(err["loc"][:-1], data)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            if allowed == ["name"]:
                hint += " (this part takes no parameters; choose another part for them)"
            lines.append(f"  {key}: unknown key{hint}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            got = "" if isinstance(value, dict) else f" (got {value!r})"  # a whole table says nothing new
            lines.append(f"  {msg}{got}" if key == "(top level)" else f"  {key}: {msg}{got}")
    return "\n".join(lines)


def allowed_keys(loc: tuple[Any, ...], data: dict[str, Any]) -> list[str]:
    """Field names of the model that validates ``data`` at ``loc`` (best effort)."""
    model: type[BaseModel] | None = ExperimentConfig
    node: Any = data
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return []
        node = node.get(str(part)) if isinstance(node, dict) else None
        model = field_model(field, node)
    return sorted(model.model_fields) if model is not None else []


def field_model(field: Any, node: Any) -> type[BaseModel] | None:
    """The model that validates ``node`` in ``field``: a registered part's own model for a field
    that names one, else the field's model type."""
    for meta in field.metadata:
        if isinstance(meta, Dispatch):
            try:
                return meta.model_for(node if isinstance(node, dict) else {"name": node})
            except (UnknownName, KeyError, TypeError):
                return None
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
