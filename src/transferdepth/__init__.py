"""transferdepth: monocular depth estimation by transfer learning (DenseDepth with many encoders)."""

__version__ = "0.1.0"
