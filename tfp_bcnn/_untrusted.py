"""Checks of files from elsewhere, made before a native parser reads them.

Every loader of the package reads bytes it did not write: ``.npz`` arrays
(`datasets.load_npz`), image folders (`datasets.load_image_folder`) and
``.keras`` archives (`workflow.load_model`, the command line). A crafted file
must end in one ``ValueError`` naming it, not in a pickle executed, memory
exhausted by a size lie, a native crash, or NaN weights that answer silently.
What is checked here, in Python:

* zip archives (``.npz``, ``.keras``): member names (no absolute paths or
  ``..``), the sum of declared uncompressed sizes (`MAX_ARCHIVE_BYTES`;
  `zipfile` never inflates a member past its declared size, and a member
  whose data disagrees fails its CRC check), the members a format needs;
* ``.npy`` members: the header's dtype (object arrays, i.e. pickles, are
  refused) and shape, whose byte count must equal the member's data;
* images: the pixel count from the header (`MAX_IMAGE_PIXELS`) before any
  decoding, then a full decode with Pillow so that a broken file is named;
* models: every weight finite after loading.

The ``.tflite`` checks live in ``export/runtime.py`` (`verify_tflite`),
which must run without tfp_bcnn. The HDF5 weights inside a ``.keras`` file
are parsed by h5py's C library, which no Python check can fully vouch for;
benchmarks/fuzz.py measures how it fares on mutated files.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib

import numpy as np

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "ZIP_ERRORS",
    "MAX_IMAGE_PIXELS",
    "check_finite_weights",
    "check_images",
    "check_keras_archive",
    "image_files",
    "npz_members",
]

#: Most bytes a zip archive may declare once inflated (all members together).
MAX_ARCHIVE_BYTES = 2**33
#: Most pixels (H * W) of one image file; larger ones are refused before decoding.
MAX_IMAGE_PIXELS = 2**26
#: What `zipfile` raises on a damaged archive (NotImplementedError: an unknown
#: compression method or zip version; zlib.error: a corrupt deflate stream).
ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError,
              zlib.error, struct.error)
#: Image formats (Pillow's names) that ``tf.io.decode_image`` reads.
_DECODABLE = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}
#: Most bytes of a ``.keras`` archive's ``config.json``.
_MAX_CONFIG_BYTES = 2**26


def _zip_members(path: str, what: str, arg: str = "path"
                 ) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The open archive and its members, names and declared sizes checked."""
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as err:
        raise ValueError(f"{what} is not readable ({err}). Received: {arg}={path!r}") from None
    members = archive.infolist()
    for info in members:
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            archive.close()
            raise ValueError(f"{what} holds a member with an unsafe name {name!r}. "
                             f"Received: {arg}={path!r}")
    total = sum(info.file_size for info in members)
    if total > MAX_ARCHIVE_BYTES:
        archive.close()
        raise ValueError(f"{what} declares {total} bytes once inflated (more than "
                         f"{MAX_ARCHIVE_BYTES}). Received: {arg}={path!r}")
    return archive, members


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str):
    """``(shape, dtype)`` of a ``.npy`` member, its byte count checked against its data."""
    fmt = np.lib.format
    try:
        with archive.open(info) as f:
            version = fmt.read_magic(f)  # 3.0 (utf-8 field names) is refused
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            if version not in reader:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = reader[version](f, max_header_size=10_000)
            header = f.tell() if f.seekable() else None
    except (*ZIP_ERRORS, SyntaxError) as err:
        raise ValueError(f"Member {info.filename!r} is not a readable .npy array ({err}). "
                         f"Received: path={path!r}") from None
    if dtype.hasobject:
        raise ValueError(f"Member {info.filename!r} holds Python objects (a pickle), which are "
                         f"never loaded. Received: path={path!r}")
    need = math.prod(shape) * dtype.itemsize
    if header is not None and need != info.file_size - header:
        raise ValueError(f"Member {info.filename!r} declares shape {shape} of {dtype} "
                         f"({need} bytes) but holds {info.file_size - header}. "
                         f"Received: path={path!r}")
    return shape, dtype


def npz_members(path: str) -> dict[str, tuple]:
    """``{key: (shape, dtype)}`` of an ``.npz`` archive, every member checked.

    Args:
        path: the ``.npz`` file.

    Returns:
        The member names without ``.npy``, each with its declared shape and
        dtype (read from the header; no array data is loaded).

    Raises:
        ValueError: not a zip archive, an unsafe member name, over
            `MAX_ARCHIVE_BYTES`, a member that is not ``.npy``, an object
            (pickle) array, or a header whose shape disagrees with the data.
    """
    archive, members = _zip_members(path, "The '.npz' archive")
    with archive:
        out = {}
        for info in members:
            if not info.filename.endswith(".npy"):
                raise ValueError(f"Member {info.filename!r} is not a .npy array. "
                                 f"Received: path={path!r}")
            out[info.filename[:-4]] = _npy_header(archive, info, path)
    return out


def check_keras_archive(path: str, arg: str = "path") -> None:
    """Checks a ``.keras`` zip before Keras (and h5py) read it.

    Args:
        path: the ``.keras`` file.
        arg: the argument name the messages quote (``Received: arg=path``).

    Raises:
        ValueError: not a zip archive, an unsafe member name, over
            `MAX_ARCHIVE_BYTES`, no ``config.json`` (as JSON, at most 64 MiB)
            or ``model.weights.h5`` (with the HDF5 signature), naming the file.
    """
    archive, members = _zip_members(path, "Not a valid .keras file: the archive", arg)
    with archive:
        names = {info.filename: info for info in members}
        for need in ("config.json", "model.weights.h5"):
            if need not in names:
                raise ValueError(f"Not a valid .keras file: no {need!r} among the members "
                                 f"{sorted(names)[:10]}. Received: {arg}={path!r}")
        try:
            if names["config.json"].file_size > _MAX_CONFIG_BYTES:
                raise ValueError(f"config.json of {names['config.json'].file_size} bytes")
            json.loads(archive.read("config.json"))
            with archive.open("model.weights.h5") as f:
                signature = f.read(8)
        except ZIP_ERRORS as err:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"Not a valid .keras file (corrupt: {type(err).__name__}: {err}). "
                             f"Received: {arg}={path!r}") from None
        if signature != b"\x89HDF\r\n\x1a\n":
            raise ValueError("Not a valid .keras file: model.weights.h5 is not an HDF5 file. "
                             f"Received: {arg}={path!r}")


def check_finite_weights(model, path: str, arg: str = "path") -> None:
    """Refuses a loaded model with NaN or infinite weights, naming the first one.

    Args:
        model: a loaded Keras model.
        path: the file it came from.
        arg: the argument name the message quotes.

    Raises:
        ValueError: a non-finite float weight (layer/variable path and count);
            the message ends ``Received: <arg>=<path>``.
    """
    for weight in model.weights:
        value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(np.count_nonzero(~np.isfinite(value)))
            raise ValueError(f"Weight {weight.path!r} holds {bad} NaN or infinite value(s): "
                             f"the file is damaged. Received: {arg}={path!r}")


def check_images(files: list[str]) -> None:
    """Reads each image's header, then decodes it fully, with Pillow.

    Args:
        files: image paths.

    Raises:
        ValueError: a file Pillow cannot identify or decode (truncated,
            corrupt), one of more than `MAX_IMAGE_PIXELS` pixels (checked
            from the header, before decoding), or one in a format TensorFlow
            does not decode (TIFF named .png), naming the file.
    """
    from PIL import Image

    for name in files:
        try:
            with Image.open(name) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{width} x {height} pixels, more than {MAX_IMAGE_PIXELS}")
                if image.format not in _DECODABLE:
                    raise ValueError(f"{image.format} data, which TensorFlow does not decode")
                image.load()
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                MemoryError) as err:
            raise ValueError(f"Unreadable or oversized image ({type(err).__name__}: {err}). "
                             f"Received: path={name!r}") from None


def image_files(root: str, extensions: tuple[str, ...]) -> list[str]:
    """The image files of ``root/<class>/...`` (any depth), sorted.

    Args:
        root: the folder of class subfolders (files directly in it are ignored,
            as ``keras.utils.image_dataset_from_directory`` ignores them).
        extensions: lower-case endings of the files to list.

    Returns:
        Paths of the files, class folders in alphabetical order.
    """
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            for folder, _, files in os.walk(entry.path):
                found += [os.path.join(folder, f) for f in sorted(files)
                          if f.lower().endswith(extensions)]
    return found
