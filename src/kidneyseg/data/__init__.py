"""Datasets: KiTS layouts, case-level splits, the phantom generator."""
