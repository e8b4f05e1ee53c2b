"""Distillation side of vlm-distill: data, harvest, the VL2V-ADiP trainer, the local teacher.

Nothing here imports torch at package import time; modules that need it import it
themselves.
"""

__all__: list[str] = []
