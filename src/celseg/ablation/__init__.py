"""The ablation of the paper's claims: variants, the runner over seeds, and the report."""
