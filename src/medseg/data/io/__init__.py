"""Readers: every one raises :class:`~medseg.errors.DataError` naming the file and the problem.

- :mod:`medseg.data.io.images`: 2-D images (Pillow, tifffile), refusals of hostile files,
  channel selection, display conversion.
- :mod:`medseg.data.io.masks`: the one binary mask reader (:func:`read_mask`) and multi-class
  label maps.
- :mod:`medseg.data.io.nifti`, :mod:`medseg.data.io.dicom`, :mod:`medseg.data.io.volume`:
  3-D volumes in RAS+ geometry; :mod:`medseg.data.io.writeback`: NIfTI written like a reference.

The 2-D names are re-exported here (``from medseg.data.io import read_image, read_mask``); the
volume readers are imported from their modules (nibabel and pydicom load only when used).
"""

from medseg.data.io.images import (
    EXIF_ORIENTATION_TAG,
    EXIF_ORIENTATIONS,
    IMAGE_EXTENSIONS,
    LUMA_WEIGHTS,
    PIXEL_LIMIT_ENV,
    displayed_shape,
    exif_orientation,
    is_image_file,
    link_problem,
    max_image_pixels,
    probe,
    read_image,
    select_channels,
    size_text,
    to_display,
)
from medseg.data.io.masks import (
    binarize_mask,
    binarize_noisy_mask,
    read_label,
    read_label_map,
    read_mask,
    read_mask_facts,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LUMA_WEIGHTS",
    "PIXEL_LIMIT_ENV",
    "EXIF_ORIENTATION_TAG",
    "EXIF_ORIENTATIONS",
    "max_image_pixels",
    "exif_orientation",
    "displayed_shape",
    "link_problem",
    "is_image_file",
    "read_image",
    "select_channels",
    "size_text",
    "to_display",
    "probe",
    "read_label",
    "binarize_mask",
    "binarize_noisy_mask",
    "read_mask",
    "read_mask_facts",
    "read_label_map",
]
