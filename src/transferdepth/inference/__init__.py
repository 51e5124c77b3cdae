"""The one inference path and its files: RGB in, metres out.

    core.py        `infer`: normalise, forward, DepthNorm -> metres, flip-average, resize, clamp
    checkpoint.py  a checkpoint folder (model.safetensors + config.json) <-> a DepthNet
    hub.py         a checkpoint name (org/name[@rev]) -> a folder: the Hugging Face Hub and its cache
    imageio.py     reading images (EXIF orientation, pixel limit); writing depth files (PNG16 mm, npy m,
                   colour, PLY)
    distributed.py torchrun: process group, rank device and threads, shard, gather (training and predict)

Every caller that turns an image into metres (API, evaluation, export, training validation, serve,
video, demo) goes through `core.infer`. May import: models and the root conventions.
"""
