"""The jobs the commands run: the main job and its arms, lineage and replay, the sweep."""
