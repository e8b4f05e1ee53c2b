"""Data: the dataset types, scanning folders and manifests, image checks, held-out splits
(no torch here).

Torch-side and builder modules are imported by name: :mod:`distill.data.views` (the
teacher's views), :mod:`distill.data.loaders` (torch datasets), :mod:`distill.data.digits`
and :mod:`distill.data.builders` (bundled benchmark builders).
"""

from .dataset import (
    DEFAULT_DOMAIN,
    DEFAULT_TEMPLATE,
    META_FILE,
    DataError,
    Dataset,
    Sample,
    Samples,
    class_prompts,
    display,
    read_class_file,
)
from .images import MAX_PIXELS, check_image, sniff_image
from .scan import scan
from .splits import split_holdout, split_sources

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TEMPLATE",
    "MAX_PIXELS",
    "META_FILE",
    "DataError",
    "Dataset",
    "Sample",
    "Samples",
    "check_image",
    "class_prompts",
    "display",
    "read_class_file",
    "scan",
    "sniff_image",
    "split_holdout",
    "split_sources",
]
