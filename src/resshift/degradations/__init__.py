"""Synthetic degradations: MATLAB bicubic, Real-ESRGAN kernels and pipeline, the paper's test degradation,
LaMa-style inpainting masks and GFPGAN-style face degradation."""

from resshift.degradations.bicubic import imresize
from resshift.degradations.face import FaceDegradation, degrade_face, degrade_face_pair
from resshift.degradations.first_order import FirstOrderDegradation, degrade_first_order
from resshift.degradations.kernels import (KERNEL_TYPES, gaussian_kernel, generalized_gaussian_kernel,
                                           plateau_kernel, random_blur_kernel, random_final_sinc,
                                           random_mixed_kernel, sinc_kernel)
from resshift.degradations.masks import MASK_KINDS, MaskConfig, random_masks, random_masks_with_kinds
from resshift.degradations.realesrgan import (RealESRGANDegradation, add_gaussian_noise, add_poisson_noise,
                                              degrade, filter2d, jpeg, realesrgan_x2)

__all__ = [
    "KERNEL_TYPES", "FirstOrderDegradation", "RealESRGANDegradation", "add_gaussian_noise", "add_poisson_noise",
    "degrade", "degrade_first_order", "filter2d", "gaussian_kernel", "generalized_gaussian_kernel", "imresize",
    "jpeg", "plateau_kernel", "random_blur_kernel", "random_final_sinc", "random_mixed_kernel", "realesrgan_x2",
    "sinc_kernel",
    "FaceDegradation", "MASK_KINDS", "MaskConfig", "degrade_face", "degrade_face_pair", "random_masks",
    "random_masks_with_kinds",
]
