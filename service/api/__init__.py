"""HTTP layer: routes and their typed dependencies."""
