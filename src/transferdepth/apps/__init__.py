"""Applications over the API: what a user runs end to end.

    serve/    `transferdepth serve`: FastAPI app (routes, limits, engine) and its page
    video.py  depth for video files: decode, predict in batches, encode (PNG16 frames, colour, stereo)
    temporal.py  steady video: per-frame scale alignment to a running reference (`predict --temporal`)
    fuse.py   `transferdepth fuse`: a posed RGB-D sequence -> per-frame depth -> TSDF -> a mesh
    demo.py   `transferdepth demo`: fine-tune MobileNetV2 on procedural rooms, evaluate, write a report

May import every stage below: study, training, evaluation, api, deploy, inference, geometry, models,
data, weights and the root conventions. Nothing in the package imports apps (only `cli/`).
"""
