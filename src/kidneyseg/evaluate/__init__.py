"""Evaluation: the papers' per-label Dice, the official KiTS21/23 metrics and lesion detection."""
