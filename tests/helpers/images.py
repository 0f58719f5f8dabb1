"""Checks of the PNG files the figures write."""
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_sensible_png(path, min_size=(500, 300)):
    width, height = png_size(path)
    assert min_size[0] <= width <= 4000 and min_size[1] <= height <= 4000, (width, height)
