"""fedsim.flowerfast: Flower's records behave exactly as before the patch."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.message.typeddict import TypedDict

from fedsim.apps import flowerfast


def test_installed_by_the_apps_and_records_still_check_types() -> None:
    import fedsim.apps.client  # noqa: F401  (installs on import)

    assert flowerfast.install() and TypedDict.__setitem__ is flowerfast._setitem
    m = MetricRecord({"a": 1.0, "b": [1, 2]})
    assert m["a"] == 1.0 and "b" in m and "c" not in m and len(m) == 2 and list(m) == ["a", "b"]
    with pytest.raises(TypeError):
        m[3] = 1.0  # keys must be str
    with pytest.raises(TypeError):
        m["x"] = "text"  # metric values must be numbers
    with pytest.raises(TypeError):
        ConfigRecord({"k": object()})
    with pytest.raises(TypeError):
        ArrayRecord()["w"] = np.zeros(3)  # an Array, not an ndarray
    rec = RecordDict({"arrays": ArrayRecord({"w": Array(np.arange(3.0))}), "config": ConfigRecord({"k": "v"})})
    assert rec["config"]["k"] == "v" and np.array_equal(rec["arrays"]["w"].numpy(), np.arange(3.0))
    with pytest.raises(TypeError):
        rec["bad"] = {"not": "a record"}
    copy = m.copy()
    copy["a"] = 2.0
    assert m["a"] == 1.0 and copy == {"a": 2.0, "b": [1, 2]}
    with pytest.raises(KeyError):
        _ = m["missing"]
    del copy["a"]
    assert "a" not in copy
