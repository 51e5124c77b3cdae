"""The Python API a user calls: `DepthEstimator` (an image in, metres out, on any engine) and batch
prediction of files to depth outputs (`predict.predict_files`, what `transferdepth predict` runs).

    estimator.py  DepthEstimator (torch) and OnnxDepthEstimator (an engine from `deploy/`)
    predict.py    find inputs, write each image's outputs (PNG16 mm, npy m, colour, PLY, stereo), summary
    hub.py        share a checkpoint on the Hugging Face Hub: its model card (from its metadata), the upload

May import: deploy, evaluation (the card's metric table), inference, geometry, models, and the root
conventions (recipe, utils).
"""
