"""Dense tasks: segmentation and landmark modules, their heads, metrics, pictures and data."""
