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

from medseg.data.io import images, masks
from medseg.data.io.images import *  # noqa: F403 - the public names of each module, by its __all__
from medseg.data.io.masks import *  # noqa: F403

__all__ = [*images.__all__, *masks.__all__]
