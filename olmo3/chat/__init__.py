"""One conversation and the engine thread: the token-exact transcript next to the hybrid KV cache (``session``,
``kvcache``), sampling, the typed messages and events that cross to the GUI (``transcript``, ``events``), and
``engine``, the one thread that runs MLX.

This ``__init__`` imports nothing, so ``olmo3.chat.transcript``, ``events`` and ``sampling`` stay MLX-free.
"""
