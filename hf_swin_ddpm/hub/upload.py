"""Pushing to the Hub: `push_to_hub` creates the repository and uploads a `save_for_hub` folder.

    from hf_swin_ddpm.hub import push_to_hub

    push_to_hub(pipeline, "me/ddpm-cifar10", datasets=["cifar10"], bits_per_dim=3.75)

Tokens are resolved by huggingface_hub (`token=`, `HF_TOKEN`, the login cache) and never appear in cards, logs or
error messages: every failure a user meets becomes one `HubPublishError` line saying what to do.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .cards import PROJECT_TAG
from .folders import model_kind, save_for_hub

logger = logging.getLogger(__name__)

TOKENS_URL = "https://huggingface.co/settings/tokens"


class HubPublishError(ValueError):
    """Publishing to the Hub failed; the message says why and what to do. It never contains a token.

    `transient` is True for failures worth retrying: the Hub unreachable, a timeout, 429 or a 5xx answer.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def push_to_hub(
    obj: Any,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    **card_fields: Any,
) -> str:
    """
    Creates `repo_id` on the Hub if needed and uploads a `save_for_hub` folder of `obj` to it.

    Args:
        obj: a `SwinFPNForSegmentation` (pass its processor as `image_processor=`) or a `DDPMPaperPipeline`.
        repo_id (`str`): "namespace/name", or "name" for your own namespace.
        private (`bool`): create the repository private (an existing repository keeps its visibility).
        token (`str`, *optional*): defaults to `HF_TOKEN` or the token saved by `hf auth login`.
        commit_message (`str`, *optional*): defaults to "Upload <kind> model with hf-swin-ddpm".
        card_fields: as for `save_for_hub`; `repo_id` defaults to this repository.

    Returns:
        `str`: the URL of the commit.

    Raises:
        `HubPublishError`: no token, a token the Hub rejects or that cannot write to the repository, an unreachable
            Hub or offline mode; one line saying what to do.
    """
    kind = model_kind(obj)
    token = require_token(token)
    api = HfApi(token=token)
    with _explained_hub_errors(repo_id, api.endpoint, token):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # "name" -> "namespace/name"
    card_fields.setdefault("repo_id", repo_id)
    with tempfile.TemporaryDirectory(prefix="hf-swin-ddpm-push-") as temporary:
        folder = save_for_hub(obj, Path(temporary) / "repo", **card_fields)
        with _explained_hub_errors(repo_id, api.endpoint, token):
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {kind} model with {PROJECT_TAG}",
            )
    logger.info(f"Pushed to {commit.commit_url}")
    return commit.commit_url


def require_token(token: str | None = None) -> str:
    """The token to write with: `token`, else `HF_TOKEN` or the login cache; a `HubPublishError` if there is none."""
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "No Hugging Face token found: log in with `hf auth login`, or set HF_TOKEN to a token with write access "
            f"({TOKENS_URL})."
        )
    return token


@contextmanager
def _explained_hub_errors(repo_id: str, endpoint: str, token: str) -> Iterator[None]:
    """Turns the errors a user meets into one `HubPublishError` line saying what to do (with the token redacted)."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubPublishError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it and try again.") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        transient = status is not None and (status == 429 or status >= 500)
        raise HubPublishError(_redact(_http_error_message(error, repo_id), token), transient=transient) from None
    except _transport_errors() as error:
        reason = _redact(_one_line(str(error)) or type(error).__name__, token)
        raise HubPublishError(
            transient=True,
            message=f"Could not reach the Hugging Face Hub at {endpoint} ({reason}): check your network connection"
            " (and HF_ENDPOINT if you set it), then try again.",
        ) from None


def _http_error_message(error: HfHubHTTPError, repo_id: str) -> str:
    status = error.response.status_code if error.response is not None else None
    server = _one_line(error.server_message or "")
    detail = f" (the Hub said: {server})" if server else ""
    if status == 401:
        return (
            f"The Hub rejected the token (401 Unauthorized){detail}: log in again with `hf auth login` or set HF_TOKEN "
            f"to a valid token with write access ({TOKENS_URL})."
        )
    if status == 403:
        return (
            f"No write access to {repo_id} (403 Forbidden){detail}: push to a repository in your own namespace or an "
            f"organization you can write to, or use a token with write permission ({TOKENS_URL})."
        )
    if status == 404:
        return f"Repository {repo_id} not found (404){detail}: check the name and that your token can see it."
    return f"The Hub answered {status} while pushing to {repo_id}{detail}; try again later."


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of the HTTP libraries huggingface_hub may use."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        error = getattr(module, "TransportError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
