"""The one test of whether a name is a Hub repository id, for the CLI, the Space and the model cards."""

from __future__ import annotations

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def is_repo_id(name: str, *, namespaced: bool = False) -> bool:
    """Whether `name` is a Hub repository id, "name" or "namespace/name", by huggingface_hub's rules (the check
    `from_pretrained` applies before it downloads: letters, digits, `-`, `_` and `.`, not starting or ending with `-`
    or `.`, no `--` or `..`, at most 96 characters). With `namespaced`, only "namespace/name", as card metadata such
    as `base_model` names a repository. It says nothing about whether a local path of that name exists."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name or not namespaced
