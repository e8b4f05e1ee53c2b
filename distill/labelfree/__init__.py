"""Without labels or under a tight budget: teacher pseudo-labels, the parity filter,
picking which images to buy, and harvesting in rounds."""

__all__: list[str] = []  # modules are imported by name
