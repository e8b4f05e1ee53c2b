"""ADiP / KD losses and the Predict head on hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.train.losses import adip_loss, ce_loss, kd_loss, teacher_logits
from distill.train.student import Student


def test_adip_identical_vectors_give_minus_one() -> None:
    v = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    out = adip_loss(v, v, v)
    assert out["loss"].item() == pytest.approx(-1.0)
    assert out["image"].item() == pytest.approx(-1.0)
    assert out["text"].item() == pytest.approx(-1.0)


def test_adip_hand_computed_terms_and_lambda() -> None:
    emb = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # scale must not matter
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[0.0, 1.0], [-1.0, -1.0]])
    # cos(emb, img) = [1, 1/sqrt2]; cos(emb, txt) = [0, -1]
    image = -(1.0 + 1 / math.sqrt(2)) / 2
    text = -(0.0 - 1.0) / 2
    for lam in (0.5, 0.1, 0.9):
        out = adip_loss(emb, img, txt, lam)
        assert out["image"].item() == pytest.approx(image)
        assert out["text"].item() == pytest.approx(text)
        assert out["loss"].item() == pytest.approx(lam * image + (1 - lam) * text)


def test_adip_orthogonal_is_zero_and_opposite_is_plus_one() -> None:
    e = torch.tensor([[1.0, 0.0]])
    assert adip_loss(e, torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, -1.0]]))[
        "loss"
    ].item() == pytest.approx(0.0)
    assert adip_loss(e, -e, -e)["loss"].item() == pytest.approx(1.0)


def test_teacher_logits_are_100_cos() -> None:
    img = torch.tensor([[3.0, 4.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert teacher_logits(img, text)[0].tolist() == pytest.approx([60.0, 80.0])


def test_kd_loss_terms() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    same = kd_loss(logits, y, logits, lam=0.5, temperature=1.0)
    assert same["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item())
    t = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    out = kd_loss(logits, y, t, lam=0.3, temperature=0.5)
    p_t = F.softmax(t / 0.5, dim=1)
    log_p_s = F.log_softmax(logits / 0.5, dim=1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    ce = F.cross_entropy(logits / 0.5, y)
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(ce.item() + 0.3 * kl.item(), rel=1e-5)
    assert ce_loss(logits, y)["loss"].item() == pytest.approx(F.cross_entropy(logits, y).item())


class _Tiny(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_predict_logits_are_100_cos_of_projection_and_text() -> None:
    torch.manual_seed(0)
    text = torch.randn(3, 5)
    s = Student(_Tiny(), num_classes=3, teacher_dim=5, text=text)
    x = torch.randn(7, 6)
    emb = s.proj(s.backbone(x))
    want = 100 * F.cosine_similarity(emb[:, None, :], text[None, :, :], dim=-1)
    assert torch.allclose(s(x), want, atol=1e-4)
    assert torch.allclose(s(x, output="embedding"), emb)
    # The text buffer is stored normalised and saved with the weights.
    assert torch.allclose(s.text.norm(dim=1), torch.ones(3))
    assert "text" in s.state_dict()


def test_student_needs_a_head() -> None:
    with pytest.raises(ValueError):
        Student(_Tiny(), num_classes=3)


def test_adip_image_mask_averages_the_image_term_over_kept_rows_only() -> None:
    emb = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    txt = torch.tensor([[0.0, 1.0], [-1.0, -1.0], [1.0, 0.0]])
    keep = torch.tensor([True, True, False])
    out = adip_loss(emb, img, txt, 0.5, image_mask=keep)
    # cos(emb, img) = [1, 1/sqrt2, -1]; the third row is left out of the image term only
    assert out["image"].item() == pytest.approx(-(1.0 + 1 / math.sqrt(2)) / 2)
    assert out["text"].item() == pytest.approx(1 / 3)  # cos(emb, txt) = [0, -1, 0]
    none_kept = adip_loss(emb, img, txt, 0.5, image_mask=torch.zeros(3, dtype=torch.bool))
    assert none_kept["image"].item() == 0.0
    assert none_kept["loss"].item() == pytest.approx(0.5 * out["text"].item(), abs=1e-6)


def test_adip_softmax_text_term_is_the_cross_entropy_over_every_class_prompt() -> None:
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    prompts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # not unit length: normalised
    labels = torch.tensor([0, 1])
    out = adip_loss(emb, emb, prompts[labels], 0.5, text_classes=prompts, labels=labels)
    # cos(emb, T_c): row 0 [1, 0], row 1 [1/sqrt2, 1/sqrt2]; logits are 100 x cos
    row0 = math.log1p(math.exp(-100.0))
    row1 = math.log(2.0)
    assert out["text"].item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert out["image"].item() == pytest.approx(-1.0)
    assert out["loss"].item() == pytest.approx(0.5 * -1.0 + 0.5 * out["text"].item())


def test_adip_softmax_text_term_pushes_away_from_the_other_classes() -> None:
    # The cosine term only pulls toward T_y; with emb already on T_y its gradient is zero,
    # while the softmax term still pushes away from a near class prompt.
    prompts = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    labels = torch.tensor([0])
    emb = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    adip_loss(emb, emb.detach(), prompts[labels], 0.0)["loss"].backward()
    assert emb.grad is not None and emb.grad.abs().max().item() < 1e-6
    emb.grad = None
    adip_loss(emb, emb.detach(), prompts[labels], 0.0, text_classes=prompts * 0.01,
              labels=labels)["loss"].backward()
    # a step against the gradient lowers cos to class 1's prompt (moves away along y)
    assert emb.grad is not None and emb.grad[0, 1].item() > 0


def test_adip_softmax_text_term_needs_labels() -> None:
    v = torch.eye(2)
    with pytest.raises(ValueError, match="labels"):
        adip_loss(v, v, v, text_classes=v)


def test_teacher_logits_take_the_scale_given() -> None:
    img = torch.tensor([[3.0, 4.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert teacher_logits(img, text, 15.0)[0].tolist() == pytest.approx([9.0, 12.0])
