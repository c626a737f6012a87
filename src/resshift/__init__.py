"""resshift: efficient diffusion-based image restoration by residual shifting."""

__version__ = "0.1.0"
