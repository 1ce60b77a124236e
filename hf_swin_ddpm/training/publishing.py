"""The end of a run: ``all_results.json``, the model card and the Hub push, all through :mod:`hf_swin_ddpm.hub`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import hub
from .checkpoints import free_mib, is_write_failure, latest_checkpoint_size, size_on_disk, write_failure_reason
from .dataloaders import hub_dataset_ids
from .errors import TrainingError

ALL_RESULTS_FILE = "all_results.json"


def write_all_results(output_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``all_results.json`` (as the transformers examples do)."""
    path = Path(output_dir) / ALL_RESULTS_FILE
    path.write_text(json.dumps(dict(results), indent=2, sort_keys=True) + "\n")
    return path


def write_model_card(output_dir: str | Path, kind: str, card_fields: Mapping[str, Any]) -> Path:
    """Write ``output_dir/README.md``, the run's model card, rendered by :func:`hf_swin_ddpm.hub.render_model_card`
    from the templates in ``model_cards/`` (``card_fields`` are that function's fields)."""
    return hub.write_model_card(output_dir, kind, **card_fields)


# repo_id: hub.push_to_hub takes it as its own argument and puts the namespaced id it created into the card;
# the model name and the example image are what hub.save_for_hub fills in for the uploaded folder.
PUSH_SKIPPED_CARD_FIELDS = ("model_name", "image_file", "image_caption", "repo_id")


CARD_FIELDS_FILE = "card_fields.json"  # written when the push fails, for `hf-swin-ddpm push --card_fields`


def push_trained_model(obj: Any, args: argparse.Namespace, card_fields: Mapping[str, Any], **save_fields: Any) -> str:
    """Push ``obj`` with :func:`hf_swin_ddpm.hub.push_to_hub` to ``--hub_model_id`` (default: the output folder's
    name), with the run's card fields and ``save_fields`` (``image_processor``, ``example_image``); returns the commit
    URL. huggingface_hub retries the upload's commit on transient failures (timeouts, connection errors, 408, 429 and
    5xx: 5 retries, 1 to 8 s apart, or as the Hub's ``Retry-After`` says); when the push still fails, the error says
    that the model is saved and gives the ``hf-swin-ddpm push`` command that uploads it later."""
    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    fields = {name: value for name, value in card_fields.items() if name not in PUSH_SKIPPED_CARD_FIELDS}
    try:
        return hub.push_to_hub(
            obj,
            repo_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=f"End of training ({args.command_line.split()[0]})",
            results_from=args.output_dir,  # the card's results written after rendering it (the final FID)
            **fields,
            **save_fields,
        )
    except hub.HubPublishError as error:
        raise _push_failed(error, args, repo_id, fields) from None


def _push_failed(
    error: hub.HubPublishError, args: argparse.Namespace, repo_id: str, fields: Mapping[str, Any]
) -> TrainingError:
    """The one-line error of a failed push: the Hub's reason, where the model is, and the command to push it."""
    output_dir = Path(args.output_dir)
    card_file = output_dir / CARD_FIELDS_FILE
    card_file.write_text(json.dumps(dict(fields), indent=2, sort_keys=True, default=str) + "\n")
    return TrainingError(
        f"{error} The trained model is saved in {output_dir}; upload it later with: "
        f"hf-swin-ddpm push {output_dir} {repo_id} --card_fields {card_file}"
    )


@contextlib.contextmanager
def final_outputs_written(output_dir: Path) -> Iterator[None]:
    """Write the final model, card and results inside this block: when the disk is full or refuses a write, the
    files and folders the block created are removed (the checkpoints stay complete) and a ``TrainingError`` names the
    folder and the space needed."""
    before = set(output_dir.iterdir()) if output_dir.is_dir() else set()
    try:
        yield
    except Exception as error:
        if not is_write_failure(error, output_dir):
            raise
        reason = write_failure_reason(error, output_dir)  # before the cleanup frees the space
        created = sorted(set(output_dir.iterdir()) - before)
        written = sum(size_on_disk(path) for path in created)
        for path in created:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        checkpoint = latest_checkpoint_size(output_dir)
        raise TrainingError(
            f"could not write the trained model into {output_dir}: {reason} "
            f"({free_mib(output_dir):.1f} MiB free there; the model needs about {max(written, checkpoint) / 2**20:.1f}"
            " MiB). The files written so far were removed and the checkpoints are complete: free some space, then "
            "run the same command with --resume_from_checkpoint auto to write the model"
        ) from None


def run_card_fields(
    args: argparse.Namespace,
    results: Mapping[str, Any],
    output_dir: Path,
    *,
    model_config: str | None,
    hyperparameters: Mapping[str, Any],
    metric: tuple[str, float | None],
    **model_fields: Any,
) -> dict[str, Any]:
    """The model card fields of a finished run (:func:`hf_swin_ddpm.hub.render_model_card`'s names), made the same
    way for both scripts.

    The hyperparameter table starts with ``model_config``, the total batch size and the optimizer steps, then the
    script's own ``hyperparameters``, then precision, processes, seed and the command line. ``metric`` is the
    headline result as ``(card field, value)``, recorded in ``model-index`` with the dataset and the held-out split
    when the value is a number. ``model_fields`` are the script's other fields (training data, architecture, ...).
    """
    metric_field, metric_value = metric
    fields: dict[str, Any] = {
        "model_name": (args.hub_model_id or output_dir.resolve().name).rsplit("/", 1)[-1],
        "datasets": hub_dataset_ids(args),
        **model_fields,
        "hyperparameters": {
            "model_config": model_config,
            "train_batch_size (total)": results["total_train_batch_size"],
            "optimizer steps": results["global_step"],
            **hyperparameters,
            "mixed_precision": args.mixed_precision or "no",
            "processes": results["num_processes"],
            "seed": args.seed,
            "command": args.command_line,
        },
    }
    if args.hub_model_id:
        fields["repo_id"] = args.hub_model_id
    if metric_value is not None and not math.isnan(metric_value):
        fields[metric_field] = metric_value
        fields["eval_dataset"] = args.dataset_name or "imagefolder"
        fields["eval_split"] = results["eval_split"]
    return fields
