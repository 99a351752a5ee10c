"""Two engines over the same Flower ServerApp and ClientApp.

``inline`` (:mod:`.inline`): a synchronous in-process Grid that calls the ClientApp directly.
``ray`` (:mod:`.ray`): Flower's simulation runtime on its Ray backend, local or on a cluster.
For the same seed both give identical metrics: replies are ordered by partition id, never by
arrival.
"""
