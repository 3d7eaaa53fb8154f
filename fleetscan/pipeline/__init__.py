"""The scan pipeline's domain steps, free of Prefect: `tasks/` wraps them and `flows/` wires them."""
