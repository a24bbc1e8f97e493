"""Decode backends: how an image file becomes the uint8 RGB pixels the transforms resize.

==========  ================================================================================================
``pil``     PIL decodes and PIL resizes: the reference path (what VISSL, MAE and the paper's numbers ran).
``tensor``  libjpeg-turbo decodes a JPEG straight into a uint8 [3, H, W] tensor (TorchCodec) and torchvision's
            v2 transforms resize it with antialiasing on uint8: about twice the PIL path per core.
``gpu``     the loader ships a JPEG's encoded bytes; nvJPEG decodes a whole batch on the device (TorchCodec)
            and the resize runs there too (``ijepa_eval.data.device``).
==========  ================================================================================================

Every backend decodes every file to the pixels of ``PIL.Image.open(f).convert('RGB')``. TorchCodec takes
only the JPEGs whose pixels it reproduces: one or three components (grey, YCbCr, Adobe RGB), baseline or
progressive, and no EXIF orientation other than 1 — TorchCodec rotates by EXIF, ``Image.open`` does not.
CMYK/YCCK JPEGs (ImageNet train holds 22), PNGs whatever their name (one ``.JPEG`` in ImageNet train is a
PNG), any other format and any file TorchCodec refuses go through PIL, which also names a broken file.

torchvision 0.29 deprecates its own ``torchvision.io`` decoders ("superseded by ... TorchCodec (from
torchcodec 0.16)", a DeprecationWarning on every call), so the JPEG decoder here is TorchCodec's: the same
libjpeg-turbo, with the same default IDCT and upsampling as Pillow's, hence identical pixels.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import ExifTags, Image

from ijepa_eval.errors import ConfigError, DatasetError, unknown_choice

Decode = Literal["pil", "tensor", "gpu"]
DECODE_BACKENDS: tuple[str, ...] = ("pil", "tensor", "gpu")
DEFAULT_DECODE: Decode = "pil"
ORIENTATION = ExifTags.Base.Orientation
JPEG_EOI = b"\xff\xd9"


@contextlib.contextmanager
def decoding(path: str | os.PathLike) -> Iterator[None]:
    """Reading or decoding ``path`` inside: a missing or undecodable file is a one-line DatasetError."""
    try:
        yield
    except FileNotFoundError:
        raise DatasetError(f"image file {path} is missing; re-download or re-extract the dataset") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"image {path} is corrupt or truncated ({err}); replace it or pass skip_bad_images=True"
        ) from None


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """The ``pil`` backend: decode fully (so truncation is caught here, not inside a transform), then RGB."""
    with decoding(path), Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def check_decode(decode: str) -> Decode:
    """``decode`` when it names a backend, else a ConfigError listing them."""
    if decode not in DECODE_BACKENDS:
        raise ConfigError(unknown_choice("decode backend (--decode)", str(decode), DECODE_BACKENDS))
    return decode  # type: ignore[return-value]


def torchcodec_decoders():
    """TorchCodec's decoders module, or a one-line error saying how to get it."""
    try:
        from torchcodec import decoders
    except (ImportError, OSError, RuntimeError) as err:  # OSError/RuntimeError: its native library failed to load
        raise ConfigError(f"decode 'tensor'/'gpu' needs TorchCodec ({type(err).__name__}: {err}); "
                          "pip install torchcodec, or use --decode pil") from None
    return decoders


def to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 [3, H, W] tensor, channels-last in memory like TorchCodec's output."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def plain_jpeg(img: Image.Image) -> bool:
    """Whether libjpeg-turbo's RGB output for this opened (not yet decoded) file equals PIL's convert('RGB')."""
    return img.format == "JPEG" and img.mode in ("RGB", "L") and img.getexif().get(ORIENTATION, 1) == 1


def read_bytes(path: str | os.PathLike) -> bytes:
    with decoding(path):
        return Path(path).read_bytes()


def decode_rgb(data: bytes, path: str | os.PathLike) -> torch.Tensor:
    """The uint8 [3, H, W] pixels of ``PIL.Image.open(path).convert('RGB')`` for the file bytes ``data``:
    TorchCodec for plain JPEGs, PIL for the rest (``path`` names the file in errors)."""
    with decoding(path), Image.open(io.BytesIO(data)) as img:
        if plain_jpeg(img):
            try:
                return torchcodec_decoders().decode_jpeg(data, mode="RGB")
            except RuntimeError:
                pass  # truncated or odd: PIL decides, and names the problem if it is one
        img.load()
        return to_uint8(img.convert("RGB"))


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """The ``tensor`` backend: a file's RGB pixels as uint8 [3, H, W], equal to PIL's."""
    return decode_rgb(read_bytes(path), path)


def read_for_device(path: str | os.PathLike) -> torch.Tensor:
    """The ``gpu`` backend's loader item: a plain JPEG's encoded bytes (1-D uint8) for nvJPEG, any other
    file decoded on the host (uint8 [3, H, W]) as ``read_rgb`` does. A JPEG that does not end in its EOI
    marker (truncated) is decoded here too, so PIL names it instead of failing a whole device batch."""
    data = read_bytes(path)
    with decoding(path), Image.open(io.BytesIO(data)) as img:
        if plain_jpeg(img) and data.endswith(JPEG_EOI):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_rgb(data, path)


def decode_on_device(items: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """uint8 [3, H, W] images on ``device`` from ``read_for_device`` items: encoded JPEGs (1-D) are decoded
    together in one batched call (nvJPEG on CUDA, libjpeg-turbo on CPU), decoded ones are copied."""
    device = torch.device(device)
    encoded = [i for i, item in enumerate(items) if item.ndim == 1]
    out = [item.to(device, non_blocking=True) if item.ndim == 3 else None for item in items]
    if encoded:
        try:
            decoded = torchcodec_decoders().decode_jpeg([items[i] for i in encoded], mode="RGB", device=device)
        except RuntimeError as err:
            raise DatasetError(f"the device decoder refused an image of this batch ({str(err).splitlines()[0]}); "
                               "run with --decode tensor to find the file") from None
        for i, image in zip(encoded, decoded, strict=True):
            out[i] = image
    return out  # type: ignore[return-value]
