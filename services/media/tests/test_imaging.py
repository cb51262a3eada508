"""The image-processing core: every input is made here with Pillow or by hand, no fixture files."""

from __future__ import annotations

import itertools
import pickle
import random
import struct
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from multiprocessing import get_context

import blurhash  # type: ignore[import-untyped]
import pytest
from media.imaging import (
    MAX_BYTES,
    ImageRejected,
    ProcessedImage,
    Rendition,
    process,
)
from PIL import ExifTags, Image, ImageCms, ImageDraw, ImageFile, ImageSequence, PngImagePlugin

# --- making inputs ----------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def solid(
    size: tuple[int, int], color: tuple[int, ...] = (40, 120, 200), mode: str = "RGB"
) -> bytes:
    return encode(Image.new(mode, size, color), "JPEG", quality=90)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG written by hand: whatever the header declares, whatever the data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(idat))
        + png_chunk(b"IEND", b"")
    )


CODES = {
    200: {"ok"},
    413: {"too_large", "too_many_pixels", "too_complex"},
    415: {"unsupported_type"},
    422: {"invalid_image"},
}


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        process(data)
    return caught.value


def opened(rendition: Rendition) -> Image.Image:
    img = Image.open(BytesIO(rendition.data))
    img.load()
    return img


def close_to(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(actual, tuple)
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def only_original(result: ProcessedImage) -> Image.Image:
    return opened(result.renditions[0])


# --- type detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body><img src=x onerror=alert(1)></body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>',
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        random.Random(7).randbytes(4096),
        b"",
    ],
    ids=["html", "svg", "pdf", "random", "empty"],
)
def test_non_images_are_unsupported_types(data: bytes) -> None:
    error = rejected(data)
    assert (error.status, error.code) == (415, "unsupported_type")


def test_formats_pillow_could_decode_but_we_do_not_accept_are_unsupported() -> None:
    img = Image.new("RGB", (16, 16), (1, 2, 3))
    for fmt in ("BMP", "TIFF", "ICO", "PPM", "EPS", "JPEG2000"):
        error = rejected(encode(img, fmt))
        assert (error.status, error.code) == (415, "unsupported_type"), fmt


def test_the_decoded_type_wins_over_what_the_bytes_are_called() -> None:
    # A PNG is a PNG whatever the upload claims: process() never sees a name or a content type.
    result = process(encode(Image.new("RGB", (20, 10), (9, 9, 9)), "PNG"))
    assert result.source_type == "image/png"
    assert result.renditions[0].content_type == "image/jpeg"


# --- size limits and bombs ---------------------------------------------------------------------


def test_more_than_ten_mebibytes_is_too_large() -> None:
    error = rejected(b"\xff\xd8\xff" + bytes(MAX_BYTES))
    assert (error.status, error.code) == (413, "too_large")


def test_a_tiny_png_declaring_fifty_thousand_squared_pixels_is_refused_from_its_header() -> None:
    bomb = raw_png(50_000, 50_000, 8, 2, b"\x00" * 64)
    assert len(bomb) < 200
    error = rejected(bomb)
    assert (error.status, error.code) == (413, "too_many_pixels")


def test_a_png_just_over_forty_megapixels_is_refused() -> None:
    # 48 MP: past our limit but under twice it, where Pillow itself only warns.
    error = rejected(raw_png(8000, 6000, 8, 2, b"\x00" * 64))
    assert (error.status, error.code) == (413, "too_many_pixels")


def test_an_absurdly_long_side_is_refused_even_with_few_pixels() -> None:
    error = rejected(raw_png(30_000, 10, 8, 2, b"\x00" * 64))
    assert (error.status, error.code) == (413, "too_many_pixels")


def test_a_jpeg_with_hundreds_of_scans_is_refused() -> None:
    # Every progressive scan walks the whole image again: 10 MiB of tiny scans is minutes of CPU.
    data = encode(Image.new("RGB", (64, 64), (120, 30, 200)), "JPEG", progressive=True)
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"] + [len(data) - 2]
    scans = [data[a:b] for a, b in itertools.pairwise(starts)]
    assert len(scans) >= 6  # a real progressive JPEG, which process() accepts
    assert process(data).width == 64
    bomb = data[:-2] + min(scans[1:], key=len) * 300 + b"\xff\xd9"
    error = rejected(bomb)
    assert (error.status, error.code) == (413, "too_complex")


def test_pillow_safety_settings_are_held() -> None:
    process(solid((8, 8)))
    assert Image.MAX_IMAGE_PIXELS == 40_000_000
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert PngImagePlugin.MAX_TEXT_CHUNK <= 1024 * 1024
    assert PngImagePlugin.MAX_TEXT_MEMORY <= 64 * 1024 * 1024


def test_a_png_text_bomb_is_refused() -> None:
    # zTXt of 2 MiB of zeros: ~2 KiB on disk, over Pillow's per-chunk limit once inflated.
    pixels = b"\x00" + b"\x00\x00\x00" * 4
    png = raw_png(4, 1, 8, 2, pixels)
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(2 * 1024 * 1024)))
    iend = len(png) - 12
    idat = png.index(b"IDAT") - 4
    bomb = png[:idat] + ztxt + png[idat:iend] + png[iend:]
    assert len(bomb) < 4096
    error = rejected(bomb)
    assert (error.status, error.code) == (422, "invalid_image")


# --- corrupt input -----------------------------------------------------------------------------


def test_a_truncated_jpeg_is_an_invalid_image() -> None:
    data = encode(Image.effect_noise((256, 256), 40).convert("RGB"), "JPEG", quality=90)
    error = rejected(data[: len(data) // 2])
    assert (error.status, error.code) == (422, "invalid_image")


def test_fuzzed_bytes_only_ever_raise_image_rejected() -> None:
    rng = random.Random(2024)
    noise = Image.effect_noise((48, 32), 50).convert("RGB")
    samples = [
        encode(noise, "JPEG", quality=80),
        encode(noise, "JPEG", quality=80, progressive=True),
        encode(noise.convert("RGBA"), "PNG"),
        encode(noise.convert("P"), "GIF"),
        encode(noise, "WEBP", quality=70),
        encode(noise, "WEBP", lossless=True),
        encode(noise, "AVIF", quality=60),
    ]
    inputs: list[bytes] = [rng.randbytes(rng.randrange(1, 2048)) for _ in range(40)]
    for sample in samples:
        inputs += [sample[:cut] for cut in rng.sample(range(1, len(sample)), 15)]
        for _ in range(15):
            flipped = bytearray(sample)
            for _ in range(rng.randrange(1, 8)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            inputs.append(bytes(flipped))
        # a valid header followed by garbage
        inputs.append(sample[:40] + rng.randbytes(200))
    outcomes = [outcome(data) for data in inputs]
    for status, code in outcomes:
        assert code in CODES[status], (status, code)
    assert {status for status, _ in outcomes} >= {200, 415, 422}  # the fuzz reached each stage


def outcome(data: bytes) -> tuple[int, str]:
    try:
        result = process(data)
    except ImageRejected as error:
        return error.status, error.code
    assert result.renditions[0].name == "original"
    return 200, "ok"


# --- metadata and polyglots --------------------------------------------------------------------


def oriented_jpeg_with_gps() -> bytes:
    """1200x800 as stored, with Orientation=6: shown upright it is 800 wide and 1200 high.

    Stored, the top-left 300x300 corner is red and the rest white; turned 90 degrees clockwise
    for display, that corner lands at the top right.
    """
    img = Image.new("RGB", (1200, 800), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 299, 299), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "LeakyCamMake"
    exif[ExifTags.Base.ImageDescription] = "SecretDescription"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    gps[ExifTags.GPS.GPSAreaInformation] = "SecretGpsArea"
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf'
        b'-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b"<dc:creator>SecretXmpAuthor</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    return encode(
        img,
        "JPEG",
        quality=92,
        exif=exif,
        xmp=xmp,
        comment=b"SecretComment",
        progressive=True,
    )


def test_orientation_is_applied_and_all_metadata_stripped() -> None:
    data = oriented_jpeg_with_gps()
    source = Image.open(BytesIO(data))
    assert source.getexif()[ExifTags.Base.Orientation] == 6  # the input really carries it all
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert "xmp" in source.info
    assert b"SecretComment" in data

    result = process(data)

    assert (result.width, result.height) == (800, 1200)
    assert [(r.name, r.width, r.height) for r in result.renditions] == [
        ("original", 800, 1200),
        ("w640", 640, 960),
        ("w320", 320, 480),
    ]
    original = only_original(result)
    assert original.size == (800, 1200)
    assert close_to(original.getpixel((790, 10)), (255, 0, 0))  # the red corner: top right
    assert close_to(original.getpixel((10, 10)), (255, 255, 255))
    assert close_to(original.getpixel((790, 1190)), (255, 255, 255))
    for rendition in result.renditions:
        img = opened(rendition)
        assert len(img.getexif()) == 0, rendition.name
        for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile"):
            assert key not in img.info, (rendition.name, key)
        for marker in (
            b"Exif",
            b"LeakyCam",
            b"SecretDescription",
            b"SecretGpsArea",
            b"SecretXmp",
            b"SecretComment",
            b"xmpmeta",
        ):
            assert marker not in rendition.data, (rendition.name, marker)


def test_a_zip_appended_to_a_jpeg_does_not_survive() -> None:
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "not an image")
    polyglot = solid((700, 500)) + archive.getvalue()
    assert zipfile.is_zipfile(BytesIO(polyglot))

    result = process(polyglot)

    assert result.source_type == "image/jpeg"
    for rendition in result.renditions:
        assert b"PK\x03\x04" not in rendition.data
        assert b"PK\x05\x06" not in rendition.data
        assert b"payload.txt" not in rendition.data
        assert not zipfile.is_zipfile(BytesIO(rendition.data))


def channel_swapped_profile() -> bytes:
    """lcms's sRGB profile with its red and blue primaries swapped, and not called sRGB."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {}
    for i in range(struct.unpack(">I", icc[128:132])[0]):
        signature, offset, size = struct.unpack(">4sII", icc[132 + 12 * i : 144 + 12 * i])
        tags[signature] = (offset, size)
    (red, red_size), (blue, blue_size) = tags[b"rXYZ"], tags[b"bXYZ"]
    assert red_size == blue_size
    icc[red : red + red_size], icc[blue : blue + blue_size] = (
        icc[blue : blue + blue_size],
        icc[red : red + red_size],
    )
    return bytes(icc).replace("sRGB".encode("utf-16-be"), "Swap".encode("utf-16-be"))


def test_an_icc_profile_is_applied_then_dropped() -> None:
    icc = channel_swapped_profile()
    data = encode(Image.new("RGB", (64, 48), (255, 0, 0)), "PNG", icc_profile=icc)

    result = process(data)

    original = only_original(result)
    assert "icc_profile" not in original.info
    assert icc not in result.renditions[0].data
    # Red through a profile whose red primary is sRGB's blue comes out blue.
    assert close_to(original.getpixel((5, 5)), (0, 0, 255), tolerance=20)


def test_broken_and_oversized_icc_profiles_are_ignored() -> None:
    img = Image.new("RGB", (32, 32), (10, 200, 30))
    for icc in (b"not a profile" * 10, b"\x00" * (1024 * 1024 + 1)):
        original = only_original(process(encode(img, "JPEG", quality=95, icc_profile=icc)))
        assert "icc_profile" not in original.info
        assert close_to(original.getpixel((16, 16)), (10, 200, 30))


# --- pixels and modes --------------------------------------------------------------------------


def test_a_png_with_transparency_stays_a_png_with_alpha() -> None:
    img = Image.new("RGBA", (400, 300), (0, 128, 255, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 99, 99), fill=(0, 0, 0, 0))

    result = process(encode(img, "PNG"))

    first = result.renditions[0]
    assert (first.content_type, first.extension) == ("image/png", "png")
    original = opened(first)
    assert original.mode == "RGBA"
    assert original.getpixel((10, 10))[3] == 0  # type: ignore[index]
    assert original.getpixel((300, 200)) == (0, 128, 255, 255)
    w320 = opened(result.renditions[1])
    assert w320.format == "WEBP"
    assert w320.mode == "RGBA"


def test_an_opaque_image_becomes_a_jpeg_even_with_an_alpha_channel() -> None:
    for img in (Image.new("RGB", (40, 30), (1, 2, 3)), Image.new("RGBA", (40, 30), (1, 2, 3, 255))):
        first = process(encode(img, "PNG")).renditions[0]
        assert (first.content_type, first.extension) == ("image/jpeg", "jpg")
        assert opened(first).format == "JPEG"


def test_a_palette_png_with_a_transparent_entry_keeps_its_transparency() -> None:
    img = Image.new("P", (40, 30), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.putpixel((0, 0), 0)
    first = process(encode(img, "PNG", transparency=0)).renditions[0]
    original = opened(first)
    assert first.content_type == "image/png"
    assert original.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert original.getpixel((20, 20)) == (200, 10, 10, 255)


def test_a_cmyk_jpeg_is_converted_to_rgb() -> None:
    img = Image.new("CMYK", (200, 100), (0, 255, 255, 0))  # red
    ImageDraw.Draw(img).rectangle((100, 0, 199, 99), fill=(255, 255, 0, 0))  # blue

    result = process(encode(img, "JPEG", quality=95))

    assert result.source_type == "image/jpeg"
    original = only_original(result)
    assert original.mode == "RGB"
    assert close_to(original.getpixel((20, 50)), (255, 0, 0))
    assert close_to(original.getpixel((180, 50)), (0, 0, 255))


def test_sixteen_bit_pngs_are_scaled_to_eight_bits_not_clipped() -> None:
    # Grey, 16 bits: three bands, 0, half and full scale.
    row = struct.pack("<90H", *([0] * 30 + [32768] * 30 + [65535] * 30))
    grey = Image.frombytes("I;16", (90, 30), row * 30)
    original = only_original(process(encode(grey, "PNG")))
    for x, level in ((15, 0), (45, 128), (75, 255)):
        assert close_to(original.getpixel((x, 15)), (level, level, level), tolerance=4)

    # RGB, 16 bits a channel, written by hand (Pillow cannot make one): a single orange row.
    row = b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * 64
    original = only_original(process(raw_png(64, 8, 16, 2, row * 8)))
    assert close_to(original.getpixel((10, 4)), (255, 128, 0), tolerance=6)


def test_an_animated_gif_is_flattened_to_its_first_frame() -> None:
    frames = [Image.new("RGB", (120, 80), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert len(list(ImageSequence.Iterator(Image.open(BytesIO(data))))) == 2

    result = process(data)

    assert result.source_type == "image/gif"
    assert len(result.renditions) == 1
    assert close_to(only_original(result).getpixel((60, 40)), (255, 0, 0))


def test_an_animated_webp_is_flattened_to_its_first_frame() -> None:
    frames = [Image.new("RGB", (120, 80), color) for color in ((0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)

    result = process(data)

    assert result.source_type == "image/webp"
    assert close_to(only_original(result).getpixel((60, 40)), (0, 255, 0))


def test_a_multi_picture_jpeg_is_a_jpeg_and_its_first_picture_is_used() -> None:
    first, second = Image.new("RGB", (64, 48), (255, 0, 0)), Image.new("RGB", (64, 48), (0, 255, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(BytesIO(data)).format == "MPO"  # what many phone cameras write

    result = process(data)

    assert result.source_type == "image/jpeg"
    assert close_to(only_original(result).getpixel((30, 20)), (255, 0, 0))


def test_an_avif_is_accepted() -> None:
    data = encode(Image.new("RGB", (400, 300), (200, 100, 50)), "AVIF", quality=90)

    result = process(data)

    assert result.source_type == "image/avif"
    assert [(r.name, r.width, r.height) for r in result.renditions] == [
        ("original", 400, 300),
        ("w320", 320, 240),
    ]
    assert close_to(only_original(result).getpixel((200, 150)), (200, 100, 50))


# --- renditions --------------------------------------------------------------------------------


def test_a_large_image_gets_every_variant_width() -> None:
    result = process(solid((3000, 2000)))

    assert (result.width, result.height) == (3000, 2000)
    assert [
        (r.name, r.width, r.height, r.content_type, r.extension) for r in result.renditions
    ] == [
        ("original", 3000, 2000, "image/jpeg", "jpg"),
        ("w1080", 1080, 720, "image/webp", "webp"),
        ("w640", 640, 427, "image/webp", "webp"),
        ("w320", 320, 213, "image/webp", "webp"),
    ]
    for rendition in result.renditions:
        img = opened(rendition)
        assert img.size == (rendition.width, rendition.height)
        assert img.format == {"jpg": "JPEG", "webp": "WEBP"}[rendition.extension]


def test_a_small_image_is_never_upscaled() -> None:
    result = process(solid((500, 400)))
    assert [(r.name, r.width, r.height) for r in result.renditions] == [
        ("original", 500, 400),
        ("w320", 320, 256),
    ]
    tiny = process(solid((320, 200)))  # a width equal to the original's is skipped too
    assert [(r.name, r.width, r.height) for r in tiny.renditions] == [("original", 320, 200)]


def test_the_original_is_capped_at_4096_on_its_long_side() -> None:
    result = process(solid((5000, 3000)))
    assert (result.width, result.height) == (4096, 2458)
    assert only_original(result).size == (4096, 2458)
    assert [(r.name, r.width, r.height) for r in result.renditions[1:]] == [
        ("w1080", 1080, 648),
        ("w640", 640, 384),
        ("w320", 320, 192),
    ]


def test_a_capped_transparent_image_keeps_its_alpha_without_colour_bleeding() -> None:
    img = Image.new("RGBA", (4200, 100), (255, 0, 0, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 2099, 99), fill=(0, 0, 255, 0))  # invisible blue

    result = process(encode(img, "PNG"))

    original = only_original(result)
    assert (result.renditions[0].content_type, original.size) == ("image/png", (4096, 98))
    assert original.getpixel((100, 50))[3] == 0  # type: ignore[index]
    assert original.getpixel((4000, 50)) == (255, 0, 0, 255)
    for x in range(2040, 2056):  # the edge: partly transparent, but red, never purple
        red, _, blue, alpha = original.getpixel((x, 50))  # type: ignore[misc]
        assert alpha == 0 or (red > 200 and blue < 60), (x, red, blue, alpha)
    assert blurhash.is_valid_blurhash(result.blurhash)


def test_a_very_large_jpeg_is_decoded_at_reduced_size_and_capped() -> None:
    # 9000 x 1500: wide enough for DCT-scaled decoding (by 2), and the cap still lands on 4096.
    result = process(encode(Image.new("RGB", (9000, 1500), (90, 60, 30)), "JPEG", quality=80))
    assert (result.width, result.height) == (4096, 683)
    assert close_to(only_original(result).getpixel((2000, 300)), (90, 60, 30))


def test_the_blurhash_is_valid_with_four_components_on_the_long_side() -> None:
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 149, 199), fill=(200, 20, 20))
    landscape = process(encode(img, "PNG")).blurhash
    portrait = process(encode(img.rotate(90, expand=True), "PNG")).blurhash
    for value in (landscape, portrait):
        assert blurhash.is_valid_blurhash(value)
        assert len(value) == 28
    # The first character encodes the components: (x - 1) + (y - 1) * 9 in base 83.
    assert landscape[0] == "L"  # 4 x 3
    assert portrait[0] == "T"  # 3 x 4


def test_results_and_rejections_survive_pickling() -> None:
    result = process(solid((400, 300)))
    assert pickle.loads(pickle.dumps(result)) == result  # noqa: S301 -- our own bytes
    error = pickle.loads(pickle.dumps(ImageRejected(413, "too_large", "big")))  # noqa: S301
    assert (error.status, error.code, error.message) == (413, "too_large", "big")
    assert pickle.loads(pickle.dumps(process)) is process  # noqa: S301


def test_process_runs_in_a_worker_process() -> None:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(process, solid((400, 300))).result()
        assert result.renditions[0].width == 400
        with pytest.raises(ImageRejected) as caught:
            pool.submit(process, b"<svg/>").result()
    assert (caught.value.status, caught.value.code) == (415, "unsupported_type")
