"""Compatibility re-exports: the training helpers now live in modules named for what they hold.

- :mod:`.errors`: ``TrainingError`` and the one-line error runner;
- :mod:`.arguments`: the common flags, their checks, model configs, the command shown in cards;
- :mod:`.data`: the training and held-out datasets;
- :mod:`.loop`: the resumable epoch loop, the run's length, the running loss;
- :mod:`.checkpoints`: writing, verifying and resuming checkpoints;
- :mod:`.reporting`: trackers and image logging;
- :mod:`.runtime`: the ``Accelerator``, main-process-first sections, activation checkpointing;
- :mod:`.publishing`: ``all_results.json``, the model card and the Hub push.

New code imports from those modules; this one only re-exports their names.
"""

from .arguments import (  # noqa: F401
    MAX_RESOLUTION,
    TRACKERS,
    add_common_arguments,
    check_common_arguments,
    check_positive,
    command_line,
    load_model_config,
    tracker_names,
)
from .checkpoints import (  # noqa: F401
    CHECKPOINT_PATTERN,
    CHECKPOINT_PREFIX,
    EMA_WEIGHTS_FILE,
    INCOMPLETE_SUFFIX,
    MANIFEST_FILE,
    TEST_PAUSE_ENV,
    TRAINING_STATE_FILE,
    checkpoint_step,
    complete_checkpoints,
    load_checkpoint,
    resolve_resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_manifest,
    write_training_state,
)
from .data import (  # noqa: F401  # noqa: F401
    DEFAULT_EVAL_SPLITS,
    AnyDataset,
    TrainingData,
    check_first_examples,
    dataset_label,
    evaluation_dataloader,
    hub_dataset_ids,
    load_train_and_eval_datasets,
    seeded_data_generator,
    training_dataloader,
)
from .errors import (  # noqa: F401
    DEBUG_ENV,
    USER_ERRORS,
    TrainingError,
    first_line,
    run_with_clear_errors,
)
from .loop import (  # noqa: F401
    RunningLoss,
    TrainingProgress,
    batches_leaving_global_rng,
    resolve_training_length,
    resumable_batches,
)
from .publishing import (  # noqa: F401
    ALL_RESULTS_FILE,
    PUSH_SKIPPED_CARD_FIELDS,
    push_trained_model,
    write_all_results,
    write_model_card,
)
from .reporting import (  # noqa: F401
    image_grid,
    log_image,
    tracker_config,
    upscale_for_display,
)
from .runtime import (  # noqa: F401
    enable_gradient_checkpointing,
    main_process_first_when,
    make_accelerator,
)
