"""Networks: the Swin-UNet denoiser, the autoencoders whose latent space it works in, and the U-Net
discriminator of adversarial training."""
