"""The LR range test (Smith): the finder, and its report (JSON, plot, TensorBoard, what the command prints)."""
