"""Tiny model configurations shared by the tests: every Swin stage, the FPN and the head run, fast on one thread."""

TINY_SWIN_FPN_GEOMETRY = dict(
    embed_dim=16,
    depths=[1, 1, 1, 1],
    num_heads=[1, 2, 2, 4],
    window_size=4,
    fpn_hidden_size=16,
    head_hidden_size=8,
    head_num_groups=4,
    drop_path_rate=0.0,
)
TINY_SWIN_FPN = {**TINY_SWIN_FPN_GEOMETRY, "num_labels": 3}
