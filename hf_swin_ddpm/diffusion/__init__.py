"""DDPM (Ho et al. 2020) as diffusers components: the paper's scheduler, pipeline, UNets and variational bound."""

from .likelihood import variational_bound
from .pipeline_ddpm_paper import DDPMPaperPipeline, DDPMPaperPipelineOutput
from .scheduling_ddpm_paper import DDPMPaperScheduler, DDPMPaperSchedulerOutput
from .unets import PAPER_UNET_PRESETS, paper_unet, paper_unet_config

__all__ = [
    "DDPMPaperScheduler",
    "DDPMPaperSchedulerOutput",
    "DDPMPaperPipeline",
    "DDPMPaperPipelineOutput",
    "PAPER_UNET_PRESETS",
    "paper_unet",
    "paper_unet_config",
    "variational_bound",
]
