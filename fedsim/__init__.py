"""fedsim: federated learning at the wireless edge, simulated with Flower on Ray."""

from fedsim.engines import env  # noqa: F401  (must run before flwr/ray are imported)

__version__ = "0.1.0"
