"""The image-processing core of the media service: untrusted upload bytes in, clean renditions out.

`process()` is the single entry point. It is a plain top-level function over picklable values so
the caller can run it in a pool of worker processes; the module keeps no state beyond constants
(it does pin Pillow's own safety settings to the constants below on every call).

What an upload goes through:

- The type is decided by decoding, never by a name or a declared content type: only Pillow's JPEG,
  PNG, WebP, GIF and AVIF decoders are ever offered the bytes (`Image.open(..., formats=...)`), so
  no other decoder (EPS, PSD, ICO, TIFF, SVG...) is reachable. Anything else is 415.
- Bombs are refused from the header, before any pixel is decoded: more than `MAX_BYTES` (413
  too_large), more than `MAX_PIXELS` or a side over `MAX_SIDE` (413 too_many_pixels), a JPEG with
  more than `MAX_JPEG_SCANS` scans (413 too_complex: every progressive scan re-walks the whole
  coefficient buffer, so a 10 MiB file of tiny scans costs minutes of CPU). Animated GIF, WebP,
  APNG and AVIF are flattened to their FIRST FRAME: later frames are never decoded. PNG text chunks
  stay under Pillow's limits (1 MiB each, 64 MiB in all) and ICC profiles over `MAX_ICC_BYTES` are
  ignored. Truncated images are never half-loaded (`ImageFile.LOAD_TRUNCATED_IMAGES` is False).
- Truncated or corrupt data is 422 invalid_image. No exception other than `ImageRejected` leaves
  `process()`, whatever the bytes.
- Everything stored is re-encoded from pixels, so appended data and polyglots do not survive. The
  EXIF orientation is applied first, then nothing of the input's metadata is written: no EXIF, GPS,
  XMP, IPTC or comment. Colour is converted to sRGB through the embedded ICC profile when there is
  one and the profile itself is dropped too, since it is up to a megabyte of bytes the uploader
  chose (room for a polyglot); untagged output is read as sRGB everywhere. The cost is that wide
  gamut (Display P3) photos are clipped to sRGB.

Renditions: "original" (long side capped at `ORIGINAL_MAX_SIDE`; JPEG when opaque, PNG when some
pixel is transparent) and one WebP per width of `VARIANT_WIDTHS` that is smaller than the
original's width (never upscaled), plus a blurhash. `ProcessedImage.width`/`height` are those of
the stored original: after orientation and the cap.

Cost, measured once on the 2-vCPU AMD EPYC dev machine (one process, Pillow 13.0, libjpeg-turbo
3.2, libwebp 1.6, photo-like content): a 12 MP (4000x3000, 6.5 MB) JPEG takes ~0.65 s end to end
(decode ~0.1 s; re-encoding the original ~0.3 s, of which `progressive` is ~0.25 s: a baseline
optimized JPEG would take ~0.14 s for ~7 % more bytes; three LANCZOS resizes ~0.15 s; three WebP
encodes ~0.12 s); a 2 MP (1920x1080) JPEG ~0.2 s; a 40 MP JPEG ~1.05 s; a 40 MP RGBA PNG ~1.6 s.
Peak resident memory: ~120 MB for the 12 MP JPEG, ~300 MB for a 40 MP JPEG or PNG, ~480 MB for a
40 MP RGBA AVIF and ~670 MB for a 40 MP RGBA WebP (Pillow's WebP decoder holds several copies).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import Final

import blurhash  # type: ignore[import-untyped]  # blurhash-python ships no type information
from PIL import Image, ImageCms, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

MAX_BYTES: Final = 10 * 1024 * 1024
MAX_PIXELS: Final = 40_000_000
ORIGINAL_MAX_SIDE: Final = 4096
VARIANT_WIDTHS: Final = (1080, 640, 320)

# One side over this is absurd even when the area is allowed (a 20000 x 2000 panorama still is).
MAX_SIDE: Final = 20_000
# Real encoders write at most a few dozen scans (libjpeg's progressive default is 10).
MAX_JPEG_SCANS: Final = 100
# An ICC profile larger than this is not a real profile: ignore it (treat the pixels as sRGB).
MAX_ICC_BYTES: Final = 1024 * 1024
# Pillow's own limits on PNG text chunks (its defaults, pinned here): per chunk, and in all.
PNG_MAX_TEXT_CHUNK: Final = 1024 * 1024
PNG_MAX_TEXT_MEMORY: Final = 64 * 1024 * 1024

JPEG_QUALITY: Final = 85
WEBP_QUALITY: Final = 80
# libwebp effort, 0 (fast) to 6 (small). Measured on the 1080/640/320 variants of a 12 MP photo:
# method 2 0.06 s, method 3 or 4 0.12 s for 3 % fewer bytes, method 6 0.33 s for 6 % fewer.
# 4 is the balance: the bytes are served many times, the encode happens once.
WEBP_METHOD: Final = 4
BLURHASH_SIDE: Final = 32
# Components on the long and the short axis of the image: 4 x 3 gives a 28-character hash.
BLURHASH_COMPONENTS: Final = (4, 3)

# The Pillow format names offered the bytes, and what each decoded type is called. Pillow opens
# a JPEG carrying an MPO index (many phone cameras) as "MPO": it is still a JPEG.
_ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "AVIF")
_SOURCE_TYPES: Final = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "AVIF": "image/avif",
}
# A JPEG marker: 0xFF followed by anything but a stuffed zero, a restart marker or fill.
_JPEG_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class ImageRejected(Exception):
    """The upload is refused; `status` is the HTTP status to answer (413, 415 or 422)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[ImageRejected], tuple[int, str, str]]:
        # Crosses the process boundary: rebuild with all three arguments, not just the message.
        return (type(self), (self.status, self.code, self.message))


@dataclass(frozen=True)
class Rendition:
    """One stored object."""

    name: str  # "original", "w1080", "w640", "w320"
    width: int
    height: int
    content_type: str  # "image/jpeg", "image/png", "image/webp"
    extension: str  # "jpg", "png", "webp"
    data: bytes


@dataclass(frozen=True)
class ProcessedImage:
    source_type: str  # the decoded input type, e.g. "image/jpeg", "image/avif"
    width: int  # of the stored original: after orientation and the size cap
    height: int
    blurhash: str
    renditions: tuple[Rendition, ...]  # original first


def process(data: bytes) -> ProcessedImage:
    """Validate, decode and re-encode an upload. Raises `ImageRejected` and nothing else."""
    if len(data) > MAX_BYTES:
        raise ImageRejected(413, "too_large", f"The file is larger than {MAX_BYTES} bytes.")
    _pin_pillow_limits()
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that: make it an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _process(data)
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
            raise ImageRejected(413, "too_many_pixels", "The image is too large.") from exc
        except Exception as exc:
            # Whatever a decoder raised on hostile bytes (OSError, SyntaxError, ValueError,
            # struct.error, EOFError...): the caller only ever deals with ImageRejected.
            raise ImageRejected(422, "invalid_image", "The image is corrupt or truncated.") from exc


def _pin_pillow_limits() -> None:
    """Pillow's safety settings are module globals: hold them at our values on every call."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    PngImagePlugin.MAX_TEXT_CHUNK = PNG_MAX_TEXT_CHUNK
    PngImagePlugin.MAX_TEXT_MEMORY = PNG_MAX_TEXT_MEMORY


def _process(data: bytes) -> ProcessedImage:
    img = _decode(data)
    source_type = _SOURCE_TYPES[img.format or ""]
    icc = img.info.get("icc_profile")
    img = _to_rgb(img, icc if isinstance(icc, bytes) else None)
    img = _fit(img, ORIGINAL_MAX_SIDE)
    original = _encode_original(img)
    renditions = [original]
    smallest = img
    for width in VARIANT_WIDTHS:
        if width >= img.width:
            continue
        variant = _resize(img, (width, max(1, round(img.height * width / img.width))))
        renditions.append(_encode_webp(f"w{width}", variant))
        smallest = variant
    return ProcessedImage(
        source_type=source_type,
        width=original.width,
        height=original.height,
        blurhash=_blurhash(smallest),
        renditions=tuple(renditions),
    )


def _decode(data: bytes) -> Image.Image:
    """Open with the accepted decoders only, check the header, then load the first frame."""
    try:
        img = Image.open(BytesIO(data), formats=_ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            415, "unsupported_type", "Only JPEG, PNG, WebP, GIF and AVIF images are accepted."
        ) from exc
    if img.format not in _SOURCE_TYPES:
        img.close()
        raise ImageRejected(415, "unsupported_type", f"Unexpected image type {img.format}.")
    try:
        _check_dimensions(img.size)
        if img.format in ("JPEG", "MPO"):
            _check_jpeg_scans(data)
            width, height = img.size
            if max(width, height) >= 2 * ORIGINAL_MAX_SIDE:
                # Let libjpeg scale the DCT down by 2, 4 or 8 while decoding, never below the cap.
                scale = ORIGINAL_MAX_SIDE / max(width, height)
                img.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        # Only the current (first) frame is decoded: animation is flattened to its first frame.
        img.load()
        # A GIF frame may lie outside the declared screen and grow the image: check again.
        _check_dimensions(img.size)
    except BaseException:
        img.close()
        raise
    return img


def _check_dimensions(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected(422, "invalid_image", "The image has no pixels.")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ImageRejected(
            413,
            "too_many_pixels",
            f"The image is {width}x{height}: at most {MAX_PIXELS} pixels and {MAX_SIDE} on a side.",
        )


def _check_jpeg_scans(data: bytes) -> None:
    if _jpeg_scan_count(data) > MAX_JPEG_SCANS:
        raise ImageRejected(413, "too_complex", "The JPEG has too many scans.")


def _jpeg_scan_count(data: bytes) -> int:
    """Scans (SOS segments) of the first JPEG image in `data`, counted up to MAX_JPEG_SCANS + 1.

    Walks the marker segments by their lengths, so bytes inside EXIF (its thumbnail), ICC or
    comment segments never count, and stops at the first EOI (further MPO frames and appended
    data are never decoded). Malformed structure just ends the walk: the decoder judges it.
    """
    pos, scans, end = 2, 0, len(data)
    while pos + 4 <= end and scans <= MAX_JPEG_SCANS:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: its header, then entropy-coded data up to the next marker
            scans += 1
            match = _JPEG_MARKER.search(data, pos)
            if match is None:
                break
            pos = match.start()
    return scans


def _to_rgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """The oriented pixels as 8-bit sRGB: "RGBA" when some pixel is not opaque, else "RGB".

    The result carries no metadata at all (its `info` is empty), so no encoder can copy any.
    """
    with contextlib.suppress(Exception):  # a broken EXIF block only loses the orientation
        ImageOps.exif_transpose(img, in_place=True)
    profile = _parse_profile(icc)
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey: scale to 8 bits (a plain convert would clip everything above 255 to white).
        img = _replace(img, img.point(lambda v: v / 257).convert("L"))
    if img.mode == "CMYK":
        img = _replace(img, _apply_profile(img, profile, "CMYK", "RGB") or img.convert("RGB"))
    else:
        if img.has_transparency_data:
            img = _replace(img, _converted(img, "RGBA"))
            alpha_min, _ = img.getchannel("A").getextrema()
            if alpha_min == 255:  # an alpha channel opaque everywhere is no transparency
                img = _replace(img, img.convert("RGB"))
        else:
            img = _replace(img, _converted(img, "RGB"))
        img = _replace(img, _apply_profile(img, profile, "RGB ", img.mode) or img)
    img.info = {}
    return img


def _converted(img: Image.Image, mode: str) -> Image.Image:
    return img if img.mode == mode else img.convert(mode)


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """`new`, releasing the pixel memory of `old` now (when it is another image)."""
    if new is not old:
        old.close()
    return new


def _parse_profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile if it is one worth applying: parsable, not huge, not sRGB."""
    if not icc or len(icc) > MAX_ICC_BYTES:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(icc))
        description = profile.profile.profile_description or ""
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return None if "srgb" in description.lower() else profile


def _apply_profile(
    img: Image.Image, profile: ImageCms.ImageCmsProfile | None, space: str, out_mode: str
) -> Image.Image | None:
    """`img` converted from `profile` to sRGB, or None when the profile does not fit the pixels."""
    if profile is None or profile.profile.xcolor_space != space:
        return None
    try:
        return ImageCms.profileToProfile(
            img, profile, ImageCms.createProfile("sRGB"), outputMode=out_mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    # reducing_gap: a cheap integer box reduction first, then LANCZOS over at least 3x the target:
    # several times faster than LANCZOS from full size, indistinguishable at these ratios.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale so the long side is at most `max_side` (the long side becomes exactly that).

    Consumes `img`: its pixels are released as soon as they are no longer needed.
    """
    width, height = img.size
    if max(width, height) <= max_side:
        return img
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if img.mode == "RGBA":
        # Pillow resizes RGBA premultiplied (through "RGBa", so that transparent pixels do not
        # bleed their colour): do that step here to free the full-size RGBA before resampling,
        # 160 MB less at the peak for a 40 MP image.
        img = _replace(img, img.convert("RGBa"))
        return _replace(img, _resize(img, size)).convert("RGBA")
    return _replace(img, _resize(img, size))


def _encode_original(img: Image.Image) -> Rendition:
    out = BytesIO()
    if img.mode == "RGBA":
        img.save(out, "PNG", optimize=True)
        content_type, extension = "image/png", "png"
    else:
        img.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        content_type, extension = "image/jpeg", "jpg"
    return Rendition("original", img.width, img.height, content_type, extension, out.getvalue())


def _encode_webp(name: str, img: Image.Image) -> Rendition:
    out = BytesIO()
    img.save(out, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return Rendition(name, img.width, img.height, "image/webp", "webp", out.getvalue())


def _blurhash(img: Image.Image) -> str:
    """4 x 3 components (4 along the long side) of a tiny thumbnail; transparency over white."""
    width, height = img.size
    scale = min(1.0, BLURHASH_SIDE / max(width, height))
    thumb = img.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
    )
    if thumb.mode == "RGBA":
        background = Image.new("RGB", thumb.size, (255, 255, 255))
        background.paste(thumb, mask=thumb.getchannel("A"))
        thumb = background
    long_axis, short_axis = BLURHASH_COMPONENTS
    x, y = (long_axis, short_axis) if width >= height else (short_axis, long_axis)
    with warnings.catch_warnings():
        # blurhash-python reads pixels with Image.getdata, deprecated in Pillow 12 (removed in 14).
        warnings.simplefilter("ignore", DeprecationWarning)
        result: str = blurhash.encode(thumb, x, y)  # note: it closes the image it is given
    return result
