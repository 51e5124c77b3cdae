"""Geometry of depth maps: cameras, 3D points, stereo views. Pure numpy; no network.

    camera.py  intrinsics for photos and videos (EXIF, field of view, NYU's Kinect, explicit)
    points.py  depth (metres) + intrinsics -> 3D points in the camera frame
    stereo.py  a stereo pair / anaglyph from an image and its depth

May import: the root conventions (recipe, utils) only.
"""
