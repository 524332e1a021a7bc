"""The toy experiment of METHOD.md section 6 (the paper's Figures 2-4): an MLP onto S^2 under each loss."""
