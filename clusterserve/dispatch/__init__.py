"""How a connection reaches a worker: one module per dispatch mode."""
