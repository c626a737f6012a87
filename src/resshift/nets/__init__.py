"""Networks: the Swin-UNet denoiser and the autoencoders whose latent space it works in."""
