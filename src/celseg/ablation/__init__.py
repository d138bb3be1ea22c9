"""The research layer: the ablation of the paper's claims over unseen sets and seeds, the
open-vocabulary study, the protocol study and the demo. Functions here return results (and write
only the runs, figures and reports they are given paths for); the ``celseg ablate``,
``open-vocab``, ``protocol-study`` and ``demo`` commands call them."""
