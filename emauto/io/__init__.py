"""Reading user data: images from .npy, .tif and microscope files."""
