"""ONNX export: onnxruntime (CPU) against PyTorch eager to 1e-4 at three input sizes, two of them odd and none the
export sample's, for both SwinFPN heads and a DDPM pipeline's UNet; the exportable adaptive pooling against
`F.adaptive_avg_pool2d`; unsupported folders and models named in one-line errors.

The SwinFPN models have two stages (torch.export's symbolic shape reasoning grows with the depth: a four-stage tiny
model takes minutes to export on this machine); every branch of the window layout and the heads is still exported.
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from factories import TINY_SWIN_FPN
from training_support import run_cli_in_process

from hf_swin_ddpm.diffusion import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet
from hf_swin_ddpm.export import export_onnx
from hf_swin_ddpm.swin_fpn import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.swin_fpn.pooling_swin_fpn import adaptive_avg_pool2d

TWO_STAGES = {**TINY_SWIN_FPN, "depths": [1, 1], "num_heads": [1, 2], "upernet_hidden_size": 16}
SIZES = [(2, 64, 64), (1, 45, 77), (3, 97, 33)]


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("head", ["semantic_fpn", "upernet"])
def test_swin_fpn_onnx_matches_pytorch_at_unseen_sizes(tmp_path, head):
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(SwinFPNConfig(**TWO_STAGES, decode_head_type=head)).eval()
    model.save_pretrained(tmp_path / "model")
    [path] = export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert path == tmp_path / "onnx" / "model.onnx" and (tmp_path / "onnx" / "config.json").is_file()
    session = _session(path)
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in SIZES:
        pixels = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels).logits.numpy()
        [logits] = session.run(None, {"pixel_values": pixels.numpy()})
        assert logits.shape == expected.shape == (batch, 3, height, width)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_ddpm_pipeline_unet_onnx_from_the_cli_matches_pytorch(tmp_path, capsys):
    torch.manual_seed(0)
    pipeline = DDPMPaperPipeline(unet=paper_unet("tiny"), scheduler=DDPMPaperScheduler())
    pipeline.save_pretrained(tmp_path / "pipeline")
    result = run_cli_in_process("export-onnx", "pipeline", "onnx", cwd=tmp_path, capsys=capsys)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "onnx" / "unet" / "model.onnx"
    assert result.stdout.strip() == "Wrote onnx/unet/model.onnx"
    assert (tmp_path / "onnx" / "scheduler").is_dir() and (tmp_path / "onnx" / "unet" / "config.json").is_file()
    session = _session(path)
    unet = pipeline.unet.eval()
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in [(2, 16, 16), (1, 32, 24), (3, 8, 40)]:
        sample = torch.randn(batch, 1, height, width, generator=generator)
        timestep = torch.randint(0, 1000, (batch,), generator=generator)
        with torch.no_grad():
            expected = unet(sample, timestep).sample.numpy()
        [out] = session.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy()})
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (7, 3), (13, 16), (25, 25)])
@pytest.mark.parametrize("scale", [1, 2, 3, 6])
def test_exportable_adaptive_pooling_equals_pytorch(size, scale):
    hidden = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adaptive_avg_pool2d(hidden, scale), F.adaptive_avg_pool2d(hidden, scale))


def test_cli_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    result = run_cli_in_process("export-onnx", "missing", "out", cwd=tmp_path, capsys=capsys)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        "hf-swin-ddpm export-onnx: error: export-onnx: missing is not a folder; give a saved SwinFPN or DDPM "
        "pipeline folder."
    ]


def test_unsupported_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"^export-onnx: .* is not a folder"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match=r"^export-onnx: .* holds a 'bert' model; supported are"):
        export_onnx(tmp_path / "other", tmp_path / "out")
    conditional = paper_unet("tiny", num_class_embeds=10)
    conditional.save_pretrained(tmp_path / "conditional")
    with pytest.raises(ValueError, match=r"^ONNX export: class-conditional UNets \(num_class_embeds=10\)"):
        export_onnx(tmp_path / "conditional", tmp_path / "out")
