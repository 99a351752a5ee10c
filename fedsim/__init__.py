"""fedsim: federated learning at the wireless edge, simulated with Flower on Ray."""

__version__ = "0.1.0"

__all__ = ["load", "resume", "run"]


def __getattr__(name: str):
    """``fedsim.run``, ``fedsim.resume`` and ``fedsim.load`` (:mod:`fedsim.api`), imported on first
    use so that ``import fedsim`` stays light."""
    if name in __all__:
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
