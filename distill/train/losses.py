"""Loss functions of ADiP and the KD baseline, on plain tensors.

ADiP (official code, ``DFC_STAGE1.dfc_loss``)::

    L = -(1/n) Σ_i [ λ·cos(PF_i, I_t(x_i)) + (1-λ)·cos(PF_i, T_{y_i}) ]

pure cosine: no temperature, no L2, no cross-entropy. ``text_loss="softmax"`` (an
ablation, not the official loss) replaces the text term by the cross-entropy of the
Predict stage's classifier 100·cos(PF, T_c) over every class prompt, so the other classes'
prompts push away as well as T_y pulls.

KD (official ``DFC_STAGE36``): cross-entropy on the student's logits plus λ times a KL term
between the teacher's zero-shot distribution softmax(100·cos(I_t, T_c)/τ) and the student's
softmax(logits/τ). The official code calls ``F.kl_div(p_student, p_teacher)`` with
probabilities where log-probabilities belong, which is not a divergence; we use the
well-defined KL(p_teacher ‖ p_student) with the same temperature τ = 0.1 on both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.train.student import LOGIT_SCALE, text_logits

__all__ = ["adip_loss", "ce_loss", "kd_loss", "teacher_logits"]


def adip_loss(
    emb: torch.Tensor,
    image_t: torch.Tensor,
    text_y: torch.Tensor,
    lam: float = 0.5,
    image_mask: torch.Tensor | None = None,
    *,
    text_classes: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """ADiP loss of projected student features ``emb`` (B, D) against teacher targets.

    Returns ``loss`` and its two terms ``image`` = -mean cos(PF, I_t) and ``text`` =
    -mean cos(PF, T_y) (so ``loss = λ·image + (1-λ)·text``; -1 is a perfect match).
    ``image_mask`` (B,) bool, when given, keeps only those rows' image targets: the image
    term is the mean over them (0 when none is kept); the text term keeps every row.
    ``text_classes`` (C, D) with ``labels`` (B,), when given, make the text term the
    cross-entropy of 100·cos(PF, T_c) against the labels instead (``text_y`` unused).

    >>> v = torch.eye(2)
    >>> adip_loss(v, v, v)["loss"].item()
    -1.0
    >>> adip_loss(v, -v, v, image_mask=torch.tensor([True, False]))["image"].item()
    1.0
    >>> round(adip_loss(v, v, v, text_classes=v, labels=torch.tensor([0, 1]))["text"].item(), 6)
    0.0
    """
    emb = emb.float()
    cos_image = F.cosine_similarity(emb, image_t.float(), dim=-1)
    if image_mask is None:
        image = -cos_image.mean()
    else:
        keep = image_mask.to(cos_image.dtype)
        image = -(cos_image * keep).sum() / keep.sum().clamp(min=1.0)
    if text_classes is None:
        text = -F.cosine_similarity(emb, text_y.float(), dim=-1).mean()
    else:
        if labels is None:
            raise ValueError("text_classes needs the labels")
        text = F.cross_entropy(text_logits(emb, F.normalize(text_classes.float(), dim=-1)),
                               labels)
    return {"loss": lam * image + (1.0 - lam) * text, "image": image, "text": text}


def teacher_logits(
    image_t: torch.Tensor, text: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """The teacher's zero-shot logits s·cos(I_t, T_c) from cached embeddings (s = 100,
    CLIP's learned scale, unless given)."""
    image = F.normalize(image_t.float(), dim=-1)
    return scale * image @ F.normalize(text.float(), dim=-1).t()


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Plain cross-entropy (ERM)."""
    ce = F.cross_entropy(logits.float(), labels)
    return {"loss": ce, "ce": ce}


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    t_logits: torch.Tensor,
    *,
    lam: float = 0.5,
    temperature: float = 0.1,
) -> dict[str, torch.Tensor]:
    """CE(logits/τ, y) + λ·KL(softmax(t_logits/τ) ‖ softmax(logits/τ)), batch mean.

    As the official code, the student's logits are divided by τ in the CE term too (for
    argmax predictions τ changes nothing).
    """
    s = logits.float() / temperature
    t = t_logits.float() / temperature
    ce = F.cross_entropy(s, labels)
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean",
                  log_target=True)
    return {"loss": ce + lam * kl, "ce": ce, "kl": kl}
