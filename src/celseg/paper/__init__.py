"""The paper's scale: real architectures, dry runs of the paper configs and the reproduction job.

- ``architectures``: the configurations of the hub models the paper configs name, and random-
  weight folders built from them (``--random-init``, for machines without the weights);
- ``fixtures``: small raw datasets in the official on-disk formats, with a real VOC photo;
- ``measure``: parameter counts, peak memory and step times;
- ``dry_run``: one config end to end at its real shapes (``celseg dry-run``);
- ``reproduce``: raw archives to the seen / unseen / hIoU table (``celseg reproduce``).
"""
