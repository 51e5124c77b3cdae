"""Importers: trained depth models from other projects' files -> an ordinary transferdepth DepthNet.

`import_densedepth(path, dataset=...)` reads DenseDepth's released Keras HDF5 models (nyu.h5, kitti.h5)
with h5py alone (TensorFlow is never needed); save the result with `transferdepth.inference.checkpoint.save_checkpoint`
or run `transferdepth import densedepth FILE.h5 --out DIR --dataset nyu|kitti`.
"""

from transferdepth.importers.densedepth import (
    DATASET_RANGES,
    KERAS_BN_EPS,
    DenseDepthFile,
    ModelImportError,
    densedepth_to_depthnet,
    import_densedepth,
    read_densedepth,
)

__all__ = ["DATASET_RANGES", "KERAS_BN_EPS", "DenseDepthFile", "ModelImportError", "densedepth_to_depthnet",
           "import_densedepth", "read_densedepth"]
