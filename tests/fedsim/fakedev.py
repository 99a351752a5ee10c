"""Emulated accelerator for tests on machines without CUDA: tensors report the ``fakegpu``
device but hold real CPU data, so a whole run computes real numbers while every op checks, as CUDA
does, that its tensor operands share one device."""
from __future__ import annotations

import contextlib

import torch
from torch.utils._mode_utils import no_dispatch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map


def _register_backend() -> torch.device:
    """A Python-only PrivateUse1 backend named ``fakegpu`` (once per process): it has a device
    guard, so ``item()`` and friends work, but no kernels: every op lands in ``OnFake``."""
    if torch._C._get_privateuse1_backend_name() != "fakegpu":
        from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

        _setup_privateuseone_for_python_backend("fakegpu")
    return torch.device("fakegpu", 0)


FAKE = _register_backend()
_INDEX_OPS = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"}
_CROSS_DEVICE_OPS = {"aten::_to_copy", "aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize"}


class OnFake(torch.Tensor):
    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(cls, elem.size(), strides=elem.stride(),
                                                storage_offset=elem.storage_offset(),
                                                dtype=elem.dtype, device=FAKE, requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def tolist(self):
        return self.elem.tolist()

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert an accelerator tensor to numpy: use .cpu() first (as on CUDA)")

    def __array__(self, *args, **kwargs):
        return self.numpy()

    def __repr__(self):
        return f"OnFake({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _run(func, args, kwargs):
    name = func._schema.name
    seen: set[str] = set()

    def unwrap(x):
        if isinstance(x, OnFake):
            seen.add("fake")
            return x.elem
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            seen.add(x.device.type)  # "cpu", or "meta" for shape-only tensors
        return x

    if name in _INDEX_OPS:  # CUDA accepts CPU index tensors
        self_ = args[0]
        a = (unwrap(self_), tree_map(lambda x: x.elem if isinstance(x, OnFake) else x, args[1]),
             *tree_map(unwrap, tuple(args[2:])))
    else:
        a = tree_map(unwrap, args)
    k = tree_map(unwrap, kwargs)
    dev = k.get("device")
    to_fake = dev is not None and torch.device(dev).type == FAKE.type
    if to_fake:
        k["device"] = torch.device("cpu")
        gen = k.get("generator")
        if gen is not None:
            raise RuntimeError(f"{name}: a CPU generator cannot draw on the accelerator (as on CUDA)")
    if name not in _CROSS_DEVICE_OPS and len(seen) > 1:
        raise RuntimeError(f"{name}: expected all tensors on the same device, got the accelerator and CPU")
    out = func(*a, **k)
    if name.endswith("_") and args and isinstance(args[0], OnFake):
        return _sync_metadata(args[0])  # in place: the caller keeps the same wrapper
    if name in _CROSS_DEVICE_OPS:
        if name == "aten::_to_copy":
            wrap = to_fake or (dev is None and "fake" in seen)
        else:  # copy_ into its first argument keeps that argument's device
            return args[0]
    else:
        wrap = to_fake or "fake" in seen
    if not wrap:
        return out
    return tree_map(lambda x: OnFake(_resolved(x)) if isinstance(x, torch.Tensor) and not isinstance(x, OnFake) else x,
                    out)


def _resolved(t: torch.Tensor) -> torch.Tensor:
    """Lazy conjugate / negative views (``W.conj()``) materialised: the wrapper cannot carry their bits."""
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t


def _sync_metadata(w: OnFake) -> OnFake:
    """After an in-place op (``squeeze_``, ``resize_`` ...), give the wrapper its data's shape."""
    e = w.elem
    if w.shape != e.shape or w.stride() != e.stride():
        if w.untyped_storage().nbytes() < (e.storage_offset() + e.numel()) * e.element_size():
            raise NotImplementedError("fakedev: an in-place op grew a tensor beyond its storage")
        with no_dispatch():  # as_strided_ only rewrites the wrapper's sizes and strides
            w.as_strided_(e.shape, e.stride(), e.storage_offset())
    return w


class _Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


@contextlib.contextmanager
def emulated_device():
    with _Mode():
        yield FAKE
