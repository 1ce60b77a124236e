"""Preemption: real SIGTERM / SIGINT / SIGUSR1 sent to real training processes at random steps stop them after the
current optimizer step with a checkpoint and the exit status 128 + the signal; `--resume_from_checkpoint auto` then
ends with exactly the weights of a run that was never interrupted. Both scripts, one and two processes (one of the two
signalled: both stop at the same step), in-memory and streamed data; and two `accelerate launch --num_machines 2`
invocations training together as one two-process run does.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from training_support import CONSOLE_SCRIPT, flags, small_disk

from hf_swin_ddpm.training.checkpoints import CHECKPOINT_PREFIX, complete_checkpoints, verify_checkpoint

ACCELERATE = Path(sys.executable).with_name("accelerate")
MAX_TRAIN_STEPS = 8
WAIT_SECONDS = 240
COMMON = flags(
    max_train_steps=MAX_TRAIN_STEPS,
    checkpointing_steps=4,
    logging_steps=1,
    report_to="none",
    seed=5,
    lr_warmup_steps=1,
)
SCRIPTS = {
    "ddpm": (
        "train-ddpm",
        "hf_swin_ddpm.training.train_ddpm",
        flags(
            dataset_name="digits",
            model_config="tiny",
            resolution=8,
            train_batch_size=4,
            max_train_samples=12,
            eval_bpd_timesteps=0,
            ddpm_num_inference_steps=2,
            num_sample_images=2,
            random_flip=True,
        ),
    ),
    "segmentation": (
        "train-seg",
        "hf_swin_ddpm.training.train_segmentation",
        flags(dataset_name="shapes", model_config="tiny", resolution=32, train_batch_size=2, max_train_samples=12),
    ),
}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONFAULTHANDLER"] = "1"  # a run that hangs shows where (Run.stop_showing_where)
    env["ACCELERATE_USE_CPU"] = "1"  # accelerate launch --multi_gpu on CPUs: torchrun workers talking over gloo
    env.pop("HF_SWIN_DDPM_DEBUG", None)
    return env


@dataclass
class Run:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace").replace("\r", "\n")

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.stop_showing_where()
            stacks = "\n".join(line for line in self.output().splitlines() if not line.startswith("Extension modules"))
            pytest.fail(f"the run did not end:\n{stacks[-12000:]}")

    def stop_showing_where(self) -> None:
        """Stop a run that hangs: SIGABRT to each of its processes, workers first, so that Python's faulthandler
        (PYTHONFAULTHANDLER) writes every thread's stack to the log, then SIGKILL to all of them."""
        processes = [*psutil.Process(self.process.pid).children(recursive=True), psutil.Process(self.process.pid)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGABRT)
        time.sleep(3)
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait()


def launch(
    script: str,
    output_dir: Path,
    *extra: str,
    processes: int = 1,
    machine: tuple[int, int] | None = None,
    log_dir: Path | None = None,
) -> Run:
    """One training run in new processes: the console script, or `accelerate launch` for several processes
    (`machine` = (rank, port) for one of two machines); its output goes to a log in `log_dir` (by default the output
    folder's parent)."""
    command, module, script_flags = SCRIPTS[script]
    arguments = [*script_flags, *COMMON, "--output_dir", str(output_dir), *extra]
    if processes == 1 and machine is None:
        argv = [str(CONSOLE_SCRIPT), command, *arguments]
    else:
        rank, port = machine or (0, free_port())
        topology = ["--num_machines", "2", "--machine_rank", str(rank)] if machine else ["--num_machines", "1"]
        total = 2 if machine else processes  # --num_processes counts the processes of all machines
        argv = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(total), *topology]
        argv += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        argv += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", module, *arguments]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    log = (log_dir or output_dir.parent) / f"{output_dir.name}-{time.monotonic_ns()}.log"
    with log.open("w") as stream:
        process = subprocess.Popen(argv, env=environment(), stdout=stream, stderr=subprocess.STDOUT)
    return Run(process, log)


def steps_shown(run: Run) -> int:
    """The last step count the progress bar printed."""
    counts = re.findall(rf"\| (\d+)/{MAX_TRAIN_STEPS} \[", run.log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


def wait_for_step(run: Run, step: int) -> None:
    """Until the progress bar shows `step` optimizer steps done."""
    deadline = time.monotonic() + WAIT_SECONDS
    while steps_shown(run) < step:
        if run.process.poll() is not None:
            pytest.fail(f"the run ended ({run.process.returncode}) before step {step}:\n{run.output()[-3000:]}")
        if time.monotonic() > deadline:
            run.stop_showing_where()
            pytest.fail(f"timed out waiting for step {step}")
        time.sleep(0.01)


def workers(run: Run, processes: int) -> list[psutil.Process]:
    """The training processes of a run, by rank: the process itself, or the workers `accelerate launch` started."""
    if processes == 1:
        return [psutil.Process(run.process.pid)]
    found = [child for child in psutil.Process(run.process.pid).children(recursive=True) if "RANK" in child.environ()]
    return sorted(found, key=lambda child: int(child.environ()["RANK"]))


def final_tensors(output_dir: Path) -> dict[str, torch.Tensor]:
    """The saved model's tensors and the last checkpoint's training weights (and EMA weights, for the DDPM)."""
    last = output_dir / f"{CHECKPOINT_PREFIX}{MAX_TRAIN_STEPS}"
    files = [*output_dir.glob("*.safetensors"), *output_dir.glob("unet/*.safetensors"), *last.glob("*.safetensors")]
    tensors = {
        f"{path.relative_to(output_dir)}/{name}": tensor for path in files for name, tensor in load_file(path).items()
    }
    assert len(files) >= 2 and tensors
    return tensors


def assert_same_tensors(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, different[:5]


STOP_LINE = re.compile(r"stopped by (SIG\w+) after optimizer step (\d+); saved (\S+)\. Resume with the same command")
STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGUSR1: 138}


def frozen(targets: list[psutil.Process]) -> None:
    """SIGSTOP to every training process, returning once all are stopped: the run cannot move on while the test
    reads its log and signals it (on 2 busy cores that took more than a step)."""
    for target in targets:
        target.suspend()
    deadline = time.monotonic() + 10
    while any(target.status() != psutil.STATUS_STOPPED for target in targets):
        assert time.monotonic() < deadline, "the training processes did not stop"
        time.sleep(0.001)


def interrupt(run: Run, processes: int, number: signal.Signals, step: int, only_rank: int | None) -> int:
    """Send `number` once step `step` is done (to every training process, or to one rank); returns the step the run
    stopped at, after checking its exit status, its one line and its checkpoint.

    The processes are frozen while they are signalled, so the step the bar shows then (`shown`, at least `step`)
    bounds the stop: after the step in progress, or after the next one when that step's collective (which carries
    the stop flags) had already run: `shown <= stopped_at <= shown + 2`."""
    wait_for_step(run, step)
    targets = workers(run, processes)
    assert len(targets) == processes
    frozen(targets)
    shown = steps_shown(run)
    for rank, target in enumerate(targets):
        if only_rank is None or rank == only_rank:
            target.send_signal(number)
    for target in targets:
        target.resume()
    status = run.wait()
    output = run.output()
    lines = STOP_LINE.findall(output)
    assert len(lines) == 1, output[-3000:]  # said once, by the main process
    name, stopped_at, checkpoint = lines[0][0], int(lines[0][1]), Path(lines[0][2])
    assert name == number.name and step <= shown <= stopped_at <= shown + 2, (shown, output[-3000:])
    if processes == 1:
        assert status == STATUS[number], output[-3000:]
    else:  # torchrun reports the first worker to end with its status (it then stops the other ones) and exits with 1
        assert status != 0 and f"exitcode  : {STATUS[number]}" in output, output[-3000:]
    assert checkpoint.name == f"{CHECKPOINT_PREFIX}{stopped_at}"
    verify_checkpoint(checkpoint)
    assert len(list(checkpoint.glob("random_states_*.pkl"))) == processes
    return stopped_at


CASES = {  # every script x processes x data combination; in two-process runs one rank or both get the signal
    "ddpm-1-process-in-memory": ("ddpm", 1, [], [signal.SIGTERM, signal.SIGINT], None),  # stopped twice
    "ddpm-1-process-streamed": ("ddpm", 1, ["--streaming"], [signal.SIGINT], None),
    "ddpm-2-processes-in-memory-one-signalled": ("ddpm", 2, [], [signal.SIGTERM], 0),
    "ddpm-2-processes-streamed": ("ddpm", 2, ["--streaming"], [signal.SIGUSR1], None),
    "segmentation-1-process-in-memory": ("segmentation", 1, [], [signal.SIGUSR1], None),
    "segmentation-1-process-streamed": ("segmentation", 1, ["--streaming"], [signal.SIGTERM], None),
    "segmentation-2-processes-one-signalled": ("segmentation", 2, [], [signal.SIGTERM], 1),
    "segmentation-2-processes-streamed": ("segmentation", 2, ["--streaming"], [signal.SIGINT], None),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_stop_signal_saves_a_checkpoint_and_auto_resume_gives_the_uninterrupted_weights(tmp_path, case):
    script, processes, extra, signals, only_rank = CASES[case]
    reference = launch(script, tmp_path / "reference", *extra, processes=processes)
    interrupted = tmp_path / "interrupted"
    rng = random.Random(case)
    done = 0
    for number in signals:
        run = launch(script, interrupted, *extra, "--resume_from_checkpoint", "auto", processes=processes)
        step = min(rng.randint(done + 1, done + 2), MAX_TRAIN_STEPS - 2)
        done = interrupt(run, processes, number, step, only_rank)
        if number is signals[0]:
            assert f"No checkpoint in {interrupted} yet: starting a new run" in run.output()
    final = launch(script, interrupted, *extra, "--resume_from_checkpoint", "auto", processes=processes)
    assert final.wait() == 0, final.output()[-3000:]
    assert f"Resuming from {interrupted / f'{CHECKPOINT_PREFIX}{done}'}" in final.output()
    assert reference.wait() == 0, reference.output()[-3000:]
    assert_same_tensors(final_tensors(tmp_path / "reference"), final_tensors(interrupted))


def test_two_machines_train_as_one_two_process_run(tmp_path):
    port = free_port()
    machines = [launch("ddpm", tmp_path / "two-machines", machine=(rank, port)) for rank in (0, 1)]
    single = launch("ddpm", tmp_path / "one-machine", processes=2)
    for run in [*machines, single]:
        assert run.wait() == 0, run.output()[-3000:]
    assert [path.name for path in complete_checkpoints(tmp_path / "two-machines")] == ["checkpoint-4", "checkpoint-8"]
    assert_same_tensors(final_tensors(tmp_path / "one-machine"), final_tensors(tmp_path / "two-machines"))


RANDOM_STATES_KIB = 24  # a tmpfs this size holds one process's random_states_1.pkl (about 14 KiB), not two


def test_a_full_disk_on_one_process_stops_every_process_together_and_keeps_the_checkpoints(tmp_path):
    """Machine 1 writes its part of each checkpoint (its random states) to a disk of its own that fills up at the
    second checkpoint: both processes stop there (none is left waiting in a collective), the main process says so in
    one line naming the process, and its disk keeps checkpoint-4 complete, without the unfinished folder."""
    port = free_port()
    main_dir = tmp_path / "run"
    with small_disk(tmp_path / "disk", RANDOM_STATES_KIB / 1024) as disk:
        machines = [
            launch("ddpm", main_dir, machine=(0, port)),
            launch("ddpm", disk / "run", machine=(1, port), log_dir=tmp_path),
        ]
        statuses = [run.wait() for run in machines]
        assert sorted(path.name for path in (disk / "run").iterdir()) == ["checkpoint-4.tmp"]  # its own part, kept
    first, second = (run.output() for run in machines)
    assert statuses[0] != 0 and statuses[1] != 0 and "exitcode  : 2" in first and "exitcode  : 2" in second
    errors = [line for line in first.splitlines() if "train_ddpm: error:" in line]
    assert len(errors) == 1, first[-3000:]
    assert f"could not write the checkpoint {main_dir / 'checkpoint-8'}: process 1 of 2: No space left" in errors[0]
    assert "checkpoint-4 is complete and resumable" in errors[0]
    assert "error:" not in second, second[-3000:]  # said once, by the main process
    assert [path.name for path in sorted(main_dir.glob("checkpoint-*"))] == ["checkpoint-4"]
    verify_checkpoint(main_dir / "checkpoint-4")
    assert not (main_dir / "unet").exists()
