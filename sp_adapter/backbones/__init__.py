"""Reference implementations of deblurring backbones, with the official module names."""
