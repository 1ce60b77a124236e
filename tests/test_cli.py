"""The `hf-swin-ddpm` console script, run as a real subprocess."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from training_support import run_cli, run_cli_in_process
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, SwinBackbone, SwinConfig

import hf_swin_ddpm  # noqa: F401  (registers swin_fpn with the Auto classes)


def test_convert_swin_saves_a_loadable_model_and_processor(tmp_path):
    torch.manual_seed(0)
    swin = SwinBackbone(
        SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], out_features=["stage1", "stage4"])
    ).eval()
    swin.save_pretrained(tmp_path / "swin")
    (tmp_path / "labels.json").write_text('{"0": "sky", "1": "tree", "2": "road"}')
    result = run_cli("convert-swin", "swin", "out", "--id2label", "labels.json", "--image_size", "96", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "sky", 1: "tree", 2: "road"}
    assert AutoImageProcessor.from_pretrained(tmp_path / "out").size["height"] == 96
    weight = swin.swin.embeddings.patch_embeddings.projection.weight
    assert torch.equal(model.backbone.patch_embed.projection.weight, weight)


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[1, 2")
    cases = [
        ("convert-swin", "no-such-folder", "out"),
        ("convert-swin", "x", "out", "--id2label", "bad.json"),
        ("convert-swin", "x", "out", "--id2label", "missing.json"),
        ("convert-swin", "x", "out", "--num_labels", "0"),
        ("sample", "no-such-pipeline", "grid.png"),
    ]
    for number, args in enumerate(cases):  # the console script itself once, then the same main in this process
        result = (
            run_cli(*args, cwd=tmp_path) if number == 0 else run_cli_in_process(*args, cwd=tmp_path, capsys=capsys)
        )
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
        lines = [line for line in result.stderr.splitlines() if line.startswith("hf-swin-ddpm")]
        assert len(lines) == 1 and "error:" in lines[0], (args, result.stderr)
    assert not (tmp_path / "out").exists()  # nothing written on failure


def test_sample_with_bf16_autocast_is_close_to_float32(tmp_path):
    from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet

    torch.manual_seed(0)
    DDPMPaperPipeline(unet=paper_unet("tiny", sample_size=8), scheduler=DDPMPaperScheduler(10)).save_pretrained(
        tmp_path / "ddpm"
    )
    grids = {}
    for name, extra in (("fp32", []), ("bf16", ["--bf16"])):
        result = run_cli(
            "sample", "ddpm", f"{name}.png", "--num_samples", "2", "--num_inference_steps", "10", *extra, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        grids[name] = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=np.int16)
    assert "bf16 autocast" in result.stdout
    # T = 10 keeps an untrained UNet's samples unsaturated; another seed moves pixels by up to 255
    assert np.abs(grids["bf16"] - grids["fp32"]).max() <= 8  # the same noise, eps in bf16


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """`parser` and every subcommand's parser under it, with their command names."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {command}")


def test_every_argument_of_every_command_has_help():
    from hf_swin_ddpm.cli import build_parser
    from hf_swin_ddpm.training import train_ddpm, train_segmentation

    roots = [(build_parser(), "hf-swin-ddpm"), (train_ddpm.build_parser(), "train-ddpm")]
    roots.append((train_segmentation.build_parser(), "train-seg"))
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for root, root_name in roots
        for name, parser in _parsers(root, root_name)
        for action in parser._actions
        if not action.help
    ]
    assert missing == []


def test_flags_are_snake_case_and_old_spellings_still_parse_hidden_from_help():
    from hf_swin_ddpm.cli import build_parser

    parser = build_parser()
    shown = [
        flag
        for _, subparser in _parsers(parser, "hf-swin-ddpm")
        for action in subparser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    ]
    assert [flag for flag in shown if "-" in flag.lstrip("-")] == []
    old = parser.parse_args(["sample", "p", "o.png", "--num-images", "3", "--steps", "7", "--allow-pickle"])
    new = parser.parse_args(
        ["sample", "p", "o.png", "--num_samples", "3", "--num_inference_steps", "7", "--allow_pickle"]
    )
    assert vars(old) == vars(new)
    assert (new.num_samples, new.num_inference_steps, new.allow_pickle) == (3, 7, True)
    defaults = parser.parse_args(["sample", "p", "o.png"])
    assert (defaults.num_samples, defaults.num_inference_steps, defaults.allow_pickle) == (16, 1000, False)
    old = parser.parse_args(
        ["push", "f", "r", "--commit-message", "m", "--card-fields", "c.json", "--sample-steps", "2"]
    )
    assert (old.commit_message, old.card_fields, old.num_inference_steps) == ("m", "c.json", 2)
    old = parser.parse_args(["rate-distortion", "m", "--dataset", "d", "--num_images", "4", "--num_timesteps", "5"])
    assert (old.max_eval_samples, old.bpd_timesteps) == (4, 5)
    old = parser.parse_args(["convert-swin", "c", "o", "--num-labels", "3", "--image-size", "64"])
    assert (old.num_labels, old.image_size) == (3, 64)
    sample_help = next(sub for name, sub in _parsers(parser, "") if name == " sample").format_help()
    assert "--num_samples" in sample_help and "--num-images" not in sample_help and "--steps" not in sample_help
