"""Raw image folders: ids as captions name images, lazy decoding, clear errors, worker collation."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from retrerank.data.errors import DataError
from retrerank.data.stores.image_folder import ImageFolder


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "train2014").mkdir()
    colours = {
        "train2014/COCO_train2014_000000000009.jpg": (255, 0, 0),
        "1000092795.png": (0, 255, 0),
        "train2014/COCO_train2014_000000391895.png": (0, 0, 255),
    }
    for name, colour in colours.items():
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_ids_and_lazy_pixels(folder):
    images = ImageFolder(folder)
    assert sorted(images.ids) == ["1000092795", "391895", "9"]
    image = images.image("391895")
    assert len(pickle.dumps(image)) < 300  # path and id only
    pixels = image.pixels
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8 and tuple(pixels[0, 0]) == (0, 0, 255)
    with pytest.raises(DataError, match="'123' is not in the image folder"):
        images.image("123")


def test_corrupt_image_and_duplicate_ids_are_named(folder):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"cannot decode .*broken.jpg"):
        _ = ImageFolder(folder).image("broken").pixels
    Image.new("RGB", (8, 8)).save(folder / "COCO_val2014_000000000009.jpg")
    with pytest.raises(DataError, match="both give image id '9'"):
        ImageFolder(folder)
    with pytest.raises(DataError, match="not found"):
        ImageFolder(folder / "nope")


def test_workers_decode_and_a_pixel_backbone_collates(folder, tiny_clip_dir):
    from retrerank.backbones.dual import DualEncoderBackbone

    backbone = DualEncoderBackbone.from_pretrained(tiny_clip_dir)
    images = ImageFolder(folder)
    items = [images.image(i) for i in sorted(images.ids)]
    loader = DataLoader(items, batch_size=3, num_workers=2, collate_fn=backbone.collate_images)
    batch = next(iter(loader))["pixel_values"]
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32  # the model's processor: 32 x 32
    assert torch.allclose(batch, backbone.collate_images(items)["pixel_values"])
    # the green png after CLIP's normalisation ((x - mean) / std per channel)
    processor = backbone.image_processor
    green = (torch.tensor([0.0, 1.0, 0.0]) - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    assert torch.allclose(batch[0, :, 16, 16], green, atol=0.05)
