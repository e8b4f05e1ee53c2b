"""Training the student (Align-Distill-Predict and the baselines): config, student, losses,
tasks per stage, SWAD, the trainer and evaluation. Imports torch."""

__all__: list[str] = []  # modules are imported by name
