"""The offline mini-clip teacher: its pretraining pool and the fitting of its image tower."""

__all__: list[str] = []  # modules are imported by name
