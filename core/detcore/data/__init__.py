"""Datasets in COCO layout, and the synthetic default."""
