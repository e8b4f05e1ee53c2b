"""Which parameters each stage trains, checked by requires_grad and by weight deltas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.train.student import build_student
from distill.train.task import AlignTask, Batch, DistillTask, ErmTask, KdTask, make_task


def _student(name: str = "mobilenetv3_small_050", method: str = "adip"):
    torch.manual_seed(0)
    text = torch.randn(3, 8)
    return build_student(name, method=method, num_classes=3, text=text, pretrained=False)


def _batch() -> Batch:
    torch.manual_seed(1)
    return Batch(images=torch.randn(6, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0, 1, 2]),
                 image_t=torch.nn.functional.normalize(torch.randn(6, 8), dim=1))


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _run(student, task, steps: int = 2) -> dict[str, torch.Tensor]:
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    params = task.configure(student)
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        task.set_mode(student)
        losses = task.losses(student, _batch())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    return {k: (v.detach() - before[k]).abs().max() for k, v in student.named_parameters()}


def test_align_trains_only_the_projection_with_bn_frozen_by_default() -> None:
    s = _student()
    bn_before = _bn_stats(s.backbone)
    delta = _run(s, AlignTask(lam=0.5))
    trainable = {k for k, p in s.named_parameters() if p.requires_grad}
    assert trainable == {"proj.weight", "proj.bias"}
    assert all(delta[k] > 0 for k in trainable)
    assert all(delta[k] == 0 for k in delta if k not in trainable)
    # as in the official code (ResNet.freeze_bn wraps every student): BN in eval mode,
    # ImageNet running statistics untouched, in Align as in Distill
    assert all(torch.equal(a, b) for a, b in zip(bn_before, _bn_stats(s.backbone), strict=True))
    assert not any(m.training for m in s.backbone.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize("stage", ["align", "distill", "erm", "kd"])
@pytest.mark.parametrize("freeze_bn", [True, False])
def test_make_task_passes_freeze_bn_to_every_stage(stage: str, freeze_bn: bool) -> None:
    s = _student(method="adip" if stage in ("align", "distill") else stage)
    bn_before = _bn_stats(s.backbone)
    task = make_task(stage, lam=0.5, text=torch.randn(3, 8), kd_temperature=0.1,
                     freeze_bn=freeze_bn)
    _run(s, task, steps=1)
    kept = all(torch.equal(a, b) for a, b in zip(bn_before, _bn_stats(s.backbone), strict=True))
    assert kept is freeze_bn


def test_distill_trains_only_the_backbone() -> None:
    s = _student()
    delta = _run(s, DistillTask(lam=0.5))
    assert not any(p.requires_grad for p in s.proj.parameters())
    assert all(p.requires_grad for p in s.backbone.parameters())
    assert delta["proj.weight"] == 0 and delta["proj.bias"] == 0
    changed = [k for k in delta if k.startswith("backbone.") and delta[k] > 0]
    # Every backbone tensor that gets a gradient moves (all of them here).
    assert len(changed) == len(list(s.backbone.parameters()))


def test_distill_with_freeze_bn_keeps_running_statistics() -> None:
    s = _student("resnet10t")
    bn_before = _bn_stats(s.backbone)
    _run(s, DistillTask(lam=0.5), steps=1)
    assert all(torch.equal(a, b) for a, b in zip(bn_before, _bn_stats(s.backbone), strict=True))
    s2 = _student("resnet10t")
    _run(s2, DistillTask(lam=0.5, freeze_bn=False), steps=1)
    assert not all(torch.equal(a, b) for a, b in zip(bn_before, _bn_stats(s2.backbone),
                                                     strict=True))


def test_erm_and_kd_train_everything_and_return_named_losses() -> None:
    s = _student(method="erm")
    delta = _run(s, ErmTask())
    assert s.proj is None and all(d > 0 for d in delta.values())
    s = _student(method="kd")
    text = torch.randn(3, 8)
    task = KdTask(text, lam=0.5, temperature=0.1)
    task.configure(s)
    out = task.losses(s, _batch())
    assert set(out) == {"loss", "ce", "kl"}
    assert out["kl"].item() >= 0
    delta = _run(s, task)
    assert delta["head.weight"] > 0 and delta["backbone.conv_stem.weight"] > 0


def test_kd_teacher_distribution_uses_the_logit_scale_given() -> None:
    from distill.train.losses import kd_loss, teacher_logits

    s = _student(method="kd")
    text = torch.randn(3, 8)
    batch = _batch()
    kl = {}
    for scale in (100.0, 15.0):
        task = make_task("kd", lam=0.5, text=text, kd_temperature=0.1, freeze_bn=True,
                         kd_logit_scale=scale)
        task.configure(s)
        task.set_mode(s)
        with torch.no_grad():
            out = task.losses(s, batch)
            want = kd_loss(s(batch.images), batch.labels,
                           teacher_logits(batch.image_t, text, scale), lam=0.5,
                           temperature=0.1)
        assert out["kl"].item() == pytest.approx(want["kl"].item())
        kl[scale] = out["kl"].item()
    assert kl[100.0] != pytest.approx(kl[15.0])


def _masked_batch(views: list[int], image_t: torch.Tensor) -> Batch:
    torch.manual_seed(1)
    return Batch(images=torch.randn(len(views), 3, 32, 32),
                 labels=torch.tensor([0, 1, 2, 0][: len(views)]),
                 image_t=image_t, views=torch.tensor(views))


@pytest.mark.parametrize("kind", ["view0", "teacher-correct"])
def test_image_targets_leave_the_excluded_rows_targets_out_of_the_loss(kind: str) -> None:
    # Row 0: view 0, the teacher right (its target is its class's prompt); row 1: view 2,
    # the teacher wrong (row 1's label is 1, its target is class 0's prompt).
    text = torch.eye(3, 8)
    s = build_student("mobilenetv3_small_050", method="adip", num_classes=3, text=text,
                      pretrained=False)
    task = DistillTask(lam=0.5, image_targets=kind)
    task.configure(s)
    task.set_mode(s)
    base = _masked_batch([0, 2], torch.stack([text[0], text[0]]))
    # row 1's target moves, still nearest class 0's prompt (the teacher still wrong)
    moved = _masked_batch([0, 2], torch.stack([text[0], text[0] + 0.5 * text[2]]))
    a, b = task.losses(s, base), task.losses(s, moved)
    assert torch.equal(a["loss"], b["loss"])  # row 1's target does not count
    every = DistillTask(lam=0.5)
    assert not torch.equal(every.losses(s, base)["loss"], every.losses(s, moved)["loss"])


def test_class_mean_targets_pull_every_image_of_a_class_to_its_prototype() -> None:
    text = torch.eye(3, 8)
    means = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator()
                                                      .manual_seed(0)), dim=-1)
    torch.manual_seed(0)
    s = build_student("mobilenetv3_small_050", method="adip", num_classes=3, text=text,
                      pretrained=False)
    task = DistillTask(lam=0.5, image_targets="class-mean", image_means=means)
    task.configure(s)
    task.set_mode(s)
    base = _masked_batch([0, 2], torch.stack([text[0], text[1]]))
    moved = _masked_batch([0, 2], torch.stack([text[2], -text[1]]))  # per-row targets ignored
    a, b = task.losses(s, base), task.losses(s, moved)
    assert torch.equal(a["loss"], b["loss"])
    # the image term is the one of the prototypes of the rows' classes (labels 0 and 1)
    official = DistillTask(lam=0.5).losses(s, _masked_batch([0, 2], means[[0, 1]]))
    assert a["image"].item() == pytest.approx(official["image"].item())
    assert a["image"].item() != pytest.approx(DistillTask(lam=0.5).losses(s, base)["image"].item())


def test_class_mean_targets_and_their_prototypes_go_together() -> None:
    with pytest.raises(ValueError, match="class-mean"):
        DistillTask(image_targets="class-mean")
    with pytest.raises(ValueError, match="class-mean"):
        AlignTask(image_means=torch.zeros(3, 8))


def test_an_unknown_image_targets_is_refused() -> None:
    with pytest.raises(ValueError, match="image_targets"):
        AlignTask(image_targets="crops")


def test_an_unknown_text_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="text_loss"):
        DistillTask(text_loss="ce")


def test_text_loss_softmax_makes_the_other_class_prompts_count() -> None:
    text = torch.eye(3, 8)
    torch.manual_seed(0)
    s = build_student("mobilenetv3_small_050", method="adip", num_classes=3, text=text,
                      pretrained=False)
    batch = _masked_batch([0, 1], torch.stack([text[0], text[1]]))
    s.eval()
    with torch.no_grad():
        emb = s(batch.images, output="embedding")
    moved = text.clone()
    # a prompt no row is labelled with, moved onto row 0's embedding: its logit becomes the
    # largest there is (100), so a term that counts it must change
    moved[2] = F.normalize(emb[0], dim=-1)
    for task in (AlignTask(lam=0.5), AlignTask(lam=0.5, text_loss="softmax")):
        task.configure(s)
        task.set_mode(s)
        a = task.losses(s, batch)["text"]
        s.text = moved
        b = task.losses(s, batch)["text"]
        s.text = text
        if task.text_loss == "cosine":
            assert torch.equal(a, b)  # only T_y counts
        else:
            assert not torch.equal(a, b)


def _fit_batches(views: list[int], n: int = 3) -> list[Batch]:
    g = torch.Generator().manual_seed(2)
    return [Batch(images=torch.randn(len(views), 3, 32, 32, generator=g),
                  labels=torch.arange(len(views)) % 3,
                  image_t=3 * torch.randn(len(views), 8, generator=g),  # not unit length
                  views=torch.tensor(views)) for _ in range(n)]


def test_the_lstsq_fit_of_p_is_the_ridge_solution_and_starts_align_lower() -> None:
    """proj_init="lstsq": P (weight and bias) is the ridge least-squares map from the
    features to the unit teacher targets, here checked against torch.linalg.lstsq on the
    centred rows stacked over sqrt(eps)·I, and the image term drops from P's random init."""
    from distill.train.stages import PROJ_FIT_RIDGE, fit_projection

    s = _student()
    task = AlignTask(lam=0.5)
    batches = _fit_batches([0, 1, 0, 1, 0, 1])
    task.set_mode(s)
    before = [task.losses(s, b)["image"].item() for b in batches]
    note = fit_projection(s, task, batches)
    assert (note["batches"], note["rows"], note["ridge"]) == (3, 18, PROJ_FIT_RIDGE)

    task.set_mode(s)
    with torch.no_grad():
        f = torch.cat([s.features(b.images) for b in batches]).double()
    y = F.normalize(torch.cat([b.image_t for b in batches]), dim=-1).double()
    fc, yc = f - f.mean(0), y - y.mean(0)
    d = f.shape[1]
    eps = PROJ_FIT_RIDGE * float((fc * fc).sum()) / d
    w = torch.linalg.lstsq(torch.cat([fc, eps**0.5 * torch.eye(d, dtype=torch.float64)]),
                           torch.cat([yc, torch.zeros(d, 8, dtype=torch.float64)])).solution
    assert s.proj is not None
    torch.testing.assert_close(s.proj.weight.double(), w.t(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(s.proj.bias.double(), y.mean(0) - f.mean(0) @ w, rtol=1e-3,
                               atol=1e-5)
    after = [task.losses(s, b)["image"].item() for b in batches]
    assert sum(after) / 3 == pytest.approx(-note["image_cos"], abs=1e-5)
    assert sum(before) / 3 == pytest.approx(-note["image_cos_random"], abs=1e-5)
    assert max(after) < min(before) - 0.3


def test_the_lstsq_fit_takes_the_image_term_s_rows_and_leaves_batchnorm_as_it_was() -> None:
    """Fitted in Align's own mode: with BatchNorm training (a random student's), the batch
    statistics of the fit's forward passes do not stay in the running ones; with
    image_targets view0 only view-0 rows are fitted (as the image term counts them)."""
    from distill.train.stages import fit_projection

    s = _student()
    bn_before = _bn_stats(s.backbone)
    note = fit_projection(s, AlignTask(freeze_bn=False, image_targets="view0"),
                          _fit_batches([0, 1, 1, 0, 2, 0]))
    assert note["rows"] == 3 * 3
    assert all(torch.equal(a, b) for a, b in zip(bn_before, _bn_stats(s.backbone), strict=True))
    assert s.backbone.training  # left in Align's mode, as a step would
    untouched = _student()
    assert s.proj is not None and untouched.proj is not None
    assert not torch.equal(s.proj.weight, untouched.proj.weight)
    # no row counts (every target masked out): P stays as it was
    s = _student()
    note = fit_projection(s, AlignTask(image_targets="view0"), _fit_batches([1, 2]))
    assert note["rows"] == 0 and note["image_cos"] is None
    assert s.proj is not None and torch.equal(s.proj.weight, untouched.proj.weight)
