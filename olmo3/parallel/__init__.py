"""Olmo-3 across several machines with ``mx.distributed``: tensor and pipeline parallelism, started by ``mlx.launch``.

* ``layout``: which rank holds what (heads, layer ranges balanced by bytes) and the checks that refuse a split
  that cannot work; MLX-free.
* ``slices``: a rank reads only its own slices of the safetensors files.
* ``shard``: one rank's part of the model and its forward pass (``all_sum`` after the sharded projections;
  the hidden state handed rank to rank with send/recv, or with ``all_sum`` where send/recv are missing).
* ``replicate``: rank 0 runs ``ChatSession``; the followers mirror its forward passes and cache operations.
* ``cluster``: start-up (same model everywhere, the cluster's memory verdict), rank 0's loader, the followers'
  loop; ``watchdog``: a side channel that notices a rank that died or stopped answering (MLX-free).

Not here (yet): tensor × pipeline on one group (e.g. 4 ranks as 2 stages of 2). It needs sub-groups
(``Group.split``), which MLX's ring and JACCL backends do not have (NCCL and MPI do).

This ``__init__`` imports nothing, so ``layout`` and ``watchdog`` stay MLX-free.
"""
