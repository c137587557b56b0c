"""What the runs reported, and how it is shown: records, live progress, the comparison, figures,
console lines."""
