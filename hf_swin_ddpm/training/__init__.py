"""Training scripts for both models, in the style of the diffusers and transformers example scripts.

- ``accelerate launch -m hf_swin_ddpm.training.train_ddpm [flags]``: a DDPM (Ho et al. 2020) ``UNet2DModel``, saved as
  a :class:`~hf_swin_ddpm.DDPMPaperPipeline`;
- ``accelerate launch -m hf_swin_ddpm.training.train_segmentation [flags]``: a :class:`~hf_swin_ddpm.SwinFPNForSegmentation`
  with its image processor;
- ``python -m hf_swin_ddpm.training.demo_models``: both tiny demo models (``make demo-models``).

The submodules are imported on demand (they pull in accelerate, datasets and torchmetrics).
"""
