"""Image loading (PIL, ImageNet-style) and the shipped ImageNet labels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from opss.client.inputs import MEAN, STD, load_image
from opss.errors import OpssError, ShapeMismatchError
from opss.labels import imagenet_classes, label, topk


def test_solid_image_is_resized_cropped_and_normalized(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (300, 200), (255, 128, 0)).save(path)
    x = load_image(path, (1, 3, 224, 224))
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    for c, v in enumerate((255, 128, 0)):
        expected = (v / 255 - MEAN[c]) / STD[c]
        torch.testing.assert_close(x[0, c], torch.full((224, 224), expected), atol=1e-5, rtol=0)


def test_centre_crop_keeps_the_middle(tmp_path):
    # left half black, right half white: the crop's centre column sits at the boundary
    img = Image.new("L", (64, 32), 0)
    img.paste(255, (32, 0, 64, 32))
    path = tmp_path / "half.png"
    img.save(path)
    x = load_image(path, (1, 3, 16, 16))
    row = x[0, 0, 8]
    assert row[0] < 0 < row[-1]  # dark on the left, bright on the right


def test_bad_images_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(OpssError, match="cannot read it as an image"):
        load_image(junk, (1, 3, 8, 8))
    with pytest.raises(OpssError, match="no such file"):
        load_image(tmp_path / "missing.jpg", (1, 3, 8, 8))
    with pytest.raises(ShapeMismatchError, match="expected a model taking"):
        load_image(junk, (1, 64))


def test_labels_are_the_1000_imagenet_classes_and_topk_sorts():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) > 990
    assert names[0] == "tench" and label(207) == "golden retriever"
    logits = torch.zeros(1, 1000)
    logits[0, 207], logits[0, 0] = 5.0, 3.0
    top = topk(logits, 2)
    assert [t[0] for t in top] == ["golden retriever", "tench"]
    probs = torch.softmax(logits[0], 0)
    assert top[0][1] == pytest.approx(float(probs[207])) and top[1][1] == pytest.approx(float(probs[0]))
    assert topk(torch.tensor([[0.1, 0.9]]), 5)[0][0] == "class 1"  # not a 1000-way output
