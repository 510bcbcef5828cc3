"""Our Olmo-3: hyper-parameters (``config``), the architecture (``model``), MLX-free folder inspection
(``modelinfo``), loading (``loader``), quantizing (``quantize``) and generated test models (``tiny``).

This ``__init__`` imports nothing, so ``olmo3.model.modelinfo`` and ``olmo3.model.config`` stay MLX-free.
"""
