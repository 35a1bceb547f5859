"""Commands of the panchro CLI, one module per topic."""
