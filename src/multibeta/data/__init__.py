"""Image datasets: generation/loading and the HDF5 dataset file.

- :mod:`multibeta.data.dsprites`: procedural dSprites (``generate_dsprites``) and the
  original npz loader (``load_dsprites_npz``).
- :mod:`multibeta.data.h5io`: the dataset file (``write_image_dataset``, ``read_images``,
  ``read_metadata``, ``ImageDataset``, ``DatasetArrays``).
- :mod:`multibeta.data.hdf5`: every HDF5 file of the package is opened here (``create_h5``
  atomic writing, ``open_h5`` / ``read_dataset`` with errors naming the file and its rule,
  ``PerProcessFile`` fork-safe read handle).
- :mod:`multibeta.data.sources`: ``ImageSource``, the one protocol for a source of images.
- :mod:`multibeta.data.prepare`: rule prepare_data (``prepare_dataset``).
- :mod:`multibeta.data.celeba`: CelebA preprocessing (``prepare_celeba``).
- :mod:`multibeta.data.folder`: a folder of images with CSV labels (``prepare_folder``).
- :mod:`multibeta.data.shapes3d`, :mod:`multibeta.data.mpi3d`: the published benchmark files
  (``prepare_shapes3d``, ``prepare_mpi3d``), written by :mod:`multibeta.data.benchmark` from the
  lazy readers of :mod:`multibeta.data.rows`.
- :mod:`multibeta.data.subsets`: the seeded ``data.size`` draw and the split;
  :mod:`multibeta.data.imaging`: resampling filters and square crops.

Submodules are imported explicitly (``from multibeta.data.h5io import ImageDataset``), so
importing this package stays cheap.
"""
