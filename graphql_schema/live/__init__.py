"""Live controls of a running agent: its model and its permission mode."""
