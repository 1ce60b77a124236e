"""Export of the project's models to deployment formats (ONNX)."""

from .onnx import export_onnx, export_swin_fpn_onnx, export_unet_onnx

__all__ = ["export_onnx", "export_swin_fpn_onnx", "export_unet_onnx"]
