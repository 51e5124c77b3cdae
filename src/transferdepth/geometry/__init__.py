"""Geometry of depth maps: cameras, 3D points, stereo views. numpy, with trimesh / Open3D / scikit-learn
(the [3d] extra) imported only where used; no network.

    camera.py  intrinsics for photos and videos (EXIF, field of view, NYU's Kinect, explicit)
    points.py  depth (metres) + intrinsics -> 3D points in the camera frame
    stereo.py  a stereo pair / anaglyph from an image and its depth
    mesh.py    depth (metres) + intrinsics -> a triangle mesh (GLB / OBJ / PLY through trimesh)
    align.py   known metres (sparse PNG16 mm / CSV / JSON) -> scale / scale-shift fits (RANSAC: scikit-learn)
    fusion.py  many posed depth maps -> one TSDF volume -> a mesh (Open3D)

May import: the root conventions (recipe, utils) only.
"""
