"""Federated neural architecture search workloads: ``nas-gdas``, ``nas-dash`` and
``nas-tabnas``, built from the separate parts in :mod:`fedsim.workloads.nas.taxonomy`."""
