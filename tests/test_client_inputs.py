"""Image loading (PIL, ImageNet-style) and the shipped ImageNet labels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from opss.client.inputs import MEAN, STD, load_image
from opss.errors import OpssError, ShapeMismatchError
from opss.labels import imagenet_classes, label, topk
from opss.samples import sample_images, sample_jpeg


def _load_image_before_preprocess(path, shape):
    """load_image as it was before opss.preprocess (PIL resize/crop, torch arithmetic): the oracle."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        h, w = int(shape[2]), int(shape[3])
        short = max(h, w) * 256 // 224
        iw, ih = im.size
        scale = short / min(iw, ih)
        im = im.resize((max(w, round(iw * scale)), max(h, round(ih * scale))), Image.BILINEAR)
        iw, ih = im.size
        left, top = (iw - w) // 2, (ih - h) // 2
        im = im.crop((left, top, left + w, top + h))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    x = data.reshape(h, w, 3).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (1, 3, 299, 299), (1, 3, 64, 96), (1, 3, 17, 17)])
def test_load_image_is_bit_identical_to_the_old_formula_on_real_photos(tmp_path, shape):
    photos = [*sample_images(), ("grace_hopper_q90.jpg", sample_jpeg(90))]
    for name, data in photos:
        path = tmp_path / name
        path.write_bytes(data)
        got, want = load_image(path, shape), _load_image_before_preprocess(path, shape)
        assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape == shape
        assert got.is_contiguous()
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), name  # every bit


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
    with pytest.raises(ShapeMismatchError, match=r"--image: expected a model taking \(1, 3, H, W\) images"):
        load_image(junk, (1, 64))
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(sample_jpeg()[:20_000])
    with pytest.raises(OpssError, match=r"cannot read it as an image \(OSError\)"):
        load_image(truncated, (1, 3, 8, 8))
    with pytest.raises(OpssError, match=r"cannot read it as an image \(UnidentifiedImageError\)"):
        load_image(junk, (1, 3, 8, 8))


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
