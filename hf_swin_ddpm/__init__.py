"""hf-swin-ddpm: Swin Transformer + FPN segmentation and DDPM (Ho et al. 2020) for the Hugging Face ecosystem."""

from .diffusion import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet, variational_bound
from .swin_fpn import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor

__version__ = "0.1.0"

__all__ = [
    "SwinFPNConfig",
    "SwinFPNForSegmentation",
    "SwinFPNImageProcessor",
    "DDPMPaperScheduler",
    "DDPMPaperPipeline",
    "paper_unet",
    "variational_bound",
]
