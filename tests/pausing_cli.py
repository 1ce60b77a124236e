"""`hf-swin-ddpm` with one checkpoint save held open, for tests/test_kill_resume.py to kill a run in the middle of it.

    python tests/pausing_cli.py SECONDS STEP COMMAND [ARGS...]

runs `hf-swin-ddpm COMMAND ARGS...` with `checkpoints.write_training_state` wrapped from here: the save of
`checkpoint-STEP` sleeps SECONDS after accelerate has written its files into `checkpoint-STEP.tmp` and before the
training state and the manifest. The package itself knows nothing of this.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hf_swin_ddpm.cli import main
from hf_swin_ddpm.training import checkpoints


def pause_in_checkpoint(seconds: float, step: int) -> None:
    """Make the save of ``checkpoint-{step}`` sleep ``seconds`` before its training state and manifest."""
    write_training_state = checkpoints.write_training_state
    held = f"{checkpoints.CHECKPOINT_PREFIX}{step}{checkpoints.INCOMPLETE_SUFFIX}"

    def pausing_write_training_state(folder: Path, *args, **kwargs) -> None:
        if Path(folder).name == held:
            time.sleep(seconds)
        write_training_state(folder, *args, **kwargs)

    checkpoints.write_training_state = pausing_write_training_state


if __name__ == "__main__":
    seconds, step, *argv = sys.argv[1:]
    pause_in_checkpoint(float(seconds), int(step))
    sys.exit(main(argv))
