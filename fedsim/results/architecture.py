"""The architecture an architecture search found, as text for tables and the CLI."""

from __future__ import annotations

import json
from typing import Any


def architecture_text(architecture: Any) -> str:
    """One line for a found architecture: its JSON, or for a DAAS pair the genotype's JSON and
    the policy's most likely sub-policy (the full logits stay in ``architecture.json``)."""
    if isinstance(architecture, dict) and set(architecture) == {"genotype", "policy"}:
        top = (architecture["policy"] or {}).get("top") or ["?"]
        return f"{json.dumps(architecture['genotype'], separators=(',', ':'))} + policy {top[0]}"
    return json.dumps(architecture, separators=(",", ":"))
