"""Image and mask preprocessing exactly as released (METHOD §2).

Image: Resize((S, S), bicubic) -- a squash that ignores the aspect ratio -- then CenterCrop(S)
(a no-op), convert to RGB (after the resize, so grayscale categories are resized as "L"),
ToTensor, Normalize(OpenAI mean/std). This equals open_clip's eval transform with
``image_resize_mode='squash'``; its default ('shortest' + crop) differs on non-square images.

Mask: pixels > 0 of the mask read as 8-bit gray -> 0/255 "L" image -> Resize((S, S)) bilinear
(PIL, antialiased) -> ToTensor -> > 0.5. Image and mask are both squashed, so they stay aligned.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from errors import DatasetError

from .normalization import OPENAI_MEAN, OPENAI_STD

NOT_AN_IMAGE = "not an image format PIL can read"
# PIL refuses images above 2 x MAX_IMAGE_PIXELS (about 179 MP) as "decompression bombs"; the
# environment variable APRILGAN_MAX_IMAGE_PIXELS raises the limit for huge inspection images.
if os.environ.get("APRILGAN_MAX_IMAGE_PIXELS"):
    Image.MAX_IMAGE_PIXELS = int(os.environ["APRILGAN_MAX_IMAGE_PIXELS"]) // 2


def pixel_limit() -> int:
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header alone, without PIL's size limit (nothing decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def too_large(path: Path, size: tuple[int, int]) -> DatasetError:
    w, h = size
    return DatasetError(
        f"image {path} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), above PIL's safety limit of "
        f"{pixel_limit() / 1e6:.0f} MP: resize it, or set APRILGAN_MAX_IMAGE_PIXELS to a "
        "larger pixel count if you trust the file")



def image_transform(image_size: int) -> T.Compose:
    """PIL image -> [3, S, S] float tensor, as released (squash, bicubic, RGB, OpenAI norm)."""
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.Lambda(lambda im: im.convert("RGB")),
        T.ToTensor(),
        T.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])


def mask_transform(image_size: int) -> T.Compose:
    """0/255 "L" PIL mask -> [1, S, S] float tensor of 0/1 (bilinear squash, then > 0.5)."""
    return T.Compose([
        T.Resize((image_size, image_size)),  # PIL bilinear, antialiased
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Lambda(lambda m: (m > 0.5).float()),
    ])


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit gray images ("I;16", "I", "F") -> 8-bit "L" by their bit depth.

    PIL's own convert clips such values at 255 instead of scaling them.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).round().astype(np.uint8))
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if a.max(initial=0) > 255 else 255.0
        return Image.fromarray((np.clip(a, 0, scale) / scale * 255).round().astype(np.uint8))
    return img


def open_image(path: str | Path) -> Image.Image:
    """Read an image fully (8-bit modes as stored; 16-bit gray scaled to 8-bit).

    Raises DatasetError (one line naming the file) when it is missing or unreadable.
    """
    return to_8bit(read_image(path))


def read_image(path: str | Path) -> Image.Image:
    """Read an image fully, in the mode it is stored in (16-bit gray stays "I;16").

    Raises DatasetError (one line naming the file) when it is missing or unreadable.
    """
    path = Path(path)
    with image_errors(path):
        with Image.open(path) as im:
            im.load()
            return im.copy()


@contextlib.contextmanager
def image_errors(path: Path):
    """Every way PIL can fail on ``path`` (missing, not an image, cut short, over the size
    limit) as one DatasetError line naming the file and the fix."""
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    try:
        yield
    except Image.DecompressionBombError:
        raise too_large(path, header_size(path)) from None
    except UnidentifiedImageError as e:
        raise DatasetError(f"cannot read image {path}: {NOT_AN_IMAGE}. Replace or remove the "
                           "file") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}. Replace or remove the file") from e


def binary_mask_image(path: str | Path) -> Image.Image:
    """Mask file -> 0/255 "L" image of its pixels > 0 (VisA masks hold small class ids).

    16-/32-bit gray masks are thresholded on their stored values (scaling them to 8 bits first
    would turn small ids such as 1 into 0).
    """
    img = read_image(path)
    if img.mode.startswith("I") or img.mode == "F":
        m = np.asarray(img) > 0
    else:
        m = np.asarray(img.convert("L")) > 0
    return Image.fromarray(m.astype(np.uint8) * 255, mode="L")


def empty_mask_image(size: tuple[int, int]) -> Image.Image:
    """All-zero "L" mask of PIL size (width, height) for a normal image."""
    return Image.fromarray(np.zeros((size[1], size[0]), dtype=np.uint8), mode="L")
