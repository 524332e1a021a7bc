"""The toy experiment of docs/method.md#toy-experiment (the paper's Figures 2-4): an MLP onto S^2 under each loss."""
