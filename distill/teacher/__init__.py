"""The offline mini-clip teacher (its pretraining pool and the fitting of its image
tower) and the zero-shot classifier every teacher's embeddings are read with."""

__all__: list[str] = []  # modules are imported by name
