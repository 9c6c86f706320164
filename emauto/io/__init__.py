"""Reading user data and writing pictures: `images.load_image` reads an image and its pixel
size from .npy, .tif, .png and microscope files; `pictures` writes PNGs with scale bars."""
