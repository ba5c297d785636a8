"""The registered datasets, one module each, in their released layouts.

Importing a module registers its datasets in :data:`medseg.data.base.DATASETS`;
:func:`medseg.data.base.list_datasets` imports every module of this package. Nothing else lives
here: readers are in :mod:`medseg.data.io`, transforms in :mod:`medseg.data.transforms`.

- :mod:`~medseg.data.datasets.synthetic`: ``synthetic_vessels`` (generated; the default input).
- :mod:`~medseg.data.datasets.drive`, :mod:`~medseg.data.datasets.chase_db1`,
  :mod:`~medseg.data.datasets.stare`: fundus vessels.
- :mod:`~medseg.data.datasets.octa`: ``rose1``, ``rose2``, ``rossa``, ``octa500``.
- :mod:`~medseg.data.datasets.polyp`: ``kvasir_seg``, ``cvc_clinicdb``.
- :mod:`~medseg.data.datasets.folder`: ``folder`` (any images/ + masks/ folder).
- :mod:`~medseg.data.datasets.volumes`: ``msd``, ``dicom`` (2-D slices of 3-D volumes).
"""
