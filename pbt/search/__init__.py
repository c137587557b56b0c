"""The search space both arms share: bounds, clipped exploration, and the grid over them."""
