"""Distillation: training a per-character student poser from a slow teacher."""
